# sse-broadcaster: the policy stream the sidecars read, as a static binary in a minimal image.
#
#   docker build -f docker/sse-broadcaster.Dockerfile -t REGISTRY/boifi/sse-broadcaster:0.1.0 .
#
# Build context: the repository root. Base images are build arguments, so a mirror or a pinned
# digest can replace them. BINARY_FROM lets a pipeline (and scripts/test-images.sh) put an
# already built binary into the same runtime stage: an image with /out/sse-broadcaster.
ARG RUST_IMAGE=docker.io/library/rust:1.95-bookworm
ARG RUNTIME_IMAGE=gcr.io/distroless/static-debian12:nonroot
ARG BINARY_FROM=builder

FROM ${RUST_IMAGE} AS builder
# musl: its resolver needs no NSS modules, so the static binary resolves etcd's DNS names in an
# image without libc (a static glibc binary cannot load them).
ARG RUST_TARGET=x86_64-unknown-linux-musl
# protoc and the well-known types: etcd-client compiles etcd's .proto files; musl-gcc builds
# jemalloc for the musl target. Versions come from the builder image's Debian release, which
# RUST_IMAGE pins.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends protobuf-compiler libprotobuf-dev musl-tools \
    && rm -rf /var/lib/apt/lists/* \
    && rustup target add "${RUST_TARGET}"
WORKDIR /src
COPY . .
ENV RUSTFLAGS="-C target-feature=+crt-static"
# jemalloc instead of musl's allocator: less CPU per answered poll and less memory per held poll
# (docs/benchmarks.md, long-poll fan-out).
RUN cargo build --release --locked --target "${RUST_TARGET}" -p boifi-sse-broadcaster --bin sse-broadcaster --features jemalloc \
    && mkdir /out \
    && cp "target/${RUST_TARGET}/release/sse-broadcaster" /out/sse-broadcaster

FROM ${BINARY_FROM} AS binary

FROM ${RUNTIME_IMAGE}
LABEL org.opencontainers.image.title="boifi sse-broadcaster" \
      org.opencontainers.image.description="BOIFI policy stream (Server-Sent Events) for the sidecar plugin" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=binary /out/sse-broadcaster /sse-broadcaster
# Numeric ids: the runtime image needs no /etc/passwd entry (65532 is distroless' "nonroot").
USER 65532:65532
ENV BOIFI_LISTEN_ADDR=0.0.0.0:8081
EXPOSE 8081
ENTRYPOINT ["/sse-broadcaster"]
