#!/usr/bin/env python3
"""The deployment checks of scripts/lint-deploy.sh that need a parser: Kubernetes and
Prometheus YAML shapes, the kustomizations (resources, labels, ports, probes, HPA/PDB
targets), alerts and their runbooks and tests, the Dockerfile's labels and HEALTHCHECK,
the scrape jobs, the Grafana dashboard and its PromQL, and the metric-name allow-list.

Run from the repository root by scripts/lint-deploy.sh (with .venv's Python and PyYAML):

    .venv/bin/python scripts/lint_deploy_checks.py OUT_RULES

Prints one "ok|FAIL|note<TAB>name<TAB>detail" line per check, which the shell formats, and
writes the dashboard's PromQL as a rules file to OUT_RULES for promtool to parse.
"""
import glob, json, re, sys, tomllib
from pathlib import Path

import yaml

out_rules = sys.argv[1]

def report(status, name, detail=""):
    print(f"{status}\t{name}\t{detail.replace(chr(10), ' | ')}")

# Kubernetes manifests and Prometheus files parse, and have the basic shape
# (kustomization.yaml files are checked below).
K8S_GLOBS = ["deploy/kubernetes/*.yaml", "deploy/kubernetes-embedded/*.yaml"]
manifests = sorted(p for g in K8S_GLOBS for p in glob.glob(g)
                   if Path(p).name != "kustomization.yaml")
for path in manifests:
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

# The alert unit tests: every *.yml in this directory is a promtool test file
# (scripts/lint-deploy.sh runs them all; they are parsed, checked for coverage and for
# metric names below). No test files there is a failure.
ALERT_TESTS_DIR = "deploy/prometheus/alerts_test"
alert_tests = sorted(glob.glob(f"{ALERT_TESTS_DIR}/*.yml"))
if not alert_tests:
    report("FAIL", f"alert tests in {ALERT_TESTS_DIR}/", "no *.yml test files there")

for path in sorted(glob.glob("deploy/prometheus/*.yml")) + alert_tests:
    try:
        docs = list(yaml.safe_load_all(open(path)))
        report("ok", f"YAML {path}")
    except Exception as e:  # noqa: BLE001
        report("FAIL", f"YAML {path}", str(e))

# Kustomizations: every listed resource exists; what they build (resources of the bases
# included, delete patches applied) has the workload, HPA, PDB, NetworkPolicy and Service
# agreeing on labels, ports and names. Checked in Python so that no kubectl is needed;
# scripts/lint-deploy.sh also renders them with `kubectl kustomize` when it can.
def load_docs(path):
    return [d for d in yaml.safe_load_all(open(path)) if d is not None]

def kustomize(dirpath, seen=()):
    """The objects a kustomization directory builds (resources and bases, delete
    patches applied, namespace set), and the problems found on the way."""
    d = Path(dirpath).resolve()
    if d in seen:
        return [], [f"{dirpath}: cycle"]
    kpath = d / "kustomization.yaml"
    if not kpath.is_file():
        return [], [f"{dirpath}: no kustomization.yaml"]
    k = yaml.safe_load(kpath.read_text()) or {}
    problems, objs = [], []
    rel = lambda p: str(Path(p).relative_to(Path.cwd()))
    if k.get("apiVersion") != "kustomize.config.k8s.io/v1beta1" or k.get("kind") != "Kustomization":
        problems.append(f"{rel(kpath)}: apiVersion/kind is not kustomize.config.k8s.io/v1beta1 Kustomization")
    for key in ("bases", "patchesStrategicMerge", "patchesJson6902", "commonLabels"):
        if key in k:
            problems.append(f"{rel(kpath)}: deprecated field {key}")
    for r in k.get("resources", []):
        rp = (d / r).resolve()
        if rp.is_dir():
            if d.is_relative_to(rp):
                problems.append(f"{rel(kpath)}: resource {r} contains this kustomization (kustomize refuses it)")
                continue
            sub, subp = kustomize(rp, seen + (d,))
            objs += sub
            problems += subp
        elif rp.is_file():
            if not rp.is_relative_to(d):
                problems.append(f"{rel(kpath)}: file {r} is outside the kustomization root (kustomize refuses it)")
            objs += load_docs(rp)
        else:
            problems.append(f"{rel(kpath)}: resource {r} does not exist")
    for pt in k.get("patches", []):
        text = pt.get("patch")
        if text is None:
            problems.append(f"{rel(kpath)}: only inline patches are checked here")
            continue
        body = yaml.safe_load(text)
        if isinstance(body, dict) and body.get("$patch") == "delete":
            key = (body.get("kind"), body["metadata"]["name"])
            before = len(objs)
            objs = [o for o in objs if (o["kind"], o["metadata"]["name"]) != key]
            if len(objs) == before:
                problems.append(f"{rel(kpath)}: delete patch for {key[0]}/{key[1]}, which is not there")
        elif isinstance(body, list):  # JSON 6902 ops on `target`
            t = pt.get("target", {})
            hit = [o for o in objs if o["kind"] == t.get("kind") and o["metadata"]["name"] == t.get("name")]
            if len(hit) != 1:
                problems.append(f"{rel(kpath)}: patch target {t.get('kind')}/{t.get('name')} matches {len(hit)} objects")
            for op in body:
                if op.get("op") != "remove":
                    problems.append(f"{rel(kpath)}: JSON patch op {op.get('op')!r} is not checked here")
                elif hit:
                    node = hit[0]
                    parts = op["path"].strip("/").split("/")
                    for part in parts[:-1]:
                        node = node.get(part, {})
                    if parts[-1] not in node:
                        problems.append(f"{rel(kpath)}: remove {op['path']}: no such field")
                    else:
                        del node[parts[-1]]
        else:
            problems.append(f"{rel(kpath)}: patch not understood")
    if "namespace" in k:
        for o in objs:
            o.setdefault("metadata", {})["namespace"] = k["namespace"]
    return objs, problems

def matches(selector, labels):
    return bool(selector) and all(labels.get(a) == b for a, b in selector.items())

def check_variant(dirpath, workload_kind):
    objs, problems = kustomize(dirpath)
    by_kind = {}
    for o in objs:
        by_kind.setdefault(o["kind"], []).append(o)
    names = [(o["kind"], o["metadata"]["name"]) for o in objs]
    if len(names) != len(set(names)):
        problems.append(f"duplicate objects in {sorted(names)}")
    if "Secret" in by_kind:
        problems.append("a Secret is in the kustomization (create Secrets with kubectl, never from git)")
    workloads = [o for o in objs if o["kind"] in ("Deployment", "StatefulSet")]
    if [w["kind"] for w in workloads] != [workload_kind]:
        problems.append(f"workloads {[w['kind'] for w in workloads]}, expected one {workload_kind}")
        return objs, problems
    w = workloads[0]
    spec = w["spec"]
    tmpl_labels = spec["template"]["metadata"].get("labels", {})
    if not matches(spec["selector"].get("matchLabels"), tmpl_labels):
        problems.append(f"{workload_kind} selector does not match its pod template labels")
    containers = spec["template"]["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for c in containers for p in c.get("ports", [])}
    for c in containers:
        for probe in ("readinessProbe", "livenessProbe"):
            pr = c.get(probe)
            if not pr or "grpc" not in pr:
                problems.append(f"container {c['name']}: {probe} is not a gRPC health probe")
            elif pr["grpc"].get("port") != ports.get("grpc"):
                problems.append(f"container {c['name']}: {probe} port {pr['grpc'].get('port')} is not the grpc port {ports.get('grpc')}")
    for svc in by_kind.get("Service", []):
        if not matches(svc["spec"].get("selector"), tmpl_labels):
            problems.append(f"Service {svc['metadata']['name']}: selector does not match the pods")
        for sp in svc["spec"].get("ports", []):
            tp = sp.get("targetPort")
            if isinstance(tp, str) and tp not in ports:
                problems.append(f"Service port {sp.get('name')}: targetPort {tp} is no container port")
    for np in by_kind.get("NetworkPolicy", []):
        if not matches(np["spec"]["podSelector"].get("matchLabels"), tmpl_labels):
            problems.append(f"NetworkPolicy {np['metadata']['name']}: podSelector does not match the pods")
        allowed = {}
        for rule in np["spec"].get("ingress", []):
            for pp in rule.get("ports", []):
                if isinstance(pp["port"], str) and pp["port"] not in ports:
                    problems.append(f"NetworkPolicy: port {pp['port']} is no container port")
                allowed[pp["port"]] = rule.get("from")
        if "grpc" not in allowed:
            problems.append("NetworkPolicy: no ingress rule for the grpc port")
        mfrom = allowed.get("metrics")
        if not mfrom or any(not f.get("namespaceSelector", {}).get("matchLabels") for f in mfrom):
            problems.append("NetworkPolicy: the metrics port must be limited to labelled (monitoring) namespaces")
    pdbs, hpas = by_kind.get("PodDisruptionBudget", []), by_kind.get("HorizontalPodAutoscaler", [])
    if workload_kind == "Deployment":
        if len(pdbs) != 1 or len(hpas) != 1 or len(by_kind.get("NetworkPolicy", [])) != 1:
            problems.append("the Deployment variant needs one PodDisruptionBudget, HorizontalPodAutoscaler and NetworkPolicy")
        for pdb in pdbs:
            if pdb["apiVersion"] != "policy/v1":
                problems.append(f"PodDisruptionBudget apiVersion {pdb['apiVersion']}")
            if not matches(pdb["spec"]["selector"].get("matchLabels"), tmpl_labels):
                problems.append("PodDisruptionBudget selector does not match the Deployment's pods")
        for hpa in hpas:
            ref = hpa["spec"]["scaleTargetRef"]
            if hpa["apiVersion"] != "autoscaling/v2":
                problems.append(f"HorizontalPodAutoscaler apiVersion {hpa['apiVersion']}")
            if (ref.get("apiVersion"), ref.get("kind"), ref.get("name")) != ("apps/v1", "Deployment", w["metadata"]["name"]):
                problems.append(f"HorizontalPodAutoscaler targets {ref}, not the Deployment {w['metadata']['name']}")
            if not any(m.get("type") == "Resource" and m["resource"]["name"] == "cpu" for m in hpa["spec"].get("metrics", [])):
                problems.append("HorizontalPodAutoscaler has no CPU resource metric")
            if hpa["spec"].get("minReplicas", 1) < 2:
                problems.append("HorizontalPodAutoscaler minReplicas below 2 (the PDB would block drains or leave no pod)")
            if "replicas" in spec:
                problems.append("the Deployment keeps spec.replicas although the HPA owns it (kustomization patch missing)")
            if not all("cpu" in c.get("resources", {}).get("requests", {}) for c in containers):
                problems.append("a container has no CPU request (the HPA's utilization is relative to it)")
    else:
        if pdbs or hpas:
            problems.append("the one-replica variant must not carry a PodDisruptionBudget or HorizontalPodAutoscaler")
        if spec.get("replicas") != 1:
            problems.append(f"StatefulSet replicas {spec.get('replicas')}, must be 1 (embedded store)")
    return objs, problems

for dirpath, kind in (("deploy/kubernetes", "Deployment"), ("deploy/kubernetes-embedded", "StatefulSet")):
    try:
        objs, problems = check_variant(dirpath, kind)
        if problems:
            report("FAIL", f"kustomization {dirpath}", "; ".join(problems))
        else:
            report("ok", f"kustomization {dirpath} ({', '.join(o['kind'] for o in objs)}; labels, ports, probes, HPA/PDB targets agree)")
    except Exception as e:  # noqa: BLE001
        report("FAIL", f"kustomization {dirpath}", f"{type(e).__name__}: {e}")

# Alerts: each has a runbook_url (an absolute URL, one base for all, its anchor a heading
# of docs/deployment.md) and the repo-relative runbook to the same section; the test files
# in alerts_test/ (each with rule_files ../alerts.yml) show each alert firing at least once
# and quiet at least once.
def gh_anchor(heading):
    a = heading.strip().lower()
    a = re.sub(r"[^\w\- ]", "", a)
    return a.replace(" ", "-")
try:
    anchors = {gh_anchor(m) for m in re.findall(r"^#+ (.+)$", Path("docs/deployment.md").read_text(), re.M)}
    rules = [r for g in yaml.safe_load(open("deploy/prometheus/alerts.yml"))["groups"] for r in g["rules"] if "alert" in r]
    problems, bases = [], set()
    for r in rules:
        ann = r.get("annotations", {})
        url = ann.get("runbook_url", "")
        m = re.fullmatch(r"(https?://[^\s#]+)#([a-z0-9\-_]+)", url)
        if not m:
            problems.append(f"{r['alert']}: runbook_url {url!r} is not an absolute URL with an #anchor")
            continue
        bases.add(m.group(1))
        if m.group(2) not in anchors:
            problems.append(f"{r['alert']}: #{m.group(2)} is no heading in docs/deployment.md")
        if ann.get("runbook") != f"docs/deployment.md#{m.group(2)}":
            problems.append(f"{r['alert']}: runbook {ann.get('runbook')!r} and runbook_url disagree")
        if not m.group(1).endswith("docs/deployment.md"):
            problems.append(f"{r['alert']}: runbook_url does not point at docs/deployment.md")
    if len(bases) > 1:
        problems.append(f"runbook_url bases differ: {sorted(bases)}")
    if problems:
        report("FAIL", "alerts: runbook_url on every alert", "; ".join(problems))
    else:
        report("ok", f"alerts: all {len(rules)} have a runbook_url ({next(iter(bases), '')}#...) to a docs/deployment.md heading")

    tests, problems = [], []
    for path in alert_tests:
        doc = yaml.safe_load(open(path))
        rule_files = [(Path(path).parent / f).resolve() for f in doc.get("rule_files", [])]
        if rule_files != [Path("deploy/prometheus/alerts.yml").resolve()]:
            problems.append(f"{path}: rule_files {doc.get('rule_files')}, expected [../alerts.yml]")
        tests += doc.get("tests") or []
    fires, quiet = set(), set()
    for t in tests:
        for a in t.get("alert_rule_test", []):
            (fires if a.get("exp_alerts") else quiet).add(a["alertname"])
    names = [r["alert"] for r in rules]
    problems += [f"{n}: no case where it fires" for n in names if n not in fires]
    problems += [f"{n}: no case where it stays quiet" for n in names if n not in quiet]
    problems += [f"{n}: tested but not in alerts.yml" for n in sorted((fires | quiet) - set(names))]
    if problems:
        report("FAIL", f"{ALERT_TESTS_DIR}/ covers every alert", "; ".join(problems))
    else:
        report("ok", f"{ALERT_TESTS_DIR}/ ({len(alert_tests)} files, {len(tests)} tests): each of the {len(names)} alerts fires in some case and stays quiet in another")
except Exception as e:  # noqa: BLE001
    report("FAIL", "alerts: runbook and test coverage", f"{type(e).__name__}: {e}")

# Dockerfile: OCI labels, the version label's default follows Cargo.toml, the
# HEALTHCHECK uses `cdnsign health`, and the binary ships without its debug info.
try:
    df = Path("Dockerfile").read_text().replace("\\\n", " ")
    problems = []
    cargo_version = tomllib.loads(Path("Cargo.toml").read_text())["package"]["version"]
    m = re.search(r"^ARG CDNSIGN_VERSION=(\S+)", df, re.M)
    if not m or m.group(1) != cargo_version:
        problems.append(f"ARG CDNSIGN_VERSION={m.group(1) if m else None}, Cargo.toml says {cargo_version}")
    for label in ("title", "description", "version", "revision", "created", "source", "licenses"):
        if f"org.opencontainers.image.{label}=" not in df:
            problems.append(f"no LABEL org.opencontainers.image.{label}")
    if 'org.opencontainers.image.licenses="Apache-2.0"' not in df:
        problems.append("licenses label is not Apache-2.0")
    hc = re.search(r"^HEALTHCHECK .*CMD (\[.*\])", df, re.M)
    if not hc or json.loads(hc.group(1))[:2] != ["/usr/local/bin/cdnsign", "health"] or "--addr" not in hc.group(1):
        problems.append("HEALTHCHECK is not `cdnsign health --addr ...` in exec form")
    if "--only-keep-debug" not in df or "--strip-debug" not in df or "--add-gnu-debuglink" not in df:
        problems.append("the binary's debug info is not split off (objcopy --only-keep-debug / --strip-debug / --add-gnu-debuglink)")
    if not re.search(r"^ARG CDNSIGN_REVISION", df, re.M):
        problems.append("no ARG CDNSIGN_REVISION for build.rs")
    if problems:
        report("FAIL", "Dockerfile: labels, health check, debug info", "; ".join(problems))
    else:
        report("ok", f"Dockerfile: OCI labels (version {cargo_version} as in Cargo.toml), HEALTHCHECK via cdnsign health, debug info split off")
except Exception as e:  # noqa: BLE001
    report("FAIL", "Dockerfile: labels, health check, debug info", f"{type(e).__name__}: {e}")

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
dash = {}
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

# Metric names: every cdnsign_*, grpc_server_* and process_* name in deploy/ must be in
# the allow-list, and none of the deprecated ones may drive an alert or a panel (the
# alert tests may use them, to show that they no longer do).
allowed, deprecated, external = set(), set(), set()
for line in open("deploy/metric-names.txt"):
    words = line.split("#", 1)[0].split()
    if not words:
        continue
    allowed.add(words[0])
    if "deprecated" in words[1:]:
        deprecated.add(words[0])
    if "external" in words[1:]:
        external.add(words[0])
NAME_RE = r"\b(?:cdnsign|grpc_server|process)_[a-z0-9_]*[a-z0-9]"
used = {}
for path in ["deploy/prometheus/alerts.yml", *alert_tests, dash_path]:
    for name in re.findall(NAME_RE, Path(path).read_text()):
        used.setdefault(name, set()).add(path)
# The queries that drive something: alert expressions, panel and variable queries
# (comments and descriptions may name a deprecated family).
driving = [("deploy/prometheus/alerts.yml", r["expr"])
           for g in yaml.safe_load(open("deploy/prometheus/alerts.yml"))["groups"] for r in g["rules"]]
driving += [(dash_path, e) for _, e in exprs]
driving += [(dash_path, json.dumps(v.get("query", ""))) for v in dash.get("templating", {}).get("list", [])]
def family(name):
    base = re.sub(r"_(bucket|sum|count)$", "", name)
    return name if name in allowed else base if base in allowed else None
unknown, stale = [], set()
for name, paths in sorted(used.items()):
    if family(name) is None:
        unknown.append(f"{name} ({', '.join(sorted(paths))})")
for path, expr in driving:
    for name in re.findall(NAME_RE, expr):
        if family(name) in deprecated:
            stale.add(f"{name} ({path})")
if unknown:
    report("FAIL", "metric names in deploy/ are in deploy/metric-names.txt",
           "unknown: " + "; ".join(unknown))
else:
    report("ok", f"metric names: {len(used)} distinct cdnsign_*/grpc_server_*/process_* names in alerts, tests and dashboard, all in deploy/metric-names.txt")
if stale:
    report("FAIL", "no deprecated metric in alerts.yml or the dashboard", "; ".join(sorted(stale)))
else:
    report("ok", f"no deprecated metric ({', '.join(sorted(deprecated))}) in the {len(driving)} alert and dashboard queries")

# Names in the allow-list that the source does not define (yet): a note, not a failure,
# since deploy/ may be written ahead of the code. `external` names come from a crate
# (metrics-process), not from src/.
defined = set()
for path in glob.glob("src/**/*.rs", recursive=True):
    defined.update(re.findall(r'"((?:cdnsign|grpc_server)_[a-z0-9_]+)"', Path(path).read_text()))
missing = sorted(allowed - external - defined)
if missing:
    report("note", "metric names in deploy/metric-names.txt not (yet) defined in src/",
           ", ".join(missing))
else:
    report("ok", f"metric names: all {len(allowed - external)} in deploy/metric-names.txt are defined in src/ (and {len(external)} process_* from metrics-process)")
