#!/usr/bin/env bash
# Installs Debian 13's build of crypto_mb (package libcrypto-mb11 2021.12.1-1: GCC-built, no
# Intel runtime) beside the PyPI build, for the test suite to run the multi-buffer backend
# on it too (scripts/test.sh): a runtime image on Debian 13 can `apt install libcrypto-mb11`
# instead of the PyPI wheels, and cdnsign finds `libcrypto_mb.so.11` through the system
# loader. Measured on one AMD EPYC: the same lane rates as the PyPI build
# (docs/performance.md).
#
#   <dest>/libcrypto_mb.so.11      (DEST default /usr/local/lib/cdnsign/debian13; not on
#   <dest>/licenses/copyright       the loader's path, so nothing picks it up unasked)
#
#   bash scripts/install-crypto-mb-debian13.sh [DEST]
#
# From Debian's archive (deb.debian.org), the .deb checked against the SHA-256 that Debian's
# trixie Packages index gives for it; the library links only libc and the system
# libcrypto.so.3. Idempotent (a stamp in DEST). Environment: CDNSIGN_DEBIAN_MIRROR
# (default http://deb.debian.org/debian), CDNSIGN_CRYPTO_MB_FORCE=1 to reinstall.
set -euo pipefail

DEST="${1:-/usr/local/lib/cdnsign/debian13}"
MIRROR="${CDNSIGN_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
VERSION="2021.12.1-1"
DEB="libcrypto-mb11_${VERSION}_amd64.deb"
SHA256="ca3d60b7eb5ba9ce200ff1ee47ac52b903a4b14753ee379ea42a1524ace31da7"
STAMP="$DEST/.cdnsign-crypto-mb-stamp"

log() { printf '[crypto-mb-debian13] %s\n' "$*"; }

if [[ "$(uname -m)" != x86_64 ]]; then
    log "$(uname -m): crypto_mb is x86_64 only; nothing to install"
    exit 0
fi
if [[ "${CDNSIGN_CRYPTO_MB_FORCE:-0}" != 1 && -f "$DEST/libcrypto_mb.so.11" \
    && -f "$STAMP" && "$(cat "$STAMP")" == "$DEB" ]]; then
    log "already installed in $DEST ($DEB)"
    exit 0
fi

work="$(mktemp -d)"
trap 'rm -rf -- "$work"' EXIT
log "downloading $DEB from $MIRROR (SHA-256 pinned)"
curl -fsS --retry 3 --max-time 120 -o "$work/$DEB" "$MIRROR/pool/main/i/ipp-crypto/$DEB"
echo "$SHA256  $work/$DEB" | sha256sum -c --quiet - || {
    echo "[crypto-mb-debian13] ERROR: $DEB does not match its pinned SHA-256" >&2
    exit 1
}
dpkg-deb -x "$work/$DEB" "$work/x"
lib="$(find "$work/x/usr/lib" -name 'libcrypto_mb.so.11.*' -type f | head -n 1)"
[[ -n "$lib" ]] || {
    echo "[crypto-mb-debian13] ERROR: no libcrypto_mb.so.11.* in $DEB" >&2
    exit 1
}
mkdir -p "$DEST/licenses"
install -m 0755 "$lib" "$DEST/libcrypto_mb.so.11.tmp"
mv -f "$DEST/libcrypto_mb.so.11.tmp" "$DEST/libcrypto_mb.so.11"
install -m 0644 "$work/x/usr/share/doc/libcrypto-mb11/copyright" "$DEST/licenses/copyright"
printf '%s\n' "$DEB" >"$STAMP"
log "installed $DEST/libcrypto_mb.so.11 (from $DEB; its copyright in $DEST/licenses)"
