# syntax=docker/dockerfile:1
#
# cdnsign container image: a Rust builder stage and a Debian slim runtime with only the
# binary, libssl3 + ca-certificates (purges call provider APIs over HTTPS), crypto_mb for
# multi-buffer signing (from PyPI, in a stage of its own) and the example config.
#
#   docker build -t cdnsign:0.1.0 .
#
# Base images are pinned by tag and by digest (the multi-arch index digest, so amd64 and
# arm64 builds both resolve). To move to a newer base, look up the new digest with
# `docker buildx imagetools inspect <image>:<tag>` and change both the tag and the digest.
#
# Debian package versions are pinned too (hadolint DL3008). Debian's archive keeps only
# the newest version of a package per suite, so after a security update (openssl gets
# several a year) the pinned version disappears and the build fails at apt-get install
# until the ARG below is bumped; that is deliberate: a rebuild never silently changes
# libssl. Current versions, from any Debian 12 machine after `apt-get update`:
#   apt-cache policy libssl3 libssl-dev pkg-config ca-certificates
# or without editing this file: docker build --build-arg LIBSSL3_VERSION=... .

# ---------------------------------------------------------------------------- builder
FROM rust:1.95.0-slim-bookworm@sha256:d7482085ff5b415f84dba5647ae71606650bdef00db7aeb69f4b3d170c3e4082 AS builder

# libssl-dev + pkg-config: the default `openssl` crate backend links the system OpenSSL.
# No protoc: build.rs uses the protoc shipped in the protoc-bin-vendored crate.
ARG LIBSSL_DEV_VERSION=3.0.22-1~deb12u2
ARG PKG_CONFIG_VERSION=1.8.1-1
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        "libssl-dev=${LIBSSL_DEV_VERSION}" \
        "pkg-config=${PKG_CONFIG_VERSION}" \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /src

# Dependency layer: the manifests, the lock file, build.rs and the protos, with stub
# sources, so the ~300 dependency crates compile in a layer that only changes when
# Cargo.toml, Cargo.lock, build.rs or proto/ do. The workspace member `loadtest` needs a
# stub too (cargo loads the whole workspace), but `--bin cdnsign` never builds it.
COPY Cargo.toml Cargo.lock build.rs ./
COPY loadtest/Cargo.toml loadtest/Cargo.toml
COPY cryptomb/Cargo.toml cryptomb/Cargo.toml
COPY proto proto
# benches/signing.rs is declared in Cargo.toml, so cargo wants the file to exist; the
# benches themselves are not built here (and benches/ is not in the build context).
RUN mkdir -p src loadtest/src benches cryptomb/src \
    && echo 'fn main() {}' > benches/signing.rs \
    && echo 'fn main() {}' > src/main.rs \
    && echo '//! stub' > src/lib.rs \
    && echo '//! stub' > cryptomb/src/lib.rs \
    && echo 'fn main() {}' > loadtest/src/main.rs \
    && cargo build --release --locked --bin cdnsign \
    && rm -rf src loadtest/src cryptomb/src

# The real sources. config/ is needed at compile time: the built-in dev config and its
# TEST ONLY key are compiled into the binary (`cdnsign serve` without --config).
COPY src src
COPY config config
COPY loadtest/src loadtest/src
COPY cryptomb/src cryptomb/src
# COPY keeps the files' old mtimes, which are older than the stub build's artifacts, so
# touch the crate roots or cargo would keep the stub binary.
RUN touch src/main.rs src/lib.rs cryptomb/src/lib.rs \
    && cargo build --release --locked --bin cdnsign \
    && ./target/release/cdnsign --version

# ---------------------------------------------------------------------------- crypto_mb
# Intel's multi-buffer crypto library (crypto_mb, Apache-2.0) and the Intel runtime it links,
# from pinned PyPI wheels (hashes checked by pip), into /usr/local/lib/cdnsign/: where
# cdnsign looks for it. The runtime image is Debian 12, which does not package it (Debian
# 13's libcrypto-mb11 would do too). cdnsign loads it at run time and uses it only on CPUs
# with AVX-512 IFMA (`signing.multibuffer = "auto"`); elsewhere it signs with OpenSSL.
FROM debian:bookworm-20260824-slim@sha256:88200866dfff7ea7f5cbcb6ec7c8a701889efe6fe859fe64d6990e4b07ea4171 AS cryptomb
ARG PYTHON3_PIP_VERSION=23.0.1+dfsg-1
RUN apt-get update \
    && apt-get install -y --no-install-recommends "python3-pip=${PYTHON3_PIP_VERSION}" \
    && rm -rf /var/lib/apt/lists/*
COPY scripts/install-crypto-mb.sh /tmp/install-crypto-mb.sh
RUN PYTHON=python3 bash /tmp/install-crypto-mb.sh /usr/local/lib/cdnsign

# ---------------------------------------------------------------------------- runtime
FROM debian:bookworm-20260824-slim@sha256:88200866dfff7ea7f5cbcb6ec7c8a701889efe6fe859fe64d6990e4b07ea4171 AS runtime

# Only what the binary links (libssl.so.3, libcrypto.so.3; libc and libgcc_s are in the
# base image) and the CA bundle for HTTPS calls to CDN provider APIs. ca-certificates
# pulls in the openssl CLI as a Depends.
ARG LIBSSL3_VERSION=3.0.22-1~deb12u2
ARG CA_CERTIFICATES_VERSION=20250419~deb12u2
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        "libssl3=${LIBSSL3_VERSION}" \
        "ca-certificates=${CA_CERTIFICATES_VERSION}" \
    && rm -rf /var/lib/apt/lists/*

# A fixed numeric UID/GID so Kubernetes `runAsUser`/`fsGroup` and file ownership on the
# host line up with it. -l: do not add the user to lastlog/faillog (sparse files that
# get huge with a high UID).
RUN groupadd --system --gid 10001 cdnsign \
    && useradd --system -l --uid 10001 --gid 10001 --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin cdnsign

COPY --from=builder /src/target/release/cdnsign /usr/local/bin/cdnsign
# crypto_mb (multi-buffer signing), with its licence texts in /usr/local/lib/cdnsign/licenses.
COPY --from=cryptomb /usr/local/lib/cdnsign /usr/local/lib/cdnsign
# The documented example config, as the default, with the TEST ONLY key it names (public
# in the repository and compiled into the binary's dev config anyway), so `docker run` of
# the image starts. Its one client has a placeholder token nobody holds: mount a real
# config over it, or pass `serve --config /path/to/cdnsign.toml` (docs/deployment.md).
COPY config/example.toml /etc/cdnsign/cdnsign.toml
COPY config/dev-keys/TEST-ONLY-cloudfront.pem /etc/cdnsign/dev-keys/TEST-ONLY-cloudfront.pem

# The embedded purge store's directory (one process; PostgreSQL for several replicas via
# CDNSIGN_PURGE__DATABASE_URL). Writable by the runtime user; mount a volume here to keep
# purges across container restarts.
RUN mkdir -p /var/lib/cdnsign && chown 10001:10001 /var/lib/cdnsign
VOLUME ["/var/lib/cdnsign"]

# Inside a container the listeners must not be on loopback. Any CDNSIGN_<SECTION>__<KEY>
# variable overrides the config file.
ENV CDNSIGN_SERVER__LISTEN=0.0.0.0:50051 \
    CDNSIGN_METRICS__LISTEN=0.0.0.0:9464 \
    CDNSIGN_PURGE__DATA_DIR=/var/lib/cdnsign

# 50051: gRPC (cdnsign.v1.Signer, grpc.health.v1.Health, reflection); 9464: Prometheus.
EXPOSE 50051 9464

USER 10001:10001

# No HEALTHCHECK on purpose: the image has no gRPC health client, and Kubernetes checks
# gRPC health itself (deploy/kubernetes/deployment.yaml: `grpc:` liveness and readiness
# probes). Docker's HEALTHCHECK is not used by Kubernetes.

# The binary is PID 1 (exec form): SIGTERM reaches it directly and starts the drain;
# SIGHUP reloads the config and keys.
ENTRYPOINT ["/usr/local/bin/cdnsign"]
CMD ["serve", "--config", "/etc/cdnsign/cdnsign.toml"]
