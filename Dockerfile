# The ringside image: one static `ringside` binary on an empty base, nonroot, no shell.
# Every Deployment runs `ringside <service>` (deploy/); `docker build -t ringside:dev .`
#
# Stage 1 builds the binary statically (glibc's static build, `crt-static`: the binary
# needs no loader and no library, so the final stage can be `scratch`), stripped of its
# symbols and line tables (157 MB with them, 29 MB without).
FROM docker.io/library/rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN RUSTFLAGS='-C target-feature=+crt-static' \
    cargo build --release --locked -p ringside --target x86_64-unknown-linux-gnu \
 && mkdir /out \
 && strip -o /out/ringside target/x86_64-unknown-linux-gnu/release/ringside

# Stage 2, the image: the binary and nothing else. No CA certificates are needed: NATS
# runs without TLS inside the cluster, and the watcher trusts the cluster's CA from its
# ServiceAccount mount. User 65532 (nonroot); run it with a read-only root file system
# and no capabilities (deploy/ does).
# (services/ringside/tests/image.rs builds this very stage with podman from a binary
# built on the host, and runs it.)
FROM scratch AS runtime
COPY --from=build --chmod=0555 /out/ringside /ringside
USER 65532:65532
ENTRYPOINT ["/ringside"]
