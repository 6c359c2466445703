#!/usr/bin/env python3
"""Offline checks of deploy/, run by deploy/check.sh.

Subcommands:

  validate FILE...       schema validation of rendered manifests with the
                         kubernetes-validate package (strict: unknown fields
                         fail). The Prometheus Operator kinds it has no schema
                         for (ServiceMonitor, PrometheusRule) are skipped by
                         name and get structural checks instead; any other
                         kind without a schema fails.
  consistency FILE       cross-references inside one rendered stream: Service
                         selectors and target ports, ServiceMonitor -> Service
                         -> port, Ingress -> Service, HPA / PDB targets,
                         ConfigMap / Secret references (--external KIND/NAME:
                         an object the operator creates, not rendered on
                         purpose), NetworkPolicy ports, probes, the drain
                         timing (preStop + grace period < termination grace),
                         and no Secret rendered with a token in it.
  adapter RULES HPA...   the prometheus-adapter rules: each maps the Kubernetes
                         namespace and pod, names a metric the gateway
                         exports, and serves every Pods metric the rendered
                         HPAs use; prints a Prometheus rule file of the
                         rules' queries (templates filled in) for promtool.
  dashboard FILE         structure of the Grafana dashboard JSON.
  promql FILE            prints a Prometheus rule file holding every dashboard
                         query (Grafana variables replaced), so that promtool
                         can check their PromQL syntax.
  metrics                extracts the gateway_ metric names used by the
                         dashboard and the alert rules (see --help).

Only the standard library plus PyYAML (a dependency of kubernetes-validate).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import re
import sys
import tomllib
from collections import defaultdict
from typing import Any, Iterable

import yaml

DEPLOY = pathlib.Path(__file__).resolve().parent

# A metric name of the gateway inside a PromQL expression: `gateway_` and
# lower-case letters or underscores, not glued to a longer identifier.
METRIC_RE = re.compile(r"(?<![A-Za-z0-9_:])gateway_[a-z_]+(?![A-Za-z0-9_:])")
HISTOGRAM_SUFFIX_RE = re.compile(r"_(bucket|sum|count)$")

# Kinds without a schema in kubernetes-validate, skipped on purpose.
SKIPPED_CRDS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("monitoring.coreos.com/v1", "PrometheusRule"),
}

DURATION_RE = re.compile(r"^([0-9]+(ms|s|m|h|d|w|y))+$")


class Report:
    """Collects errors so that one run lists all of them."""

    def __init__(self) -> None:
        self.errors: list[str] = []

    def error(self, msg: str) -> None:
        self.errors.append(msg)
        print(f"ERROR {msg}")

    def info(self, msg: str) -> None:
        print(f"  {msg}")

    def exit_code(self) -> int:
        return 1 if self.errors else 0


def load_stream(path: str) -> list[dict[str, Any]]:
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d]


def kn(doc: dict[str, Any]) -> str:
    return f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"


# --------------------------------------------------------------------- validate


def alert_groups() -> list[Any]:
    with open(DEPLOY / "prometheus" / "alerts.yaml") as f:
        return yaml.safe_load(f)["groups"]


def check_servicemonitor(doc: dict[str, Any], rep: Report) -> None:
    spec = doc.get("spec") or {}
    if not (spec.get("selector") or {}).get("matchLabels"):
        rep.error(f"{kn(doc)}: spec.selector.matchLabels is empty")
    endpoints = spec.get("endpoints") or []
    if not endpoints:
        rep.error(f"{kn(doc)}: spec.endpoints is empty")
    for i, ep in enumerate(endpoints):
        if not isinstance(ep.get("port"), str):
            rep.error(f"{kn(doc)}: endpoints[{i}].port must name a Service port")
        if not str(ep.get("path", "/metrics")).startswith("/"):
            rep.error(f"{kn(doc)}: endpoints[{i}].path must start with /")
        for key in ("interval", "scrapeTimeout"):
            if key in ep and not DURATION_RE.match(str(ep[key])):
                rep.error(f"{kn(doc)}: endpoints[{i}].{key} is not a duration: {ep[key]!r}")
        for j, rl in enumerate(ep.get("relabelings", []) + ep.get("metricRelabelings", [])):
            action = rl.get("action", "replace").lower()
            if action not in {"replace", "keep", "drop", "keepequal", "dropequal", "hashmod",
                              "labelmap", "labeldrop", "labelkeep", "lowercase", "uppercase"}:
                rep.error(f"{kn(doc)}: endpoints[{i}] relabeling {j}: unknown action {action!r}")


def check_prometheusrule(doc: dict[str, Any], rep: Report) -> None:
    groups = (doc.get("spec") or {}).get("groups")
    if groups != alert_groups():
        rep.error(f"{kn(doc)}: spec.groups differ from deploy/prometheus/alerts.yaml "
                  "(run deploy/prometheus/render-prometheusrule.py)")


def cmd_validate(args: argparse.Namespace) -> int:
    import jsonschema
    import kubernetes_validate.utils as kv

    rep = Report()
    for path in args.files:
        name = pathlib.Path(path).name
        for doc in load_stream(path):
            key = (doc.get("apiVersion"), doc.get("kind"))
            if key in SKIPPED_CRDS:
                print(f"SKIP  {name}: {kn(doc)} ({key[0]}: CRD without a schema in "
                      "kubernetes-validate; structural checks only)")
                if key[1] == "ServiceMonitor":
                    check_servicemonitor(doc, rep)
                else:
                    check_prometheusrule(doc, rep)
                continue
            passed = []
            for version in args.k8s_version:
                try:
                    passed.append(kv.validate(doc, version, strict=True))
                except kv.SchemaNotFoundError as e:
                    rep.error(f"{name}: {kn(doc)}: {e.message} (not a known CRD either)")
                except kv.VersionNotSupportedError as e:
                    rep.error(f"{name}: {e.message}")
                except jsonschema.ValidationError as e:
                    where = ".".join(str(p) for p in e.path)
                    rep.error(f"{name}: {kn(doc)} against Kubernetes {version}: {where}: {e.message}")
            if len(passed) == len(args.k8s_version):
                print(f"OK    {name}: {kn(doc)} (Kubernetes {', '.join(passed)})")
    return rep.exit_code()


# ------------------------------------------------------------------ consistency


def selects(selector: dict[str, str] | None, labels: dict[str, str] | None) -> bool:
    if not selector:
        return False
    labels = labels or {}
    return all(labels.get(k) == v for k, v in selector.items())


def pod_spec(doc: dict[str, Any]) -> dict[str, Any]:
    return doc["spec"]["template"]["spec"]


def container_ports(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for c in pod_spec(doc).get("containers", []) for p in c.get("ports", [])]


def prestop_seconds(container: dict[str, Any]) -> int:
    pre = (container.get("lifecycle") or {}).get("preStop") or {}
    if "sleep" in pre:
        return int(pre["sleep"]["seconds"])
    cmd = (pre.get("exec") or {}).get("command") or []
    if len(cmd) == 2 and cmd[0] in ("sleep", "/bin/sleep"):
        return int(cmd[1])
    return 0


def cmd_consistency(args: argparse.Namespace) -> int:
    rep = Report()
    docs = load_stream(args.file)
    objs: dict[tuple[str, str, str], dict[str, Any]] = {}
    for d in docs:
        ns = d.get("metadata", {}).get("namespace", "")
        objs[(d["kind"], ns, d["metadata"]["name"])] = d

    def of_kind(*kinds: str) -> Iterable[dict[str, Any]]:
        return (d for d in docs if d["kind"] in kinds)

    def ns_of(d: dict[str, Any]) -> str:
        return d.get("metadata", {}).get("namespace", "")

    workloads = list(of_kind("Deployment", "StatefulSet", "DaemonSet"))
    services = list(of_kind("Service"))

    # Services select pods, and their target ports exist on those pods.
    for svc in services:
        sel = svc["spec"].get("selector")
        matched = [w for w in workloads if ns_of(w) == ns_of(svc)
                   and selects(sel, w["spec"]["template"]["metadata"].get("labels"))]
        if not matched:
            rep.error(f"{kn(svc)}: selector {sel} matches no workload's pods")
        for port in svc["spec"].get("ports", []):
            target = port.get("targetPort", port["port"])
            for w in matched:
                cports = container_ports(w)
                ok = (any(p.get("name") == target for p in cports) if isinstance(target, str)
                      else any(p["containerPort"] == target for p in cports))
                if not ok:
                    rep.error(f"{kn(svc)}: targetPort {target!r} is not a container port of {kn(w)}")
        rep.info(f"{kn(svc)} -> {', '.join(kn(w) for w in matched) or '-'}")

    # ServiceMonitors select Services and name their ports.
    for sm in of_kind("ServiceMonitor"):
        sel = sm["spec"].get("selector", {}).get("matchLabels")
        matched = [s for s in services if ns_of(s) == ns_of(sm) and selects(sel, s["metadata"].get("labels"))]
        if not matched:
            rep.error(f"{kn(sm)}: selector {sel} matches no Service")
        for ep in sm["spec"].get("endpoints", []):
            for s in matched:
                if not any(p.get("name") == ep.get("port") for p in s["spec"].get("ports", [])):
                    rep.error(f"{kn(sm)}: port {ep.get('port')!r} is not a port of {kn(s)}")
        job_label = sm["spec"].get("jobLabel")
        for s in matched:
            job = s["metadata"].get("labels", {}).get(job_label) if job_label else s["metadata"]["name"]
            if job != "gateway":
                rep.error(f"{kn(sm)}: scrape job would be {job!r}; the alert rules and the "
                          "dashboard expect job=\"gateway\"")
        rep.info(f"{kn(sm)} -> {', '.join(kn(s) for s in matched) or '-'}")

    # Ingress backends exist.
    for ing in of_kind("Ingress"):
        for rule in ing["spec"].get("rules", []):
            for path in rule.get("http", {}).get("paths", []):
                backend = path["backend"]["service"]
                svc = objs.get(("Service", ns_of(ing), backend["name"]))
                if svc is None:
                    rep.error(f"{kn(ing)}: backend Service {backend['name']!r} not found")
                    continue
                port = backend["port"]
                ports = svc["spec"].get("ports", [])
                if not any(p.get("name") == port.get("name") if "name" in port
                           else p["port"] == port.get("number") for p in ports):
                    rep.error(f"{kn(ing)}: backend port {port} is not a port of {kn(svc)}")

    # HPA and PDB targets.
    for hpa in of_kind("HorizontalPodAutoscaler"):
        ref = hpa["spec"]["scaleTargetRef"]
        target = objs.get((ref["kind"], ns_of(hpa), ref["name"]))
        lo, hi = hpa["spec"].get("minReplicas", 1), hpa["spec"]["maxReplicas"]
        if target is None:
            rep.error(f"{kn(hpa)}: scale target {ref['kind']}/{ref['name']} not found")
        elif not lo <= target["spec"].get("replicas", 1) <= hi:
            rep.error(f"{kn(hpa)}: {kn(target)} replicas {target['spec'].get('replicas', 1)} "
                      f"outside [{lo}, {hi}]")
        if lo > hi:
            rep.error(f"{kn(hpa)}: minReplicas {lo} > maxReplicas {hi}")
    for pdb in of_kind("PodDisruptionBudget"):
        sel = pdb["spec"]["selector"].get("matchLabels")
        if not any(selects(sel, w["spec"]["template"]["metadata"].get("labels"))
                   for w in workloads if ns_of(w) == ns_of(pdb)):
            rep.error(f"{kn(pdb)}: selector {sel} matches no workload")

    # Workloads: referenced ConfigMaps / Secrets exist (kustomize renamed the
    # generated ones and must have renamed the references), probes use
    # declared ports.
    for w in workloads:
        spec = pod_spec(w)
        refs: list[tuple[str, str]] = []
        for c in spec.get("containers", []) + spec.get("initContainers", []):
            for ef in c.get("envFrom", []):
                if "configMapRef" in ef:
                    refs.append(("ConfigMap", ef["configMapRef"]["name"]))
                if "secretRef" in ef:
                    refs.append(("Secret", ef["secretRef"]["name"]))
            for e in c.get("env", []):
                src = e.get("valueFrom", {})
                if "configMapKeyRef" in src:
                    refs.append(("ConfigMap", src["configMapKeyRef"]["name"]))
                if "secretKeyRef" in src and not src["secretKeyRef"].get("optional"):
                    refs.append(("Secret", src["secretKeyRef"]["name"]))
            names = {p.get("name") for p in c.get("ports", [])}
            for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                port = ((c.get(probe) or {}).get("httpGet") or {}).get("port")
                if isinstance(port, str) and port not in names:
                    rep.error(f"{kn(w)}: {probe} uses port {port!r} that container {c['name']} does not declare")
        for v in spec.get("volumes", []):
            if "configMap" in v:
                refs.append(("ConfigMap", v["configMap"]["name"]))
            if "secret" in v:
                refs.append(("Secret", v["secret"]["secretName"]))
        for kind, name in refs:
            if (kind, ns_of(w), name) not in objs and f"{kind}/{name}" not in args.external:
                rep.error(f"{kn(w)}: references {kind} {name!r}, which is not rendered")

    # The secrets the operator creates are not rendered: a rendered one
    # would put a token in git.
    for ext in args.external:
        kind, _, name = ext.partition("/")
        if any(k == kind and n == name for k, _, n in objs):
            rep.error(f"{ext} is rendered, but must come from the cluster's secret store")

    # NetworkPolicies: named ports exist on the pods they select.
    for np in of_kind("NetworkPolicy"):
        sel = np["spec"]["podSelector"].get("matchLabels")
        pods = [w for w in workloads if ns_of(w) == ns_of(np)
                and selects(sel, w["spec"]["template"]["metadata"].get("labels"))]
        if not pods:
            rep.error(f"{kn(np)}: podSelector {sel} matches no workload")
        names = {p.get("name") for w in pods for c in pod_spec(w).get("containers", [])
                 for p in c.get("ports", [])}
        for rule in np["spec"].get("ingress", []):
            for port in rule.get("ports", []):
                if isinstance(port.get("port"), str) and port["port"] not in names:
                    rep.error(f"{kn(np)}: port {port['port']!r} is not a named port of the pods it selects")

    gateway = next((d for d in of_kind("Deployment") if d["metadata"]["name"] == "gateway"), None)
    if gateway is None:
        rep.error("no Deployment named gateway")
    else:
        check_gateway_deployment(gateway, objs, rep)
    return rep.exit_code()


def check_gateway_deployment(dep: dict[str, Any], objs: dict, rep: Report) -> None:
    """The contract of the gateway binary: ports, probe paths, drain timing."""
    ns = dep["metadata"].get("namespace", "")
    spec = pod_spec(dep)
    c = next((c for c in spec["containers"] if c["name"] == "gateway"), None)
    if c is None:
        rep.error(f"{kn(dep)}: no container named gateway")
        return
    ports = {p.get("name"): p["containerPort"] for p in c.get("ports", [])}
    for name, number in (("http", 3000), ("grpc-admin", 50051), ("ops", 9090)):
        if ports.get(name) != number:
            rep.error(f"{kn(dep)}: container port {name} should be {number}, is {ports.get(name)}")
    for probe, path in (("startupProbe", "/healthz"), ("livenessProbe", "/healthz"),
                        ("readinessProbe", "/readyz")):
        get = (c.get(probe) or {}).get("httpGet") or {}
        if get.get("path") != path or get.get("port") not in ("ops", 9090):
            rep.error(f"{kn(dep)}: {probe} should GET {path} on the ops port, is {get}")

    # Drain timing: the pod is killed terminationGracePeriodSeconds after the
    # deletion starts, which covers the preStop delay and then the gateway's
    # own grace period. Leave 5 s for the process to exit.
    tgps = spec.get("terminationGracePeriodSeconds", 30)
    pre = prestop_seconds(c)
    grace_ms = None
    for v in spec.get("volumes", []):
        cm = objs.get(("ConfigMap", ns, (v.get("configMap") or {}).get("name")))
        if cm and "gateway.toml" in cm.get("data", {}):
            try:
                conf = tomllib.loads(cm["data"]["gateway.toml"])
            except tomllib.TOMLDecodeError as e:
                rep.error(f"{kn(cm)}: gateway.toml is not valid TOML: {e}")
                conf = {}
            grace_ms = conf.get("shutdown", {}).get("grace_period_ms", grace_ms)
    env: dict[str, str] = {}
    for ef in c.get("envFrom", []):
        if "configMapRef" in ef:
            env.update((objs.get(("ConfigMap", ns, ef["configMapRef"]["name"])) or {}).get("data", {}))
    for e in c.get("env", []):
        if "value" in e:
            env[e["name"]] = e["value"]
    if "GATEWAY_SHUTDOWN__GRACE_PERIOD_MS" in env:
        grace_ms = int(env["GATEWAY_SHUTDOWN__GRACE_PERIOD_MS"])
    if grace_ms is None:
        rep.error(f"{kn(dep)}: shutdown.grace_period_ms is set neither in gateway.toml nor in the environment")
        return
    need = pre + grace_ms / 1000 + 5
    if tgps < need:
        rep.error(f"{kn(dep)}: terminationGracePeriodSeconds {tgps} < preStop {pre} s + grace "
                  f"{grace_ms / 1000:g} s + 5 s margin")
    else:
        rep.info(f"{kn(dep)}: drain timing preStop {pre} s + grace {grace_ms / 1000:g} s + 5 s "
                 f"<= terminationGracePeriodSeconds {tgps}")


# -------------------------------------------------------------------- dashboard


def iter_panels(panels: list[dict[str, Any]]) -> Iterable[dict[str, Any]]:
    for p in panels:
        yield p
        yield from iter_panels(p.get("panels", []))


def dashboard_exprs(dash: dict[str, Any]) -> list[tuple[str, str]]:
    """(where, expression) of every query in the dashboard, variables included.

    `where` is usable as the tail of a metric name: panel_<id>_<refId> or
    variable_<name>."""
    out = []
    for p in iter_panels(dash.get("panels", [])):
        for t in p.get("targets", []):
            if t.get("expr"):
                out.append((f"panel_{p.get('id')}_{t.get('refId')}", t["expr"]))
    for v in dash.get("templating", {}).get("list", []):
        if v.get("type") == "query":
            q = v.get("query")
            q = q.get("query") if isinstance(q, dict) else q
            out.append((f"variable_{v['name']}", q or v.get("definition", "")))
    return out


def cmd_adapter(args: argparse.Namespace) -> int:
    rep = Report()
    rules = yaml.safe_load(pathlib.Path(args.rules).read_text())["rules"]
    known = {l.strip() for l in (DEPLOY / "metric-names.txt").read_text().splitlines()
             if l.strip() and not l.startswith("#")}
    served = set()
    queries = []
    for i, rule in enumerate(rules):
        overrides = rule.get("resources", {}).get("overrides", {})
        mapped = {v.get("resource"): k for k, v in overrides.items()}
        for resource in ("namespace", "pod"):
            if resource not in mapped:
                rep.error(f"rule {i}: no label mapped to the {resource} resource")
        series = re.match(r"[a-zA-Z_:][a-zA-Z0-9_:]*", rule.get("seriesQuery", ""))
        if not series or series.group(0) not in known:
            rep.error(f"rule {i}: seriesQuery {rule.get('seriesQuery')!r} names no exported metric")
            continue
        name = rule.get("name", {}).get("as") or series.group(0)
        served.add(name)
        query = (rule["metricsQuery"]
                 .replace("<<.Series>>", series.group(0))
                 .replace("<<.LabelMatchers>>",
                          ",".join(f'{mapped.get(r, r)}="x"' for r in ("namespace", "pod")))
                 .replace("<<.GroupBy>>", ",".join(mapped.get(r, r) for r in ("namespace", "pod"))))
        if "<<" in query:
            rep.error(f"rule {i}: unknown template in metricsQuery {rule['metricsQuery']!r}")
        queries.append({"record": f"adapter:{name}", "expr": query})
    for doc in (d for f in args.hpa for d in load_stream(f)):
        if doc.get("kind") != "HorizontalPodAutoscaler":
            continue
        for m in doc["spec"].get("metrics", []):
            if m["type"] == "Pods" and m["pods"]["metric"]["name"] not in served:
                rep.error(f"{kn(doc)}: Pods metric {m['pods']['metric']['name']!r} "
                          f"is not served by {args.rules}")
            elif m["type"] == "Pods":
                print(f"  {kn(doc)}: Pods metric {m['pods']['metric']['name']} served by the adapter rules",
                      file=sys.stderr)
    print(yaml.safe_dump({"groups": [{"name": "adapter", "rules": queries}]}, sort_keys=False))
    return rep.exit_code()


def cmd_dashboard(args: argparse.Namespace) -> int:
    rep = Report()
    with open(args.file) as f:
        dash = json.load(f)
    for key in ("title", "uid", "panels", "templating", "schemaVersion"):
        if key not in dash:
            rep.error(f"dashboard has no {key!r}")
    variables = {v["name"]: v for v in dash.get("templating", {}).get("list", [])}
    ds = variables.get("DS_PROMETHEUS")
    if not ds or ds.get("type") != "datasource" or ds.get("query") != "prometheus":
        rep.error("dashboard needs a datasource variable DS_PROMETHEUS of type prometheus")
    for name in ("job", "instance"):
        if name not in variables:
            rep.error(f"dashboard has no {name!r} variable")
    want_ds = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
    ids: set[int] = set()
    boxes = []
    n_queries = 0
    for p in iter_panels(dash.get("panels", [])):
        if p.get("id") in ids:
            rep.error(f"panel id {p.get('id')} is used twice")
        ids.add(p.get("id"))
        g = p.get("gridPos", {})
        if g.get("x", 0) + g.get("w", 0) > 24:
            rep.error(f"panel {p.get('id')} {p.get('title')!r} is wider than the grid")
        boxes.append((p.get("id"), g))
        if p.get("type") == "row":
            continue
        if p.get("datasource") != want_ds:
            rep.error(f"panel {p.get('id')} {p.get('title')!r}: datasource is not ${{DS_PROMETHEUS}}")
        if not p.get("targets"):
            rep.error(f"panel {p.get('id')} {p.get('title')!r} has no query")
        for t in p.get("targets", []):
            n_queries += 1
            if t.get("datasource", want_ds) != want_ds:
                rep.error(f"panel {p.get('id')} target {t.get('refId')}: datasource is not ${{DS_PROMETHEUS}}")
            if not t.get("expr"):
                rep.error(f"panel {p.get('id')} target {t.get('refId')} has no expr")
    for i, (ida, a) in enumerate(boxes):
        for idb, b in boxes[i + 1:]:
            if (a["x"] < b["x"] + b["w"] and b["x"] < a["x"] + a["w"]
                    and a["y"] < b["y"] + b["h"] and b["y"] < a["y"] + a["h"]):
                rep.error(f"panels {ida} and {idb} overlap")
    rep.info(f"{len(ids)} panels, {n_queries} queries, variables: {', '.join(variables)}")
    return rep.exit_code()


GRAFANA_INTERVALS = re.compile(r"\$(__rate_interval|__interval|__range)\b|\$\{(__rate_interval|__interval|__range)\}")
GRAFANA_VAR = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)")
LABEL_VALUES = re.compile(r"^\s*label_values\(\s*(.*?)\s*(?:,\s*\w+\s*)?\)\s*$", re.S)


def to_promql(expr: str) -> str | None:
    """The dashboard query as plain PromQL (None for a label_values() without a selector)."""
    m = LABEL_VALUES.match(expr)
    if m:
        expr = m.group(1)
        if not expr:
            return None
    expr = GRAFANA_INTERVALS.sub("5m", expr)
    return GRAFANA_VAR.sub(".*", expr)


def cmd_promql(args: argparse.Namespace) -> int:
    with open(args.file) as f:
        dash = json.load(f)
    rules = []
    for where, expr in dashboard_exprs(dash):
        q = to_promql(expr)
        if q is not None:
            rules.append({"record": f"dashboard:{where}", "expr": q})
    yaml.safe_dump({"groups": [{"name": "dashboard-queries", "rules": rules}]}, sys.stdout,
                   sort_keys=False, width=1000)
    return 0


# ---------------------------------------------------------------------- metrics


def rule_exprs(path: str) -> list[tuple[str, str]]:
    out = []
    for doc in load_stream(path):
        groups = doc.get("groups") or (doc.get("spec") or {}).get("groups") or []
        for g in groups:
            for r in g.get("rules", []):
                out.append((f"{path}: {r.get('alert') or r.get('record')}", str(r.get("expr", ""))))
    return out


def cmd_metrics(args: argparse.Namespace) -> int:
    rep = Report()
    exprs: list[tuple[str, str]] = []
    for d in args.dashboard:
        with open(d) as f:
            exprs += [(f"{d}: {w}", e) for w, e in dashboard_exprs(json.load(f))]
    for r in args.rules:
        exprs += rule_exprs(r)
    raw: set[str] = set()
    for where, expr in exprs:
        found = METRIC_RE.findall(expr)
        raw.update(found)
    base = {HISTOGRAM_SUFFIX_RE.sub("", n) for n in raw}
    raw_sorted, base_sorted = sorted(raw), sorted(base)

    print(f"  {len(exprs)} expressions, {len(raw_sorted)} raw names, {len(base_sorted)} metric names:")
    for n in base_sorted:
        print(f"    {n}")
    if args.out:
        out = pathlib.Path(args.out)
        out.write_text("".join(n + "\n" for n in base_sorted))
        pathlib.Path(str(out) + ".raw").write_text("".join(n + "\n" for n in raw_sorted))
        print(f"  wrote {out} (metric names) and {out}.raw (names as written)")
    if args.known:
        known = {line.strip() for line in open(args.known)
                 if line.strip() and not line.lstrip().startswith("#")}
        for n in base_sorted:
            if n not in known:
                rep.error(f"{n} is used but not listed in {args.known}")
        unused = sorted(known - base)
        if unused:
            print(f"  listed but not used by the dashboard or the rules: {', '.join(unused)}")
    if not base_sorted:
        rep.error("no gateway_ metric found in the dashboard or the rules")
    return rep.exit_code()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("validate")
    p.add_argument("--k8s-version", action="append", required=True)
    p.add_argument("files", nargs="+")
    p.set_defaults(fn=cmd_validate)
    p = sub.add_parser("consistency")
    p.add_argument("--external", action="append", default=[],
                   help="KIND/NAME of an object the operator creates (not rendered)")
    p.add_argument("file")
    p.set_defaults(fn=cmd_consistency)
    p = sub.add_parser("adapter")
    p.add_argument("rules")
    p.add_argument("hpa", nargs="+", help="rendered manifests holding the HPAs")
    p.set_defaults(fn=cmd_adapter)
    p = sub.add_parser("dashboard")
    p.add_argument("file")
    p.set_defaults(fn=cmd_dashboard)
    p = sub.add_parser("promql")
    p.add_argument("file")
    p.set_defaults(fn=cmd_promql)
    p = sub.add_parser("metrics", help="metric names used by dashboards and rule files")
    p.add_argument("--dashboard", action="append", default=[], help="Grafana dashboard JSON")
    p.add_argument("--rules", action="append", default=[], help="rule file or PrometheusRule")
    p.add_argument("--known", help="file of metric names the gateway exports; unknown names fail")
    p.add_argument("--out", help="write the metric names here (histograms by base name) and "
                                 "the names as written to OUT.raw")
    p.set_defaults(fn=cmd_metrics)
    args = ap.parse_args()
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
