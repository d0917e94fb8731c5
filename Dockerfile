# syntax=docker/dockerfile:1
# Multi-stage build of the logferry binary onto a small non-root runtime image.
# Build: docker build -t logferry .   (the release build is the one scripts/demo performs)

FROM rust:1.95-bookworm AS build
# libcurl4-openssl-dev: only its header, which librdkafka 2.12.1's cmake build includes (see scripts/setup).
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake pkg-config libssl-dev zlib1g-dev libcurl4-openssl-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY lambda ./lambda
COPY benches ./benches
RUN cargo build --release --locked --bin logferry \
 && install -m 0755 target/release/logferry /usr/local/bin/logferry

FROM debian:bookworm-slim
LABEL org.opencontainers.image.title="logferry" \
      org.opencontainers.image.description="Ships logs from ECS (FireLens), EKS and CloudWatch Logs to Kinesis Data Streams and Kafka/MSK" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://example.invalid/logferry"
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 logferry \
 && useradd --system --uid 10001 --gid logferry --no-create-home --shell /usr/sbin/nologin logferry \
 && mkdir -p /etc/logferry /var/run/logferry \
 && chown logferry:logferry /var/run/logferry
COPY --from=build /usr/local/bin/logferry /usr/local/bin/logferry
COPY examples/forward-to-file.toml /etc/logferry/logferry.toml
USER 10001:10001
EXPOSE 24224 2020
HEALTHCHECK --interval=30s --timeout=5s --retries=3 \
  CMD ["/usr/local/bin/logferry", "healthcheck", "--url", "http://127.0.0.1:2020/health"]
ENTRYPOINT ["/usr/local/bin/logferry"]
CMD ["run", "--config", "/etc/logferry/logferry.toml"]
