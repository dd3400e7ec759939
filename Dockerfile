# Coord's container image: coord-server (the entrypoint) and coordctl.
#
#   docker build -t coord:0.1.0 .   # with a registry: compiles in a Rust image, runs on Debian slim
#   ./dev image                      # without one: the same runtime stage, built on a root
#                                    # filesystem made from local binaries (see `dev`)
#
# Run with no arguments it serves a single member on every interface:
#   docker run -d -p 7400:7400 -p 7402:7402 -v coord-data:/var/lib/coord coord:0.1.0
# Ports: 7400 client gRPC, 7401 member-to-member (peer) gRPC, 7402 HTTP /livez /readyz /metrics.
# Data: the volume /var/lib/coord (the data directory is /var/lib/coord/data).
# The server runs as PID 1 and handles SIGTERM itself: it hands leadership over, ends client
# streams and exits within --shutdown-timeout (10 s by default; give `docker stop -t 15`).

ARG RUST_IMAGE=rust:1.95-bookworm
ARG BASE_IMAGE=debian:bookworm-slim

FROM ${RUST_IMAGE} AS build
# RocksDB's bindings are generated with libclang at build time.
RUN apt-get update \
 && apt-get install -y --no-install-recommends clang libclang-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p coord-server -p coordctl --bins \
 && mkdir -p /out/bin /out/data \
 && cp target/release/coord-server target/release/coordctl /out/bin/

# runtime: everything from here on is also what `./dev image` builds (it cuts the file here).
FROM ${BASE_IMAGE} AS runtime
COPY --from=build /out/bin/ /usr/local/bin/
# The data volume belongs to the unprivileged user; a new named volume inherits this.
COPY --from=build --chown=65532:65532 /out/data/ /var/lib/coord/
USER 65532:65532
WORKDIR /var/lib/coord
ENV COORD_DATA_DIR=/var/lib/coord/data \
    COORD_LISTEN_CLIENT=0.0.0.0:7400 \
    COORD_LISTEN_PEER=0.0.0.0:7401 \
    COORD_LISTEN_METRICS=0.0.0.0:7402
EXPOSE 7400 7401 7402
VOLUME ["/var/lib/coord"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/coord-server"]
