# syntax=docker/dockerfile:1
# logferry container image: a drop-in replacement for the FireLens log router image
# (aws-for-fluent-bit), also used as the EKS sidecar / DaemonSet.
#
#   docker build -t logferry:0.1.0 --build-arg REVISION="$(git rev-parse HEAD)" .
#
# Stage 1 runs exactly the release build scripts/test runs (`cargo build --release --locked
# --bin logferry`), so CI proves that this build compiles. Stage 2 is debian:bookworm-slim with
# ca-certificates (TLS to Kinesis, STS and MSK) and ncat (see below), running as uid 10001.
# How the image behaves on ECS (socket directory, user, health check): infra/README.md.

FROM rust:1.95-bookworm AS build
# cmake: rdkafka's cmake-build of librdkafka. libssl-dev: TLS + SASL/OAUTHBEARER (MSK IAM).
# libcurl4-openssl-dev: only its header, which librdkafka 2.12's cmake build includes (see
# scripts/setup). Same list as scripts/setup's APT_PACKAGES.
# Package versions are not pinned: Debian replaces them in point releases and security updates,
# so pinned versions disappear from the mirror and the build breaks; the base image tag pins
# the distribution release.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake pkg-config libssl-dev zlib1g-dev libcurl4-openssl-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# The whole workspace manifest set: Cargo.lock is honoured (--locked), lambda/ and test-kit/
# (the tests' dev-dependency) are workspace members and benches/ holds a bench target the root
# manifest declares.
COPY Cargo.toml Cargo.lock ./
COPY .cargo ./.cargo
COPY src ./src
COPY lambda ./lambda
COPY test-kit ./test-kit
COPY benches ./benches
# The cache mounts keep the registry and the target directory between builds of this Dockerfile;
# the binary is copied out of the cached target directory in the same step.
# The release profile keeps line tables (debug = "line-tables-only", 108 MB binary); the image
# gets the binary without debug info but with its symbols (25 MB), so a backtrace still names
# the functions.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin logferry \
 && install -m 0755 target/release/logferry /usr/local/bin/logferry \
 && strip --strip-debug /usr/local/bin/logferry

FROM debian:bookworm-slim
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="logferry" \
      org.opencontainers.image.description="Ships logs from ECS (FireLens), EKS and CloudWatch Logs to Kinesis Data Streams and Kafka/MSK with IAM auth" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://example.invalid/logferry" \
      org.opencontainers.image.documentation="https://example.invalid/logferry#deploy" \
      org.opencontainers.image.base.name="docker.io/library/debian:bookworm-slim"
# libssl3: librdkafka's TLS (the binary links libssl.so.3 and libcrypto.so.3; the AWS SDK uses
# rustls). ca-certificates: the system trust store for TLS. ncat (nmap's netcat, what Amazon Linux's `nc`
# is) as `nc`: the documented FireLens container health check is
#   echo '{"health": "check"}' | nc 127.0.0.1 8877 || exit 1
# and only ncat half-closes the connection at the end of its input and exits once the server
# closes; Debian's netcat-openbsd waits forever without -N, so that check would time out.
# A shell (/bin/sh, from the base image) is needed by the CMD-SHELL form of that check too.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends libssl3 ca-certificates ncat \
 && rm -rf /var/lib/apt/lists/* \
 && ln -s /usr/bin/ncat /usr/local/bin/nc \
 && groupadd --system --gid 10001 logferry \
 && useradd --system --uid 10001 --gid logferry --no-create-home --shell /usr/sbin/nologin logferry \
 && mkdir -p /etc/logferry /var/lib/logferry \
 && chown logferry:logferry /var/lib/logferry
# /var/lib/logferry: state (tail checkpoint db, disk buffer) when a volume is mounted there.
# /var/run is not prepared here: on ECS the agent bind-mounts its own per-task socket directory
# over /var/run (see infra/README.md); elsewhere the default config uses TCP only.
COPY --from=build /usr/local/bin/logferry /usr/local/bin/logferry
COPY infra/docker/logferry.toml /etc/logferry/logferry.toml
USER 10001:10001
# Fluent forward (TCP): the port configs use; the default config listens on 127.0.0.1 only
# (reachable inside the task or pod), so publishing it needs a config with 0.0.0.0 (see
# infra/docker/logferry.toml). /health and /metrics listen on 127.0.0.1:2020 in the default config.
EXPOSE 24224
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
  CMD ["/usr/local/bin/logferry", "healthcheck"]
# `run` without a config flag reads /fluent-bit/etc/fluent-bit.conf when it exists (where ECS
# mounts the config FireLens generates), else /etc/logferry/logferry.toml.
ENTRYPOINT ["/usr/local/bin/logferry"]
CMD ["run"]
