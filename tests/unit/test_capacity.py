"""Capacity trends: fits, projections, band crossings, the Markdown and HTML renderings."""

from __future__ import annotations

import argparse
import math
import xml.etree.ElementTree as ET
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
import yaml

from stronghold_operator.cli import capacity as cli
from stronghold_operator.logic import capacity as cap
from stronghold_operator.logic import capacity_render as render
from stronghold_operator.platforms.prometheus import PrometheusError, parse_matrix, parse_vector

REPO = Path(__file__).resolve().parents[2]
NOW = 1_800_000_000.0
DAY = cap.DAY
HORIZON = timedelta(days=30)
DB = cap.DEFAULT_RESOURCES[0]


def hourly(
    days: float, f: object, *, noise: float = 0.0, seed: int = 7
) -> tuple[list[float], list[float]]:
    rng = np.random.default_rng(seed)
    n = int(days * 24) + 1
    times = [NOW - days * DAY + i * 3600 for i in range(n)]
    values = [f(t) + (rng.normal(0, noise) if noise else 0.0) for t in times]  # type: ignore[operator]
    return times, values


def test_known_slope_comes_out_as_that_slope() -> None:
    times, values = hourly(30, lambda t: 50e9 + 1e9 * (t - NOW) / DAY, noise=2e8)
    trend = cap.fit(times, values)
    assert trend is not None
    assert trend.slope == pytest.approx(1e9, rel=0.01)
    assert trend.linear_at(NOW) == pytest.approx(50e9, rel=0.002)
    assert trend.growing


def test_known_slope_projects_its_crossing_date() -> None:
    # 50 GB now, +1 GB/day, critical at 95 % of 100 GB: 45 days from now.
    times, values = hourly(30, lambda t: 50e9 + 1e9 * (t - NOW) / DAY, noise=2e8)
    a = cap.assess(DB, {}, times, values, 100e9, now=NOW, horizon=timedelta(days=60))
    assert a.verdict == "critical"
    assert a.days_left(NOW) == pytest.approx(45, abs=0.5)
    b = cap.assess(DB, {}, times, values, 100e9, now=NOW, horizon=HORIZON)
    assert b.verdict == "ok"
    assert b.days_left(NOW) == pytest.approx(45, abs=0.5)


def test_known_growth_rate_comes_out_as_that_rate() -> None:
    times, values = hourly(30, lambda t: 1000 * 1.03 ** ((t - NOW) / DAY))
    trend = cap.fit(times, values)
    assert trend is not None and trend.growth is not None
    assert trend.growth == pytest.approx(0.03, rel=1e-6)
    # 1000 * 1.03^d = 2000 -> d = ln 2 / ln 1.03
    crossing = cap.growth_crossing(trend, 2000, NOW)
    assert crossing is not None
    assert (crossing - NOW) / DAY == pytest.approx(math.log(2) / math.log(1.03), rel=1e-6)


def test_growth_model_is_sooner_than_linear_for_compounding_series() -> None:
    times, values = hourly(30, lambda t: 1000 * 1.03 ** ((t - NOW) / DAY))
    res = cap.Resource("users", "users", "q", limit=4000)
    lin = cap.assess(res, {}, times, values, 4000, now=NOW, horizon=HORIZON, model="linear")
    gro = cap.assess(res, {}, times, values, 4000, now=NOW, horizon=HORIZON, model="growth")
    first = cap.assess(res, {}, times, values, 4000, now=NOW, horizon=HORIZON, model="earliest")
    assert gro.crossing is not None and lin.crossing is not None
    assert gro.crossing < lin.crossing
    assert first.crossing == gro.crossing
    assert gro.verdict == "ok"  # ln 4 / ln 1.03 = 46.9 days


@pytest.mark.parametrize("noise", [0.0, 1e8, 5e8])
def test_flat_series_never_crosses(noise: float) -> None:
    times, values = hourly(30, lambda t: 40e9, noise=noise, seed=3)
    a = cap.assess(
        DB, {}, times, values, 100e9, now=NOW, horizon=timedelta(days=3650), model="earliest"
    )
    assert a.verdict == "flat"
    assert a.crossing is None and a.days_left(NOW) is None


def test_decreasing_series_never_crosses() -> None:
    times, values = hourly(30, lambda t: 60e9 - 0.5e9 * (t - NOW) / DAY, noise=1e8)
    a = cap.assess(
        DB, {}, times, values, 100e9, now=NOW, horizon=timedelta(days=3650), model="earliest"
    )
    assert a.trend is not None and a.trend.slope < 0
    assert a.verdict == "flat"
    assert a.linear_crossing is None and a.growth_crossing is None


def test_already_over_the_band_is_crossed_now() -> None:
    times, values = hourly(10, lambda t: 97.0)
    a = cap.assess(DB, {}, times, values, 100.0, now=NOW, horizon=HORIZON)
    assert a.verdict == "crossed"
    assert a.days_left(NOW) == 0


def test_too_little_history_and_no_limit() -> None:
    assert cap.assess(DB, {}, [NOW - 60, NOW], [1, 2], 10, now=NOW, horizon=HORIZON).verdict == (
        "no-data"
    )
    times, values = hourly(2, lambda t: 5 + (t - NOW) / DAY)
    a = cap.assess(DB, {}, times, values, None, now=NOW, horizon=HORIZON)
    assert a.verdict == "no-limit"
    assert a.trend is not None and a.trend.slope == pytest.approx(1.0)


def test_limits_match_series_by_shared_labels() -> None:
    limits = [
        ({"namespace": "a", "policy": "web"}, 10.0),
        ({"namespace": "b", "policy": "web"}, 4.0),
    ]
    assert cap.match_limit({"namespace": "b", "policy": "web", "kind": "current"}, limits) == 4.0
    assert cap.match_limit({"namespace": "c", "policy": "web"}, limits) is None
    assert cap.match_limit({"datname": "app"}, [({}, 100.0)]) == 100.0
    # one ScalingPolicy found does not become the limit of another's series
    assert cap.match_limit({"namespace": "c", "policy": "x"}, limits[:1]) is None


def test_durations() -> None:
    assert cap.parse_duration("30d") == timedelta(days=30)
    assert cap.parse_duration("1h30m") == timedelta(minutes=90)
    assert cap.parse_duration("2w") == timedelta(days=14)
    assert cap.parse_duration("90") == timedelta(seconds=90)
    for bad in ("", "30x", "d", "-1d", "0s", "5d junk"):
        with pytest.raises(ValueError):
            cap.parse_duration(bad)


def _report() -> cap.Report:
    times, values = hourly(30, lambda t: 80e9 + 1e9 * (t - NOW) / DAY, noise=1e8)
    risky = cap.assess(DB, {}, times, values, 100e9, now=NOW, horizon=HORIZON)
    ftimes, fvalues = hourly(30, lambda t: 30.0, noise=1.0)
    cpu = cap.DEFAULT_RESOURCES[2]
    flat = cap.assess(
        cpu,
        {"namespace": "shop", "policy": "web"},
        ftimes,
        fvalues,
        100.0,
        now=NOW,
        horizon=HORIZON,
    )
    empty = cap.assess(
        cap.DEFAULT_RESOURCES[5], {}, (), (), None, now=NOW, horizon=HORIZON, note="no samples"
    )
    return cap.Report(NOW, NOW - 30 * DAY, HORIZON, "linear", (flat, empty, risky))


def test_markdown_summary_lists_the_worst_first() -> None:
    text = render.markdown(_report())
    assert "**1 resource(s) cross their critical band within 30 days**" in text
    rows = [line for line in text.splitlines() if line.startswith("| ") and "---" not in line]
    assert rows[1].startswith("| db_size | critical |")
    assert "15.0 d" in rows[1]  # 80 GB, +1 GB/day, critical at 95 GB
    assert rows[2].startswith("| web_cpu{namespace=shop,policy=web} | flat |")
    assert "never" in rows[2]
    assert "queue_depth: no samples" in text


def test_html_report_is_self_contained_with_a_plot_per_series() -> None:
    page = render.html_report(_report())
    assert page.startswith("<!DOCTYPE html>")
    # no scripts, no external assets: nothing fetched when the page opens
    for fetch in ("<script", "src=", 'href="http', "url(http", "@import", "<metadata"):
        assert fetch not in page
    svgs = page.count("<svg")
    assert svgs == 2  # the series without data has no plot
    # every figure is well-formed SVG with drawn paths
    start = page.index("<svg")
    end = page.index("</svg>", start) + len("</svg>")
    root = ET.fromstring(page[start:end])
    assert root.tag.endswith("svg")
    assert len(root.findall(".//{http://www.w3.org/2000/svg}path")) > 10


def test_to_json_carries_the_projection() -> None:
    doc = _report().to_json()
    first = doc["resources"][0]  # type: ignore[index]
    assert first["resource"] == "db_size" and first["verdict"] == "critical"
    assert first["daysLeft"] == pytest.approx(15, abs=0.3)
    assert doc["atRisk"] == 1


def test_prometheus_answers_parse() -> None:
    matrix = parse_matrix(
        {
            "resultType": "matrix",
            "result": [{"metric": {"a": "1"}, "values": [[1, "2"], [2, "NaN"], [3, "4"]]}],
        }
    )
    assert matrix[0].labels == {"a": "1"} and matrix[0].values == (2.0, 4.0)
    assert parse_vector({"resultType": "scalar", "result": [1, "7"]})[0].value == 7.0
    with pytest.raises(PrometheusError):
        parse_matrix({"resultType": "vector", "result": []})


def _args(**kw: object) -> argparse.Namespace:
    base: dict[str, object] = {"config": None, "limit": [], "only": []}
    return argparse.Namespace(**{**base, **kw})


def test_cli_resources_limits_config_and_only(tmp_path: Path) -> None:
    cfg = tmp_path / "res.yaml"
    cfg.write_text(
        "- name: users\n  query: sum(app_users)\n  limit: 1M\n  critical: 0.8\n"
        "- name: queue_depth\n  limit: 500\n"
    )
    chosen = {r.name: r for r in cli.resources(_args(config=str(cfg), limit=["db_size=100Gi"]))}
    assert chosen["users"].limit == 1e6 and chosen["users"].critical == 0.8
    assert chosen["queue_depth"].limit == 500 and chosen["queue_depth"].query.startswith("sum")
    assert chosen["db_size"].limit == 100 * 2**30 and chosen["db_size"].limit_query is None
    only = cli.resources(_args(only=["connections"]))
    assert [r.name for r in only] == ["connections"]
    for bad in (_args(limit=["nope=1"]), _args(limit=["db_size=lots"]), _args(only=["x"])):
        with pytest.raises(cli.UsageError):
            cli.resources(bad)
    cfg.write_text("- name: new\n  limit: 3\n")
    with pytest.raises(cli.UsageError, match="needs a query"):
        cli.resources(_args(config=str(cfg)))
    cfg.write_text("- name: web_cpu\n  critical: 90\n")  # a percentage where a fraction goes
    with pytest.raises(cli.UsageError, match="fraction"):
        cli.resources(_args(config=str(cfg)))
    with pytest.raises(cli.UsageError, match="positive"):
        cli.resources(_args(limit=["db_size=0"]))


def test_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = _args(markdown=None, html=str(tmp_path / "r.html"), json_path=None)
    risky = _report()
    assert cli.emit(risky, out) == cli.EXIT_AT_RISK
    assert (tmp_path / "r.html").read_text().count("<svg") == 2
    calm = cap.Report(NOW, risky.start, HORIZON, "linear", risky.assessments[:2])
    assert cli.emit(calm, out) == cli.EXIT_OK
    broken = cap.Report(NOW, risky.start, HORIZON, "linear", calm.assessments, ("db_size: 503",))
    assert cli.emit(broken, out) == cli.EXIT_ERROR
    blind = cap.Report(NOW, risky.start, HORIZON, "linear", risky.assessments[1:2])
    assert cli.emit(blind, out) == cli.EXIT_ERROR
    assert "no history found for any resource" in capsys.readouterr().err


def test_the_cronjob_example_runs_this_command() -> None:
    from stronghold_operator.cli import build_parser

    docs = list(yaml.safe_load_all((REPO / "examples/capacity-report-cronjob.yaml").read_text()))
    cron = next(d for d in docs if d["kind"] == "CronJob")
    pod = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    args = build_parser(container["args"]).parse_args(container["args"])
    assert args.func is cli._run and args.horizon == "30d"
    assert {m["mountPath"] for m in container["volumeMounts"]} >= {
        str(Path(args.html).parent),
        str(Path(args.json_path).parent),
    }
    assert any(e["name"] == cli.ENV_URL for e in container["env"])
    assert cli.resources(args)  # its options are valid


def test_the_docs_list_every_default_resource_and_query() -> None:
    text = (REPO / "docs/capacity.md").read_text()
    for r in cap.DEFAULT_RESOURCES:
        assert f"| `{r.name}` | `{r.query}`" in text, r.name


def test_default_queries_name_the_operators_own_metrics() -> None:
    from prometheus_client import REGISTRY

    from stronghold_operator.controllers import scaling  # registers the scaling metrics

    labels = {
        "stronghold_scaling_replicas": scaling.REPLICAS._labelnames,
        "stronghold_scaling_utilisation_percent": scaling.UTILISATION._labelnames,
    }
    assert set(labels) <= set(REGISTRY._names_to_collectors)
    queries = {r.name: r.query for r in cap.DEFAULT_RESOURCES}
    assert queries["replicas"] == 'stronghold_scaling_replicas{kind="current"}'
    assert "kind" in labels["stronghold_scaling_replicas"]
    assert "resource" in labels["stronghold_scaling_utilisation_percent"]
    # the series carry what the maxReplicas lookup matches on
    assert {"namespace", "policy"} <= set(labels["stronghold_scaling_replicas"])
