"""``stronghold capacity report`` against our own real Prometheus holding 30 days of history.

The history is the operator's own raw metrics with known slopes, backfilled into TSDB blocks
with ``promtool tsdb create-blocks-from openmetrics``; the shipped recording rules
(manifests/monitoring/prometheus/stronghold.rules.yml) are then evaluated over that history
by ``promtool tsdb create-blocks-from rules`` against the running Prometheus (Prometheus's
own rule backfilling), and the report reads the recorded series, as it does by default.
The HTML report is opened in headless Chromium over the DevTools protocol: screenshot,
rendered SVG plots, no console errors.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import math
import os
import shutil
import subprocess
import sys
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
import yaml

from stronghold_testbed import prometheus as testbed_prometheus
from tests.integration import kit

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

DAY = 86400.0
STEP = 240  # seconds between backfilled samples: inside Prometheus's 5-minute lookback
HISTORY_DAYS = 30
PROMTOOL_BLOCK = 2 * 3600  # seconds: promtool's default block for backfilled rules
DB_NOW, DB_SLOPE, DB_LIMIT = 75e9, 1e9, 100e9  # bytes, bytes/day; critical at 95 %
# 15 one-replica steps: enough for a staircase's fitted slope to be the slope (within 0.5 %)
REPLICAS_START, REPLICAS_SLOPE, MAX_REPLICAS = 2.0, 0.5, 40
# The operator moved pods half-way: the raw series change instance, the recorded ones do not.
INSTANCES = ("10.1.0.5:9090", "10.1.0.6:9090")


def _binary(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(
            f"{name} is not installed (Debian package {package}; make tools)", pytrace=False
        )
    return path


@dataclass(frozen=True)
class History:
    url: str
    namespace: str
    end: float  # the last backfilled sample

    @property
    def db_row(self) -> str:
        return f"db_size{{check=db,namespace={self.namespace},policy=platform}}"

    @property
    def db_crossing(self) -> float:
        """When the database reaches 95 % of its volume, by construction."""
        return self.end + (0.95 * DB_LIMIT - DB_NOW) / DB_SLOPE * DAY

    @property
    def replicas_crossing(self) -> float:
        # floor(a + b*d) is, on average, a - 0.5 + b*d: that line reaches maxReplicas here.
        start = self.end - HISTORY_DAYS * DAY
        return start + (MAX_REPLICAS - (REPLICAS_START - 0.5)) / REPLICAS_SLOPE * DAY


def openmetrics(namespace: str, end: float) -> str:
    """30 days of the operator's raw metrics every STEP seconds, as Prometheus would have
    scraped them (job and instance); noise seeded, slopes known."""
    rng = np.random.default_rng(19)
    times = np.arange(end - HISTORY_DAYS * DAY, end + 1, STEP, dtype=float)
    ago = (end - times) / DAY  # days before the last sample
    since = HISTORY_DAYS - ago  # days after the first
    n = len(times)
    check = f'namespace="{namespace}",policy="platform",check="db"'
    pol = f'namespace="{namespace}",policy="web"'
    families: list[tuple[str, list[tuple[str, np.ndarray]]]] = [
        (
            "stronghold_health_db_size_bytes",
            [(check, DB_NOW - DB_SLOPE * ago + rng.normal(0, 1e8, n))],
        ),
        (
            "kubelet_volume_stats_capacity_bytes",
            [
                (
                    f'namespace="{namespace}",persistentvolumeclaim="pgdata-db-0"',
                    np.full(n, DB_LIMIT),
                )
            ],
        ),
        (
            "stronghold_health_db_connections_used",
            [(check, np.round(40 + rng.normal(0, 3, n)))],
        ),
        ("stronghold_health_db_max_connections", [(check, np.full(n, 100.0))]),
        (
            "stronghold_scaling_replicas",
            [
                (pol + ',kind="current"', np.floor(REPLICAS_START + REPLICAS_SLOPE * since + 1e-9)),
                (pol + ',kind="desired"', np.full(n, 3.0)),
                (pol + ',kind="min"', np.full(n, 2.0)),
                (pol + ',kind="max"', np.full(n, float(MAX_REPLICAS))),
            ],
        ),
        (
            "stronghold_scaling_utilisation_percent",
            [
                (pol + ',resource="cpu"', 35 + 0.5 * since + rng.normal(0, 4, n)),
                (pol + ',resource="memory"', 70 - 0.3 * since + rng.normal(0, 2, n)),
            ],
        ),
    ]
    half = end - HISTORY_DAYS * DAY / 2
    lines: list[str] = []
    for name, series in families:
        lines.append(f"# TYPE {name} gauge")
        for labels, values in series:
            for t, v in zip(times, values, strict=True):
                scrape = f'job="stronghold-operator",instance="{INSTANCES[int(t >= half)]}"'
                if name.startswith("kubelet_"):
                    scrape = 'job="kubelet",instance="node-1"'
                lines.append(f"{name}{{{labels},{scrape}}} {v:.6g} {int(t)}")
    lines.append("# EOF")
    return "\n".join(lines) + "\n"


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())


def _run(*cmd: str) -> None:
    made = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=400)
    assert made.returncode == 0, f"{cmd[:4]}: {made.stdout}{made.stderr}"


class OwnPrometheus:
    """Prometheus on a data directory, on 127.0.0.1; stopped by pid."""

    def __init__(self, binary: str, work: Path, data: Path) -> None:
        config = work / "prometheus.yml"
        config.write_text("global: {scrape_interval: 15s}\n")
        self.url = f"http://127.0.0.1:{kit.free_port()}"
        self.log = (work / "log.txt").open("ab")
        self.proc = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={data}",
                "--storage.tsdb.retention.time=400d",  # the backfilled blocks are days old
                f"--web.listen-address={self.url.removeprefix('http://')}",
            ],
            stdout=self.log,
            stderr=self.log,
        )

    def wait_for(self, metric: str, at: float) -> None:
        def loaded() -> bool:
            q = urllib.parse.quote(f"count({metric})")
            try:
                doc = _get(f"{self.url}/api/v1/query?query={q}&time={at}")
            except OSError:
                return False  # not listening yet
            return bool(doc["data"]["result"])

        kit.wait_until(f"Prometheus serving the backfilled {metric}", loaded, timeout=120)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)
        self.log.close()


def report_rules() -> dict[str, Any]:
    """The shipped recording rules the default queries read, verbatim from the rules file."""
    from stronghold_operator.logic.capacity import DEFAULT_RESOURCES
    from tests.support import promql

    wanted: set[str] = set()
    for r in DEFAULT_RESOURCES:
        for expr in filter(None, (r.query, r.limit_query)):
            wanted |= promql.metric_names(expr)
    groups = yaml.safe_load(testbed_prometheus.RULES.read_text())["groups"]
    rules = [rule for g in groups for rule in g["rules"] if rule.get("record") in wanted]
    assert {rule["record"] for rule in rules} == {w for w in wanted if ":" in w}
    return {"groups": [{"name": "stronghold.capacity", "rules": rules}]}


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory, testbed: Path) -> Iterator[History]:
    """Our own Prometheus whose TSDB holds the backfilled raw metrics and the recording
    rules evaluated over them."""
    prom_bin = _binary("prometheus", "prometheus")
    promtool = _binary("promtool", "prometheus")
    work = tmp_path_factory.mktemp("capacity")
    namespace = f"cap-{uuid.uuid4().hex[:8]}"  # a label only: nothing in the cluster
    end = float(int(time.time()) - 60)
    start = end - HISTORY_DAYS * DAY
    source = work / "history.om"
    source.write_text(openmetrics(namespace, end))
    data, recorded = work / "data", work / "recorded"
    rules = work / "rules.yml"
    rules.write_text(yaml.safe_dump(report_rules()))
    _run(promtool, "tsdb", "create-blocks-from", "openmetrics", "-q", str(source), str(data))
    raw = OwnPrometheus(prom_bin, work, data)
    try:
        raw.wait_for("stronghold_health_db_size_bytes", end - DAY)
        # The shipped rules the report reads, evaluated by Prometheus's engine over the raw
        # history (all 19 take minutes on the 2-core test machine; these few, seconds).
        # promtool stops the whole import when the first aligned evaluation falls past the
        # end of the first 2-hour block (1 run in 30): so start on a block boundary.
        _run(
            promtool,
            "tsdb",
            "create-blocks-from",
            "rules",
            "-q",
            f"--url={raw.url}",
            f"--start={int(start) // PROMTOOL_BLOCK * PROMTOOL_BLOCK}",
            f"--end={int(end)}",
            f"--eval-interval={STEP}s",
            f"--output-dir={recorded}",
            str(rules),
        )
    finally:
        raw.stop()
    found = recorded.iterdir() if recorded.exists() else iter(())
    blocks = [b for b in found if (b / "meta.json").exists()]
    assert blocks, "promtool wrote no blocks for the recording rules"
    for block in blocks:
        block.rename(data / block.name)
    prom = OwnPrometheus(prom_bin, work, data)
    try:
        prom.wait_for("stronghold:db_size_bytes:max", end - DAY)
        yield History(prom.url, namespace, end)
    finally:
        prom.stop()


def report(
    *args: str, url: str | None, token: str | None = None
) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "stronghold_operator.cli", "capacity", "report", *args]
    if url is not None:
        cmd += ["--prometheus", url]
    env = {k: v for k, v in os.environ.items() if not k.startswith("STRONGHOLD_PROMETHEUS_")}
    if token is not None:
        env["STRONGHOLD_PROMETHEUS_TOKEN"] = token
    return subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=120, env=env)


def epoch(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def by_resource(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["resource"]: r for r in doc["resources"]}


def test_report_finds_the_history_and_projects_the_known_slopes(
    history: History, tmp_path: Path
) -> None:
    out = report(
        "--horizon",
        "30d",
        "--json",
        str(tmp_path / "r.json"),
        "--markdown",
        str(tmp_path / "r.md"),
        url=history.url,
    )
    assert out.returncode == 1, out.stdout + out.stderr  # the database crosses in ~20 days
    doc = json.loads((tmp_path / "r.json").read_text())
    got = by_resource(doc)

    db = got["db_size"]
    assert db["labels"] == {"namespace": history.namespace, "policy": "platform", "check": "db"}
    assert db["verdict"] == "critical"
    assert db["points"] >= 700  # 30 days at the default 1 h step: the history was found
    assert db["limit"] == DB_LIMIT  # from kubelet_volume_stats_capacity_bytes
    assert db["slopePerDay"] == pytest.approx(DB_SLOPE, rel=0.01)
    assert abs(epoch(db["crossing"]) - history.db_crossing) < 0.25 * DAY
    assert db["daysLeft"] == pytest.approx(20, abs=0.5)

    replicas = got["replicas"]
    assert replicas["labels"] == {"namespace": history.namespace, "policy": "web"}
    assert replicas["limit"] == MAX_REPLICAS  # the recorded kind="max" of the same policy
    assert replicas["verdict"] == "ok"  # ~47 days away: beyond the horizon
    assert abs(epoch(replicas["crossing"]) - history.replicas_crossing) < 2 * DAY

    assert got["connections"]["verdict"] == "flat"
    assert got["connections"]["limit"] == 100  # the same check's recorded max_connections
    assert got["web_memory"]["verdict"] == "flat"  # decreasing
    cpu = got["web_cpu"]
    assert cpu["verdict"] == "ok" and cpu["slopePerDay"] == pytest.approx(0.5, abs=0.05)
    assert got["queue_depth"]["verdict"] == "no-data"  # nothing exported it

    summary = (tmp_path / "r.md").read_text()
    assert summary in out.stdout
    assert "1 resource(s) cross their critical band within 30 days" in summary
    assert f"| {history.db_row} | critical |" in summary


def test_recorded_series_continue_across_the_operators_move(history: History) -> None:
    """The raw series are two (one per operator pod), the recorded one a single series."""

    def count(expr: str) -> float:
        q = urllib.parse.quote(f"count(last_over_time({expr}[31d]))")
        doc = _get(f"{history.url}/api/v1/query?query={q}&time={history.end}")
        return float(doc["data"]["result"][0]["value"][1])

    ns = f'namespace="{history.namespace}"'
    assert count(f"stronghold_health_db_size_bytes{{{ns}}}") == len(INSTANCES)
    assert count(f"stronghold:db_size_bytes:max{{{ns}}}") == 1


def test_exit_code_follows_the_horizon(history: History) -> None:
    near = report("--horizon", "10d", url=history.url)
    assert near.returncode == 0, near.stdout + near.stderr  # db in 20 days, replicas in ~47
    assert "nothing crosses its critical band within 10 days" in near.stdout
    far = report("--horizon", "90d", "--json", "-", url=history.url)
    assert far.returncode == 1
    doc = json.loads(far.stdout)  # the JSON alone
    assert {r["resource"] for r in doc["resources"] if r["verdict"] == "critical"} == {
        "db_size",
        "replicas",
        "web_cpu",
    }


def test_untrustworthy_reports_exit_2(history: History, tmp_path: Path) -> None:
    nothing = report("--horizon", "30d", url=f"http://127.0.0.1:{kit.free_port()}")
    assert nothing.returncode == 2
    assert "ClientConnectorError" in nothing.stderr or "Connect" in nothing.stderr
    config = tmp_path / "res.yaml"
    config.write_text("- name: users\n  query: sum(app_users_total)\n  limit: 1000\n")
    empty = report("--config", str(config), "--only", "users", url=history.url)
    assert empty.returncode == 2
    assert "no history found for any resource" in empty.stderr
    config.write_text("- name: users\n  query: sum(app_users_total\n  limit: 1000\n")
    refused = report("--config", str(config), "--only", "users", url=history.url)
    assert refused.returncode == 2
    assert "bad_data" in refused.stderr  # Prometheus's parse error, passed on
    assert report(url=None).returncode == 2  # no URL at all


async def test_bearer_token_passes_an_auth_proxy(history: History) -> None:
    """A Prometheus behind an auth proxy (ours, on 127.0.0.1, forwarding to the real one)."""
    from aiohttp import web

    secret = uuid.uuid4().hex
    seen: list[str] = []

    async def forward(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization", ""))
        if request.headers.get("Authorization") != f"Bearer {secret}":
            return web.Response(status=401, text="unauthorized")
        async with (
            aiohttp.ClientSession() as http,
            http.post(f"{history.url}{request.path}", data=await request.post()) as r,
        ):
            return web.Response(
                status=r.status, body=await r.read(), content_type="application/json"
            )

    app = web.Application()
    app.router.add_post("/{tail:.*}", forward)
    runner = web.AppRunner(app)
    await runner.setup()
    port = kit.free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        proxy = f"http://127.0.0.1:{port}"
        ok = await asyncio.to_thread(report, "--only", "db_size", url=proxy, token=secret)
        assert ok.returncode == 1, ok.stdout + ok.stderr  # the history, through the proxy
        assert f"| {history.db_row} | critical |" in ok.stdout
        assert secret not in ok.stdout + ok.stderr
        wrong = f"not-{secret}"
        denied = await asyncio.to_thread(report, "--only", "db_size", url=proxy, token=wrong)
        assert denied.returncode == 2
        assert "HTTP 401" in denied.stderr
        assert wrong not in denied.stdout + denied.stderr  # never echoed
    finally:
        await runner.cleanup()
    assert f"Bearer {secret}" in seen and f"Bearer not-{secret}" in seen


# -- the HTML report in a real browser ---------------------------------------------------


class DevTools:
    """Just enough of the Chrome DevTools protocol over aiohttp's WebSocket client."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.ids = iter(range(1, 1_000_000))
        self.errors: list[str] = []

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        my = next(self.ids)
        await self.ws.send_json({"id": my, "method": method, "params": params})
        while True:
            msg = await asyncio.wait_for(self.ws.receive_json(), timeout=60)
            if msg.get("id") == my:
                assert "error" not in msg, msg
                result: dict[str, Any] = msg.get("result", {})
                return result
            self.record(msg)

    def record(self, msg: dict[str, Any]) -> None:
        method, p = msg.get("method"), msg.get("params", {})
        if method == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert", "warning"):
            self.errors.append(f"console.{p['type']}: {p.get('args')}")
        elif method == "Runtime.exceptionThrown":
            self.errors.append(f"exception: {p.get('exceptionDetails')}")
        elif method == "Log.entryAdded" and p["entry"]["level"] in ("error", "warning"):
            self.errors.append(f"log: {p['entry'].get('text')}")

    async def drain(self, quiet_s: float = 0.5) -> None:
        """Record late messages until ``quiet_s`` of silence."""
        while True:
            try:
                self.record(await asyncio.wait_for(self.ws.receive_json(), timeout=quiet_s))
            except TimeoutError:
                return


async def _page_socket(http: aiohttp.ClientSession, port: int) -> str:
    for _ in range(300):  # poll until DevTools listens (up to ~30 s)
        try:
            async with http.get(f"http://127.0.0.1:{port}/json/list") as r:
                pages = [t for t in await r.json() if t.get("type") == "page"]
            if pages:
                return str(pages[0]["webSocketDebuggerUrl"])
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.1)
    raise AssertionError("Chromium's DevTools endpoint never came up")


SVG_SIZES = """[...document.querySelectorAll('svg')].map(s => {
    const r = s.getBoundingClientRect();
    return {w: r.width, h: r.height, paths: s.querySelectorAll('path,use').length};})"""


async def _devtools(chromium: str, page: Path, work: Path) -> dict[str, Any]:
    """Open ``page`` in headless Chromium; console messages, exceptions, a screenshot and
    the rendered size of every <svg>, through the DevTools protocol."""
    port = kit.free_port()
    proc = await asyncio.create_subprocess_exec(
        chromium,
        "--headless",
        "--no-sandbox",  # root in the testbed
        "--disable-gpu",
        "--no-first-run",
        f"--user-data-dir={work / 'profile'}",
        f"--remote-debugging-port={port}",
        "--remote-debugging-address=127.0.0.1",
        "--window-size=1200,1600",
        "about:blank",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        async with aiohttp.ClientSession() as http:
            ws_url = await _page_socket(http, port)
            async with http.ws_connect(ws_url, max_msg_size=0) as ws:
                cdp = DevTools(ws)
                for domain in ("Runtime", "Log", "Page"):
                    await cdp.call(f"{domain}.enable")
                await cdp.call("Page.navigate", url=page.as_uri())
                for _ in range(600):  # poll until the document has loaded
                    state = await cdp.call(
                        "Runtime.evaluate", expression="document.readyState", returnByValue=True
                    )
                    if state["result"]["value"] == "complete":
                        break
                    await asyncio.sleep(0.05)
                svgs = await cdp.call("Runtime.evaluate", expression=SVG_SIZES, returnByValue=True)
                shot = await cdp.call(
                    "Page.captureScreenshot", format="png", captureBeyondViewport=True
                )
                await cdp.drain()
    finally:
        proc.terminate()
        await proc.wait()
    return {
        "errors": cdp.errors,
        "svgs": svgs["result"]["value"],
        "png": base64.b64decode(shot["data"]),
    }


async def test_html_report_in_headless_chromium(history: History, tmp_path: Path) -> None:
    from PIL import Image

    chromium = _binary("chromium", "chromium")
    html = tmp_path / "capacity.html"
    out = report("--horizon", "30d", "--html", str(html), url=history.url)
    assert out.returncode == 1, out.stderr
    seen = await _devtools(chromium, html, tmp_path)
    assert seen["errors"] == []
    # a plot for every series with history: 2 db/connections, 1 replicas, 2 utilisation
    assert len(seen["svgs"]) == 5
    for svg in seen["svgs"]:
        assert svg["w"] > 300 and svg["h"] > 100 and svg["paths"] > 20, svg
    png: bytes = seen["png"]
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    (tmp_path / "capacity.png").write_bytes(png)
    image = Image.open(io.BytesIO(png)).convert("RGB")
    assert image.width >= 1000 and image.height >= 1000
    colours = image.getcolors(maxcolors=1 << 20)
    assert colours is not None and len(colours) > 50  # text, lines, markers: not blank
    white = max(count for count, rgb in colours if rgb == (255, 255, 255))
    assert white < 0.98 * image.width * image.height


async def test_the_browser_check_sees_console_errors(tmp_path: Path) -> None:
    """The check above can fail: a page that logs an error and throws is caught."""
    chromium = _binary("chromium", "chromium")
    page = tmp_path / "bad.html"
    page.write_text(
        "<!DOCTYPE html><html><body><svg width='10' height='10'></svg>"
        "<script>console.error('broken plot'); null.x;</script></body></html>"
    )
    seen = await _devtools(chromium, page, tmp_path)
    assert any("broken plot" in e for e in seen["errors"]), seen["errors"]
    assert any(e.startswith("exception:") for e in seen["errors"]), seen["errors"]
    assert math.isclose(seen["svgs"][0]["w"], 10)
