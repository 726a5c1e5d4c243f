# fanout-nats: nats-server built on the host from the version pinned in the
# fanout go.mod, on an empty base, for machines that cannot pull the official
# nats image. Build context: see coordinator.Dockerfile.
#
# It runs like the official image (entrypoint nats-server, arguments from the
# command), but as user 65532, with JetStream data in /data.
#
# A scratch image has no wget or curl for a health check, so it carries a
# probe: a copy of the fanout worker binary, whose -healthcheck URL mode only
# GETs the URL and exits 0 on a 200 (it starts no worker). The compose files
# call it when NATS_HEALTHCHECK_BIN / NATS_HEALTHCHECK_FLAG say so;
# scripts/compose.sh sets them from the label below.
FROM scratch
COPY rootfs/ /
COPY certs/ /etc/ssl/certs/
COPY --chown=65532:65532 data/ /data/
COPY bin/nats-server /usr/local/bin/nats-server
COPY bin/fanout-worker /usr/local/bin/fanout-probe
COPY nats/ /etc/nats/
LABEL dev.fanout.nats-probe="/usr/local/bin/fanout-probe"
# Defaults for the variables the configurations in /etc/nats read; the
# compose files set them all.
ENV NATS_SERVER_NAME=fanout-nats \
    NATS_CLUSTER_NAME=fanout \
    NATS_SYNC_INTERVAL=120s \
    NATS_MAX_FILE_STORE=-1 \
    NATS_MAX_MEMORY_STORE=-1
EXPOSE 4222 6222 8222
USER 65532:65532
HEALTHCHECK --interval=5s --timeout=4s --start-period=30s --retries=3 \
  CMD ["/usr/local/bin/fanout-probe", "-healthcheck", "http://127.0.0.1:8222/healthz"]
ENTRYPOINT ["/usr/local/bin/nats-server"]
CMD ["-c", "/etc/nats/single.conf"]
