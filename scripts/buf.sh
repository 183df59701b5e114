#!/usr/bin/env bash
# API hygiene for proto/: `buf lint` (STANDARD rules, the v1 exceptions listed with their
# reasons in buf.yaml) and `buf breaking` (FILE rules) against the last released API,
# committed as the image proto/baseline/cdnsign-v1.binpb (proto/baseline/README.md).
#
#   bash scripts/buf.sh                      # both checks; exit 1 if either fails
#   bash scripts/buf.sh --update-baseline    # at a release only: re-take the baseline
#
# Uses the buf CLI pinned in scripts/buf/package.json (npm @bufbuild/buf), which
# scripts/setup.sh installs under scripts/buf/node_modules with `npm ci`; falls back to a
# `buf` on PATH (with a note if its version differs from the pin). Offline, about a second.
set -euo pipefail

REPO_ROOT="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)"
cd -- "$REPO_ROOT"

BASELINE=proto/baseline/cdnsign-v1.binpb
PINNED="$(sed -n 's/.*"@bufbuild\/buf": *"\([^"]*\)".*/\1/p' scripts/buf/package.json)"

BUF=""
if [[ -x scripts/buf/node_modules/.bin/buf ]]; then
    BUF=scripts/buf/node_modules/.bin/buf
elif command -v buf >/dev/null 2>&1; then
    BUF="$(command -v buf)"
else
    printf 'FAIL  buf not found (scripts/buf/node_modules/.bin/buf or PATH): run bash scripts/setup.sh\n' >&2
    exit 1
fi
VERSION="$("$BUF" --version 2>&1 | head -n1)"
if [[ "$VERSION" != "$PINNED" ]]; then
    printf 'note  %s is buf %s, scripts/buf/package.json pins %s\n' "$BUF" "$VERSION" "$PINNED"
fi

if [[ "${1:-}" == "--update-baseline" ]]; then
    # No source info: the image is only compared against, and stays small (~5 KB).
    "$BUF" build --exclude-source-info -o "$BASELINE"
    printf 'wrote %s from proto/ (buf %s); commit it with the release\n' "$BASELINE" "$VERSION"
    exit 0
elif [[ $# -gt 0 ]]; then
    printf 'usage: bash scripts/buf.sh [--update-baseline]\n' >&2
    exit 2
fi

failures=0
if out="$("$BUF" lint 2>&1)"; then
    printf 'ok    buf lint (buf %s, buf.yaml: STANDARD with the v1 exceptions)\n' "$VERSION"
else
    printf 'FAIL  buf lint (buf %s)\n%s\n' "$VERSION" "$(sed 's/^/      /' <<<"$out")"
    printf '      (a v1 name that is already released stays: list the rule for its file in buf.yaml with the reason)\n'
    failures=$((failures + 1))
fi

if [[ ! -f "$BASELINE" ]]; then
    printf 'FAIL  buf breaking: %s missing\n' "$BASELINE"
    failures=$((failures + 1))
elif out="$("$BUF" breaking --against "$BASELINE" 2>&1)"; then
    printf 'ok    buf breaking --against %s (FILE rules)\n' "$BASELINE"
else
    printf 'FAIL  buf breaking --against %s (FILE rules)\n%s\n' "$BASELINE" "$(sed 's/^/      /' <<<"$out")"
    printf '      (a released field, value, message or RPC was removed, renumbered, renamed or moved)\n'
    failures=$((failures + 1))
fi

if ((failures)); then
    printf 'buf: %d check(s) failed\n' "$failures"
    exit 1
fi
printf 'buf: all checks passed\n'
