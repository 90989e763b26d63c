#!/usr/bin/env python3
"""Checks the invariants of slotway's rendered Kubernetes manifests (`kubectl kustomize deploy`).

Schema validity is kubernetes-validate's job and PromQL syntax promtool's; this script checks what
neither can see: that the pieces fit together (selectors, ports, probes, ConfigMap keys, Secret
references), that the Redis layout is 3 shards x 3 pods kept apart, that the proxy's config only
uses real settings, and that dashboards and alerts only use metrics that exist.

Usage: check_manifests.py RENDERED.yaml [--keys FILE] [--metrics FILE] [--exporter-metrics FILE]
Exits 1 when any check fails; the last line is "check_manifests: N passed, M failed".
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import tomllib
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
FIXTURES = HERE / "fixtures"

SHARDS = 3
PODS_PER_SHARD = 3
REDIS_APP = "redis-cluster"
SHARD_LABEL = "slotway.io/shard"
# Secrets the operator creates by hand (deploy/README.md), so they are never rendered.
EXTERNAL_SECRETS = {
    "redis-auth": {"password"},
    # The password of the restricted ACL user slotway logs in to the nodes as.
    "slotway-upstream": {"password"},
    # kubernetes.io/tls Secrets the operator creates (cert-manager); mounted optionally.
    "slotway-tls": {"tls.crt", "tls.key", "ca.crt"},
    "slotway-redis-tls": {"tls.crt", "tls.key", "ca.crt"},
}
# HTTP probe paths each image really serves.
PROBE_PATHS = {"slotway": {"/healthz", "/readyz"}, "redis-exporter": {"/health"}}
DEFAULT_DRAIN_GRACE_MS = 10_000
WORKLOADS = ("Deployment", "StatefulSet", "Job")
UPSTREAM_USER = "slotway"
UPSTREAM_SECRET = "slotway-upstream"
ACL_RULES_KEY = "slotway-acl.rules"
ACL_RULES_PATH = "/etc/redis/" + ACL_RULES_KEY


class Checker:
    """Runs named checks and collects their failures."""

    def __init__(self) -> None:
        self.passed = 0
        self.failed = 0

    def run(self, name: str, fn, *args) -> None:
        problems: list[str] = []
        fn(problems, *args)
        if problems:
            self.failed += 1
            print(f"FAIL {name}")
            for p in problems:
                print(f"  - {p}")
        else:
            self.passed += 1
            print(f"ok   {name}")


# ---------------------------------------------------------------- helpers


def read_list(path: Path) -> set[str]:
    """One entry per line; blank lines and # comments are skipped."""
    out = set()
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            out.add(line)
    return out


def name_of(obj: dict) -> str:
    return f"{obj['kind']}/{obj['metadata']['name']}"


def labels_match(selector: dict | None, labels: dict) -> bool:
    """matchLabels semantics; a selector with matchExpressions is not used here and never matches."""
    if not selector or selector.get("matchExpressions"):
        return False
    match = selector.get("matchLabels", selector)
    return bool(match) and all(labels.get(k) == v for k, v in match.items())


def pod_template(obj: dict) -> dict:
    return obj["spec"]["template"]


def template_labels(obj: dict) -> dict:
    return pod_template(obj).get("metadata", {}).get("labels", {})


def containers(obj: dict) -> list[dict]:
    spec = pod_template(obj)["spec"]
    return spec.get("initContainers", []) + spec.get("containers", [])


def redis_statefulsets(objs: list[dict]) -> list[dict]:
    return [
        o
        for o in objs
        if o["kind"] == "StatefulSet" and template_labels(o).get("app.kubernetes.io/name") == REDIS_APP
    ]


def the_one(objs: list[dict], kind: str, name: str) -> dict | None:
    found = [o for o in objs if o["kind"] == kind and o["metadata"]["name"] == name]
    return found[0] if len(found) == 1 else None


def slotway_config_map(objs: list[dict]) -> dict | None:
    found = [o for o in objs if o["kind"] == "ConfigMap" and o["metadata"]["name"].startswith("slotway-config")]
    return found[0] if len(found) == 1 else None


def port_declared(port, container: dict) -> bool:
    for p in container.get("ports", []):
        if port == p.get("name") or port == p.get("containerPort"):
            return True
    return False


def flatten_toml(doc: dict, prefix: str = "") -> list[str]:
    keys = []
    for k, v in doc.items():
        if isinstance(v, dict):
            keys += flatten_toml(v, f"{prefix}{k}.")
        else:
            keys.append(f"{prefix}{k}")
    return keys


# ---------------------------------------------------------------- checks


def check_redis_layout(problems: list[str], objs: list[dict]) -> None:
    sets = redis_statefulsets(objs)
    if len(sets) != SHARDS:
        problems.append(f"expected {SHARDS} Redis StatefulSets (one per shard), found {len(sets)}")
    total = sum(o["spec"].get("replicas", 1) for o in sets)
    if total != SHARDS * PODS_PER_SHARD:
        problems.append(f"expected {SHARDS * PODS_PER_SHARD} Redis pods in total, replicas sum to {total}")
    shards = []
    for o in sets:
        if o["spec"].get("replicas", 1) != PODS_PER_SHARD:
            problems.append(f"{name_of(o)}: replicas {o['spec'].get('replicas')} != {PODS_PER_SHARD}")
        shard = template_labels(o).get(SHARD_LABEL)
        if shard is None:
            problems.append(f"{name_of(o)}: pod template has no {SHARD_LABEL} label")
        shards.append(shard)
        if o["spec"].get("podManagementPolicy") != "Parallel":
            problems.append(f"{name_of(o)}: podManagementPolicy must be Parallel (pods are unready until bootstrap)")
        mounts = {m["name"]: m["mountPath"] for c in containers(o) for m in c.get("volumeMounts", [])}
        claims = [t["metadata"]["name"] for t in o["spec"].get("volumeClaimTemplates", [])]
        if not any(mounts.get(c) == "/data" for c in claims):
            problems.append(f"{name_of(o)}: no volumeClaimTemplate mounted at /data (AOF and nodes.conf)")
    if len(set(shards)) != len(shards):
        problems.append(f"shard labels are not distinct: {shards}")
    job = the_one(objs, "Job", "redis-cluster-bootstrap")
    if job is None:
        problems.append("no Job redis-cluster-bootstrap")
        return
    env = {e["name"]: e.get("value") for c in containers(job) for e in c.get("env", [])}
    if env.get("SHARDS") != str(len(sets)):
        problems.append(f"bootstrap Job SHARDS={env.get('SHARDS')} but there are {len(sets)} shard StatefulSets")
    if env.get("PODS_PER_SHARD") != str(PODS_PER_SHARD):
        problems.append(f"bootstrap Job PODS_PER_SHARD={env.get('PODS_PER_SHARD')} != {PODS_PER_SHARD}")
    fmt = env.get("NODE_ADDR_FORMAT", "")
    for o in sets:
        sts = o["metadata"]["name"]
        shard = template_labels(o).get(SHARD_LABEL, "?")
        expected = f"{sts}-0.{o['spec'].get('serviceName')}."
        try:
            got = fmt % (int(shard), 0)
        except (TypeError, ValueError):
            got = ""
        if not got.startswith(expected):
            problems.append(f"bootstrap NODE_ADDR_FORMAT gives {got!r} for shard {shard}, pod 0 is {expected}...")


def check_selectors(problems: list[str], objs: list[dict]) -> None:
    for o in objs:
        if o["kind"] in ("Deployment", "StatefulSet"):
            if not labels_match(o["spec"].get("selector"), template_labels(o)):
                problems.append(f"{name_of(o)}: selector does not match its pod template labels")


def check_services(problems: list[str], objs: list[dict]) -> None:
    workloads = [o for o in objs if o["kind"] in WORKLOADS]
    for svc in (o for o in objs if o["kind"] == "Service"):
        selector = svc["spec"].get("selector")
        targets = [w for w in workloads if labels_match(selector, template_labels(w))]
        if not targets:
            problems.append(f"{name_of(svc)}: selector {selector} matches no pod template")
            continue
        for port in svc["spec"].get("ports", []):
            target = port.get("targetPort", port["port"])
            for w in targets:
                if not any(port_declared(target, c) for c in containers(w)):
                    problems.append(f"{name_of(svc)}: targetPort {target!r} is not a port of {name_of(w)}")


def check_statefulset_services(problems: list[str], objs: list[dict]) -> None:
    for o in redis_statefulsets(objs):
        svc = the_one(objs, "Service", o["spec"].get("serviceName", ""))
        if svc is None:
            problems.append(f"{name_of(o)}: serviceName {o['spec'].get('serviceName')!r} is not a rendered Service")
            continue
        if svc["spec"].get("clusterIP") != "None":
            problems.append(f"{name_of(svc)}: governing Service of {name_of(o)} must be headless")
        if svc["spec"].get("publishNotReadyAddresses") is not True:
            problems.append(f"{name_of(svc)}: needs publishNotReadyAddresses (bootstrap reaches unready pods)")
        if not labels_match(svc["spec"].get("selector"), template_labels(o)):
            problems.append(f"{name_of(svc)}: does not select the pods of {name_of(o)}")


def config_map_keys(objs: list[dict], name: str) -> set[str] | None:
    cm = the_one(objs, "ConfigMap", name)
    return None if cm is None else set(cm.get("data", {})) | set(cm.get("binaryData", {}))


def check_probes(problems: list[str], objs: list[dict]) -> None:
    for w in (o for o in objs if o["kind"] in WORKLOADS):
        volumes = {v["name"]: v for v in pod_template(w)["spec"].get("volumes", [])}
        for c in containers(w):
            where = f"{name_of(w)} container {c['name']}"
            mounts = {m["mountPath"]: volumes.get(m["name"], {}) for m in c.get("volumeMounts", [])}
            hooks = {f"{k}Probe": c.get(f"{k}Probe") for k in ("startup", "liveness", "readiness")}
            hooks["preStop"] = c.get("lifecycle", {}).get("preStop")
            for kind, probe in hooks.items():
                if not probe:
                    continue
                for action in ("httpGet", "tcpSocket", "grpc"):
                    if action in probe and not port_declared(probe[action].get("port"), c):
                        problems.append(f"{where}: {kind} port {probe[action].get('port')!r} is not declared")
                if "httpGet" in probe:
                    path = probe["httpGet"].get("path")
                    allowed = PROBE_PATHS.get(c["name"])
                    if allowed is None or path not in allowed:
                        problems.append(f"{where}: {kind} path {path!r} is not one it serves ({allowed})")
                for arg in probe.get("exec", {}).get("command", []):
                    check_script_exists(problems, objs, where, kind, arg, mounts)
            for arg in c.get("command", []):
                check_script_exists(problems, objs, where, "command", arg, mounts)
        if w["kind"] == "Deployment":
            check_slotway_probes(problems, w)


def check_script_exists(problems, objs, where, kind, arg, mounts) -> None:
    """An exec'd file under a ConfigMap mount must be a key of that ConfigMap."""
    for mount_path, volume in mounts.items():
        if arg.startswith(mount_path.rstrip("/") + "/") and "configMap" in volume:
            keys = config_map_keys(objs, volume["configMap"]["name"]) or set()
            key = arg[len(mount_path.rstrip("/")) + 1 :]
            if key not in keys:
                problems.append(f"{where}: {kind} runs {arg}, not in ConfigMap {volume['configMap']['name']}")


def check_slotway_probes(problems: list[str], deploy: dict) -> None:
    for c in containers(deploy):
        if c["name"] != "slotway":
            continue
        paths = {k: (c.get(k) or {}).get("httpGet", {}).get("path") for k in ("startupProbe", "livenessProbe", "readinessProbe")}
        if paths["readinessProbe"] != "/readyz":
            problems.append(f"{name_of(deploy)}: readiness must use /readyz, uses {paths['readinessProbe']}")
        if paths["livenessProbe"] != "/healthz":
            problems.append(f"{name_of(deploy)}: liveness must use /healthz, uses {paths['livenessProbe']}")
        if paths["startupProbe"] is None:
            problems.append(f"{name_of(deploy)}: no startupProbe")


def check_anti_affinity(problems: list[str], objs: list[dict]) -> None:
    sets = redis_statefulsets(objs)
    for o in sets:
        anti = pod_template(o)["spec"].get("affinity", {}).get("podAntiAffinity", {})
        terms = anti.get("requiredDuringSchedulingIgnoredDuringExecution", [])
        own = [t for t in terms if t.get("topologyKey") == "kubernetes.io/hostname" and labels_match(t.get("labelSelector"), template_labels(o))]
        if not own:
            problems.append(f"{name_of(o)}: no required anti-affinity on kubernetes.io/hostname matching its own pods")
        for t in own:
            others = [x for x in sets if x is not o and labels_match(t.get("labelSelector"), template_labels(x))]
            if others:
                problems.append(f"{name_of(o)}: anti-affinity also repels {[name_of(x) for x in others]} (needs more nodes than shards)")
        preferred = anti.get("preferredDuringSchedulingIgnoredDuringExecution", [])
        if not any(p["podAffinityTerm"].get("topologyKey") == "topology.kubernetes.io/zone" for p in preferred):
            problems.append(f"{name_of(o)}: no preferred zone spread")


def check_proxy_config(problems: list[str], objs: list[dict], valid_keys: set[str]) -> None:
    cm = slotway_config_map(objs)
    if cm is None:
        problems.append("expected exactly one ConfigMap slotway-config-*")
        return
    text = cm.get("data", {}).get("slotway.toml")
    if text is None:
        problems.append(f"{name_of(cm)} has no slotway.toml key")
        return
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        problems.append(f"{name_of(cm)}: slotway.toml is not valid TOML: {e}")
        return
    for key in flatten_toml(doc):
        if key not in valid_keys:
            problems.append(f"{name_of(cm)}: {key} is not a slotway setting")
    if not str(doc.get("listen", "")).endswith(":6379"):
        problems.append("slotway.toml: listen must be on port 6379 (the Service's targetPort resp)")
    if not str(doc.get("admin", {}).get("listen", "")).endswith(":9090"):
        problems.append("slotway.toml: admin.listen must be on port 9090 (probes and metrics)")
    deploy = the_one(objs, "Deployment", "slotway")
    if deploy is None:
        problems.append("no Deployment slotway")
        return
    volumes = {v["name"]: v for v in pod_template(deploy)["spec"].get("volumes", [])}
    mounted = [
        m["mountPath"]
        for c in containers(deploy)
        for m in c.get("volumeMounts", [])
        if volumes.get(m["name"], {}).get("configMap", {}).get("name") == cm["metadata"]["name"]
    ]
    args = [a for c in containers(deploy) for a in c.get("args", []) + c.get("command", [])]
    if "/etc/slotway" not in mounted or "/etc/slotway/slotway.toml" not in args:
        problems.append("Deployment slotway must mount slotway-config at /etc/slotway and pass --config /etc/slotway/slotway.toml")
    drain_ms = doc.get("client", {}).get("drain_grace_ms", DEFAULT_DRAIN_GRACE_MS)
    spec = pod_template(deploy)["spec"]
    grace = spec.get("terminationGracePeriodSeconds", 30)
    pre_stop = max((c.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0) for c in containers(deploy)), default=0)
    needed = pre_stop + math.ceil(drain_ms / 1000) + 1
    if grace < needed:
        problems.append(f"terminationGracePeriodSeconds {grace} < preStop {pre_stop}s + drain {drain_ms} ms + 1 s margin")
    if pre_stop == 0:
        problems.append("Deployment slotway: no preStop sleep (new connections would still arrive during the drain)")


def secret_env(c: dict, name: str) -> tuple[str, str] | None:
    """The (Secret, key) an env var of container `c` comes from, if any."""
    for e in c.get("env", []):
        ref = e.get("valueFrom", {}).get("secretKeyRef")
        if e["name"] == name and ref:
            return ref["name"], ref["key"]
    return None


def acl_rules_text(text: str) -> str:
    return " ".join(line for line in text.splitlines() if not line.startswith("#")).strip()


def check_upstream_user(problems: list[str], objs: list[dict]) -> None:
    """slotway logs in as its restricted ACL user, which every Redis pod defines."""
    deploy = the_one(objs, "Deployment", "slotway")
    cm = slotway_config_map(objs)
    if deploy is None or cm is None:
        problems.append("no Deployment slotway or slotway-config ConfigMap")
        return
    doc = tomllib.loads(cm.get("data", {}).get("slotway.toml", ""))
    cluster = doc.get("cluster", {})
    if cluster.get("username") != UPSTREAM_USER:
        problems.append(f"slotway.toml: cluster.username must be {UPSTREAM_USER!r} (the restricted ACL user), not the default user")
    volumes = {v["name"]: v for v in pod_template(deploy)["spec"].get("volumes", [])}
    password_file = cluster.get("password_file", "")
    mounted = False
    for c in containers(deploy):
        for e in c.get("env", []):
            if e["name"] == "SLOTWAY_CLUSTER_PASSWORD" or secret_env(c, e["name"]) == ("redis-auth", "password"):
                problems.append(f"Deployment slotway: env {e['name']} hands slotway the default user's password")
        for m in c.get("volumeMounts", []):
            secret = volumes.get(m["name"], {}).get("secret", {})
            key = password_file[len(m["mountPath"].rstrip("/")) + 1 :]
            if secret.get("secretName") == UPSTREAM_SECRET and password_file.startswith(m["mountPath"].rstrip("/") + "/"):
                mounted = key in EXTERNAL_SECRETS[UPSTREAM_SECRET]
    if not mounted:
        problems.append(f"slotway.toml: cluster.password_file {password_file!r} is not the password of a mounted Secret {UPSTREAM_SECRET}")
    for sts in redis_statefulsets(objs):
        spec = pod_template(sts)["spec"]
        sts_volumes = {v["name"]: v for v in spec.get("volumes", [])}
        redis = next((c for c in containers(sts) if c["name"] == "redis"), None)
        if redis is None:
            problems.append(f"{name_of(sts)}: no redis container")
            continue
        if secret_env(redis, "SLOTWAY_PASSWORD") != (UPSTREAM_SECRET, "password"):
            problems.append(f"{name_of(sts)}: SLOTWAY_PASSWORD must come from Secret {UPSTREAM_SECRET}/password (start.sh defines the user)")
        mount = next((m for m in redis.get("volumeMounts", []) if ACL_RULES_PATH.startswith(m["mountPath"].rstrip("/") + "/")), None)
        cm_name = sts_volumes.get(mount["name"], {}).get("configMap", {}).get("name") if mount else None
        rules_cm = the_one(objs, "ConfigMap", cm_name) if cm_name else None
        text = (rules_cm or {}).get("data", {}).get(ACL_RULES_KEY)
        if text is None:
            problems.append(f"{name_of(sts)}: {ACL_RULES_PATH} is not shipped in the ConfigMap mounted there")
            continue
        rules = acl_rules_text(text).split()
        if rules[:3] != ["~*", "&*", "+@all"] or not all(r.startswith("-") for r in rules[3:]):
            problems.append(f"{ACL_RULES_KEY}: expected `~* &* +@all` and -command rules, got {' '.join(rules[:6])} ...")
        elif "-config|set" not in rules and not doc.get("commands", {}).get("allow_config_set"):
            problems.append(f"{ACL_RULES_KEY}: does not deny config|set (stale? run slotway upstream-acl --format rules)")


def check_references(problems: list[str], objs: list[dict]) -> None:
    config_maps = {o["metadata"]["name"]: o for o in objs if o["kind"] == "ConfigMap"}
    secrets = {o["metadata"]["name"]: set(o.get("data", {})) | set(o.get("stringData", {})) for o in objs if o["kind"] == "Secret"}
    secrets.update(EXTERNAL_SECRETS)
    for w in (o for o in objs if o["kind"] in WORKLOADS):
        spec = pod_template(w)["spec"]
        for v in spec.get("volumes", []):
            if "configMap" in v and v["configMap"]["name"] not in config_maps:
                problems.append(f"{name_of(w)}: volume {v['name']} uses missing ConfigMap {v['configMap']['name']}")
            if "secret" in v and v["secret"]["secretName"] not in secrets:
                problems.append(f"{name_of(w)}: volume {v['name']} uses unknown Secret {v['secret']['secretName']}")
        for c in containers(w):
            for e in c.get("env", []):
                ref = e.get("valueFrom", {})
                if "secretKeyRef" in ref:
                    s = ref["secretKeyRef"]
                    if s["key"] not in secrets.get(s["name"], set()):
                        problems.append(f"{name_of(w)}: env {e['name']} uses unknown Secret key {s['name']}/{s['key']}")
                if "configMapKeyRef" in ref:
                    cm = config_maps.get(ref["configMapKeyRef"]["name"])
                    if cm is None or ref["configMapKeyRef"]["key"] not in cm.get("data", {}):
                        problems.append(f"{name_of(w)}: env {e['name']} uses a missing ConfigMap key")
        sa = spec.get("serviceAccountName")
        if sa and the_one(objs, "ServiceAccount", sa) is None:
            problems.append(f"{name_of(w)}: ServiceAccount {sa} is not rendered")


def check_security(problems: list[str], objs: list[dict]) -> None:
    for w in (o for o in objs if o["kind"] in WORKLOADS):
        spec = pod_template(w)["spec"]
        pod_sc = spec.get("securityContext", {})
        if spec.get("automountServiceAccountToken") is not False:
            problems.append(f"{name_of(w)}: automountServiceAccountToken must be false")
        if pod_sc.get("seccompProfile", {}).get("type") != "RuntimeDefault":
            problems.append(f"{name_of(w)}: pod seccompProfile must be RuntimeDefault")
        for c in containers(w):
            sc = c.get("securityContext", {})
            where = f"{name_of(w)} container {c['name']}"
            if not (sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) is True):
                problems.append(f"{where}: not runAsNonRoot")
            if sc.get("runAsUser", pod_sc.get("runAsUser", 0)) == 0:
                problems.append(f"{where}: runs as uid 0")
            if sc.get("readOnlyRootFilesystem") is not True:
                problems.append(f"{where}: root filesystem is writable")
            if sc.get("allowPrivilegeEscalation") is not False:
                problems.append(f"{where}: allowPrivilegeEscalation must be false")
            if "ALL" not in sc.get("capabilities", {}).get("drop", []):
                problems.append(f"{where}: capabilities are not all dropped")
            res = c.get("resources", {})
            if not {"cpu", "memory"} <= set(res.get("requests", {})) or "memory" not in res.get("limits", {}):
                problems.append(f"{where}: needs cpu/memory requests and a memory limit")
    for sa in (o for o in objs if o["kind"] == "ServiceAccount"):
        if sa.get("automountServiceAccountToken") is not False:
            problems.append(f"{name_of(sa)}: automountServiceAccountToken must be false")


def check_availability(problems: list[str], objs: list[dict]) -> None:
    workloads = [o for o in objs if o["kind"] in ("Deployment", "StatefulSet")]
    for pdb in (o for o in objs if o["kind"] == "PodDisruptionBudget"):
        if not any(labels_match(pdb["spec"].get("selector"), template_labels(w)) for w in workloads):
            problems.append(f"{name_of(pdb)}: selects no pods")
    redis_pdbs = [p for p in objs if p["kind"] == "PodDisruptionBudget" and any(labels_match(p["spec"].get("selector"), template_labels(s)) for s in redis_statefulsets(objs))]
    if len(redis_pdbs) != 1 or redis_pdbs[0]["spec"].get("maxUnavailable") != 1:
        problems.append("the Redis pods need exactly one PodDisruptionBudget with maxUnavailable 1")
    elif not all(labels_match(redis_pdbs[0]["spec"]["selector"], template_labels(s)) for s in redis_statefulsets(objs)):
        problems.append("the Redis PodDisruptionBudget must cover every shard")
    deploy = the_one(objs, "Deployment", "slotway")
    if deploy is not None and deploy["spec"].get("replicas", 1) < 2:
        problems.append("Deployment slotway needs at least 2 replicas")
    if deploy is not None and not pod_template(deploy)["spec"].get("topologySpreadConstraints"):
        problems.append("Deployment slotway has no topologySpreadConstraints")
    for hpa in (o for o in objs if o["kind"] == "HorizontalPodAutoscaler"):
        ref = hpa["spec"]["scaleTargetRef"]
        if the_one(objs, ref["kind"], ref["name"]) is None:
            problems.append(f"{name_of(hpa)}: scale target {ref['kind']}/{ref['name']} is not rendered")
        if hpa["spec"].get("minReplicas", 1) < 2:
            problems.append(f"{name_of(hpa)}: minReplicas below 2")


def check_network_policy(problems: list[str], objs: list[dict]) -> None:
    policies = [p for p in objs if p["kind"] == "NetworkPolicy"]
    redis = redis_statefulsets(objs)
    guarded = [p for p in policies if redis and labels_match(p["spec"].get("podSelector"), template_labels(redis[0]))]
    if not guarded:
        problems.append("no NetworkPolicy selects the Redis pods")
        return
    clients = [o for o in objs if o["kind"] in WORKLOADS and (o["metadata"]["name"] == "slotway" or o["kind"] == "Job")] + redis
    for client in clients:
        allowed = any(
            any(port.get("port") in (6379, "redis") for port in rule.get("ports", []))
            and any(labels_match(peer.get("podSelector"), template_labels(client)) for peer in rule.get("from", []))
            for p in guarded
            for rule in p["spec"].get("ingress", [])
        )
        if not allowed:
            problems.append(f"{name_of(client)} may not reach Redis on 6379 under the NetworkPolicy")


def check_service_monitors(problems: list[str], objs: list[dict]) -> None:
    services = [o for o in objs if o["kind"] == "Service"]
    monitors = [o for o in objs if o["kind"] == "ServiceMonitor"]
    if len(monitors) < 2:
        problems.append(f"expected ServiceMonitors for slotway and the exporters, found {len(monitors)}")
    for sm in monitors:
        matched = [s for s in services if labels_match(sm["spec"].get("selector"), s["metadata"].get("labels", {}))]
        if not matched:
            problems.append(f"{name_of(sm)}: selects no Service")
        for ep in sm["spec"].get("endpoints", []):
            for s in matched:
                if ep.get("port") not in {p.get("name") for p in s["spec"].get("ports", [])}:
                    problems.append(f"{name_of(sm)}: port {ep.get('port')!r} is not a port of {name_of(s)}")


def dashboards(objs: list[dict]) -> list[tuple[str, dict | None]]:
    out = []
    for cm in (o for o in objs if o["kind"] == "ConfigMap" and o["metadata"].get("labels", {}).get("grafana_dashboard") == "1"):
        for key, text in cm.get("data", {}).items():
            try:
                out.append((f"{name_of(cm)}/{key}", json.loads(text)))
            except json.JSONDecodeError:
                out.append((f"{name_of(cm)}/{key}", None))
    return out


def check_dashboards(problems: list[str], objs: list[dict]) -> None:
    found = dashboards(objs)
    if len(found) < 2:
        problems.append(f"expected 2 dashboards (slotway, redis cluster) labelled grafana_dashboard=1, found {len(found)}")
    uids = []
    for where, d in found:
        if d is None:
            problems.append(f"{where}: not valid JSON")
            continue
        uids.append(d.get("uid"))
        ids = [p.get("id") for p in d.get("panels", [])]
        if len(ids) != len(set(ids)):
            problems.append(f"{where}: duplicate panel ids")
        if not exprs_in(d):
            problems.append(f"{where}: no queries")
    if len(uids) != len(set(uids)) or None in uids:
        problems.append(f"dashboard uids must be set and unique: {uids}")


def exprs_in(node) -> list[str]:
    """Every PromQL text in a dashboard: panel targets and templating queries."""
    out = []
    if isinstance(node, dict):
        for k, v in node.items():
            if k in ("expr", "definition") and isinstance(v, str):
                out.append(v)
            else:
                out += exprs_in(v)
    elif isinstance(node, list):
        for v in node:
            out += exprs_in(v)
    return out


def check_alerts(problems: list[str], objs: list[dict]) -> None:
    rules = [r for o in objs if o["kind"] == "PrometheusRule" for g in o["spec"]["groups"] for r in g["rules"]]
    names = {r.get("alert") for r in rules}
    for r in rules:
        if "alert" in r and not (r.get("labels", {}).get("severity") and r.get("annotations", {}).get("summary")):
            problems.append(f"alert {r['alert']}: needs labels.severity and annotations.summary")
    required = {
        "SlotwayHighErrorRatio",
        "SlotwayHighP99Latency",
        "SlotwayNotReady",
        "SlotwaySlotCoverageIncomplete",
        "RedisClusterStateNotOk",
        "RedisPrimaryTooFewReplicas",
        "RedisMasterLinkDown",
        "RedisMemoryNearMax",
    }
    for missing in sorted(required - names):
        problems.append(f"missing alert {missing}")


HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def metric_names(texts: list[str], prefix: str) -> set[str]:
    return {m for t in texts for m in re.findall(rf"\b({prefix}[a-z0-9_]+)", t)}


def unknown_metrics(used: set[str], known: set[str]) -> set[str]:
    def ok(name: str) -> bool:
        if name in known:
            return True
        return any(name.endswith(s) and name[: -len(s)] in known for s in HISTOGRAM_SUFFIXES)

    return {n for n in used if not ok(n)}


def check_metrics(problems: list[str], objs: list[dict], slotway_metrics: set[str], exporter_metrics: set[str]) -> None:
    texts = [r["expr"] for o in objs if o["kind"] == "PrometheusRule" for g in o["spec"]["groups"] for r in g["rules"]]
    texts += [e for _, d in dashboards(objs) if d for e in exprs_in(d)]
    for prefix, known, source in (("slotway_", slotway_metrics, "slotway's metric list"), ("redis_", exporter_metrics, "redis_exporter's metrics")):
        used = metric_names(texts, prefix)
        if not used:
            problems.append(f"no {prefix}* metric used at all")
        for name in sorted(unknown_metrics(used, known)):
            problems.append(f"{name} is used by a dashboard or alert but is not in {source}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("rendered", type=Path, help="output of `kubectl kustomize deploy`")
    ap.add_argument("--keys", type=Path, default=FIXTURES / "config-keys.txt", help="valid settings, one section.key per line (`slotway config-keys`)")
    ap.add_argument("--metrics", type=Path, default=FIXTURES / "slotway-metrics.txt", help="slotway metric names, one per line")
    ap.add_argument("--exporter-metrics", type=Path, default=FIXTURES / "redis-exporter-metrics.txt", help="redis_exporter metric names")
    args = ap.parse_args()

    objs = [o for o in yaml.safe_load_all(args.rendered.read_text()) if o]
    c = Checker()
    c.run("Redis layout: 3 shards x 3 pods, PVCs, bootstrap Job agrees", check_redis_layout, objs)
    c.run("workload selectors match their pod templates", check_selectors, objs)
    c.run("Service selectors and targetPorts match pods", check_services, objs)
    c.run("StatefulSets have a headless Service publishing unready pods", check_statefulset_services, objs)
    c.run("probes and hooks use declared ports, served paths, shipped scripts", check_probes, objs)
    c.run("required anti-affinity per shard, preferred zone spread", check_anti_affinity, objs)
    c.run("proxy ConfigMap uses only real settings; grace period covers the drain", check_proxy_config, objs, read_list(args.keys))
    c.run("slotway logs in as its restricted ACL user, defined on every Redis pod", check_upstream_user, objs)
    c.run("ConfigMap, Secret and ServiceAccount references resolve", check_references, objs)
    c.run("non-root, read-only, no capabilities, no token, resources", check_security, objs)
    c.run("PodDisruptionBudgets, replicas, spread and autoscaling", check_availability, objs)
    c.run("NetworkPolicy lets the proxy, the Job and the nodes reach Redis", check_network_policy, objs)
    c.run("ServiceMonitors select Services and their ports", check_service_monitors, objs)
    c.run("Grafana dashboards are valid JSON with unique uids", check_dashboards, objs)
    c.run("alerts required by the design exist and are annotated", check_alerts, objs)
    c.run("dashboards and alerts use only existing metrics", check_metrics, objs, read_list(args.metrics), read_list(args.exporter_metrics))
    print(f"check_manifests: {c.passed} passed, {c.failed} failed")
    return 1 if c.failed else 0


if __name__ == "__main__":
    sys.exit(main())
