#!/usr/bin/env bash
# The issue-13 load-test points, multi-buffer signing against the scalar (OpenSSL) path, each
# with `openssl speed -multi <cores>` of the same algorithm measured right after it:
#
#   RSA-2048 SHA-1 batches of 500, ECDSA P-256 batches of 500, RSA single-URL calls from 32
#   concurrent callers, and RSA single-URL p99 paced at half that rate;
#   for each `[signing] multibuffer` in $LOADTEST_MODES (default "required off") and each
#   `multibuffer_flush_us` in $LOADTEST_FLUSH_US (default "100"; single-URL points only).
#
#   bash scripts/loadtest-multibuffer.sh      # ~4 min after the release build
#
# Writes $CARGO_TARGET_DIR/loadtest-mb/{results.jsonl,report.txt}. Needs a CPU with AVX-512
# IFMA and crypto_mb installed (scripts/install-crypto-mb.sh) for the "required" mode; the
# server refuses to start otherwise, and says why. With 4 or more cores the server and
# `openssl speed` run on CPUs 0-1 and the load generator on the others (LOADTEST_SERVER_CPUS,
# LOADTEST_CLIENT_CPUS, LOADTEST_PIN=0 to share; scripts/loadtest-lib.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

target="${CARGO_TARGET_DIR:-target}"
out="$target/loadtest-mb"
secs="${LOADTEST_SECONDS:-7}"
modes="${LOADTEST_MODES:-required off}"
flushes="${LOADTEST_FLUSH_US:-100}"
ossl_secs="${OPENSSL_SECONDS:-1}"
addr="http://127.0.0.1:50151"

cargo build --release -p cdnsign -p cdnsign-loadtest
bin="$target/release"
mkdir -p "$out"
results="$out/results.jsonl"
log="$out/runs.txt"
: >"$results"
: >"$log"

# shellcheck source=scripts/loadtest-lib.sh
source scripts/loadtest-lib.sh
trap stop_server EXIT

start_mode() { # multibuffer mode, flush_us
    start_server "$out/server-$1-$2.log" RUST_LOG="warn,cdnsign::signing::selection=info" \
        CDNSIGN_SIGNING__MULTIBUFFER="$1" CDNSIGN_SIGNING__MULTIBUFFER_FLUSH_US="$2"
}

{
    echo "cdnsign multi-buffer load test, $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), $(nproc) cores"
    echo "flags: $(grep -m1 '^flags' /proc/cpuinfo | tr ' ' '\n' | grep -E '^(avx512|vaes|vpclmul|gfni|bmi2|adx)' | tr '\n' ' ')"
    echo "$(openssl version); load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
    pinning
    echo
} | tee -a "$log"

for mode in $modes; do
    first_flush="${flushes%% *}"
    start_mode "$mode" "$first_flush"
    grep -m1 "signing backends" "$out/server-$mode-$first_flush.log" | tee -a "$log" || true
    run "rsa-sha1-$mode" --key-id K2JCJMDEHXQW5F --batch 500 --concurrency 2 --duration "$secs"
    run "ecdsa-sha256-$mode" --key-id KECP256TESTONLY --batch 500 --concurrency 2 --duration "$secs"
    for flush in $flushes; do
        if [[ "$flush" != "$first_flush" ]]; then
            stop_server
            start_mode "$mode" "$flush"
        fi
        run "rsa-single-$mode-flush$flush" --key-id K2JCJMDEHXQW5F --batch 1 --concurrency 32 --duration "$secs"
        sat="$(python3 -c '
import json, sys
best = 0
for line in open(sys.argv[1]):
    r = json.loads(line)
    if r["label"] == sys.argv[2]:
        best = max(best, r["requests_per_s"])
print(int(best))' "$results" "rsa-single-$mode-flush$flush")"
        if ((sat > 1)); then
            run "rsa-single-half-$mode-flush$flush" --key-id K2JCJMDEHXQW5F --batch 1 --concurrency 32 \
                --duration "$secs" --rate "$((sat / 2))" --client-threads 1
        fi
    done
    stop_server
done

echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$log"
"$bin/cdnsign-loadtest" report --input "$results" | tee "$out/report.txt"
cat "$log" >>"$out/report.txt"
echo "== report: $out/report.txt, raw: $results"
