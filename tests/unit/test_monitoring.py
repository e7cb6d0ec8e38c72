"""manifests/monitoring: the rules (plain file and PrometheusRule, one source), promtool's
checks and rule tests, the scrape configs, the ServiceMonitor and the Grafana dashboard.

The dashboard's queries against a real scrape: tests/integration/test_prometheus_history.py.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from stronghold_operator import metrics
from stronghold_testbed import paths, prometheus
from tests.support import promql

DOCS = promql.REPO / "docs" / "capacity.md"


def promtool(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("promtool")
    if binary is None:
        pytest.fail("promtool is needed (Debian package prometheus)", pytrace=False)
    return subprocess.run(
        [binary, *args], capture_output=True, text=True, check=False, cwd=cwd, timeout=120
    )


def operator_families() -> set[str]:
    """Every family the operator's registry exposes (registered when the handlers load)."""
    import stronghold_operator.main  # noqa: F401 - registers every controller's metrics

    return metrics.family_names()


def test_the_prometheus_rule_is_the_rules_file() -> None:
    rule = yaml.safe_load(prometheus.PROMETHEUS_RULE.read_text())
    assert rule["apiVersion"] == "monitoring.coreos.com/v1" and rule["kind"] == "PrometheusRule"
    assert rule["spec"]["groups"] == promql.rule_groups()
    # Byte for byte what the generator writes: edit the rules file, then render.
    assert prometheus.PROMETHEUS_RULE.read_text() == prometheus.prometheus_rule_text(), (
        "manifests/monitoring/prometheusrule.yaml is stale: stronghold-testbed monitoring render"
    )


def test_promtool_checks_both_rule_files(tmp_path: Path) -> None:
    proc = promtool("check", "rules", str(promql.RULES))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # The PrometheusRule's spec is what prometheus-operator hands Prometheus as a rules file.
    spec = yaml.safe_load(prometheus.PROMETHEUS_RULE.read_text())["spec"]
    (tmp_path / "from-prometheusrule.yml").write_text(yaml.safe_dump(spec))
    proc = promtool("check", "rules", str(tmp_path / "from-prometheusrule.yml"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS: " in proc.stdout


def test_the_rules_do_what_they_say_on_synthetic_series() -> None:
    """promtool's rule tests: recorded values and alerts firing (or not) at set times."""
    proc = promtool("test", "rules", "stronghold.rules.test.yml", cwd=promql.RULES.parent)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # Every alert is exercised, and the trend rules' values are checked.
    cases = yaml.safe_load((promql.RULES.parent / "stronghold.rules.test.yml").read_text())
    tested = {a["alertname"] for t in cases["tests"] for a in t.get("alert_rule_test", ())}
    assert tested == set(promql.alerting_rules())
    exprs = " ".join(e["expr"] for t in cases["tests"] for e in t.get("promql_expr_test", ()))
    for name in (
        "stronghold:db_size_bytes_per_day:deriv6h",
        "stronghold:queue_depth_per_hour:deriv1h",
    ):
        assert name in exprs


def test_rule_names_read_only_operator_metrics_and_are_documented() -> None:
    recorded = promql.recording_rules()
    assert recorded and all(name.startswith("stronghold:") for name in recorded)
    families = operator_families()
    docs = DOCS.read_text()
    for name, expr in {**recorded, **promql.alerting_rules()}.items():
        for metric in promql.source_metrics(expr, recorded):
            assert metric == "up" or promql.family(metric, families), (name, metric)
    for name in recorded:
        assert f"`{name}`" in docs, f"{name} is not listed in docs/capacity.md"


def test_the_shipped_scrape_config_and_the_testbeds_are_valid(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shipped = yaml.safe_load(prometheus.SCRAPE_CONFIG.read_text())
    (job,) = shipped["scrape_configs"]
    service = yaml.safe_load((promql.REPO / "manifests/base/service.yaml").read_text())
    keep = job["relabel_configs"][0]
    assert keep["action"] == "keep"
    assert keep["regex"] == f"{service['metadata']['name']};{service['spec']['ports'][0]['name']}"
    assert job["kubernetes_sd_configs"][0]["namespaces"]["names"] == [
        service["metadata"]["namespace"]
    ]
    # Debian's Prometheus is built without Kubernetes discovery: promtool checks the rest.
    del job["kubernetes_sd_configs"]
    job["static_configs"] = [{"targets": ["127.0.0.1:9090"]}]
    shutil.copy(promql.RULES, tmp_path / promql.RULES.name)
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(shipped))
    proc = promtool("check", "config", str(tmp_path / "prometheus.yml"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rules = sum(len(g["rules"]) for g in promql.rule_groups())
    assert f"SUCCESS: {rules} rules found" in proc.stdout  # the rules file was loaded
    # The testbed's: the same job name (the alerts match it), file_sd instead of Kubernetes.
    monkeypatch.setenv("STRONGHOLD_CACHE", str(tmp_path / "cache"))
    config = prometheus.render_config(promql.RULES)
    (job, node, _) = config["scrape_configs"]
    assert job["job_name"] == "stronghold-operator" == prometheus.operator_job()
    assert job["file_sd_configs"][0]["files"] == [
        str(paths.cache_dir() / "prometheus/targets/*.json")
    ]
    assert node["static_configs"] == [{"targets": [f"127.0.0.1:{prometheus.NODE_EXPORTER_PORT}"]}]
    (tmp_path / "testbed.yml").write_text(yaml.safe_dump(config))
    proc = promtool("check", "config", str(tmp_path / "testbed.yml"))
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_a_targets_file_is_file_sd_json(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STRONGHOLD_CACHE", str(tmp_path))
    path = prometheus.write_targets("t1", ["127.0.0.1:1234"], {"test": "t1"})
    assert json.loads(path.read_text()) == [
        {"targets": ["127.0.0.1:1234"], "labels": {"test": "t1"}}
    ]
    assert list(path.parent.iterdir()) == [path]  # no temporary file left
    prometheus.remove_targets("t1")
    assert not path.exists()


def test_the_service_monitor_selects_the_metrics_service() -> None:
    monitor = yaml.safe_load((promql.MONITORING / "servicemonitor.yaml").read_text())
    service = yaml.safe_load((promql.REPO / "manifests/base/service.yaml").read_text())
    spec = monitor["spec"]
    labels = service["metadata"]["labels"]
    assert spec["selector"]["matchLabels"].items() <= labels.items()
    assert spec["namespaceSelector"]["matchNames"] == [service["metadata"]["namespace"]]
    assert [e["port"] for e in spec["endpoints"]] == [p["name"] for p in service["spec"]["ports"]]
    # prometheus-operator names the job after this label's value: the name the alerts match.
    assert labels[spec["jobLabel"]] == prometheus.operator_job()
    if shutil.which("kubectl") is None:
        pytest.fail("kubectl is needed to render manifests/ (Debian: kubernetes-client)")
    out = subprocess.run(
        ["kubectl", "kustomize", str(promql.MONITORING)], capture_output=True, text=True, check=True
    ).stdout
    kinds = sorted(d["kind"] for d in yaml.safe_load_all(out) if d)
    assert kinds == ["PrometheusRule", "ServiceMonitor"]


def test_every_dashboard_query_parses_and_reads_operator_metrics_or_rules() -> None:
    dash = json.loads(promql.DASHBOARD.read_text())
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    queries = list(promql.dashboard_queries())
    assert len(queries) > 20
    recorded = promql.recording_rules()
    families = operator_families()
    used_rules: set[str] = set()
    for where, expr in queries:
        names = promql.metric_names(expr)  # raises on a query PromQL would refuse
        assert names, where
        used_rules |= names & recorded.keys()
        for metric in promql.source_metrics(expr, recorded):
            assert metric == "up" or promql.family(metric, families), (where, metric)
    # Every panel that is not a row has a query, on the dashboard's Prometheus variable.
    for p in dash["panels"]:
        if p["type"] != "row":
            assert p["targets"] and p["datasource"]["uid"] == "${datasource}", p["title"]
    capacity = {n for n in recorded if n.split(":")[1].startswith(("db_", "web_", "queue_"))}
    assert capacity <= used_rules | {
        "stronghold:db_size_bytes:max",
        "stronghold:db_connections_used:max",
        "stronghold:db_max_connections:max",
        "stronghold:db_connections_used:ratio_max1h",
        "stronghold:web_utilisation:ratio_avg1h",
    }


def test_promql_names_come_from_the_parser_not_from_words() -> None:
    expr = (
        'sum by (le, code) (rate({__name__="a_bucket", job=~"x|by"}[$__rate_interval]))'
        " / on (code) group_left b offset 5m + histogram_quantile(0.9, c) and ignoring (le) -d"
    )
    assert promql.metric_names(expr) == {"a_bucket", "b", "c", "d"}
    assert promql.source_metrics("stronghold:x:y * 2", {"stronghold:x:y": "max(z)"}) == {"z"}
    with pytest.raises(ValueError):
        promql.metric_names("sum(")


def test_the_demo_target_is_the_local_overlays_metrics_port() -> None:
    """demo up writes this address into Prometheus's targets: the port the overlay serves."""
    from stronghold_testbed import demo

    overlay = yaml.safe_load(
        (promql.REPO / "manifests/overlays/local/kustomization.yaml").read_text()
    )
    ops = yaml.safe_load(overlay["patches"][0]["patch"])
    (args,) = [op["value"] for op in ops if op["path"].endswith("/args")]
    host, _, port = demo.DEMO_METRICS.partition(":")
    assert f"--metrics-port={port}" in args and f"--metrics-address={host}" in args


def test_the_testbed_config_is_rewritten_only_when_it_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``up`` reloads a running Prometheus only for a change (test workers run it side by
    side; an unchanged file is not rewritten under a reload)."""
    monkeypatch.setenv("STRONGHOLD_CACHE", str(tmp_path))
    config, changed = prometheus._configure()
    assert changed and yaml.safe_load(config.read_text())["rule_files"] == [
        str(tmp_path / "prometheus/stronghold.rules.yml")
    ]
    assert (tmp_path / "prometheus/stronghold.rules.yml").read_text() == promql.RULES.read_text()
    assert prometheus._configure() == (config, False)
    (tmp_path / "prometheus/stronghold.rules.yml").write_text("groups: []\n")  # an older tree's
    assert prometheus._configure() == (config, True)
    assert sorted(p.name for p in config.parent.iterdir()) == [
        "prometheus.yml",
        "stronghold.rules.yml",
        "targets",
    ]
