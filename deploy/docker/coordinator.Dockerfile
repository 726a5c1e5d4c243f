# fanout-coordinator: the static coordinator binary on an empty base.
#
# The build context is NOT the repository: scripts/compose.sh build-images
# compiles the binaries on the host (CGO_ENABLED=0, so nothing needs to be
# pulled: no golang image) and lays out a context directory:
#   bin/          fanout-coordinator, fanout-worker, fanout, nats-server
#   rootfs/       copied to /: tmp/ (mode 1777) and etc/passwd, etc/group
#                 naming the user 65532 "nonroot" (as in distroless)
#   data/         an empty directory, /data owned by the image user in the
#                 images that keep files (cli, nats)
#   certs/        the host's CA bundle (ca-certificates.crt) when it has one,
#                 for TLS to servers signed by a public CA
FROM scratch
COPY rootfs/ /
COPY certs/ /etc/ssl/certs/
COPY bin/fanout-coordinator /usr/local/bin/fanout-coordinator
# /healthz, /readyz and /metrics; the health check below uses it.
ENV FANOUT_HTTP_ADDR=:8080
EXPOSE 8080
USER 65532:65532
HEALTHCHECK --interval=5s --timeout=4s --start-period=30s --retries=3 \
  CMD ["/usr/local/bin/fanout-coordinator", "-healthcheck", "http://127.0.0.1:8080/readyz"]
ENTRYPOINT ["/usr/local/bin/fanout-coordinator"]
