# The BOIFI Wasm plugin as an OCI image Istio's WasmPlugin can pull: one layer holding plugin.wasm
# (Istio takes the module from the image's last layer).
#
#   scripts/build-plugin.sh   # writes the optimized module
#   cp <module> docker/plugin-context/plugin.wasm
#   docker build -f docker/plugin.Dockerfile -t REGISTRY/boifi/plugin:0.1.0 docker/plugin-context
#
# scripts/publish-plugin.sh pushes the same module in this format and in the two-layer Wasm OCI
# format without a container engine.
FROM scratch
LABEL org.opencontainers.image.title="boifi plugin" \
      org.opencontainers.image.description="BOIFI fault-injection proxy-wasm plugin for Istio" \
      org.opencontainers.image.licenses="Apache-2.0"
# The working directory of scratch is /, so the module lands at /plugin.wasm.
# hadolint ignore=DL3045
COPY plugin.wasm ./
