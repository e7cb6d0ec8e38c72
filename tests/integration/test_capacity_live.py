"""``stronghold capacity report`` finds live history: the testbed's real Prometheus scrapes
this test's real operator while its HealthPolicy probes a real PostgreSQL database whose table
the test grows with real inserts; the shipped recording rules (evaluated every 5 s there)
record the size, and the report, by default reading those rules, finds a positive growth.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

from stronghold_testbed import prometheus
from tests.integration import health_kit as hk
from tests.integration import kit

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

WINDOW = "3m"  # the report's --range: the minutes this test has grown the table for
STEP = "5s"  # the testbed's scrape and evaluation interval (prometheus.SCRAPE_INTERVAL)
MIN_POINTS = 15  # over a minute of recorded samples before the report runs
BATCH = "INSERT INTO growth SELECT g, repeat(md5(g::text), 8) FROM generate_series(1, 400) g"


def query(expr: str) -> list[dict[str, Any]]:
    url = f"{prometheus.URL}/api/v1/query?{urllib.parse.urlencode({'query': expr})}"
    with urllib.request.urlopen(url, timeout=15) as resp:
        body = json.load(resp)
    assert body["status"] == "success", body
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def db_size(database: str) -> int:
    with psycopg.connect(hk.PG_DSN, autocommit=True) as conn:
        row = conn.execute("SELECT pg_database_size(%s)", (database,)).fetchone()
    assert row is not None
    return int(row[0])


@pytest.fixture
def database() -> Iterator[str]:
    with hk.scratch_database("cap", "CREATE TABLE growth (id int, payload text)") as name:
        yield name


@pytest.fixture
def growing(database: str) -> Iterator[dict[str, float]]:
    """Real inserts into the table, about 100 kB every half second, until the test ends;
    the database's real size and the time when they started."""
    stop = threading.Event()
    errors: list[BaseException] = []

    def grow() -> None:
        dsn = hk.PG_DSN.replace("dbname=postgres", f"dbname={database}")
        try:
            with psycopg.connect(dsn, autocommit=True) as conn:
                while not stop.is_set():
                    conn.execute(BATCH)
                    stop.wait(0.5)  # the load's pace, not a wait for a state
        except BaseException as exc:  # surfaced by the test, not lost in the thread
            errors.append(exc)

    started = {"t": time.time(), "size": float(db_size(database))}
    thread = threading.Thread(target=grow, daemon=True)
    thread.start()
    yield started
    stop.set()
    thread.join(timeout=30)
    assert not errors, errors


def test_report_finds_the_live_history_and_its_growth(
    testbed: Any,
    namespace: str,
    database: str,
    run_operator: Callable[..., kit.OperatorProcess],
    growing: dict[str, float],
) -> None:
    hk.require("PostgreSQL", 5432)
    assert prometheus.SCRAPE_INTERVAL == STEP
    kit.apply(
        {
            "apiVersion": "ops.stronghold.io/v1alpha1",
            "kind": "HealthPolicy",
            "metadata": {"name": "platform", "namespace": namespace},
            "spec": {
                "interval": "2s",
                "checks": [
                    {
                        "name": "db",
                        # Other test files share this server: their sessions are not ours.
                        "postgres": {
                            "host": "127.0.0.1",
                            "database": database,
                            "maxBlockedSessions": 1000,
                        },
                    }
                ],
            },
        }
    )
    op = run_operator(namespace)
    target = f"capacity-{namespace}"
    prometheus.write_targets(target, [f"127.0.0.1:{op.metrics_port}"])
    try:
        recorded = f'stronghold:db_size_bytes:max{{namespace="{namespace}"}}'

        def enough() -> bool:
            got = query(f"count_over_time({recorded}[{WINDOW}])")
            return bool(got) and float(got[0]["value"][1]) >= MIN_POINTS

        kit.wait_until(
            f"{MIN_POINTS} recorded samples of this policy's database size",
            enough,
            timeout=180,
        )
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "stronghold_operator.cli",
                "capacity",
                "report",
                "--prometheus",
                prometheus.URL,
                "--only",
                "db_size",
                "--range",
                WINDOW,
                "--step",
                STEP,
                "--limit",
                "db_size=100Gi",
                "--json",
                "-",
            ],
            check=False,
            capture_output=True,
            text=True,
            timeout=120,
        )
        grown = (db_size(database) - growing["size"]) / (time.time() - growing["t"]) * 86400
    finally:
        prometheus.remove_targets(target)
    # 0 or 1: other tests' databases may be in the same Prometheus; never "no history" (2).
    assert out.returncode in (0, 1), out.stdout + out.stderr
    doc = json.loads(out.stdout)
    ours = [r for r in doc["resources"] if r["labels"].get("namespace") == namespace]
    assert len(ours) == 1, doc["resources"]
    (db,) = ours
    assert db["labels"] == {"namespace": namespace, "policy": "platform", "check": "db"}
    assert db["points"] >= MIN_POINTS  # the history was found
    assert db["current"] > 1_000_000  # a real database's size
    # A growth, significant (the verdict projects a crossing: not "flat")...
    assert db["slopePerDay"] > 0 and db["verdict"] in ("ok", "critical"), db
    assert db["crossing"] is not None and db["limit"] == 100 * 2**30
    # ... of the order the table really grew at (pages are allocated in steps, and the
    # report's window and this measurement's are not the same minutes).
    print(f"report: {db['slopePerDay']:.4g} B/day over {db['points']} points; table: {grown:.4g}")
    assert grown > 0
    assert 0.3 * grown < db["slopePerDay"] < 3 * grown, (db["slopePerDay"], grown)
