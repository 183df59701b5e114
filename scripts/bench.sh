#!/usr/bin/env bash
# Runs the criterion benches and prints their throughput next to `openssl speed` measured in
# the same run, as ratios (only ratios carry across machines).
#
#   scripts/bench.sh            full run (several minutes)
#   scripts/bench.sh --quick    CI mode: tiny measurement times (CDNSIGN_BENCH_QUICK=1)
#
# Environment: CARGO_TARGET_DIR (default target/), BENCH_FEATURES (default "pure-rust", so
# both backends are measured; set it empty for the OpenSSL backend only), OPENSSL_SECONDS
# (default 3; 1 in quick mode). Writes the summary to $CARGO_TARGET_DIR/bench-summary.txt.
set -euo pipefail
cd "$(dirname "$0")/.."

quick=0
if [[ "${1:-}" == "--quick" ]]; then
    quick=1
    shift
fi
target="${CARGO_TARGET_DIR:-target}"
features="${BENCH_FEATURES-pure-rust}"
secs="${OPENSSL_SECONDS:-$([[ $quick == 1 ]] && echo 1 || echo 3)}"
cores="$(nproc)"

feature_args=()
[[ -n "$features" ]] && feature_args=(--features "$features")

echo "== machine: $(nproc) cores, $(uname -m), $(openssl version)"
echo "== load before: $(cut -d' ' -f1-3 /proc/loadavg)"

# Build first so compilation does not overlap the openssl speed runs.
cargo bench --no-run "${feature_args[@]}" --bench signing >/dev/null 2>&1 \
    || cargo bench --no-run "${feature_args[@]}" --bench signing

# openssl speed prints e.g. "rsa 2048 bits 0.000661s 0.000019s 1512.3 52387.1" (sign/s is
# the 4th number after "bits") and "256 bits ecdsa (nistp256) 0.0000s 0.0001s 43500.0 14000.0".
speed() { # $1 = algorithm, $2.. = extra args
    local alg="$1"
    shift
    openssl speed -seconds "$secs" "$@" "$alg" 2>/dev/null \
        | awk -v alg="$alg" '
            alg == "rsa2048" && $1 == "rsa" && $2 == "2048" && $3 == "bits" { print $6; exit }
            alg == "ecdsap256" && $1 == "256" && $4 ~ /nistp256/ { print $7; exit }'
}
echo "== openssl speed (${secs}s each) ..."
rsa1="$(speed rsa2048)"
ec1="$(speed ecdsap256)"
rsaN="$(speed rsa2048 -multi "$cores")"
ecN="$(speed ecdsap256 -multi "$cores")"

echo "== cargo bench (features: ${features:-none}, quick: $quick) ..."
if [[ $quick == 1 ]]; then
    CDNSIGN_BENCH_QUICK=1 cargo bench "${feature_args[@]}" --bench signing "$@"
else
    cargo bench "${feature_args[@]}" --bench signing "$@"
fi

# Same-run openssl figures again after the benches, to show drift from other load.
rsa1b="$(speed rsa2048)"
ec1b="$(speed ecdsap256)"
echo "== load after: $(cut -d' ' -f1-3 /proc/loadavg)"

summary="$target/bench-summary.txt"
python3 - "$target/criterion" "$rsa1" "$ec1" "$rsaN" "$ecN" "$rsa1b" "$ec1b" "$cores" <<'EOF' | tee "$summary"
import json, pathlib, sys
root = pathlib.Path(sys.argv[1])
rsa1, ec1, rsaN, ecN, rsa1b, ec1b = (float(x or 0) for x in sys.argv[2:8])
cores = sys.argv[8]
print(f"openssl speed sign/s: rsa2048 1 core {rsa1:,.0f} (after benches {rsa1b:,.0f}), "
      f"-multi {cores} {rsaN:,.0f}; ecdsap256 1 core {ec1:,.0f} (after {ec1b:,.0f}), -multi {cores} {ecN:,.0f}")
print()
print(f"{'benchmark':<52} {'per second':>14}  vs openssl speed")
rows = []
for bench in sorted(root.glob("**/new/benchmark.json")):
    meta = json.loads(bench.read_text())
    est = json.loads((bench.parent / "estimates.json").read_text())
    elements = (meta.get("throughput") or {}).get("Elements", 1)
    per_s = elements / (est["median"]["point_estimate"] / 1e9)
    fid = meta["full_id"]
    ref = ""
    if fid.startswith("sign/"):
        base = rsa1 if "rsa" in fid else ec1 if "ecdsa" in fid else 0
        if base:
            ref = f"{per_s / base:5.2f} x 1-core {'rsa2048' if 'rsa' in fid else 'ecdsap256'}"
    elif fid.startswith("batch/") and "playlist" not in fid:
        base = rsaN if "rsa" in fid else ecN if "ecdsa" in fid else 0
        if base:
            ref = f"{per_s / base:5.2f} x -multi {cores} {'rsa2048' if 'rsa' in fid else 'ecdsap256'}"
    elif "playlist" in fid:
        ref = "one signature per 1,000 URLs"
    rows.append((fid, per_s, ref))
for fid, per_s, ref in rows:
    print(f"{fid:<52} {per_s:>14,.0f}  {ref}")
EOF
echo "(summary written to $summary)"
