#!/usr/bin/env bash
# The FFI crate's tests (cryptomb/: every unsafe block of cdnsign) under two memory checkers:
#
# 1. valgrind memcheck (Debian's valgrind, installed by scripts/setup.sh): loading the
#    library, resolving symbols, CPU detection, errors, and the refusal to call the library
#    where it cannot run. Valgrind does not emulate AVX-512, so under it crypto_mb reports
#    itself not applicable and the lane tests say they are skipped, by name.
# 2. AddressSanitizer (nightly rustc, -Zsanitizer=address) on the real CPU: the 8-lane RSA
#    and ECDSA calls themselves, on machines with AVX-512 IFMA. Skipped, with a message,
#    when no nightly toolchain is installed.
#
#   bash scripts/memcheck.sh
#
# Environment: CARGO_TARGET_DIR (default target/); MEMCHECK_ASAN=0 skips step 2.
set -euo pipefail
cd "$(dirname "$0")/.."
target="${CARGO_TARGET_DIR:-target}"

tests_of() { # cargo args (a `test` command)... → the test executables, one per line
    cargo "$@" --no-run --message-format=json 2>/dev/null |
        python3 -c '
import json, sys
for line in sys.stdin:
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["profile"]["test"]:
        print(m["executable"])'
}

echo "== valgrind memcheck: cdnsign-cryptomb tests"
command -v valgrind >/dev/null || { echo "valgrind not installed (scripts/setup.sh installs it)" >&2; exit 1; }
cargo test -p cdnsign-cryptomb --no-run -q
mapfile -t exes < <(tests_of test -p cdnsign-cryptomb)
((${#exes[@]})) || { echo "memcheck: no test executable of cdnsign-cryptomb found" >&2; exit 1; }
for exe in "${exes[@]}"; do
    echo "-- $(basename "$exe")"
    # Under valgrind crypto_mb is never applicable (no AVX-512), so its lane tests skip here
    # even where scripts/test.sh requires them to run (they run on the real CPU in cargo test).
    env -u CDNSIGN_TEST_REQUIRE_MULTIBUFFER \
        valgrind -q --error-exitcode=99 --leak-check=full --show-leak-kinds=definite \
        --errors-for-leak-kinds=definite \
        "$exe" --test-threads=1 --nocapture
done

if [[ "${MEMCHECK_ASAN:-1}" == 0 ]]; then
    echo "== AddressSanitizer: skipped (MEMCHECK_ASAN=0)"
    exit 0
fi
if ! rustup run nightly rustc --version >/dev/null 2>&1; then
    echo "== AddressSanitizer: SKIPPED (no nightly toolchain; rustup toolchain install nightly)"
    exit 0
fi
echo "== AddressSanitizer (nightly): cdnsign-cryptomb tests on this CPU"
export RUSTFLAGS="-Zsanitizer=address" RUSTDOCFLAGS="-Zsanitizer=address"
host="$(rustc -vV | sed -n 's/^host: //p')"
asan=(+nightly test -p cdnsign-cryptomb --target "$host" --target-dir "$target/asan")
cargo "${asan[@]}" --no-run -q
mapfile -t exes < <(tests_of "${asan[@]}")
((${#exes[@]})) || { echo "memcheck: no AddressSanitizer test executable found" >&2; exit 1; }
for exe in "${exes[@]}"; do
    echo "-- $(basename "$exe")"
    "$exe" --test-threads=1 --nocapture
done
