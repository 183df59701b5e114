# syntax=docker/dockerfile:1
#
# cdnsign container image: a Rust builder stage and a Debian slim runtime with only the
# binary (debug info split off), libssl3 + ca-certificates (purges call provider APIs over
# HTTPS), crypto_mb for multi-buffer signing (from PyPI, in a stage of its own) and the
# example config; OCI labels, and a HEALTHCHECK through `cdnsign health`.
#
#   docker build -t cdnsign:0.1.0 .
#
# A release build names its revision and date (OCI labels; the revision is also compiled
# into `cdnsign --version` and cdnsign_build_info, since .git is not in the build context):
#
#   docker build \
#     --build-arg CDNSIGN_REVISION="$(git rev-parse --short=12 HEAD)" \
#     --build-arg CDNSIGN_CREATED="$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
#     -t cdnsign:0.1.0 .
#
# The debug info (DWARF line tables) of that exact binary, for symbolizing a core dump or
# a backtrace, is exported from the `debug` stage (it shares the builder's cache):
#
#   docker build --target debug --output type=local,dest=./debug-0.1.0 .   # ./debug-0.1.0/cdnsign.debug
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
# benches/signing.rs and benches/playlist.rs are declared in Cargo.toml, so cargo wants the
# files to exist; the benches themselves are not built here (and benches/ is not in the build context).
RUN mkdir -p src loadtest/src benches cryptomb/src \
    && echo 'fn main() {}' > benches/signing.rs \
    && echo 'fn main() {}' > benches/playlist.rs \
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
# The git revision for `cdnsign --version` and cdnsign_build_info (build.rs reads
# CDNSIGN_REVISION when there is no .git, as here). Declared after the dependency layer so
# a new revision does not rebuild the dependencies; empty: "unknown".
ARG CDNSIGN_REVISION=""
# COPY keeps the files' old mtimes, which are older than the stub build's artifacts, so
# touch the crate roots or cargo would keep the stub binary.
# The release profile keeps DWARF line tables (Cargo.toml: debug = "line-tables-only").
# They move to cdnsign.debug; the binary keeps its symbol table (function names in
# backtraces) and a .gnu_debuglink naming the file (with its CRC), which gdb, lldb and
# std's backtraces follow when cdnsign.debug sits next to the binary or under
# /usr/lib/debug.
RUN touch src/main.rs src/lib.rs cryptomb/src/lib.rs \
    && cargo build --release --locked --bin cdnsign \
    && objcopy --only-keep-debug target/release/cdnsign target/release/cdnsign.debug \
    && objcopy --strip-debug --add-gnu-debuglink=target/release/cdnsign.debug target/release/cdnsign \
    && ./target/release/cdnsign --version

# ---------------------------------------------------------------------------- debug
# The split-off debug info alone (not in the runtime image):
#   docker build --target debug --output type=local,dest=./debug-0.1.0 .
FROM scratch AS debug
COPY --from=builder /src/target/release/cdnsign.debug /cdnsign.debug

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
# The last stage, so a plain `docker build` builds it.
FROM debian:bookworm-20260824-slim@sha256:88200866dfff7ea7f5cbcb6ec7c8a701889efe6fe859fe64d6990e4b07ea4171 AS runtime

# OCI image annotations (https://github.com/opencontainers/image-spec, annotations.md).
# CDNSIGN_VERSION follows Cargo.toml's version (scripts/lint-deploy.sh checks they match);
# CDNSIGN_SOURCE is a placeholder: set it to where your copy of the repository lives.
# CDNSIGN_CREATED (RFC 3339) and CDNSIGN_REVISION come from the build command (above).
ARG CDNSIGN_VERSION=0.1.0
ARG CDNSIGN_REVISION=""
ARG CDNSIGN_CREATED=""
ARG CDNSIGN_SOURCE=https://github.com/example-org/cdnsign
LABEL org.opencontainers.image.title="cdnsign" \
      org.opencontainers.image.description="High-throughput CloudFront URL/cookie signing and CDN cache purging over gRPC" \
      org.opencontainers.image.version="${CDNSIGN_VERSION}" \
      org.opencontainers.image.revision="${CDNSIGN_REVISION}" \
      org.opencontainers.image.created="${CDNSIGN_CREATED}" \
      org.opencontainers.image.source="${CDNSIGN_SOURCE}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="docker.io/library/debian:bookworm-20260824-slim"

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

# For Docker and Compose (`docker ps` shows healthy/unhealthy; `depends_on:
# condition: service_healthy`): one grpc.health.v1 Check of the whole server on the
# container's own port, exit 0 only when it answers SERVING (NOT_SERVING while draining
# after SIGTERM). Plaintext: with [server.tls] on this port, override or disable it
# (`docker run --no-healthcheck`). Kubernetes ignores HEALTHCHECK and uses the `grpc:`
# probes in deploy/kubernetes/deployment.yaml instead.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["/usr/local/bin/cdnsign", "health", "--addr", "127.0.0.1:50051", "--timeout", "3"]

# The binary is PID 1 (exec form): SIGTERM reaches it directly and starts the drain;
# SIGHUP reloads the config and keys.
ENTRYPOINT ["/usr/local/bin/cdnsign"]
CMD ["serve", "--config", "/etc/cdnsign/cdnsign.toml"]
