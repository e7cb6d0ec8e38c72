"""Database insights against real PostgreSQL with pg_stat_statements preloaded.

The testbed's own PostgreSQL (127.0.0.1:5433, started by ``services up`` with
``shared_preload_libraries=pg_stat_statements``) holds a real unused index, a real
seq-scan-heavy table, a real slow statement and a real ``auth_user`` table for the guide's
new-users query. The probe reads them; the real operator on the local cluster shows them in
the HealthPolicy status and the growth value on /metrics. Without the extension (a database
that never created it; the machine's PostgreSQL where it is created but not preloaded) the
reason names pg_stat_statements.
"""

from __future__ import annotations

import asyncio
import re
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

from stronghold_operator.logic import health as h
from stronghold_operator.models.base import parse
from stronghold_operator.models.health import HealthPolicySpec
from stronghold_operator.probes.base import ProbeResult
from stronghold_operator.probes.postgres import PostgresProbe
from stronghold_testbed import services
from tests.integration import health_kit as hk
from tests.integration import kit

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

PORT = services.INSIGHTS_PORT
ADMIN = f"host=127.0.0.1 port={PORT} user=postgres dbname=postgres"
NEW_USERS = "SELECT count(*) FROM auth_user WHERE date_joined >= now() - interval '1 day'"

SCHEMA = """
CREATE EXTENSION IF NOT EXISTS pg_stat_statements;
CREATE TABLE accounts (id int PRIMARY KEY, owner int NOT NULL, note text);
INSERT INTO accounts SELECT g, g % 500, 'n' || g FROM generate_series(1, 20000) g;
CREATE INDEX accounts_owner_unused ON accounts (owner);
CREATE TABLE ledger (entry int, memo text);
INSERT INTO ledger SELECT g, repeat('m', 60) FROM generate_series(1, 40000) g;
CREATE TABLE auth_user (id serial PRIMARY KEY, date_joined timestamptz NOT NULL);
INSERT INTO auth_user (date_joined) SELECT now() - g * interval '1 hour'
  FROM generate_series(1, 7) g;
INSERT INTO auth_user (date_joined) SELECT now() - interval '3 days' - g * interval '1 hour'
  FROM generate_series(1, 30) g;
CREATE SEQUENCE ticket;
"""
SEQ_SCANS = 25


@pytest.fixture(scope="module")
def insights_db() -> Iterator[str]:
    """A database on the insights PostgreSQL with the workload above run for real."""
    hk.require("PostgreSQL with pg_stat_statements (stronghold-testbed services up)", PORT)
    name = f"ins_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        with psycopg.connect(ADMIN.replace("dbname=postgres", f"dbname={name}")) as conn:
            conn.execute(SCHEMA)
            conn.commit()
            conn.autocommit = True
            conn.execute("ANALYZE")
            # A seq-scan-heavy table: no index on ledger, filtered again and again.
            for n in range(SEQ_SCANS):
                conn.execute("SELECT count(*) FROM ledger WHERE entry = %s", (n,))
            # The primary key is used (index scans); the owner index never is.
            for n in range(1, 40):
                conn.execute("SELECT note FROM accounts WHERE id = %s", (n,))
            # A slow statement: a quarter of a second, three times.
            for _ in range(3):
                conn.execute("SELECT pg_sleep(0.25), 'slow report'")
        yield name
    finally:
        with psycopg.connect(ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def bare_db() -> Iterator[str]:
    """A database on the same server that never created pg_stat_statements."""
    hk.require("PostgreSQL with pg_stat_statements (stronghold-testbed services up)", PORT)
    name = f"bare_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield name
    with psycopg.connect(ADMIN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def insights_spec(**extra: Any) -> dict[str, Any]:
    return {
        "interval": "10s",
        "top": 5,
        "minRowsPerCall": 1,
        "seqScans": {"minRatio": 10, "minSeqScans": 20, "minTableBytes": 1024 * 1024},
        "growth": [{"name": "new_users_per_day", "query": NEW_USERS}],
        **extra,
    }


def check_spec(database: str, port: int = PORT, **insights: Any) -> dict[str, Any]:
    return {
        "host": "127.0.0.1",
        "port": port,
        "database": database,
        "user": "postgres",
        "insights": insights_spec(**insights),
    }


async def read_until(probe: PostgresProbe, spec: HealthPolicySpec) -> tuple[ProbeResult, Any]:
    """Probe until the background insights read has landed; the result and its assessment."""
    check = spec.checks[0]
    assert check.postgres is not None
    for _ in range(100):
        result = await probe.probe(check.postgres, timeout_s=5, secrets={})
        assert result.failure is None, result.message
        if result.insights is not None:
            return result, h.assess(check, result, None)
        await asyncio.sleep(0.1)
    raise AssertionError("no insights read within 10s")


def assert_all_three(ins: dict[str, Any]) -> None:
    """The real unused index, seq-scan-heavy table and slow statement are reported."""
    assert ins["statements"] == "Available", ins
    top = ins["topByMeanTime"]
    assert [s["meanMs"] for s in top] == sorted((s["meanMs"] for s in top), reverse=True), top
    # Found by its text, not its rank: on a loaded machine the fixture's 20,000-row INSERT
    # can take longer than the quarter-second sleep (CI saw 385 ms).
    slow = next((s for s in top if s["query"] == "SELECT pg_sleep($1), $2"), None)
    assert slow is not None, top
    assert slow["calls"] == 3 and slow["meanMs"] >= 250
    assert "slow report" not in str(ins)  # the literal never reaches status
    unused = [i["index"] for i in ins["unusedIndexes"]]
    assert unused == ["accounts_owner_unused"], unused  # the primary key is not listed
    assert ins["unusedIndexes"][0]["sizeBytes"] > 0
    tables = {t["table"]: t for t in ins["seqScanTables"]}
    assert set(tables) == {"ledger"}, tables  # accounts: index scans; auth_user: small
    assert tables["ledger"]["seqScans"] >= SEQ_SCANS and tables["ledger"]["idxScans"] == 0
    assert tables["ledger"]["sizeBytes"] >= 1024 * 1024
    counted = [s["query"] for s in ins["topByCalls"]]
    assert "SELECT note FROM accounts WHERE id = $1" in counted, counted
    # The operator's own catalogue queries (marked) are not the application's statements.
    assert not any("pg_stat" in s["query"] for s in ins["topByCalls"] + ins["topByMeanTime"])
    assert ins["growth"] == [{"name": "new_users_per_day", "value": 7.0}]


async def test_probe_reads_the_real_workload(insights_db: str) -> None:
    spec = parse(
        HealthPolicySpec, {"checks": [{"name": "db", "postgres": check_spec(insights_db)}]}
    )
    probe = PostgresProbe()
    try:
        _, a = await read_until(probe, spec)
    finally:
        await probe.close()
    assert a.state == "Healthy" and not a.findings
    assert_all_three(a.measurements["insights"])
    # The guide's queries work the same through the probe's pooled connections: none left.
    assert probe.open_connections() == 0


async def test_growth_queries_run_read_only_with_their_timeout(insights_db: str) -> None:
    growth = [
        {"name": "writes", "query": "SELECT nextval('ticket')"},
        {"name": "slow", "query": "SELECT pg_sleep(5)", "timeout": "200ms"},
        {"name": "two_columns", "query": "SELECT 1, 2"},
        {"name": "many_rows", "query": "SELECT g FROM generate_series(1, 1000000) g"},
        {"name": "not_a_number", "query": "SELECT 'abc'"},
        {"name": "broken", "query": "SELECT count(*) FROM no_such_table"},
        {"name": "leaky", "query": "SELECT note::int FROM accounts WHERE id = 7"},
    ]
    spec = parse(
        HealthPolicySpec,
        {"checks": [{"name": "db", "postgres": check_spec(insights_db, growth=growth)}]},
    )
    probe = PostgresProbe()
    try:
        result, a = await read_until(probe, spec)
    finally:
        await probe.close()
    errors = {g["name"]: g.get("error", "") for g in a.measurements["insights"]["growth"]}
    assert errors["writes"] == "the query tried to write (it runs read-only)"
    assert errors["slow"] == "cancelled after its timeout (200 ms)"
    assert errors["two_columns"] == "expected one row of one column, got 1 row(s) of 2"
    assert errors["many_rows"] == "expected one row of one column, got 2 row(s) of 1"
    assert errors["not_a_number"] == "not a number (str)"
    assert "no_such_table" in errors["broken"]
    # The failing value ('n7', a row's data) is not quoted into status.
    assert errors["leaky"] == "data exception 22P02: InvalidTextRepresentation"
    assert result.insights is not None and all(g.value is None for g in result.insights.growth)
    with psycopg.connect(ADMIN.replace("dbname=postgres", f"dbname={insights_db}")) as conn:
        row = conn.execute("SELECT is_called FROM ticket").fetchone()
    assert row == (False,)  # nextval never ran


async def test_without_the_extension_the_reason_names_it(bare_db: str) -> None:
    probe = PostgresProbe()
    try:
        spec = parse(
            HealthPolicySpec, {"checks": [{"name": "db", "postgres": check_spec(bare_db)}]}
        )
        _, a = await read_until(probe, spec)
        ins = a.measurements["insights"]
        assert a.state == "Healthy"
        assert ins["statements"] == "PgStatStatementsMissing"
        assert "CREATE EXTENSION pg_stat_statements" in ins["statementsMessage"]
        assert "topByMeanTime" not in ins and ins["unusedIndexes"] == []
        # The machine's PostgreSQL: created, not preloaded (the server is never restarted).
        with hk.scratch_database("ins", "CREATE EXTENSION IF NOT EXISTS pg_stat_statements") as db:
            spec = parse(
                HealthPolicySpec, {"checks": [{"name": "db", "postgres": check_spec(db, 5432)}]}
            )
            _, a = await read_until(probe, spec)
            ins = a.measurements["insights"]
            assert ins["statements"] == "PgStatStatementsNotLoaded"
            assert "shared_preload_libraries" in ins["statementsMessage"]
            assert ins["growth"][0]["error"].startswith('relation "auth_user" does not exist')
    finally:
        await probe.close()


def ensure_crd() -> None:
    """Re-apply our HealthPolicy CRD when another test session replaced it with one without
    the insights fields (the apiserver would prune them from the status we wait for)."""
    crd = kit.kubectl_json("get", "crd", "healthpolicies.ops.stronghold.io")
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]
    item = schema["status"]["properties"]["checks"]["items"]["properties"]
    if "insights" not in item["measurements"]["properties"]:
        kit.kubectl(
            "apply",
            "--server-side",
            "--force-conflicts",
            "-f",
            str(kit.REPO / "crds" / "healthpolicy.yaml"),
        )


def scrape(op: kit.OperatorProcess) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{op.metrics_port}/metrics", timeout=10) as r:
        return str(r.read().decode())


def series(text: str, family: str, **wanted: str) -> float | None:
    for m in re.finditer(rf"^{family}\{{(.*)\}} (\S+)$", text, re.M):
        labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1)))
        if wanted.items() <= labels.items():
            return float(m.group(2))
    return None


def test_operator_reports_insights_in_status_and_growth_on_metrics(
    insights_db: str,
    bare_db: str,
    namespace: str,
    run_operator: Callable[..., kit.OperatorProcess],
) -> None:
    op = run_operator(namespace)
    # Other test sessions re-apply their own crds/ cluster-wide: ours has the insights fields.
    kit.apply_crds()
    body = {
        "apiVersion": "ops.stronghold.io/v1alpha1",
        "kind": "HealthPolicy",
        "metadata": {"name": "db-insights", "namespace": namespace},
        "spec": {
            "interval": "3s",
            "checks": [
                {"name": "app", "postgres": check_spec(insights_db)},
                {"name": "bare", "postgres": check_spec(bare_db)},
            ],
        },
    }
    # kubectl validates against the apiserver's published OpenAPI, which follows a CRD
    # update a few seconds late: retry until it knows the insights fields.
    kit.wait_until(
        "the HealthPolicy applied", lambda: (ensure_crd(), kit.apply(body)) and True, timeout=60
    )

    def insights() -> dict[str, dict[str, Any]] | None:
        ensure_crd()
        obj = kit.kubectl_json("get", "healthpolicy", "db-insights", "-n", namespace)
        checks = (obj.get("status") or {}).get("checks") or []
        got = {c["name"]: c.get("measurements", {}).get("insights") for c in checks}
        if got.get("app") and got.get("bare"):
            return got  # type: ignore[return-value]
        raise AssertionError(f"status so far: {obj.get('status')}")

    found = kit.wait_until("insights in the HealthPolicy status", insights, timeout=90)
    assert_all_three(found["app"])
    assert found["bare"]["statements"] == "PgStatStatementsMissing"
    # The check's slow statements: this database's only, never a utility statement.
    obj = kit.kubectl_json("get", "healthpolicy", "db-insights", "-n", namespace)
    slow = [s["query"] for s in obj["status"]["checks"][0]["measurements"]["slowStatementsTop"]]
    assert "SELECT pg_sleep($1), $2" in slow, slow  # not necessarily first: see assert_all_three
    assert not any(q.split()[0] in ("CREATE", "DROP", "ANALYZE") for q in slow), slow
    assert "pg_stat_statements" in found["bare"]["statementsMessage"]

    who = {"namespace": namespace, "policy": "db-insights"}
    text = kit.wait_until(
        "the growth value on /metrics",
        lambda: (
            t
            if series(t := scrape(op), "stronghold_postgres_growth_value", **who, check="app")
            is not None
            else None
        ),
    )
    assert (
        series(
            text, "stronghold_postgres_growth_value", **who, check="app", name="new_users_per_day"
        )
        == 7.0
    )
    assert series(text, "stronghold_postgres_statements_available", **who, check="app") == 1.0
    assert series(text, "stronghold_postgres_statements_available", **who, check="bare") == 0.0
    assert (
        series(text, "stronghold_postgres_unused_index_bytes", **who, index="accounts_owner_unused")
        or 0
    ) > 0
    assert series(text, "stronghold_postgres_table_seq_scan_ratio", **who, table="ledger") == float(
        found["app"]["seqScanTables"][0]["seqScans"]
    )
    # A new user joins: the next read (interval 10s) exports 8.
    with psycopg.connect(ADMIN.replace("dbname=postgres", f"dbname={insights_db}")) as conn:
        conn.execute("INSERT INTO auth_user (date_joined) VALUES (now())")
    kit.wait_until(
        "the growth value 8 on /metrics",
        lambda: (
            series(scrape(op), "stronghold_postgres_growth_value", **who, name="new_users_per_day")
            == 8.0
        ),
        timeout=60,
    )
