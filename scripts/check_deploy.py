#!/usr/bin/env python3
"""Checks of deploy/kubernetes that no schema validator makes.

Called by scripts/check-deploy.sh, which renders the kustomizations and runs
the external tools (kubernetes-validate, promtool, the exporter's
--check-config) on what this script writes out.

  check_deploy.py sync [--write]
      deploy/kubernetes/base/prometheusrule.yaml and base/dashboards/
      are generated from alerts/webhook-log-exporter.rules.yml and
      dashboards/*.json (kustomize reads no file outside its folder without
      --load-restrictor, which `kubectl apply -k` does not take). Without
      --write: fail on any difference. With it: rewrite them.

  check_deploy.py check OUT NAME=RENDERED.yaml...
      Checks every rendered kustomization and writes, under OUT/NAME/:
      builtin.yaml (the objects of built-in kinds, for kubernetes-validate),
      rules.yml (the PrometheusRule's spec, for promtool) and config/ +
      secrets/ (the exporter's configuration as the pod sees it, for
      --check-config). Prints one line per kustomization.
"""

import base64
import json
import re
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
BASE = ROOT / "deploy" / "kubernetes" / "base"
RULES = ROOT / "alerts" / "webhook-log-exporter.rules.yml"
DASHBOARDS = sorted((ROOT / "dashboards").glob("*.json"))
NAME = "webhook-log-exporter"
CRD_GROUP = "monitoring.coreos.com/v1"
POD_INDEX = "metadata.labels['apps.kubernetes.io/pod-index']"
CONFIG_DIR = "/etc/webhook-log-exporter/config"
SECRETS_DIR = "/etc/webhook-log-exporter/secrets"
STATE_DIR = "/var/lib/webhook-log-exporter"

PROMETHEUS_RULE_HEAD = """\
# GENERATED from alerts/webhook-log-exporter.rules.yml by
# `bash scripts/check-deploy.sh --write`: do not edit here. CI fails when the
# two differ. Its groups are that file's, comments included.
apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata:
  name: webhook-log-exporter
  labels:
    app.kubernetes.io/name: webhook-log-exporter
spec:
"""


class Problems:
    def __init__(self):
        self.items = []

    def add(self, where, what):
        self.items.append(f"{where}: {what}")

    def need(self, ok, where, what):
        if not ok:
            self.add(where, what)
        return ok


def prometheus_rule_text():
    """The rules file from `groups:` on, as the PrometheusRule's spec."""
    lines = RULES.read_text(encoding="utf-8").splitlines()
    start = next(i for i, l in enumerate(lines) if l.startswith("groups:"))
    body = "".join(("  " + l if l.strip() else "") + "\n" for l in lines[start:])
    return PROMETHEUS_RULE_HEAD + body


def expected_copies():
    out = {BASE / "prometheusrule.yaml": prometheus_rule_text().encode("utf-8")}
    for d in DASHBOARDS:
        out[BASE / "dashboards" / d.name] = d.read_bytes()
    return out


def sync(write):
    expected = expected_copies()
    stale = [p for p, b in expected.items() if not p.exists() or p.read_bytes() != b]
    extra = [
        p for p in (BASE / "dashboards").glob("*") if p not in expected
    ] if (BASE / "dashboards").exists() else []
    if write:
        for p in stale:
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(expected[p])
        for p in extra:
            p.unlink()
        print(f"sync: {len(stale)} file(s) rewritten, {len(extra)} removed")
        return 0
    if stale or extra:
        for p in stale:
            print(f"sync: {p.relative_to(ROOT)} differs from its source", file=sys.stderr)
        for p in extra:
            print(f"sync: {p.relative_to(ROOT)} has no source in dashboards/", file=sys.stderr)
        print("sync: run `bash scripts/check-deploy.sh --write` and commit", file=sys.stderr)
        return 1
    print(f"sync: {len(expected)} generated file(s) equal their sources")
    return 0


def key(obj):
    return obj.get("kind"), obj.get("metadata", {}).get("name")


def labels_match(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def check_pod(p, where, sts):
    spec = sts["spec"]["template"]["spec"]
    pod_sc = spec.get("securityContext", {})
    p.need(pod_sc.get("runAsNonRoot") is True, where, "pod securityContext.runAsNonRoot must be true")
    p.need(
        isinstance(pod_sc.get("runAsUser"), int) and pod_sc["runAsUser"] > 0,
        where,
        "pod securityContext.runAsUser must be a non-root uid",
    )
    p.need("fsGroup" in pod_sc, where, "pod securityContext.fsGroup must make the state volume writable")
    p.need(spec.get("automountServiceAccountToken") is False, where, "the pod needs no service account token")
    containers = spec.get("containers", [])
    p.need(len(containers) == 1, where, "one container")
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    claims = {c["metadata"]["name"] for c in sts["spec"].get("volumeClaimTemplates", [])}
    for c in containers:
        cw = f"{where} container {c.get('name')}"
        sc = c.get("securityContext", {})
        seccomp = sc.get("seccompProfile", pod_sc.get("seccompProfile", {})).get("type")
        p.need(seccomp in ("RuntimeDefault", "Localhost"), cw, "needs a seccomp profile")
        p.need(sc.get("allowPrivilegeEscalation") is False, cw, "allowPrivilegeEscalation must be false")
        p.need(sc.get("readOnlyRootFilesystem") is True, cw, "readOnlyRootFilesystem must be true")
        p.need(sc.get("privileged") in (None, False), cw, "must not be privileged")
        p.need(sc.get("capabilities", {}).get("drop") == ["ALL"], cw, "must drop ALL capabilities")
        p.need(not sc.get("capabilities", {}).get("add"), cw, "must add no capability")
        ports = {pt.get("name"): pt for pt in c.get("ports", [])}
        p.need("metrics" in ports, cw, "needs a port named metrics")
        for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/ready")):
            got = c.get(probe, {}).get("httpGet", {})
            p.need(got.get("path") == path and got.get("port") == "metrics", cw, f"{probe} must GET {path} on port metrics")
        res = c.get("resources", {})
        p.need("memory" in res.get("limits", {}), cw, "needs a memory limit")
        p.need({"cpu", "memory"} <= set(res.get("requests", {})), cw, "needs cpu and memory requests")
        mounts = {m["mountPath"]: m for m in c.get("volumeMounts", [])}
        for path in (CONFIG_DIR, SECRETS_DIR):
            p.need(path in mounts and mounts[path].get("readOnly") is True, cw, f"{path} must be mounted read-only")
        cfg = volumes.get(mounts.get(CONFIG_DIR, {}).get("name"), {})
        p.need("configMap" in cfg, cw, f"{CONFIG_DIR} must come from a ConfigMap")
        sec = volumes.get(mounts.get(SECRETS_DIR, {}).get("name"), {})
        p.need("secret" in sec, cw, f"{SECRETS_DIR} must come from a Secret")
        p.need(mounts.get(STATE_DIR, {}).get("name") in claims, cw, f"{STATE_DIR} must be a volumeClaimTemplate (the state file)")
        for e in c.get("env", []):
            if re.search(r"SECRET|TOKEN|PASSWORD|KEY", e["name"], re.I):
                p.need("value" not in e, cw, f"env {e['name']} must come from a secretKeyRef, not a literal")
        args = c.get("args", [])
        p.need(f"--config.file={CONFIG_DIR}/config.yml" in args, cw, "must read the mounted config")
    return spec, volumes


def check_shards(p, where, sts, container):
    env = {e["name"]: e for e in container.get("env", [])}
    replicas = sts["spec"].get("replicas", 1)
    if "SHARD" not in env and "TOTAL_SHARDS" not in env:
        p.need(replicas == 1, where, f"{replicas} unsharded replicas would count every delivery {replicas} times")
        return 1
    shard = env.get("SHARD", {})
    p.need(
        shard.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == POD_INDEX,
        where,
        "SHARD must come from the pod index label through the downward API",
    )
    total = env.get("TOTAL_SHARDS", {}).get("value")
    p.need(total == str(replicas), where, f"TOTAL_SHARDS {total!r} must equal replicas {replicas}")
    return replicas


def check_service_monitor(p, where, sm, services):
    spec = sm.get("spec", {})
    p.need(sm.get("apiVersion") == CRD_GROUP, where, f"apiVersion must be {CRD_GROUP}")
    allowed = {"jobLabel", "selector", "endpoints", "namespaceSelector", "targetLabels", "podTargetLabels", "sampleLimit"}
    p.need(set(spec) <= allowed, where, f"unexpected spec keys {sorted(set(spec) - allowed)}")
    sel = spec.get("selector", {}).get("matchLabels", {})
    targets = [s for s in services if labels_match(sel, s["metadata"].get("labels", {}))]
    if not p.need(len(targets) == 1, where, f"selector {sel} must select exactly one Service, selects {len(targets)}"):
        return
    svc = targets[0]
    svc_labels = svc["metadata"].get("labels", {})
    p.need(svc_labels.get(spec.get("jobLabel")) == NAME, where, f"jobLabel must name a Service label whose value is {NAME} (the rules' job)")
    port_names = {pt.get("name") for pt in svc["spec"].get("ports", [])}
    eps = spec.get("endpoints", [])
    p.need(bool(eps), where, "needs endpoints")
    ep_allowed = {"port", "path", "interval", "scrapeTimeout", "scheme", "tlsConfig", "basicAuth", "authorization", "honorLabels", "relabelings", "metricRelabelings"}
    for ep in eps:
        p.need(set(ep) <= ep_allowed, where, f"unexpected endpoint keys {sorted(set(ep) - ep_allowed)}")
        p.need(ep.get("port") in port_names, where, f"endpoint port {ep.get('port')!r} is not a named port of Service {svc['metadata']['name']}")
        p.need(ep.get("path", "/metrics") == "/metrics", where, "endpoint path must be /metrics")
        for k in ("interval", "scrapeTimeout"):
            if k in ep:
                p.need(re.fullmatch(r"\d+(ms|s|m|h)", str(ep[k])) is not None, where, f"{k} {ep[k]!r} is not a duration")


def check_prometheus_rule(p, where, pr):
    p.need(pr.get("apiVersion") == CRD_GROUP, where, f"apiVersion must be {CRD_GROUP}")
    spec = pr.get("spec", {})
    p.need(set(spec) == {"groups"}, where, "spec must hold groups only")
    group_keys = {"name", "interval", "rules", "limit", "query_offset", "labels", "partial_response_strategy"}
    rule_keys = {"record", "alert", "expr", "for", "keep_firing_for", "labels", "annotations"}
    for g in spec.get("groups", []):
        gw = f"{where} group {g.get('name')}"
        p.need(isinstance(g.get("name"), str) and g["name"], gw, "needs a name")
        p.need(set(g) <= group_keys, gw, f"unexpected keys {sorted(set(g) - group_keys)}")
        for r in g.get("rules", []):
            rw = f"{gw} rule {r.get('alert') or r.get('record')}"
            p.need(set(r) <= rule_keys, rw, f"unexpected keys {sorted(set(r) - rule_keys)}")
            p.need(("alert" in r) != ("record" in r), rw, "needs exactly one of alert and record")
            p.need(isinstance(r.get("expr"), str) and r["expr"].strip(), rw, "needs an expr")
            for k in ("labels", "annotations"):
                p.need(all(isinstance(v, str) for v in r.get(k, {}).values()), rw, f"{k} must be strings")
    shipped = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    p.need(spec == shipped, where, f"groups differ from {RULES.relative_to(ROOT)}")


def check_dashboards(p, where, cms):
    boards = [cm for cm in cms if cm["metadata"].get("labels", {}).get("grafana_dashboard") == "1"]
    found = {}
    for cm in boards:
        for k, v in cm.get("data", {}).items():
            found[k] = v
    for d in DASHBOARDS:
        if p.need(d.name in found, where, f"no grafana_dashboard ConfigMap holds {d.name}"):
            p.need(found[d.name] == d.read_text(encoding="utf-8"), where, f"{d.name} differs from dashboards/{d.name}")
            json.loads(found[d.name])
    p.need(set(found) == {d.name for d in DASHBOARDS}, where, f"dashboard ConfigMaps hold {sorted(found)}")
    return len(found)


def check_config(p, where, text):
    """Secrets come from files or ${VAR}s, never literals in the ConfigMap."""
    cfg = yaml.safe_load(text)
    p.need(str(cfg.get("global", {}).get("state_file", "")).startswith(STATE_DIR + "/"), where, f"state_file must be on the state volume {STATE_DIR}")
    secret_keys = ("access_key_secret", "access_key", "token", "secret", "password", "private_key")
    for i, src in enumerate(cfg.get("sources", [])):
        for k, v in src.items():
            if k in secret_keys:
                p.need(isinstance(v, str) and re.fullmatch(r"\$\{[A-Za-z_][A-Za-z0-9_]*\}", v) is not None, where, f"sources[{i}].{k} is a literal: use {k}_file or ${{VAR}}")
    return cfg


def check(out, rendered):
    p = Problems()
    out = Path(out)
    for item in rendered:
        name, _, path = item.partition("=")
        where = name
        before = len(p.items)
        docs = [d for d in yaml.safe_load_all(Path(path).read_text(encoding="utf-8")) if d]
        dest = out / name
        (dest / "config").mkdir(parents=True, exist_ok=True)
        (dest / "secrets").mkdir(parents=True, exist_ok=True)
        builtin = [d for d in docs if not d.get("apiVersion", "").startswith("monitoring.coreos.com/")]
        crds = [d for d in docs if d not in builtin]
        (dest / "builtin.yaml").write_text(yaml.safe_dump_all(builtin, sort_keys=False), encoding="utf-8")
        by_kind = {}
        for d in docs:
            by_kind.setdefault(d["kind"], []).append(d)
        kinds = {k: len(v) for k, v in by_kind.items()}
        for kind in ("StatefulSet", "Service", "ServiceMonitor", "PodDisruptionBudget", "PrometheusRule"):
            p.need(kinds.get(kind) == 1, where, f"renders {kinds.get(kind, 0)} {kind}, wants 1")
        if len(p.items) > before:
            continue
        sts = by_kind["StatefulSet"][0]
        spec, volumes = check_pod(p, where, sts)
        container = spec["containers"][0]
        shards = check_shards(p, where, sts, container)
        pod_labels = sts["spec"]["template"]["metadata"].get("labels", {})
        services = by_kind["Service"]
        svc = services[0]
        p.need(sts["spec"].get("serviceName") == svc["metadata"]["name"], where, "serviceName must be the Service")
        p.need(labels_match(svc["spec"].get("selector"), pod_labels), where, "the Service must select the pods")
        pdb = by_kind["PodDisruptionBudget"][0]
        p.need(labels_match(pdb["spec"].get("selector", {}).get("matchLabels"), pod_labels), where, "the PodDisruptionBudget must select the pods")
        check_service_monitor(p, f"{where} ServiceMonitor", by_kind["ServiceMonitor"][0], services)
        pr = by_kind["PrometheusRule"][0]
        check_prometheus_rule(p, f"{where} PrometheusRule", pr)
        (dest / "rules.yml").write_text(yaml.safe_dump(pr.get("spec", {}), sort_keys=False), encoding="utf-8")
        cms = by_kind.get("ConfigMap", [])
        boards = check_dashboards(p, where, cms)
        # The config and credentials exactly as the pod mounts them.
        cfg_cm = volumes.get("config", {}).get("configMap", {}).get("name")
        cfg = next((cm for cm in cms if cm["metadata"]["name"] == cfg_cm), None)
        if p.need(cfg is not None and "config.yml" in cfg.get("data", {}), where, f"ConfigMap {cfg_cm} with config.yml"):
            text = cfg["data"]["config.yml"]
            check_config(p, where, text)
            (dest / "config" / "config.yml").write_text(text, encoding="utf-8")
        secret_name = volumes.get("credentials", {}).get("secret", {}).get("secretName")
        secret = next((s for s in by_kind.get("Secret", []) if s["metadata"]["name"] == secret_name), None)
        if secret is None:
            # The base leaves the Secret to the operator: stand in for the
            # files its config names, so --check-config can still run.
            for f in re.findall(r"_file:\s*\.\./secrets/(\S+)", cfg["data"]["config.yml"] if cfg else ""):
                (dest / "secrets" / f).write_text("placeholder-for-check-config\n", encoding="utf-8")
            origin = f"Secret {secret_name} left to the operator"
        else:
            for k, v in secret.get("data", {}).items():
                (dest / "secrets" / k).write_bytes(base64.b64decode(v))
            for k, v in secret.get("stringData", {}).items():
                (dest / "secrets" / k).write_text(v, encoding="utf-8")
            origin = f"Secret {secret_name} with {len(secret.get('data', {}))} key(s)"
        groups = len(pr.get("spec", {}).get("groups", []))
        print(
            f"{name}: {len(docs)} objects ({', '.join(f'{v} {k}' for k, v in sorted(kinds.items()))}); "
            f"{len(builtin)} built-in, {len(crds)} CRD objects; {shards} shard(s); "
            f"{groups} rule groups; {boards} dashboards; {origin}"
        )
    for item in p.items:
        print(f"problem: {item}", file=sys.stderr)
    return 1 if p.items else 0


def main(argv):
    if len(argv) >= 2 and argv[1] == "sync":
        return sync("--write" in argv[2:])
    if len(argv) >= 4 and argv[1] == "check":
        return check(argv[2], argv[3:])
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
