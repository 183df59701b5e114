#!/usr/bin/env bash
# Supply-chain checks with cargo-deny (deny.toml): licenses, bans and sources always;
# RustSec advisories whenever an advisory database can be had.
#
#   bash scripts/deny.sh
#
# Checks the main workspace (cdnsign, loadtest; all features) and the fuzz workspace.
# Installs cargo-deny 0.20.2 if missing or another version (cargo install --locked: 4-11 min on 2 cores).
#
# Advisories need the RustSec database, a git repository on GitHub. In order:
#   1. CARGO_DENY_ADVISORY_DB=<dir>: a local copy (a clone of rustsec/advisory-db, or an
#      unpacked snapshot with its crates/ directory). Used offline, never fetched.
#   2. cargo deny fetch: the normal online path (CI with GitHub access).
#   3. a database fetched earlier into $CARGO_HOME/advisory-dbs (used offline, with its age).
#   4. none: the advisory check is SKIPPED, loudly. CDNSIGN_REQUIRE_ADVISORIES=1 turns the
#      skip into a failure (set it wherever the database is reachable).
# A matching advisory always fails the run.
set -euo pipefail

REPO_ROOT="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)"
cd -- "$REPO_ROOT"

log() { printf '[deny] %s\n' "$*"; }
die() { printf '[deny] ERROR: %s\n' "$*" >&2; exit 1; }

# Pinned: a new release may need a newer Rust or read deny.toml differently.
CARGO_DENY_VERSION=0.20.2
if [[ "$(cargo deny --version 2>/dev/null)" != "cargo-deny $CARGO_DENY_VERSION" ]]; then
    log "cargo-deny $CARGO_DENY_VERSION not found: cargo install cargo-deny --version $CARGO_DENY_VERSION --locked"
    start=$(date +%s)
    cargo install cargo-deny --version "$CARGO_DENY_VERSION" --locked
    log "cargo-deny installed in $(($(date +%s) - start)) s"
fi
log "$(cargo deny --version)"

MANIFESTS=(Cargo.toml fuzz/Cargo.toml)
failed=()

# Crate sources must be present for the license check (a no-op when already fetched).
for m in "${MANIFESTS[@]}"; do
    cargo fetch --locked --manifest-path "$m" >/dev/null
done

# ------------------------------------------------------------ licenses, bans, sources

for m in "${MANIFESTS[@]}"; do
    log "licenses, bans, sources: $m"
    if ! cargo deny --locked --manifest-path "$m" --config deny.toml \
        check licenses bans sources; then
        failed+=("licenses/bans/sources ($m)")
    fi
done

# ------------------------------------------------------------ advisories

CARGO_HOME="${CARGO_HOME:-$HOME/.cargo}"
tmp="$(mktemp -d)"
trap 'rm -rf -- "$tmp"' EXIT

# Where cargo-deny keeps the default database under a db-path: it names the directory
# after a hash of the URL, which it prints when a fetch fails. Ask it rather than guess.
db_dir_under() {
    local db_path="$1" cfg="$tmp/probe.toml" dir
    sed "/^\[advisories\]/a db-path = \"$db_path\"" deny.toml >"$cfg"
    dir="$(cargo deny --config "$cfg" fetch db 2>&1 |
        grep -o "$db_path/advisory-db-[0-9a-f]*" | head -n1 || true)"
    # Known name for the default URL (cargo-deny 0.20), if the probe printed nothing.
    printf '%s\n' "${dir:-$db_path/advisory-db-3157b0e258782691}"
}

newest_advisory_date() {
    grep -rhoE '^date = "[0-9]{4}-[0-9]{2}-[0-9]{2}"' "$1/crates" 2>/dev/null |
        sort | tail -n1 | grep -oE '[0-9-]{10}' || echo unknown
}

run_advisories() { # run_advisories CONFIG DESCRIPTION
    log "advisories: $2"
    local m
    for m in "${MANIFESTS[@]}"; do
        if ! cargo deny --offline --locked --manifest-path "$m" --config "$1" check advisories; then
            failed+=("advisories ($m)")
        fi
    done
}

advisories_done=0
if [[ -n "${CARGO_DENY_ADVISORY_DB:-}" ]]; then
    src="$CARGO_DENY_ADVISORY_DB"
    [[ -d "$src/crates" ]] || die "CARGO_DENY_ADVISORY_DB=$src has no crates/ directory"
    if [[ -f "$src/SNAPSHOT.txt" ]]; then
        log "advisory database: snapshot dated $(grep -m1 -oE '[0-9]{4}-[0-9]{2}-[0-9]{2}' "$src/SNAPSHOT.txt" || echo unknown) ($src/SNAPSHOT.txt)"
    fi
    db_path="$tmp/advisory-dbs"
    mkdir -p -- "$db_path"
    dest="$(db_dir_under "$db_path")"
    # cargo-deny reads the database's HEAD commit time, so it must be a git repository.
    # A plain snapshot becomes one, committed at its newest advisory's date so the age
    # shown (and cargo-deny's staleness limit) reflect the snapshot, not today.
    if git -C "$src" rev-parse --git-dir >/dev/null 2>&1; then
        git clone --quiet --no-hardlinks "$src" "$dest"
    else
        cp -R -- "$src" "$dest"
        newest="$(newest_advisory_date "$dest")"
        [[ "$newest" == unknown ]] && newest="$(date -u +%F)"
        git -C "$dest" init -q -b main
        git -C "$dest" add -A
        GIT_COMMITTER_DATE="${newest}T00:00:00Z" GIT_AUTHOR_DATE="${newest}T00:00:00Z" \
            git -C "$dest" -c user.name=deny.sh -c user.email=deny.sh@localhost \
            commit -q -m "snapshot of $src"
    fi
    sed "/^\[advisories\]/a db-path = \"$db_path\"" deny.toml >"$tmp/deny-local-db.toml"
    run_advisories "$tmp/deny-local-db.toml" \
        "local database $src (newest advisory $(newest_advisory_date "$dest"))"
    advisories_done=1
elif timeout 120 cargo deny --config deny.toml fetch db >"$tmp/fetch.log" 2>&1; then
    run_advisories deny.toml "freshly fetched database"
    advisories_done=1
else
    existing=""
    for d in "$CARGO_HOME"/advisory-dbs/advisory-db-*; do
        if [[ -d "$d/crates" ]] && git -C "$d" rev-parse -q --verify HEAD >/dev/null 2>&1; then
            existing="$d"
            break
        fi
    done
    if [[ -n "$existing" ]]; then
        age="$(git -C "$existing" show -s --format=%cs HEAD 2>/dev/null || echo unknown)"
        log "WARNING: could not fetch the advisory database; using the copy fetched earlier ($existing, last commit $age)"
        run_advisories deny.toml "database fetched earlier (last commit $age)"
        advisories_done=1
    fi
fi

if ((!advisories_done)); then
    reason="$(grep -m1 -oE 'Could not resolve host: [^ ]+' "$tmp/fetch.log" ||
        grep -m1 -oE 'fatal: .{0,60}' "$tmp/fetch.log" || true)"
    cat >&2 <<EOF

[deny] ################################################################################
[deny] ##  ADVISORIES SKIPPED: no RustSec advisory database is reachable.
[deny] ##  The database lives in a git repository on GitHub, which this machine cannot
[deny] ##  reach (${reason:-fetch failed}), and no local copy was given.
[deny] ##  Licenses, bans and sources WERE checked. To check advisories, run this where
[deny] ##  GitHub is reachable, or set CARGO_DENY_ADVISORY_DB to a local copy of
[deny] ##  rustsec/advisory-db. CDNSIGN_REQUIRE_ADVISORIES=1 makes this skip fatal.
[deny] ################################################################################

EOF
    if [[ "${CDNSIGN_REQUIRE_ADVISORIES:-0}" == 1 ]]; then
        failed+=("advisories (skipped, CDNSIGN_REQUIRE_ADVISORIES=1)")
    fi
fi

if ((${#failed[@]})); then
    log "FAILED: ${failed[*]}"
    exit 1
fi
if ((advisories_done)); then
    log "all checks passed (licenses, bans, sources, advisories)"
else
    log "licenses, bans, sources passed; advisories SKIPPED (see above)"
fi
