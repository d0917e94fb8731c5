# syntax=docker/dockerfile:1
# logferry container image: a drop-in replacement for the FireLens log router image
# (aws-for-fluent-bit), also used as the EKS sidecar / DaemonSet.
#
#   docker build -t logferry:0.1.0 --build-arg REVISION="$(git rev-parse HEAD)" .
#
# Three stages. `build` runs infra/docker/build-openssl (librdkafka's OpenSSL, only what its TLS
# needs) and infra/docker/build-binary: the release build made smaller (Cargo.toml's
# `image` profile), statically linked and stripped (scripts/test runs the same script through scripts/build-image, so CI proves this build
# compiles). `rootfs` runs infra/docker/make-rootfs, the one list of the image's files (the binary,
# the default config, the CA bundle, a static busybox of only the FireLens health check's `sh`
# and `nc` (infra/docker/build-busybox), the logferry user). `runtime` is FROM scratch with that file system and nothing else.
# scripts/build-image builds the same `runtime` stage (this file's text from `FROM scratch`) with
# buildah on the host, from the same two scripts, and exports it as an OCI archive; tests/image.rs
# runs that image. How the image behaves on ECS (socket directory, user, health check):
# infra/README.md.

FROM rust:1.95-bookworm AS build
# cmake: rdkafka's cmake-build of librdkafka. libcurl4-openssl-dev: only its header, which
# librdkafka 2.12's cmake build includes (see scripts/setup). The rest of scripts/setup's
# APT_PACKAGES that the build needs; instead of libssl-dev, librdkafka's TLS + SASL/OAUTHBEARER
# (MSK IAM) link an OpenSSL built by infra/docker/build-openssl (only what librdkafka needs) from
# Debian's source with Debian's patches, `apt-get source openssl=<revision>`, the revision
# infra/docker/openssl-version pins (scripts/build-image builds the same revision from the same
# source package). DL3003: `apt-get source` unpacks into the current directory.
# The build tools' package versions are not pinned: Debian replaces them in point releases and
# security updates, so pinned versions disappear from the mirror and the build breaks; the base
# image tag pins the distribution release. The OpenSSL source is the exception, so that both
# builds link the same one (infra/docker/openssl-version says when to bump it).
WORKDIR /src
COPY infra/docker/openssl-version ./infra/docker/openssl-version
# hadolint ignore=DL3003,DL3008
RUN sed -i 's/^Types: deb$/Types: deb deb-src/' /etc/apt/sources.list.d/debian.sources \
 && apt-get update \
 && apt-get install -y --no-install-recommends cmake pkg-config zlib1g-dev libcurl4-openssl-dev dpkg-dev perl make \
 && mkdir /openssl-src && cd /openssl-src && apt-get source -qq "openssl=$(sed '/^#/d' /src/infra/docker/openssl-version)" \
 && rm -rf /var/lib/apt/lists/*
COPY infra/docker/build-openssl ./infra/docker/build-openssl
RUN infra/docker/build-openssl /openssl-src/openssl-*/ /opt/openssl
# The whole workspace manifest set: Cargo.lock is honoured (--locked), lambda/ and test-kit/
# (the tests' dev-dependency) are workspace members and benches/ holds a bench target the root
# manifest declares.
COPY Cargo.toml Cargo.lock ./
COPY .cargo ./.cargo
COPY src ./src
COPY lambda ./lambda
COPY test-kit ./test-kit
COPY benches ./benches
COPY infra/docker/build-binary ./infra/docker/build-binary
# The cache mounts keep the registry and the target directory between builds of this Dockerfile;
# the binary is copied out of the cached target directory in the same step (static, stripped:
# infra/docker/build-binary says why).
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    OPENSSL_DIR=/opt/openssl infra/docker/build-binary /usr/local/bin/logferry

# ca-certificates and busybox (Debian's source with Debian's patches, built by
# infra/docker/build-busybox against musl): what infra/docker/make-rootfs copies into the image
# (scripts/build-image takes the same package and source on the host). DL3003: `apt-get source`
# unpacks into the current directory, so the RUN changes into the one it is meant for.
FROM debian:bookworm-slim AS rootfs
# hadolint ignore=DL3003,DL3008
RUN sed -i 's/^Types: deb$/Types: deb deb-src/' /etc/apt/sources.list.d/debian.sources \
 && apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates dpkg-dev gcc libc6-dev make musl-tools bzip2 xz-utils \
 && mkdir /busybox-src && cd /busybox-src && apt-get source -qq busybox \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /usr/local/bin/logferry /stage/logferry
COPY infra/docker/make-rootfs infra/docker/build-busybox infra/docker/logferry.toml /stage/
RUN /stage/build-busybox /busybox-src/busybox-*/ /stage/busybox \
 && /stage/make-rootfs /stage/logferry /stage/busybox /stage/logferry.toml /rootfs

# The runtime stage: scripts/build-image builds this text as it stands, from here to the end.
FROM scratch AS runtime
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="logferry" \
      org.opencontainers.image.description="Ships logs from ECS (FireLens), EKS and CloudWatch Logs to Kinesis Data Streams and Kafka/MSK with IAM auth" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://example.invalid/logferry" \
      org.opencontainers.image.documentation="https://example.invalid/logferry#deploy"
# The whole file system, one layer; owners as make-rootfs set them (/var/lib/logferry: 10001).
COPY --from=rootfs /rootfs/ /
# rustls (the AWS SDK) reads this bundle, and logferry passes it to librdkafka as ssl.ca.location
# when the config sets no CA (its static OpenSSL would only probe the usual paths): mount another
# bundle and point SSL_CERT_FILE at it to trust a private CA in both.
ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
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
