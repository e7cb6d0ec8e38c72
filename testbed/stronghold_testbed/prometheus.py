"""The testbed's Prometheus and node exporter (Debian packages) on 127.0.0.1: the history that
capacity planning reads (docs/capacity.md).

Prometheus finds the operators to scrape through ``file_sd``: one JSON targets file per
operator in ``<cache>/prometheus/targets/``. The demo writes ``demo.json`` (the in-cluster
operator's 127.0.0.1:19090); a test writes one for its own operator and removes it after.
The rules are the repository's ``manifests/monitoring/prometheus/stronghold.rules.yml``,
copied and reloaded (SIGHUP) at every ``up``, so the running Prometheus evaluates the rules of
the tree that ran ``up`` last. Its data stays in the cache across ``cluster down``: history.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from stronghold_testbed import packages, paths, procs
from stronghold_testbed.procs import TestbedError

REPO = Path(__file__).resolve().parents[2]
MONITORING = REPO / "manifests" / "monitoring"
RULES = MONITORING / "prometheus" / "stronghold.rules.yml"
SCRAPE_CONFIG = MONITORING / "prometheus" / "prometheus.yml"
PROMETHEUS_RULE = MONITORING / "prometheusrule.yaml"
# Not the packaged defaults (9090, 9100): a Prometheus the distribution started may hold them.
PORT = 19091
NODE_EXPORTER_PORT = 19100
URL = f"http://127.0.0.1:{PORT}"
PROC = "prometheus"
NODE_PROC = "node-exporter"
# Short, so tests see a new operator's series within seconds; a handful of targets only.
SCRAPE_INTERVAL = "5s"
NODE_SCRAPE_INTERVAL = "15s"
RETENTION = "90d"


def home() -> Path:
    return paths.cache_dir() / "prometheus"


def targets_dir() -> Path:
    return home() / "targets"


def operator_job() -> str:
    """The operator's job name, as the shipped scrape config (and the alerting rules) name it."""
    config = yaml.safe_load(SCRAPE_CONFIG.read_text())
    name: str = config["scrape_configs"][0]["job_name"]
    return name


def render_config(rules: Path) -> dict[str, Any]:
    """The testbed's prometheus.yml: the shipped operator job with file_sd instead of
    Kubernetes discovery (no pod network here), the node exporter and Prometheus itself."""
    return {
        "global": {"scrape_interval": SCRAPE_INTERVAL, "evaluation_interval": SCRAPE_INTERVAL},
        "rule_files": [str(rules)],
        "scrape_configs": [
            {
                "job_name": operator_job(),
                "file_sd_configs": [
                    {"files": [str(targets_dir() / "*.json")], "refresh_interval": "10s"}
                ],
            },
            {
                "job_name": "node",
                "scrape_interval": NODE_SCRAPE_INTERVAL,
                "static_configs": [{"targets": [f"127.0.0.1:{NODE_EXPORTER_PORT}"]}],
            },
            {"job_name": "prometheus", "static_configs": [{"targets": [f"127.0.0.1:{PORT}"]}]},
        ],
    }


def render_prometheus_rule(rules: Path = RULES) -> dict[str, Any]:
    """The PrometheusRule (prometheus-operator) carrying exactly the plain rules file's groups."""
    groups = yaml.safe_load(rules.read_text())["groups"]
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {
            "name": "stronghold-operator",
            "namespace": "stronghold-system",
            "labels": {"app.kubernetes.io/name": "stronghold-operator"},
        },
        "spec": {"groups": groups},
    }


def prometheus_rule_text(rules: Path = RULES) -> str:
    header = (
        f"# Generated from prometheus/{rules.name} by `stronghold-testbed monitoring render`:\n"
        "# edit that file and render again (a unit test fails while the two differ).\n"
    )
    body = yaml.safe_dump(render_prometheus_rule(rules), sort_keys=False, width=100)
    return header + body


def write_targets(name: str, addresses: list[str], labels: dict[str, str] | None = None) -> Path:
    """Have Prometheus scrape ``addresses`` (host:port) as the operator job, under file
    ``name``; written whole then renamed, so Prometheus never reads half a file."""
    targets_dir().mkdir(parents=True, exist_ok=True)
    path = targets_dir() / f"{name}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps([{"targets": addresses, "labels": labels or {}}]))
    os.replace(tmp, path)
    return path


def remove_targets(name: str) -> None:
    (targets_dir() / f"{name}.json").unlink(missing_ok=True)


def _ready() -> bool:
    with urllib.request.urlopen(f"{URL}/-/ready", timeout=2) as resp:
        return int(resp.status) == 200


def _reload_state() -> dict[str, float]:
    with urllib.request.urlopen(f"{URL}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    return {
        m.group(1): float(m.group(2))
        for m in re.finditer(r"^(prometheus_config_last_reload_\w+) (\S+)$", text, re.M)
    }


def _reloaded_since(asked: int, failed_before: bool) -> bool:
    """True once a reload after ``asked`` succeeded; a refused config or rule file fails
    loudly (Prometheus would go on with the old ones). After an earlier refusal the flag
    reads 0 until this reload, so only the deadline can tell."""
    state = _reload_state()
    if state.get("prometheus_config_last_reload_successful") == 0 and not failed_before:
        raise TestbedError(
            f"Prometheus refused {home() / 'prometheus.yml'} or its rules: see its log "
            f"({paths.log_dir() / (PROC + '.log')})"
        )
    return state.get("prometheus_config_last_reload_success_timestamp_seconds", 0) >= asked


def _write_if_changed(path: Path, text: str) -> bool:
    """Write ``text`` whole (temporary file, rename: a reload never reads half a file), only
    when it differs; returns whether it did. Test workers run ``up`` side by side."""
    if path.exists() and path.read_text() == text:
        return False
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)
    return True


def _configure() -> tuple[Path, bool]:
    """Write the config and the rules; whether either changed."""
    home().mkdir(parents=True, exist_ok=True)
    targets_dir().mkdir(parents=True, exist_ok=True)
    rules = home() / "stronghold.rules.yml"
    config = home() / "prometheus.yml"
    changed = _write_if_changed(rules, RULES.read_text())
    rendered = yaml.safe_dump(render_config(rules), sort_keys=False)
    return config, _write_if_changed(config, rendered) or changed


def _node_exporter() -> str:
    if procs.owned_pid(NODE_PROC) is not None:
        return "reused"
    if procs.port_open(NODE_EXPORTER_PORT):
        raise TestbedError(
            f"port {NODE_EXPORTER_PORT} is taken by a process stronghold did not start"
        )
    binary = shutil.which("prometheus-node-exporter") or "/usr/bin/prometheus-node-exporter"
    procs.start(NODE_PROC, [binary, f"--web.listen-address=127.0.0.1:{NODE_EXPORTER_PORT}"])
    procs.wait_for("node exporter", lambda: procs.port_open(NODE_EXPORTER_PORT), 30, log=NODE_PROC)
    return "started"


def _prometheus(config: Path, changed: bool) -> str:
    pid = procs.owned_pid(PROC)
    if pid is not None:
        failed_before = _reload_state().get("prometheus_config_last_reload_successful") == 0
        if not changed and not failed_before:
            return "reused"
        asked = int(time.time())
        os.kill(pid, signal.SIGHUP)  # re-read the config and the rules just written
        deadline = time.monotonic() + 30
        while not _reloaded_since(asked, failed_before):
            if time.monotonic() > deadline:
                raise TestbedError(
                    f"Prometheus (pid {pid}) did not reload within 30 s: see its log "
                    f"({paths.log_dir() / (PROC + '.log')})"
                )
            time.sleep(0.2)
        return "reused (reloaded)"
    if procs.port_open(PORT):
        raise TestbedError(f"port {PORT} is taken by a process stronghold did not start")
    binary = shutil.which("prometheus") or "/usr/bin/prometheus"
    procs.start(
        PROC,
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={home() / 'data'}",
            f"--storage.tsdb.retention.time={RETENTION}",
            f"--web.listen-address=127.0.0.1:{PORT}",
        ],
    )
    procs.wait_for("Prometheus", _ready, 60, log=PROC)
    return "started"


def up() -> str:
    """Node exporter and Prometheus on 127.0.0.1, started when absent; ours is reloaded when
    the config or the rules changed."""
    if shutil.which("prometheus") is None or shutil.which("prometheus-node-exporter") is None:
        packages.ensure(["prometheus", "prometheus-node-exporter"])
    config, changed = _configure()
    exporter = _node_exporter()
    return f"{_prometheus(config, changed)}; node exporter {exporter}"


def status() -> dict[str, str]:
    def state(port: int, name: str) -> str:
        if not procs.port_open(port):
            return "down"
        return "up (started by stronghold)" if procs.owned_pid(name) else "up"

    return {
        "prometheus": state(PORT, PROC),
        "node-exporter": state(NODE_EXPORTER_PORT, NODE_PROC),
    }


def down() -> list[str]:
    """Stop what ``up`` started (by pid); the data directory stays."""
    stopped = []
    for name in (PROC, NODE_PROC):
        with contextlib.suppress(OSError):
            if procs.stop(name):
                stopped.append(name)
    return stopped
