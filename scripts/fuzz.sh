#!/usr/bin/env bash
# Builds cdnsign's cargo-fuzz targets and runs each for a bounded time.
#
#   bash scripts/fuzz.sh [SECONDS] [TARGET...]     # default: 20 s each, every target
#
# Exits non-zero when a target crashes (panic, failed invariant, sanitizer report,
# timeout or OOM) and prints the reproducer path and the command to replay it.
#
# The toolchain here is stable Rust; cargo-fuzz needs nightly-only -Z flags, so this
# script sets RUSTC_BOOTSTRAP=1 for the fuzz build only (see docs/security-tooling.md).
#
# Environment:
#   FUZZ_SANITIZER=address|none   (default address; "none" builds faster and runs ~2x
#                                  more executions; our crate forbids unsafe code)
#   FUZZ_BUILD=release|dev        (default release: optimised, one codegen unit, the build
#                                  for real fuzzing; "dev": unoptimised, several times
#                                  faster to build and slower to run, for the CI smoke run)
#   FUZZ_TARGET_DIR               cargo target dir for the fuzz crate (default fuzz/target)
#   FUZZ_WORK_DIR                 where run corpora, logs and artifacts go
#                                 (default fuzz/artifacts/run-<UTC time>)
#   FUZZ_EXTRA_ARGS               extra libFuzzer flags, e.g. "-jobs=2 -workers=2"
#
# The committed seed corpus (fuzz/corpus/<target>) is read, never written: new inputs
# go to the run's own corpus directory, so a CI run leaves the checkout clean.
set -euo pipefail

REPO_ROOT="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)"
cd -- "$REPO_ROOT"

SECONDS_EACH="${1:-20}"
shift || true
if ! [[ "$SECONDS_EACH" =~ ^[0-9]+$ ]] || ((SECONDS_EACH < 1)); then
    echo "usage: bash scripts/fuzz.sh [SECONDS] [TARGET...]" >&2
    exit 2
fi
ALL_TARGETS=(policy url config request auth playlist)
TARGETS=("$@")
((${#TARGETS[@]})) || TARGETS=("${ALL_TARGETS[@]}")

SANITIZER="${FUZZ_SANITIZER:-address}"
TARGET_DIR="${FUZZ_TARGET_DIR:-$REPO_ROOT/fuzz/target}"
WORK_DIR="${FUZZ_WORK_DIR:-$REPO_ROOT/fuzz/artifacts/run-$(date -u +%Y%m%dT%H%M%SZ)}"
# Word-splitting of the extra flags is intended.
read -r -a EXTRA <<<"${FUZZ_EXTRA_ARGS:-}"

log() { printf '[fuzz] %s\n' "$*"; }
die() { printf '[fuzz] ERROR: %s\n' "$*" >&2; exit 1; }

# ------------------------------------------------------------------ cargo-fuzz

# Pinned: a new release may need a newer Rust.
CARGO_FUZZ_VERSION=0.13.2
if [[ "$(cargo fuzz --version 2>/dev/null)" != "cargo-fuzz $CARGO_FUZZ_VERSION" ]]; then
    log "cargo-fuzz $CARGO_FUZZ_VERSION not found: cargo install cargo-fuzz --version $CARGO_FUZZ_VERSION --locked (about 2 min on 2 cores)"
    start=$(date +%s)
    cargo install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked
    log "cargo-fuzz installed in $(($(date +%s) - start)) s"
fi
log "$(cargo fuzz --version), $(rustc --version)"

# Stable rustc refuses -Z flags unless told it is bootstrapping. Scoped to the fuzz
# commands below; nothing else in the repository needs it.
export RUSTC_BOOTSTRAP=1
# A CARGO_TARGET_DIR meant for the main crate must not collect the instrumented build.
unset CARGO_TARGET_DIR

# -a: debug assertions (and so overflow checks) on, in an optimised build.
FUZZ_FLAGS=(--fuzz-dir fuzz -a --sanitizer "$SANITIZER" --target-dir "$TARGET_DIR")
case "${FUZZ_BUILD:-release}" in
    release) ;;
    dev)
        FUZZ_FLAGS+=(--dev)
        # Line tables are enough for a crash's backtrace and link much faster.
        export CARGO_PROFILE_DEV_DEBUG=line-tables-only
        ;;
    *) die "FUZZ_BUILD must be release or dev, not ${FUZZ_BUILD}" ;;
esac

log "building ${TARGETS[*]} (${FUZZ_BUILD:-release} build, sanitizer: $SANITIZER, target dir: $TARGET_DIR)"
start=$(date +%s)
for t in "${TARGETS[@]}"; do
    [[ -f "fuzz/fuzz_targets/$t.rs" ]] || die "no fuzz target $t (have: ${ALL_TARGETS[*]})"
done
if ((${#TARGETS[@]} == ${#ALL_TARGETS[@]})); then
    cargo fuzz build "${FUZZ_FLAGS[@]}"
else
    for t in "${TARGETS[@]}"; do cargo fuzz build "${FUZZ_FLAGS[@]}" "$t"; done
fi
log "build took $(($(date +%s) - start)) s"

# ------------------------------------------------------------------ runs

mkdir -p -- "$WORK_DIR"
failed=()
summary=()
for t in "${TARGETS[@]}"; do
    corpus="$WORK_DIR/corpus/$t"
    artifacts="$WORK_DIR/crashes/$t"
    runlog="$WORK_DIR/$t.log"
    mkdir -p -- "$corpus" "$artifacts"
    log "running $t for ${SECONDS_EACH}s (log: $runlog)"
    status=0
    # Corpus dirs: the run's own first (libFuzzer writes new inputs there), then the
    # committed seeds. -timeout: one input taking over 10 s is a bug (hang).
    cargo fuzz run "${FUZZ_FLAGS[@]}" "$t" "$corpus" "fuzz/corpus/$t" -- \
        -max_total_time="$SECONDS_EACH" -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1 -artifact_prefix="$artifacts/" "${EXTRA[@]}" \
        >"$runlog" 2>&1 || status=$?
    done_line="$(grep -E '^#[0-9]+[[:space:]]+DONE' "$runlog" | tail -n1 || true)"
    execs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$runlog" | tail -n1)"
    cov="$(sed -n 's/.*DONE *cov: \([0-9]*\) ft: \([0-9]*\) corp: \([0-9]*\).*/cov \1, features \2, corpus \3/p' <<<"$done_line")"
    crash_files=()
    while IFS= read -r -d '' f; do crash_files+=("$f"); done \
        < <(find "$artifacts" -type f -print0 2>/dev/null)
    if ((status != 0)) || ((${#crash_files[@]})); then
        failed+=("$t")
        summary+=("$t: FAILED (exit $status) after ${execs:-?} executions")
        log "$t FAILED (exit $status). Last lines of $runlog:"
        tail -n 40 "$runlog" | sed 's/^/    /'
        for f in "${crash_files[@]}"; do
            log "reproducer: $f"
            log "  replay:   RUSTC_BOOTSTRAP=1 cargo fuzz run --fuzz-dir fuzz -a --sanitizer $SANITIZER $t $f"
            log "  minimise: RUSTC_BOOTSTRAP=1 cargo fuzz tmin --fuzz-dir fuzz -a --sanitizer $SANITIZER $t $f"
        done
    else
        summary+=("$t: ok, ${execs:-?} executions in ${SECONDS_EACH}s, ${cov:-no stats}")
    fi
done

echo
log "summary (work dir $WORK_DIR):"
for line in "${summary[@]}"; do log "  $line"; done
if ((${#failed[@]})); then
    log "${#failed[@]} target(s) crashed: ${failed[*]}"
    exit 1
fi
log "no crashes"
