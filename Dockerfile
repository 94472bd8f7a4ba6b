# cathedral-server (and the cathedral CLI) in a small image.
#   podman build -t cathedral:latest .      (or docker build)
#   podman run -p 50051:50051 -p 8081:8081 cathedral:latest   # a standalone node
# The Kubernetes manifests in deploy/kubernetes/ run it as coordinators and workers.
FROM docker.io/library/rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p cathedral-server -p cathedral-cli --bins \
    && cp target/release/cathedral-server target/release/cathedral /usr/local/bin/

FROM docker.io/library/debian:bookworm-slim
# bubblewrap: the executor's default sandbox where the host allows user namespaces; the
# executor falls back to plain processes where it does not.
RUN apt-get update \
    && apt-get install -y --no-install-recommends bubblewrap ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /var/lib/cathedral cathedral \
    && mkdir -p /var/lib/cathedral \
    && chown cathedral /var/lib/cathedral
COPY --from=build /usr/local/bin/cathedral-server /usr/local/bin/cathedral /usr/local/bin/
USER 10001
VOLUME /var/lib/cathedral
# gRPC (job API, Raft) on TCP and gossip on UDP share 50051; HTTP (health, metrics, REST,
# dashboard) is 8081.
EXPOSE 50051/tcp 50051/udp 8081/tcp
ENV CATHEDRAL_DATA_DIR=/var/lib/cathedral \
    CATHEDRAL_BIND=0.0.0.0:50051 \
    CATHEDRAL_HTTP=0.0.0.0:8081 \
    CATHEDRAL_ADVERTISE=127.0.0.1:50051
ENTRYPOINT ["cathedral-server"]
