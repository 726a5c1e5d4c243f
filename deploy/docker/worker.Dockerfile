# fanout-worker: the static worker binary (built-in activities echo, sha256,
# sleep) on an empty base. Build context: see coordinator.Dockerfile.
FROM scratch
COPY rootfs/ /
COPY certs/ /etc/ssl/certs/
COPY bin/fanout-worker /usr/local/bin/fanout-worker
ENV FANOUT_HTTP_ADDR=:8080
EXPOSE 8080
USER 65532:65532
HEALTHCHECK --interval=5s --timeout=4s --start-period=30s --retries=3 \
  CMD ["/usr/local/bin/fanout-worker", "-healthcheck", "http://127.0.0.1:8080/readyz"]
# Workers drain on SIGTERM: give them FANOUT_SHUTDOWN_TIMEOUT (30s) plus a
# little before a SIGKILL (compose: stop_grace_period).
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/fanout-worker"]
