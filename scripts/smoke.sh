#!/usr/bin/env bash
# Starts `cdnsign serve` on its built-in dev config (ports overridden through
# CDNSIGN_* env to free loopback ports), runs the Python grpcio smoke test
# against it, then stops it with SIGTERM and checks it exits 0.
set -euo pipefail
REPO_ROOT="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)"
cd -- "$REPO_ROOT"
PY="${CDNSIGN_TEST_PYTHON:-$REPO_ROOT/.venv/bin/python}"
[[ -x "$PY" ]] || { echo "smoke: $PY missing; run scripts/setup.sh" >&2; exit 1; }

# Same features as the test build, so its artifacts are reused (no second dependency build).
cargo build --quiet --all-features --bin cdnsign
free_port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
GRPC_PORT=$(free_port)
METRICS_PORT=$(free_port)
LOG=$(mktemp)
CDNSIGN_SERVER__LISTEN="127.0.0.1:$GRPC_PORT" CDNSIGN_METRICS__LISTEN="127.0.0.1:$METRICS_PORT" \
    target/debug/cdnsign serve >"$LOG" 2>&1 &
PID=$!
cleanup() { kill "$PID" 2>/dev/null || true; rm -f "$LOG"; }
# `wait` for the server after SIGTERM, at most 60 s (then SIGKILL: the wait fails).
wait_bounded() {
    local pid=$1 rc=0 watchdog
    (
        sleep 60 &
        nap=$!
        trap 'kill "$nap" 2>/dev/null; exit 0' TERM
        wait "$nap" && kill -KILL "$pid" 2>/dev/null
    ) </dev/null >/dev/null 2>&1 &
    watchdog=$!
    wait "$pid" || rc=$?
    kill "$watchdog" 2>/dev/null || true
    wait "$watchdog" 2>/dev/null || true
    return "$rc"
}
trap cleanup EXIT

for _ in $(seq 1 100); do
    grep -q "cdnsign gRPC listening" "$LOG" && break
    kill -0 "$PID" 2>/dev/null || { cat "$LOG"; echo "smoke: server exited" >&2; exit 1; }
    sleep 0.1
done
grep -q "cdnsign gRPC listening" "$LOG" || { cat "$LOG"; echo "smoke: server did not start in 10 s" >&2; exit 1; }

"$PY" tests/python/smoke_grpc.py --addr "127.0.0.1:$GRPC_PORT" --timeout 10

# The metrics the calls above produced must pass promtool's lint and include every
# signing family (purge families join them once purges have run).
METRICS=$(mktemp)
"$PY" -c 'import sys, urllib.request; sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=10).read().decode())' \
    "http://127.0.0.1:$METRICS_PORT/metrics" >"$METRICS"
PROMTOOL="${PROMTOOL:-promtool}"
command -v "$PROMTOOL" >/dev/null || { echo "smoke: promtool missing; run scripts/setup.sh" >&2; exit 1; }
if ! "$PROMTOOL" check metrics <"$METRICS"; then
    echo "smoke: promtool check metrics failed" >&2
    exit 1
fi
for family in cdnsign_urls_signed_total cdnsign_cookies_signed_total cdnsign_signatures_total \
    cdnsign_item_errors_total cdnsign_batch_items_bucket cdnsign_sign_queue_wait_seconds_bucket \
    cdnsign_sign_duration_seconds_bucket cdnsign_pool_queue_depth cdnsign_pool_busy_threads \
    cdnsign_keys_loaded cdnsign_key_reloads_total cdnsign_grpc_requests_total \
    cdnsign_grpc_request_duration_seconds_bucket cdnsign_serving; do
    grep -q "^$family" "$METRICS" || { echo "smoke: /metrics lacks $family" >&2; exit 1; }
done
rm -f "$METRICS"
echo "smoke: /metrics passes promtool check metrics and has every signing family"

kill -TERM "$PID"
rc=0
wait_bounded "$PID" || rc=$?
if [[ $rc -ne 0 ]]; then
    cat "$LOG"
    echo "smoke: server exited $rc after SIGTERM (want 0)" >&2
    exit 1
fi
echo "smoke: server stopped cleanly on SIGTERM"

# A second server with one granted client (a config file, as production has): the grant
# escapes of tests/fixtures/escapes/grant_escapes.json, from grpcio with its bearer token.
TOKEN="smoke-granted-token-TEST-ONLY"
CONF_DIR=$(mktemp -d)
GRPC_PORT=$(free_port)
cat >"$CONF_DIR/cdnsign.toml" <<EOF
[server]
listen = "127.0.0.1:$GRPC_PORT"
[metrics]
listen = ""
[signing]
default_key_id = "K2JCJMDEHXQW5F"
[[keys]]
id = "K2JCJMDEHXQW5F"
path = "$REPO_ROOT/config/dev-keys/TEST-ONLY-cloudfront.pem"
[[clients]]
name = "smoke-granted"
token_sha256 = "$(printf %s "$TOKEN" | sha256sum | cut -d' ' -f1)"
keys = ["K2JCJMDEHXQW5F"]
url_prefixes = ["https://d111111abcdef8.cloudfront.net/hls/"]
EOF
target/debug/cdnsign check-config --config "$CONF_DIR/cdnsign.toml"
LOG=$(mktemp)
target/debug/cdnsign serve --config "$CONF_DIR/cdnsign.toml" >"$LOG" 2>&1 &
PID=$!
trap 'kill "$PID" 2>/dev/null || true; rm -rf "$LOG" "$CONF_DIR"' EXIT
for _ in $(seq 1 100); do
    grep -q "cdnsign gRPC listening" "$LOG" && break
    kill -0 "$PID" 2>/dev/null || { cat "$LOG"; echo "smoke: granted server exited" >&2; exit 1; }
    sleep 0.1
done
"$PY" tests/python/smoke_grpc.py --addr "127.0.0.1:$GRPC_PORT" --timeout 10 \
    --token "$TOKEN" --only-escapes
kill -TERM "$PID"
wait_bounded "$PID" || { cat "$LOG"; echo "smoke: granted server did not exit 0" >&2; exit 1; }
echo "smoke: grant escapes refused for a granted client over grpcio"
