#!/usr/bin/env python3
"""Mutation tests of check_manifests.py: the rendered manifests pass, and each broken copy fails
the check meant to catch it (so a check that silently passes everything is noticed).

Usage: test_check_manifests.py RENDERED.yaml
"""

from __future__ import annotations

import copy
import json
import sys
import unittest
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import check_manifests as cm  # noqa: E402

RENDERED: list[dict] = []


def find(objs, kind, prefix):
    return next(o for o in objs if o["kind"] == kind and o["metadata"]["name"].startswith(prefix))


def container(obj, name):
    return next(c for c in cm.containers(obj) if c["name"] == name)


class MutationTests(unittest.TestCase):
    def setUp(self):
        self.objs = copy.deepcopy(RENDERED)
        self.keys = cm.read_list(cm.FIXTURES / "config-keys.txt")
        self.metrics = cm.read_list(cm.FIXTURES / "slotway-metrics.txt")
        self.exporter = cm.read_list(cm.FIXTURES / "redis-exporter-metrics.txt")

    def problems(self, fn, *extra):
        out: list[str] = []
        fn(out, self.objs, *extra)
        return out

    def assertCaught(self, fn, *extra, contains=""):
        found = self.problems(fn, *extra)
        self.assertTrue(found, f"{fn.__name__} did not catch the mutation")
        if contains:
            self.assertTrue(any(contains in p for p in found), found)

    def all_checks(self):
        return [
            (cm.check_redis_layout,),
            (cm.check_selectors,),
            (cm.check_services,),
            (cm.check_statefulset_services,),
            (cm.check_probes,),
            (cm.check_anti_affinity,),
            (cm.check_proxy_config, self.keys),
            (cm.check_upstream_user,),
            (cm.check_references,),
            (cm.check_security,),
            (cm.check_availability,),
            (cm.check_network_policy,),
            (cm.check_service_monitors,),
            (cm.check_dashboards,),
            (cm.check_alerts,),
            (cm.check_metrics, self.metrics, self.exporter),
        ]

    def test_rendered_manifests_pass(self):
        for fn, *extra in self.all_checks():
            self.assertEqual(self.problems(fn, *extra), [], fn.__name__)

    def test_wrong_replica_count(self):
        find(self.objs, "StatefulSet", "redis-shard-1")["spec"]["replicas"] = 2
        self.assertCaught(cm.check_redis_layout, contains="replicas")

    def test_bootstrap_disagrees_on_shards(self):
        env = container(find(self.objs, "Job", "redis-cluster-bootstrap"), "bootstrap")["env"]
        next(e for e in env if e["name"] == "SHARDS")["value"] = "4"
        self.assertCaught(cm.check_redis_layout, contains="SHARDS")

    def test_selector_mismatch(self):
        find(self.objs, "StatefulSet", "redis-shard-0")["spec"]["selector"]["matchLabels"]["slotway.io/shard"] = "9"
        self.assertCaught(cm.check_selectors)

    def test_service_target_port_unknown(self):
        find(self.objs, "Service", "slotway")["spec"]["ports"][0]["targetPort"] = "nope"
        self.assertCaught(cm.check_services, contains="nope")

    def test_headless_service_hides_unready_pods(self):
        del find(self.objs, "Service", "redis-cluster")["spec"]["publishNotReadyAddresses"]
        self.assertCaught(cm.check_statefulset_services, contains="publishNotReadyAddresses")

    def test_probe_path_and_port(self):
        c = container(find(self.objs, "Deployment", "slotway"), "slotway")
        c["readinessProbe"]["httpGet"]["path"] = "/ready"
        c["livenessProbe"]["httpGet"]["port"] = "metrics"
        found = self.problems(cm.check_probes)
        self.assertTrue(any("/ready'" in p for p in found), found)
        self.assertTrue(any("'metrics' is not declared" in p for p in found), found)

    def test_probe_script_not_shipped(self):
        c = container(find(self.objs, "StatefulSet", "redis-shard-2"), "redis")
        c["readinessProbe"]["exec"]["command"] = ["sh", "/scripts/nope.sh"]
        self.assertCaught(cm.check_probes, contains="nope.sh")

    def test_anti_affinity_missing_or_too_wide(self):
        sts = find(self.objs, "StatefulSet", "redis-shard-0")
        term = sts["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][0]
        del term["labelSelector"]["matchLabels"]["slotway.io/shard"]
        self.assertCaught(cm.check_anti_affinity, contains="also repels")
        term["topologyKey"] = "topology.kubernetes.io/zone"
        self.assertCaught(cm.check_anti_affinity, contains="kubernetes.io/hostname")

    def test_unknown_config_key(self):
        cfg = cm.slotway_config_map(self.objs)
        cfg["data"]["slotway.toml"] += "\n[extra]\nqueue_dept = 7\n"
        self.assertCaught(cm.check_proxy_config, self.keys, contains="extra.queue_dept")

    def test_grace_period_shorter_than_drain(self):
        find(self.objs, "Deployment", "slotway")["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = 10
        self.assertCaught(cm.check_proxy_config, self.keys, contains="terminationGracePeriodSeconds")

    def test_secret_key_unknown(self):
        env = container(find(self.objs, "StatefulSet", "redis-shard-0"), "redis")["env"]
        next(e for e in env if e["name"] == "REDIS_PASSWORD")["valueFrom"]["secretKeyRef"]["key"] = "pass"
        self.assertCaught(cm.check_references, contains="redis-auth/pass")

    def test_proxy_logs_in_as_the_default_user(self):
        c = container(find(self.objs, "Deployment", "slotway"), "slotway")
        c["env"] = [{"name": "SLOTWAY_CLUSTER_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "redis-auth", "key": "password"}}}]
        self.assertCaught(cm.check_upstream_user, contains="default user's password")
        cfg = cm.slotway_config_map(self.objs)
        cfg["data"]["slotway.toml"] = cfg["data"]["slotway.toml"].replace('username = "slotway"', 'username = ""')
        self.assertCaught(cm.check_upstream_user, contains="cluster.username")

    def test_upstream_password_not_mounted(self):
        spec = find(self.objs, "Deployment", "slotway")["spec"]["template"]["spec"]
        spec["volumes"] = [v for v in spec["volumes"] if v.get("secret", {}).get("secretName") != "slotway-upstream"]
        self.assertCaught(cm.check_upstream_user, contains="password_file")

    def test_redis_pod_without_the_upstream_user(self):
        env = container(find(self.objs, "StatefulSet", "redis-shard-1"), "redis")["env"]
        env[:] = [e for e in env if e["name"] != "SLOTWAY_PASSWORD"]
        self.assertCaught(cm.check_upstream_user, contains="SLOTWAY_PASSWORD")

    def test_acl_rules_missing_or_permissive(self):
        rules_cm = find(self.objs, "ConfigMap", "redis-config")
        rules_cm["data"]["slotway-acl.rules"] = "~* &* +@all\n"
        self.assertCaught(cm.check_upstream_user, contains="config|set")
        del rules_cm["data"]["slotway-acl.rules"]
        self.assertCaught(cm.check_upstream_user, contains="not shipped")

    def test_volume_secret_unknown(self):
        volumes = find(self.objs, "Deployment", "slotway")["spec"]["template"]["spec"]["volumes"]
        next(v for v in volumes if "secret" in v)["secret"]["secretName"] = "slotway-tsl"
        self.assertCaught(cm.check_references, contains="unknown Secret slotway-tsl")

    def test_writable_root_filesystem(self):
        container(find(self.objs, "StatefulSet", "redis-shard-1"), "redis-exporter")["securityContext"]["readOnlyRootFilesystem"] = False
        self.assertCaught(cm.check_security, contains="writable")

    def test_pdb_too_loose(self):
        find(self.objs, "PodDisruptionBudget", "redis-cluster")["spec"]["maxUnavailable"] = 2
        self.assertCaught(cm.check_availability, contains="maxUnavailable 1")

    def test_proxy_cut_off_by_network_policy(self):
        labels = find(self.objs, "Deployment", "slotway")["spec"]["template"]["metadata"]["labels"]
        del labels["slotway.io/redis-client"]
        self.assertCaught(cm.check_network_policy, contains="Deployment/slotway")

    def test_service_monitor_port(self):
        find(self.objs, "ServiceMonitor", "slotway")["spec"]["endpoints"][0]["port"] = "http"
        self.assertCaught(cm.check_service_monitors, contains="'http'")

    def test_unknown_metric_in_dashboard_and_alert(self):
        board = find(self.objs, "ConfigMap", "grafana-dashboard-slotway")
        key = next(iter(board["data"]))
        d = json.loads(board["data"][key])
        d["panels"][1]["targets"][0]["expr"] = "sum(slotway_bogus_total)"
        board["data"][key] = json.dumps(d)
        rule = find(self.objs, "PrometheusRule", "slotway")["spec"]["groups"][1]["rules"][0]
        rule["expr"] = "redis_bogus == 0"
        found = self.problems(cm.check_metrics, self.metrics, self.exporter)
        self.assertTrue(any("slotway_bogus_total" in p for p in found), found)
        self.assertTrue(any("redis_bogus" in p for p in found), found)

    def test_histogram_series_are_known(self):
        used = {"slotway_command_duration_seconds_bucket", "slotway_command_duration_seconds_count"}
        self.assertEqual(cm.unknown_metrics(used, self.metrics), set())
        self.assertEqual(cm.unknown_metrics({"slotway_commands_total_bucket2"}, self.metrics), {"slotway_commands_total_bucket2"})

    def test_missing_alert(self):
        groups = find(self.objs, "PrometheusRule", "slotway")["spec"]["groups"]
        groups[0]["rules"] = [r for r in groups[0]["rules"] if r["alert"] != "SlotwayNotReady"]
        self.assertCaught(cm.check_alerts, contains="SlotwayNotReady")


if __name__ == "__main__":
    RENDERED.extend(o for o in yaml.safe_load_all(Path(sys.argv.pop(1)).read_text()) if o)
    unittest.main(verbosity=1)
