"""Metric names in PromQL, read with a real PromQL parser (promql-parser, Rust's), and the
files in manifests/monitoring that hold PromQL: the rules and the Grafana dashboard."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import promql_parser
import yaml

REPO = Path(__file__).resolve().parents[2]
MONITORING = REPO / "manifests" / "monitoring"
RULES = MONITORING / "prometheus" / "stronghold.rules.yml"
DASHBOARD = MONITORING / "grafana" / "stronghold.json"
# Grafana's interval variables stand where a duration goes; any duration parses the same.
_GRAFANA_INTERVALS = re.compile(r"\$(__rate_interval|__interval|__range)\b|\$\{(__\w+)\}")
# Suffixes a histogram, summary or counter adds to the family name that metadata reports.
SUFFIXES = ("_bucket", "_sum", "_count", "_total", "_created")


def metric_names(expr: str) -> set[str]:
    """Every metric name ``expr`` selects (by name or by a ``__name__`` equality)."""
    names: set[str] = set()

    def visit(node: Any) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            if node.name:
                names.add(node.name)
            for m in node.matchers.matchers:
                if m.name == "__name__" and m.op == promql_parser.MatchOp.Equal:
                    names.add(m.value)
        elif isinstance(node, promql_parser.MatrixSelector):
            visit(node.vector_selector)
        elif isinstance(node, promql_parser.Call):
            for arg in node.args:
                visit(arg)
        elif isinstance(node, promql_parser.AggregateExpr):
            visit(node.expr)
            if node.param is not None:
                visit(node.param)
        elif isinstance(node, promql_parser.BinaryExpr):
            visit(node.lhs)
            visit(node.rhs)
        elif isinstance(
            node,
            promql_parser.ParenExpr | promql_parser.UnaryExpr | promql_parser.SubqueryExpr,
        ):
            visit(node.expr)

    visit(promql_parser.parse(grafana_to_promql(expr)))
    return names


def grafana_to_promql(expr: str) -> str:
    return _GRAFANA_INTERVALS.sub("5m", expr)


def rule_groups(path: Path = RULES) -> list[dict[str, Any]]:
    groups: list[dict[str, Any]] = yaml.safe_load(path.read_text())["groups"]
    return groups


def recording_rules(path: Path = RULES) -> dict[str, str]:
    """Recorded name -> its expression."""
    return {r["record"]: r["expr"] for g in rule_groups(path) for r in g["rules"] if "record" in r}


def alerting_rules(path: Path = RULES) -> dict[str, str]:
    return {r["alert"]: r["expr"] for g in rule_groups(path) for r in g["rules"] if "alert" in r}


def source_metrics(expr: str, recorded: dict[str, str]) -> set[str]:
    """The scraped names behind ``expr``: recording rules replaced by what they read."""
    out: set[str] = set()
    for name in metric_names(expr):
        out |= source_metrics(recorded[name], recorded) if name in recorded else {name}
    return out


def dashboard_queries(path: Path = DASHBOARD) -> Iterator[tuple[str, str]]:
    """(where, expr) for every query of the dashboard: panels, variables, annotations."""
    dash = json.loads(path.read_text())

    def panels(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for p in items:
            yield p
            yield from panels(p.get("panels") or [])

    for p in panels(dash["panels"]):
        for t in p.get("targets") or []:
            yield f"panel {p['title']!r} {t['refId']}", t["expr"]
    for v in dash["templating"]["list"]:
        if v["type"] == "query":
            query = v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
            # label_values(METRIC, label) is Grafana's, not PromQL: its first argument is.
            m = re.fullmatch(r"label_values\((.+),\s*\w+\)", query)
            yield f"variable {v['name']!r}", m.group(1) if m else query
    for a in dash["annotations"]["list"]:
        if "expr" in a:
            yield f"annotation {a['name']!r}", a["expr"]


def family(name: str, families: set[str]) -> str | None:
    """The metadata family ``name`` belongs to (itself, or without a type suffix)."""
    if name in families:
        return name
    for suffix in SUFFIXES:
        if name.endswith(suffix) and name[: -len(suffix)] in families:
            return name[: -len(suffix)]
    return None
