#!/usr/bin/env bash
# Builds release, starts cdnsign on 127.0.0.1 with loadtest/config.toml, sweeps batch sizes
# for RSA-SHA1 and ECDSA-P256 keys (unary, plus streaming at batch 500), probes single-URL
# unary latency at half the measured saturation rate, and writes a text report and an SVG
# plot to $CARGO_TARGET_DIR/loadtest/ (default target/loadtest/). Stops the server on exit.
#
#   scripts/loadtest.sh                      default run, about 3 minutes after the build
#   LOADTEST_SECONDS=4 scripts/loadtest.sh   shorter points
#   LOADTEST_RSS_SECONDS=60 scripts/loadtest.sh   adds a 60 s RSA batch-500 run for RSS growth
#
# Environment: LOADTEST_SECONDS (measured seconds per point, default 7), LOADTEST_BATCHES
# (default "1 10 100 500 1000"), LOADTEST_RSS_SECONDS (default 0 = skip), OPENSSL_SECONDS
# (per openssl speed run, default 1; each point runs it twice: -multi <cores> and 1
# process), CARGO_TARGET_DIR; LOADTEST_SERVER_CPUS / LOADTEST_CLIENT_CPUS / LOADTEST_PIN
# (pinning: with 4 or more cores the server and `openssl speed` get CPUs 0-1 and the load
# generator the rest; see scripts/loadtest-lib.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

target="${CARGO_TARGET_DIR:-target}"
out="$target/loadtest"
secs="${LOADTEST_SECONDS:-7}"
batches="${LOADTEST_BATCHES:-1 10 100 500 1000}"
rss_secs="${LOADTEST_RSS_SECONDS:-0}"
ossl_secs="${OPENSSL_SECONDS:-1}"
addr="http://127.0.0.1:50151"

echo "== building release binaries"
cargo build --release -p cdnsign -p cdnsign-loadtest
bin="$target/release"
mkdir -p "$out"
results="$out/results.jsonl"
log="$out/runs.txt"
: >"$results"
: >"$log"

echo "== starting cdnsign (loadtest/config.toml)"
# shellcheck source=scripts/loadtest-lib.sh
source scripts/loadtest-lib.sh
trap stop_server EXIT
start_server "$out/server.log"

{
    echo "cdnsign load test, $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "machine: $(nproc) cores, $(uname -m), $(openssl version)"
    echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
    pinning
    echo
} | tee -a "$log"

for key in K2JCJMDEHXQW5F KECP256TESTONLY; do
    case $key in K2JCJMDEHXQW5F) name=rsa-sha1 ;; *) name=ecdsa-sha256 ;; esac
    for b in $batches; do
        # Small batches need many requests in flight to fill the signing pool; big ones are
        # split across the pool threads by sign_batch, so two in flight keep it busy.
        if ((b <= 10)); then conc=32; elif ((b < 500)); then conc=4; else conc=2; fi
        run "$name" --key-id "$key" --batch "$b" --concurrency "$conc" --duration "$secs"
    done
    run "$name" --key-id "$key" --batch 500 --concurrency 2 --duration "$secs" --mode stream
done

# Single-URL unary latency at half the saturation rate measured above (batch 1), paced
# from one client thread: the load generator shares the cores with the server, and one
# thread wakes the fewest threads per request (half the client CPU of two threads here).
for key in K2JCJMDEHXQW5F KECP256TESTONLY; do
    case $key in K2JCJMDEHXQW5F) name=rsa-sha1 ;; *) name=ecdsa-sha256 ;; esac
    sat="$(python3 -c '
import json, sys
best = 0
for line in open(sys.argv[1]):
    r = json.loads(line)
    if r["key_id"] == sys.argv[2] and r["batch"] == 1 and r["rate"] is None and r["mode"] == "unary":
        best = max(best, r["requests_per_s"])
print(int(best))' "$results" "$key")"
    if ((sat > 1)); then
        run "$name-half" --key-id "$key" --batch 1 --concurrency 32 --duration "$secs" --rate "$((sat / 2))" --client-threads 1
    fi
done

# RSS over a long RSA run, before the playlist's 10,000-URL messages raise the heap.
if ((rss_secs > 0)); then
    run "rsa-rss-${rss_secs}s" --key-id K2JCJMDEHXQW5F --batch 500 --concurrency 2 --duration "$rss_secs"
fi

# Playlist: 10,000 segment URLs under one wildcard policy = one signature per request.
run "rsa-playlist" --key-id K2JCJMDEHXQW5F --batch 10000 --playlist --concurrency 2 --duration "$secs"

echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$log"
"$bin/cdnsign-loadtest" report --input "$results" --svg "$out/loadtest.svg" | tee "$out/report.txt"
cat "$log" >>"$out/report.txt"
echo "== report: $out/report.txt, plot: $out/loadtest.svg, raw: $results"
