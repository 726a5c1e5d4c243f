# fanout-cli: the fanout command-line tool on an empty base. Build context:
# see coordinator.Dockerfile.
#
#   docker run --rm fanout-cli:local demo
#   docker compose --profile cli run --rm cli <command>
#
# The working directory /data is writable by the image's user: `fanout dev`
# keeps its JetStream data there (mount a volume on /data to keep it).
FROM scratch
COPY rootfs/ /
COPY certs/ /etc/ssl/certs/
COPY --chown=65532:65532 data/ /data/
COPY bin/fanout /usr/local/bin/fanout
ENV HOME=/data
WORKDIR /data
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/fanout"]
CMD ["--help"]
