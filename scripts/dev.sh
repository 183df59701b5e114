#!/usr/bin/env bash
# Starts cdnsign on its built-in dev config (TEST ONLY key, 127.0.0.1:50051), shows it
# signing (a gRPC client signs three URLs and one bad item, and `cdnsign verify` checks
# the first), then keeps serving in the foreground until Ctrl-C.
set -euo pipefail
REPO_ROOT="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)"
cd -- "$REPO_ROOT"
if ! pkg-config --exists openssl 2>/dev/null; then
    echo "dev: installing libssl-dev and pkg-config (needed by the openssl crate)"
    bash scripts/setup.sh
fi
cargo build --release --bin cdnsign --example sign_client
target/release/cdnsign serve &
PID=$!
trap 'kill $PID 2>/dev/null || true' EXIT INT TERM
for _ in $(seq 1 100); do
    (exec 3<>/dev/tcp/127.0.0.1/50051) 2>/dev/null && break
    kill -0 "$PID" 2>/dev/null || { echo "dev: server exited" >&2; exit 1; }
    sleep 0.1
done
echo
echo "== signing over gRPC (SignUrls)"
OUT=$(target/release/examples/sign_client http://127.0.0.1:50051)
echo "$OUT"
echo
echo "== verifying the first URL with the TEST ONLY public key"
target/release/cdnsign verify --public-key config/dev-keys/TEST-ONLY-cloudfront.pub.pem "$(echo "$OUT" | head -n1)"
echo
echo "cdnsign is serving on 127.0.0.1:50051 (metrics config: 127.0.0.1:9464); Ctrl-C stops it."
wait "$PID"
