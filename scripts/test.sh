#!/usr/bin/env bash
# The whole cdnsign test suite, as CI runs it (README: "Run the tests").
#
#   bash scripts/test.sh
#
# 1. installs what the tests need (scripts/setup.sh: libssl-dev, Python peers, promtool...)
# 2. cargo fmt --check, clippy -D warnings (all features), cargo doc -D warnings, and a
#    build without OpenSSL
# 3. cargo test with both crypto backends compiled in (vectors run on each, and on the
#    multi-buffer backend where the CPU has AVX-512 IFMA: there they must run, not skip, and
#    run a second time on Debian 13's build of crypto_mb), the FFI crate under valgrind
#    memcheck and AddressSanitizer, and the criterion benches in quick mode
#    (CDNSIGN_BENCH_QUICK=1)
# 4. a smoke test from a client we did not write: Python grpcio against the real server,
#    then promtool check metrics on its /metrics
# 5. the deployment files: hadolint, promtool rule tests, manifests, dashboard; and the
#    protos: buf lint and buf breaking against the last released API (scripts/buf.sh)
# 6. cargo deny (licenses, bans, sources, and advisories from ../shared's RustSec snapshot)
#    and every cargo-fuzz target for a bounded time
set -euo pipefail
REPO_ROOT="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)"
cd -- "$REPO_ROOT"

step() { printf '\n== %s\n' "$*"; }

step "setup"
bash scripts/setup.sh
export CDNSIGN_TEST_PYTHON="$REPO_ROOT/.venv/bin/python"

# On a CPU that runs crypto_mb (x86_64 with AVX-512 F/DQ/BW/IFMA/VBMI2 and BMI2), the
# multi-buffer tests must run: a library that stopped loading fails them instead of
# passing as a skip. Elsewhere they report themselves SKIPPED, by name.
cpu_flags="$(grep -m1 '^flags' /proc/cpuinfo 2>/dev/null || true)"
ifma=1
for flag in avx512f avx512dq avx512bw avx512ifma avx512_vbmi2 bmi2; do
    [[ " $cpu_flags " == *" $flag "* ]] || ifma=0
done
if [[ "$(uname -m)" == x86_64 && "$ifma" == 1 ]]; then
    export CDNSIGN_TEST_REQUIRE_MULTIBUFFER=1
    echo "this CPU has AVX-512 IFMA: the multi-buffer tests must run (CDNSIGN_TEST_REQUIRE_MULTIBUFFER=1)"
else
    echo "this CPU lacks AVX-512 IFMA (or is not x86_64): the multi-buffer tests report themselves SKIPPED"
fi

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (all features, all targets, -D warnings)"
cargo clippy --workspace --all-targets --all-features -- -D warnings

step "cargo doc (-D warnings: every intra-doc link resolves)"
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --workspace --all-features

step "cargo deny (licenses, bans, sources, and RustSec advisories)"
# The team's RustSec snapshot beside the checkout (these machines cannot reach the
# database's git repository): when it is there, advisories are checked on every run.
SHARED_ADVISORY_DB="$REPO_ROOT/../shared/rustsec-advisory-db"
if [[ -z "${CARGO_DENY_ADVISORY_DB:-}" && -d "$SHARED_ADVISORY_DB/crates" ]]; then
    export CARGO_DENY_ADVISORY_DB="$SHARED_ADVISORY_DB"
    export CDNSIGN_REQUIRE_ADVISORIES=1
fi
bash scripts/deny.sh

step "build without OpenSSL (pure-rust backend only)"
cargo check --no-default-features --features pure-rust --lib --bins

step "cargo test (openssl + pure-rust backends)"
cargo test --workspace --all-features

if [[ "${CDNSIGN_TEST_REQUIRE_MULTIBUFFER:-0}" == 1 ]]; then
    # The same multi-buffer tests (the FFI crate's lanes against OpenSSL, the backend's
    # lanes and flushes, the botocore and AWS JS SDK vectors, the server's lane sharing) on
    # Debian 13's GCC build of crypto_mb (libcrypto-mb11 2021.12.1), which a Debian 13
    # runtime image may install instead of the PyPI build.
    step "multi-buffer tests on Debian 13's crypto_mb (libcrypto-mb11)"
    export CDNSIGN_CRYPTO_MB_LIB=/usr/local/lib/cdnsign/debian13/libcrypto_mb.so.11
    cargo test -p cdnsign-cryptomb
    cargo test -p cdnsign --all-features -- multibuffer lanes vectors selection
    unset CDNSIGN_CRYPTO_MB_LIB
fi

step "FFI crate under valgrind memcheck and AddressSanitizer (scripts/memcheck.sh)"
bash scripts/memcheck.sh

step "benches in quick mode (they must keep compiling and running; no timing assertions)"
# Dev profile: reuses the test build's dependencies (the release build would compile them
# all again, ~5 min here); these runs prove the benches work, scripts/bench.sh measures.
CDNSIGN_BENCH_QUICK=1 cargo bench --profile dev --bench signing --bench playlist --all-features

step "grpcio smoke test against the real server (dev config, ephemeral ports)"
bash scripts/smoke.sh

step "deployment lint: hadolint, promtool check/test rules, manifests, dashboard"
bash scripts/lint-deploy.sh

step "API hygiene: buf lint and buf breaking against proto/baseline (about a second)"
bash scripts/buf.sh

# CI budget: no sanitizer (3-7x the executions per second, a third of the build), an
# unoptimised build (the optimised one-codegen-unit build of the whole crate graph takes
# 8+ minutes on 2 cores; this smoke run only has to find shallow crashes), and a fuzz
# target dir outside the clone so a machine that ran it before rebuilds little.
# Real fuzzing: FUZZ_SANITIZER=address bash scripts/fuzz.sh 600
step "fuzz: every target for ${CDNSIGN_FUZZ_SECONDS:-15} s"
cargo fmt --manifest-path fuzz/Cargo.toml -- --check
FUZZ_SANITIZER="${FUZZ_SANITIZER:-none}" FUZZ_BUILD="${FUZZ_BUILD:-dev}" \
FUZZ_TARGET_DIR="${FUZZ_TARGET_DIR:-$HOME/.cache/cdnsign/fuzz-target}" \
    bash scripts/fuzz.sh "${CDNSIGN_FUZZ_SECONDS:-15}"

echo
echo "all test steps passed"
