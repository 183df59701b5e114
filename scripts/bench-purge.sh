#!/usr/bin/env bash
# Purge latency and throughput on the embedded store and on PostgreSQL (1 and 3 replicas),
# against the local CloudFront fake; release build. Prints a Markdown table (the numbers in
# docs/performance.md came from this). Needs scripts/setup.sh (PostgreSQL's binaries).
#
#   bash scripts/bench-purge.sh
set -euo pipefail
REPO_ROOT="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)"
cd -- "$REPO_ROOT"
echo "CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | xargs), $(nproc) cores"
CDNSIGN_TEST_PYTHON="${CDNSIGN_TEST_PYTHON:-$REPO_ROOT/.venv/bin/python}" \
    cargo test --release --all-features --test it -- --ignored --nocapture purge_store_benchmark 2>&1 |
    grep -E '^\|'
