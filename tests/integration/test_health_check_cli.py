"""``stronghold check``: the same checks once without a cluster, exit code 0/1/2 (3 invalid)."""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration import health_kit as hk
from tests.integration import kit

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


@pytest.fixture(scope="module")
def app() -> Iterator[str]:
    hk.require("PostgreSQL", 5432)
    hk.require("Memcached", 11211)
    with hk.webapp("--pg-dsn", hk.PG_DSN, "--memcached", hk.MEMCACHED) as url:
        yield url


def stronghold(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(kit.VENV_BIN / "stronghold"), "check", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def write(tmp_path: Path, docs: list[dict[str, Any]]) -> str:
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump_all(docs))
    return str(path)


def stack(app: str, db_port: int = 5432, web: str = "/health/") -> list[dict[str, Any]]:
    return [
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "creds"},
            "stringData": {"pw": "cli-known-password"},
        },
        {
            "apiVersion": "ops.stronghold.io/v1alpha1",
            "kind": "HealthPolicy",
            "metadata": {"name": "stack"},
            "spec": {
                "checks": [
                    {"name": "web", "http": {"url": f"{app}{web}", "healthDocument": {}}},
                    {
                        "name": "db",
                        "postgres": {
                            "host": "127.0.0.1",
                            "port": db_port,
                            "password": {"secretKeyRef": {"name": "creds", "key": "pw"}},
                        },
                    },
                    {"name": "cache", "memcached": {"address": hk.MEMCACHED}},
                ]
            },
        },
    ]


def test_healthy_stack_exits_0_with_a_table(app: str, tmp_path: Path) -> None:
    proc = stronghold("-f", write(tmp_path, stack(app)))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for word in ("HealthPolicy stack", "web", "db", "cache", "Healthy", "no incident"):
        assert word in proc.stdout
    assert "cli-known-password" not in proc.stdout + proc.stderr


def test_slow_web_exits_1(app: str, tmp_path: Path) -> None:
    proc = stronghold("-f", write(tmp_path, stack(app, web="/slow?ms=250")), "--json")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    report = json.loads(proc.stdout)[0]
    assert report["severity"] == "P4" and report["checks"][0]["reason"] == "LatencyWarning"


def test_database_down_exits_2_with_root_cause(app: str, tmp_path: Path) -> None:
    proc = stronghold("-f", write(tmp_path, stack(app, db_port=hk.closed_port())), "--json")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    report = json.loads(proc.stdout)[0]
    assert report["severity"] == "P1" and report["rootCause"] == "db"


def test_flags_without_a_file(app: str) -> None:
    proc = stronghold("--url", f"{app}/", "--url", f"{app}/api/", "--memcached", hk.MEMCACHED)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    proc = stronghold("--url", f"{app}/status?code=503")
    assert proc.returncode == 2 and "UnexpectedStatus" not in proc.stderr
    assert "HTTP 503" in proc.stdout


def test_invalid_input_exits_3(tmp_path: Path) -> None:
    bad = stack("http://169.254.169.254")
    assert stronghold("-f", write(tmp_path, bad)).returncode == 3
    missing = stack("http://127.0.0.1:1")[1:]  # the Secret is not there
    proc = stronghold("-f", write(tmp_path, missing))
    assert proc.returncode == 3 and "--secret" in proc.stderr
    proc = stronghold("-f", write(tmp_path, missing), "--secret", f"creds/pw={uuid.uuid4()}")
    assert proc.returncode == 2  # runs now: the web URL is down
