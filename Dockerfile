# syntax=docker/dockerfile:1
# Multi-stage build of the candlelight server (and the loadgen binary, which the
# `loadgen` compose profile runs from the same image). CPU build; the model is
# not baked in: docker-compose.yml mounts ./models at /models.
# Files left out of the build context: Dockerfile.dockerignore.

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
# Cache mounts keep the crate registry and target dir between image builds.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin candlelight --bin loadgen \
    && mkdir -p /out \
    && cp target/release/candlelight target/release/loadgen /out/

FROM debian:bookworm-slim AS runtime
# curl serves the compose health check; ca-certificates any TLS OTLP endpoint.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 candlelight
COPY --from=build /out/candlelight /out/loadgen /usr/local/bin/
USER candlelight
ENV CANDLELIGHT_HOST=0.0.0.0 \
    CANDLELIGHT_PORT=3000 \
    CANDLELIGHT_MODEL=/models/SmolLM2-135M-Instruct.Q4_1.gguf
EXPOSE 3000
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=6 \
    CMD curl -fsS http://127.0.0.1:3000/health || exit 1
ENTRYPOINT ["candlelight"]
CMD ["serve"]
