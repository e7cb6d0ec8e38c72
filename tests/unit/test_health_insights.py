"""Database insights, the pure parts: ranking, bounding, truncation, redaction, ratios,
the spec's validation and the /metrics families."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from stronghold_operator.controllers.health_metrics import HealthSeries
from stronghold_operator.logic import health as h
from stronghold_operator.logic.health import insights as ins
from stronghold_operator.models.base import InvalidSpec, parse
from stronghold_operator.models.health import HealthPolicySpec, PostgresInsights, SeqScanRule
from stronghold_operator.probes.base import (
    DatabaseInsights,
    GrowthValue,
    IndexStat,
    ProbeResult,
    SlowStatement,
    StatementStat,
    TableScans,
)
from stronghold_operator.services.health import signature

T0 = 1_780_000_000.0


def stmt(qid: str, calls: int, mean: float, rows: int, query: str = "") -> StatementStat:
    return StatementStat(qid, calls, mean * calls, mean, rows, query or f"SELECT * FROM t{qid}")


def spec(**kw: Any) -> PostgresInsights:
    return parse(PostgresInsights, kw)


def test_statement_text_collapses_drops_comments_and_truncates() -> None:
    q = "SELECT /* app=billing user=bob */ a,\n   b  FROM accounts -- trailing\n WHERE id = $1"
    assert ins.statement_text(q, 200) == "SELECT a, b FROM accounts WHERE id = $1"
    long = "SELECT " + ", ".join(f"col{i}" for i in range(100)) + " FROM t"
    cut = ins.statement_text(long, 40)
    assert cut is not None and len(cut) == 40 and cut.endswith("…")
    assert long.startswith(cut[:-1])


def test_utility_statements_are_never_shown() -> None:
    # pg_stat_statements keeps utility statements verbatim: a password would be in the text.
    assert ins.statement_text("ALTER ROLE app PASSWORD 'hunter2-secret'", 200) is None
    assert ins.statement_text("CREATE ROLE x LOGIN PASSWORD 'p'", 200) is None
    assert ins.statement_text("/* c */ COPY t FROM '/etc/passwd'", 200) is None
    assert ins.statement_text("with x as (select $1) select * from x", 200) is not None
    assert ins.statement_text("(SELECT 1) UNION (SELECT 2)", 200) is not None


def test_literals_left_in_a_query_are_masked() -> None:
    text = ins.statement_text("SELECT * FROM users WHERE email = 'a@b.c' AND n > 42.5", 200)
    assert text == "SELECT * FROM users WHERE email = ? AND n > ?"
    text = ins.statement_text("SELECT $tag$secret$tag$, t1.col2 FROM t1 LIMIT $1", 200)
    assert text == "SELECT ?, t1.col2 FROM t1 LIMIT $1"


def test_rank_statements_bounds_each_list_and_breaks_ties_by_id() -> None:
    rows = [
        stmt("1", calls=10, mean=500.0, rows=10),
        stmt("2", calls=10_000, mean=0.5, rows=10_000),
        stmt("3", calls=5, mean=20.0, rows=500_000),
        stmt("4", calls=5, mean=20.0, rows=5),
        stmt("9", calls=1, mean=9999.0, rows=1, query="VACUUM FULL accounts"),
    ]
    tops = ins.rank_statements(rows, 2, min_rows_per_call=100, chars=80)
    assert [s.query_id for s in tops.by_mean] == ["1", "3"]  # the utility statement is left out
    assert [s.query_id for s in tops.by_calls] == ["2", "1"]
    assert [s.query_id for s in tops.by_rows] == ["3"]  # 100_000 per call; "2" has 1 per call
    tied = ins.rank_statements(rows[2:4], 5, 0, 80)
    assert [s.query_id for s in tied.by_mean] == ["3", "4"]


def test_seq_scan_ratio_and_the_rule() -> None:
    rule = SeqScanRule.model_validate({"minRatio": 10, "minSeqScans": 100, "minTableBytes": 1000})
    base = TableScans(
        "public", "t", seq_scans=1000, idx_scans=50, seq_tuples_read=1, size_bytes=10**6
    )
    assert ins.seq_scan_ratio(base) == 20.0
    assert ins.seq_scan_heavy(base, rule)
    assert not ins.seq_scan_heavy(TableScans("public", "t", 1000, 200, 1, 10**6), rule)  # ratio 5
    assert ins.seq_scan_heavy(TableScans("public", "t", 1000, 100, 1, 10**6), rule)  # exactly 10
    no_index = TableScans("public", "t", 1000, None, 1, 10**6)
    assert ins.seq_scan_ratio(no_index) is None and ins.seq_scan_heavy(no_index, rule)
    never = TableScans("public", "t", 1000, 0, 1, 10**6)
    assert ins.seq_scan_ratio(never) is None and ins.seq_scan_heavy(never, rule)
    assert not ins.seq_scan_heavy(TableScans("public", "small", 10**6, 0, 1, 999), rule)
    assert not ins.seq_scan_heavy(TableScans("public", "few", 99, 0, 1, 10**6), rule)


def test_heavy_tables_worst_first() -> None:
    rule = SeqScanRule.model_validate({"minRatio": 2, "minSeqScans": 1, "minTableBytes": 0})
    tables = [
        TableScans("public", "ratio3", 300, 100, 10, 1),
        TableScans("public", "none", 50, 0, 5, 1),
        TableScans("public", "ratio30", 300, 10, 10, 1),
        TableScans("public", "fine", 100, 100, 10, 1),
        TableScans("public", "none_more_read", 50, None, 50, 1),
    ]
    names = [t.table for t in ins.heavy_tables(tables, rule)]
    assert names == ["none_more_read", "none", "ratio30", "ratio3"]


def insights_read(**kw: Any) -> DatabaseInsights:
    base: dict[str, Any] = {
        "collected_at": T0,
        "statements_state": "Available",
        "statements": tuple(
            stmt(str(i), calls=i + 1, mean=float(i), rows=i * 5000) for i in range(30)
        ),
        "unused_indexes": tuple(
            IndexStat("public", "t", f"idx_{i}", size_bytes=i * 8192) for i in range(12)
        ),
        "tables": (
            TableScans("public", "ledger", 5000, 3, 10**7, 64 * 2**20),
            TableScans("public", "tiny", 5000, 0, 10, 8192),
        ),
        "growth": (GrowthValue("new_users", 42.0), GrowthValue("bad", None, "x" * 500)),
        "stats_reset": T0 - 86400,
    }
    base.update(kw)
    return DatabaseInsights(**base)


def test_summarise_is_bounded_to_top() -> None:
    out = ins.summarise(spec(top=3, minRowsPerCall=1), insights_read())
    assert out["statements"] == "Available"
    assert out["collectedAt"] == "2026-05-28T20:26:40Z"
    for key in ("topByMeanTime", "topByCalls", "topByRowsPerCall", "unusedIndexes"):
        assert len(out[key]) == 3, key
    assert [s["queryId"] for s in out["topByMeanTime"]] == ["29", "28", "27"]
    assert out["unusedIndexCount"] == 12
    assert [i["index"] for i in out["unusedIndexes"]] == ["idx_11", "idx_10", "idx_9"]
    # "tiny" is below the default 8 MiB: read sequentially by design.
    assert out["seqScanTableCount"] == 1
    assert out["seqScanTables"] == [
        {
            "schema": "public",
            "table": "ledger",
            "seqScans": 5000,
            "idxScans": 3,
            "seqTuplesRead": 10**7,
            "sizeBytes": 64 * 2**20,
            "ratio": 1666.7,
        }
    ]
    assert out["growth"][0] == {"name": "new_users", "value": 42.0}
    assert len(out["growth"][1]["error"]) == 200


def test_missing_extension_keeps_the_index_and_table_lists() -> None:
    read = insights_read(
        statements_state="PgStatStatementsMissing",
        statements_message="the pg_stat_statements extension is not created in this database",
        statements=(),
    )
    out = ins.summarise(spec(), read)
    assert out["statements"] == "PgStatStatementsMissing"
    assert "pg_stat_statements" in out["statementsMessage"]
    assert "topByMeanTime" not in out
    assert out["unusedIndexCount"] == 12
    unread = ins.summarise(spec(), DatabaseInsights(T0, "Unread", "not read within 20s"))
    assert unread == {
        "collectedAt": "2026-05-28T20:26:40Z",
        "statements": "Unread",
        "statementsMessage": "not read within 20s",
    }


def test_insights_are_measurements_never_findings() -> None:
    policy = parse(
        HealthPolicySpec,
        {"checks": [{"name": "db", "postgres": {"host": "127.0.0.1", "insights": {}}}]},
    )
    check = policy.checks[0]
    result = ProbeResult(
        latency_ms=3.0,
        numbers={"connectionsPercent": 5.0, "maxConnections": 100, "connectionsUsed": 5},
        insights=insights_read(statements_state="PgStatStatementsNotLoaded", statements=()),
    )
    a = h.assess(check, result, None)
    assert a.state == "Healthy" and not a.findings
    assert a.measurements["insights"]["statements"] == "PgStatStatementsNotLoaded"


def samples(series: HealthSeries) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = "".join(series.render())
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def key(metric: str, **labels: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    who = {"namespace": "ns1", "policy": "pol", "check": "db", **labels}
    return metric, tuple(sorted(who.items()))


def test_metrics_carry_every_entry_read() -> None:
    policy = parse(
        HealthPolicySpec,
        {
            "checks": [
                {
                    "name": "db",
                    "postgres": {
                        "host": "127.0.0.1",
                        "insights": {"growth": [{"name": "new_users", "query": "SELECT 1"}]},
                    },
                }
            ]
        },
    )
    check = policy.checks[0]
    result = ProbeResult(latency_ms=3.0, insights=insights_read())
    a = h.assess(check, result, None)
    collector = HealthSeries()
    entry = {"observedState": a.state, "measurements": a.measurements}
    collector.series("uid", "ns1", "pol").record([check], {"db": result}, [entry], "None")
    got = samples(collector)
    assert got[key("stronghold_postgres_growth_value", name="new_users")] == 42.0
    assert got[key("stronghold_postgres_growth_success", name="bad")] == 0.0
    assert key("stronghold_postgres_growth_value", name="bad") not in got
    assert got[key("stronghold_postgres_statements_available")] == 1.0
    names = [name for name, _ in got]
    assert names.count("stronghold_postgres_statement_mean_seconds") == 30
    assert names.count("stronghold_postgres_unused_index_bytes") == 12
    ledger = key("stronghold_postgres_table_seq_scan_ratio", schema="public", table="ledger")
    assert got[ledger] == pytest.approx(5000 / 3)
    # A failed probe keeps the last read on /metrics (insights are read in the background).
    failed = ProbeResult.failed("Unreachable", "refused")
    collector.series("uid", "ns1", "pol").record([check], {"db": failed}, [entry], "P1")
    assert key("stronghold_postgres_growth_value", name="new_users") in samples(collector)


@pytest.mark.parametrize(
    ("growth", "field"),
    [
        ({"name": "x", "query": "SELECT 1; DELETE FROM t"}, "query"),
        ({"name": "Bad-Name", "query": "SELECT 1"}, "name"),
        ({"name": "x", "query": "SELECT 1", "timeout": "10m"}, "timeout"),
    ],
)
def test_bad_growth_queries_are_refused_naming_the_field(
    growth: dict[str, Any], field: str
) -> None:
    body = {"checks": [{"name": "db", "postgres": {"host": "h", "insights": {"growth": [growth]}}}]}
    with pytest.raises(InvalidSpec) as err:
        parse(HealthPolicySpec, body)
    assert field in err.value.field


def test_a_trailing_semicolon_is_fine_and_names_are_unique() -> None:
    ok = spec(growth=[{"name": "x", "query": "SELECT count(*) FROM auth_user;"}])
    assert ok.growth[0].query == "SELECT count(*) FROM auth_user"
    with pytest.raises(InvalidSpec):
        spec(growth=[{"name": "x", "query": "SELECT 1"}, {"name": "x", "query": "SELECT 2"}])


def test_a_new_insights_read_is_written_and_nothing_else_of_it_is() -> None:
    def status(collected: str, calls: int) -> dict[str, Any]:
        m = {"insights": {"collectedAt": collected, "topByCalls": [{"calls": calls}]}}
        return {
            "checks": [{"name": "db", "type": "postgres", "state": "Healthy", "measurements": m}]
        }

    assert signature(status("2026-01-01T00:00:00Z", 1)) == signature(
        status("2026-01-01T00:00:00Z", 2)
    )
    assert signature(status("2026-01-01T00:00:00Z", 1)) != signature(
        status("2026-01-01T00:05:00Z", 1)
    )


def test_slow_statements_never_show_utility_statements_or_literals() -> None:
    policy = parse(HealthPolicySpec, {"checks": [{"name": "db", "postgres": {"host": "h"}}]})
    result = ProbeResult(
        latency_ms=3.0,
        slow_statements=(
            SlowStatement("1", 900.0, 1, "ALTER ROLE app PASSWORD 'hunter2-secret'"),
            SlowStatement("2", 300.0, 4, "SELECT * FROM t WHERE note = 'leaked' AND id = $1"),
        ),
    )
    m = h.assess(policy.checks[0], result, None).measurements
    assert m["slowStatementsTop"] == [
        {
            "queryId": "2",
            "meanMs": 300.0,
            "calls": 4,
            "query": "SELECT * FROM t WHERE note = ? AND id = $1",
        }
    ]
