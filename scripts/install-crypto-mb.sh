#!/usr/bin/env bash
# Installs Intel's multi-buffer crypto library (crypto_mb, from the Intel Cryptography
# Primitives Library) where `cdnsign serve` looks for it with no extra environment:
#
#   /usr/local/lib/cdnsign/libcrypto_mb.so.13   + the Intel compiler runtime it links
#                                                 (libintlc.so.5, libimf.so, libsvml.so,
#                                                 libirng.so) beside it
#
# Both come from PyPI, as pinned wheels checked against their SHA-256 (pip --require-hashes):
# `ipp-crypto` (Apache-2.0) and `intel-cmplr-lib-rt` (Intel's runtime licence); their
# licence texts are copied to <dest>/licenses/. Nothing is downloaded from anywhere else.
# The library links the system libcrypto.so.3 (OpenSSL 3), which cdnsign links too.
#
#   bash scripts/install-crypto-mb.sh [DEST]      # DEST default /usr/local/lib/cdnsign
#
# cdnsign loads the library at run time (src/signing/backend/multibuffer/), so a machine
# without it still runs; it then signs with OpenSSL. Idempotent: a stamp in DEST records the
# installed versions, and nothing is downloaded when they are already there.
#
# Environment: PYTHON (an interpreter with pip; default python3), CDNSIGN_CRYPTO_MB_FORCE=1
# to reinstall.
set -euo pipefail

DEST="${1:-/usr/local/lib/cdnsign}"
PYTHON="${PYTHON:-python3}"
IPP_CRYPTO_VERSION="2026.2.0"
CMPLR_RT_VERSION="2026.2.0"
STAMP="$DEST/.cdnsign-crypto-mb-stamp"
WANT_STAMP="ipp-crypto==$IPP_CRYPTO_VERSION intel-cmplr-lib-rt==$CMPLR_RT_VERSION"
LIBS=(libcrypto_mb.so.13 libintlc.so.5 libimf.so libsvml.so libirng.so)

log() { printf '[crypto-mb] %s\n' "$*"; }

if [[ "$(uname -m)" != x86_64 ]]; then
    # The directory still exists (empty), so the Dockerfile's COPY of it works on arm64.
    mkdir -p "$DEST"
    log "$(uname -m): PyPI ships crypto_mb for x86_64 only; cdnsign will sign with OpenSSL"
    exit 0
fi

have_all() {
    for lib in "${LIBS[@]}"; do [[ -f "$DEST/$lib" ]] || return 1; done
    [[ -f "$STAMP" && "$(cat "$STAMP")" == "$WANT_STAMP" ]]
}

if [[ "${CDNSIGN_CRYPTO_MB_FORCE:-0}" != 1 ]] && have_all; then
    log "already installed in $DEST ($WANT_STAMP)"
    exit 0
fi

"$PYTHON" -m pip --version >/dev/null 2>&1 || {
    echo "[crypto-mb] ERROR: $PYTHON has no pip (set PYTHON=/path/to/python-with-pip)" >&2
    exit 1
}

work="$(mktemp -d)"
trap 'rm -rf -- "$work"' EXIT
cat >"$work/requirements.txt" <<EOF
ipp-crypto==$IPP_CRYPTO_VERSION --hash=sha256:3a5c87403b085c09329ee40ceac07fb2a51d448bf19fd1ef2b289bc583276189
intel-cmplr-lib-rt==$CMPLR_RT_VERSION --hash=sha256:9f713083073a820d2496a6da8e8d4f3482aba6640f74521d25ea48dcebe72748
EOF
log "pip download $WANT_STAMP (manylinux x86_64 wheels, hashes pinned)"
"$PYTHON" -m pip download --disable-pip-version-check -q --no-deps --only-binary=:all: \
    --platform manylinux_2_28_x86_64 --python-version 3 --require-hashes \
    -r "$work/requirements.txt" -d "$work/wheels"

mkdir -p "$DEST/licenses"
"$PYTHON" - "$work/wheels" "$DEST" "${LIBS[@]}" <<'EOF'
import os, pathlib, shutil, sys, zipfile
wheels, dest, libs = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]), set(sys.argv[3:])
found = set()
for whl in sorted(wheels.glob("*.whl")):
    dist = whl.name.split("-")[0]
    with zipfile.ZipFile(whl) as z:
        for name in z.namelist():
            base = name.rsplit("/", 1)[-1]
            if "/data/lib/" in name and base in libs:
                target = dest / base
                tmp = dest / (base + ".tmp")
                with z.open(name) as src, open(tmp, "wb") as out:
                    shutil.copyfileobj(src, out)
                os.chmod(tmp, 0o755)
                os.replace(tmp, target)  # atomic: a running cdnsign keeps its mapping
                found.add(base)
            elif name.endswith(".dist-info/LICENSE.txt"):
                with z.open(name) as src, open(dest / "licenses" / f"{dist}-LICENSE.txt", "wb") as out:
                    shutil.copyfileobj(src, out)
missing = libs - found
if missing:
    sys.exit(f"[crypto-mb] ERROR: not in the wheels: {sorted(missing)}")
EOF
ln -sf libcrypto_mb.so.13 "$DEST/libcrypto_mb.so"
printf '%s\n' "$WANT_STAMP" >"$STAMP"
log "installed in $DEST: ${LIBS[*]} (licences in $DEST/licenses)"
