"""Database insights: rank, bound and redact what an insights read found (pure).

Status shows the ``top`` of each list; /metrics carries every entry read (at most ``limit``).
Statement text comes from pg_stat_statements, which replaces the constants of queries
(SELECT/INSERT/UPDATE/DELETE/MERGE) with ``$n``; utility statements (``ALTER ROLE ...
PASSWORD '...'``) are kept verbatim there, so only query statements are shown, comments are
dropped and any literal left is masked: no parameter value ever reaches status.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from stronghold_operator.models.health import PostgresInsights, SeqScanRule
from stronghold_operator.probes.base import DatabaseInsights, StatementStat, TableScans

_QUERY_WORDS = frozenset(
    {"select", "insert", "update", "delete", "merge", "with", "values", "table"}
)
_BLOCK_COMMENT = re.compile(r"/\*.*?\*/", re.S)
_LINE_COMMENT = re.compile(r"--[^\n]*")
_DOLLAR_QUOTED = re.compile(r"\$(\w*)\$.*?\$\1\$", re.S)
_QUOTED = re.compile(r"'(?:[^']|'')*'")
_NUMBER = re.compile(r"(?<![\w$.])\d+(?:\.\d+)?(?:[eE][-+]?\d+)?\b")
_SPACE = re.compile(r"\s+")


def statement_text(query: str, chars: int) -> str | None:
    """The statement as status may show it, at most ``chars`` long; None for a statement
    that is not a query (utility statements are not normalised by pg_stat_statements)."""
    text = _LINE_COMMENT.sub(" ", _BLOCK_COMMENT.sub(" ", query))
    text = _SPACE.sub(" ", text).strip()
    first = text.split(" ", 1)[0].lstrip("(").lower()
    if first not in _QUERY_WORDS:
        return None
    # Defence in depth: pg_stat_statements already made constants $n.
    text = _DOLLAR_QUOTED.sub("?", text)
    text = _QUOTED.sub("?", text)
    text = _NUMBER.sub("?", text)
    return truncate(text, chars)


def truncate(text: str, chars: int) -> str:
    """``text`` cut to ``chars`` characters, the last one an ellipsis when cut."""
    return text if len(text) <= chars else text[: chars - 1].rstrip() + "…"


def rows_per_call(s: StatementStat) -> float:
    return s.rows / s.calls if s.calls else 0.0


@dataclass(frozen=True)
class StatementTops:
    """The three lists of the guide's queries, each best first."""

    by_mean: tuple[StatementStat, ...]
    by_calls: tuple[StatementStat, ...]
    by_rows: tuple[StatementStat, ...]


def rank_statements(
    statements: Sequence[StatementStat], n: int, min_rows_per_call: float, chars: int
) -> StatementTops:
    """Top ``n`` by mean time, by calls and by rows per call (at least ``min_rows_per_call``);
    statements status may not show (not queries) are left out, ties broken by query id."""
    shown = [s for s in statements if statement_text(s.query, chars) is not None]

    def top(rows: list[StatementStat], key: Any) -> tuple[StatementStat, ...]:
        return tuple(sorted(rows, key=lambda s: (-key(s), s.query_id))[:n])

    return StatementTops(
        by_mean=top(shown, lambda s: s.mean_ms),
        by_calls=top(shown, lambda s: s.calls),
        by_rows=top([s for s in shown if rows_per_call(s) >= min_rows_per_call], rows_per_call),
    )


def seq_scan_ratio(t: TableScans) -> float | None:
    """Sequential scans per index scan; None when no index scan ever happened."""
    return t.seq_scans / t.idx_scans if t.idx_scans else None


def seq_scan_heavy(t: TableScans, rule: SeqScanRule) -> bool:
    """Sequential scans far above index scans, on a table big enough for it to matter."""
    if t.seq_scans < rule.min_seq_scans or t.size_bytes < rule.min_table_bytes:
        return False
    ratio = seq_scan_ratio(t)
    return ratio is None or ratio >= rule.min_ratio


def heavy_tables(tables: Sequence[TableScans], rule: SeqScanRule) -> list[TableScans]:
    """The seq-scan-heavy tables, worst first: no index scans at all, then by ratio, then
    by rows read sequentially."""

    def worst(t: TableScans) -> tuple[float, int, str, str]:
        ratio = seq_scan_ratio(t)
        first = -(ratio if ratio is not None else float("inf"))
        return (first, -t.seq_tuples_read, t.schema, t.table)

    return sorted((t for t in tables if seq_scan_heavy(t, rule)), key=worst)


def _when(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _statement(s: StatementStat, chars: int) -> dict[str, Any]:
    return {
        "queryId": s.query_id,
        "calls": s.calls,
        "meanMs": round(s.mean_ms, 2),
        "totalMs": round(s.total_ms, 1),
        "rowsPerCall": round(rows_per_call(s), 1),
        "query": statement_text(s.query, chars) or "",
    }


def summarise(spec: PostgresInsights, ins: DatabaseInsights) -> dict[str, Any]:
    """``measurements.insights`` of a postgres check: bounded to ``spec.top`` per list."""
    out: dict[str, Any] = {
        "collectedAt": _when(ins.collected_at),
        "statements": ins.statements_state,
    }
    if ins.statements_message:
        out["statementsMessage"] = ins.statements_message
    if ins.stats_reset is not None:
        out["statsReset"] = _when(ins.stats_reset)
    if ins.statements_state == "Unread":
        return out
    chars, n = spec.statement_chars, spec.top
    if ins.statements_state == "Available":
        tops = rank_statements(ins.statements, n, spec.min_rows_per_call, chars)
        out["topByMeanTime"] = [_statement(s, chars) for s in tops.by_mean]
        out["topByCalls"] = [_statement(s, chars) for s in tops.by_calls]
        out["topByRowsPerCall"] = [_statement(s, chars) for s in tops.by_rows]
    unused = sorted(ins.unused_indexes, key=lambda i: (-i.size_bytes, i.schema, i.index))
    out["unusedIndexCount"] = len(unused)
    out["unusedIndexes"] = [
        {"schema": i.schema, "table": i.table, "index": i.index, "sizeBytes": i.size_bytes}
        for i in unused[:n]
    ]
    heavy = heavy_tables(ins.tables, spec.seq_scans)
    out["seqScanTableCount"] = len(heavy)
    tables = []
    for t in heavy[:n]:
        entry: dict[str, Any] = {
            "schema": t.schema,
            "table": t.table,
            "seqScans": t.seq_scans,
            "idxScans": t.idx_scans or 0,
            "seqTuplesRead": t.seq_tuples_read,
            "sizeBytes": t.size_bytes,
        }
        ratio = seq_scan_ratio(t)
        if ratio is not None:
            entry["ratio"] = round(ratio, 1)
        tables.append(entry)
    out["seqScanTables"] = tables
    if ins.growth:
        out["growth"] = [
            {"name": g.name, "value": g.value}
            if g.value is not None
            else {"name": g.name, "error": truncate(g.error, 200)}
            for g in ins.growth
        ]
    return out


@dataclass(frozen=True)
class InsightSeries:
    """What /metrics shows of one check's insights (every entry read, not only the top)."""

    available: int  # 1 when pg_stat_statements answered
    growth: tuple[tuple[str, float | None], ...]
    statements: tuple[StatementStat, ...]
    unused_indexes: tuple[tuple[str, str, str, int], ...]
    seq_scan_ratios: tuple[tuple[str, str, float], ...]  # heavy tables; idx 0 counts as 1


def series(spec: PostgresInsights, ins: DatabaseInsights) -> InsightSeries:
    return InsightSeries(
        available=1 if ins.statements_state == "Available" else 0,
        growth=tuple((g.name, g.value) for g in ins.growth),
        statements=tuple(
            s for s in ins.statements if statement_text(s.query, spec.statement_chars) is not None
        ),
        unused_indexes=tuple(
            (i.schema, i.table, i.index, i.size_bytes) for i in ins.unused_indexes
        ),
        seq_scan_ratios=tuple(
            (t.schema, t.table, t.seq_scans / max(t.idx_scans or 0, 1))
            for t in heavy_tables(ins.tables, spec.seq_scans)
        ),
    )
