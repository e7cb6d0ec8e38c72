"""The capacity report as Markdown (terminal, CI logs) and as one self-contained HTML page.

The plots are matplotlib figures rendered to inline SVG (glyphs as paths, no fonts, no
scripts, no external assets), so the page opens anywhere, offline, and can be mailed.
"""

from __future__ import annotations

import html
import io
import math
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from stronghold_operator.logic.capacity import DAY, Assessment, Report

if TYPE_CHECKING:  # matplotlib loads when a plot is drawn, not when the summary is printed
    from matplotlib.figure import Figure

COLOURS = {
    "crossed": "#b00020",
    "critical": "#d35400",
    "ok": "#1e7b34",
    "flat": "#1e7b34",
    "no-limit": "#6c6c6c",
    "no-data": "#6c6c6c",
}
WORDS = {
    "crossed": "over its critical band now",
    "critical": "crosses its critical band within the horizon",
    "ok": "crosses after the horizon",
    "flat": "no significant growth: never crosses",
    "no-limit": "no limit known: trend only",
    "no-data": "no history",
}


def fmt_value(value: float | None, unit: str) -> str:
    if value is None or not math.isfinite(value):
        return "-"
    if unit == "bytes":
        size = float(value)
        for suffix in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
            if abs(size) < 1024 or suffix == "PiB":
                return f"{size:.1f} {suffix}" if suffix != "B" else f"{size:.0f} B"
            size /= 1024
    text = f"{value:.1f}" if abs(value) < 1000 else f"{value:,.0f}"
    return f"{text} {unit}" if unit and unit != "%" else f"{text}{unit}"


def fmt_time(t: float | None) -> str:
    return "-" if t is None else datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%MZ")


def fmt_days(days: float | None) -> str:
    if days is None:
        return "never"
    return "now" if days <= 0 else f"{days:.1f} d"


def _rate(a: Assessment) -> str:
    if a.trend is None:
        return "-"
    unit = a.resource.unit
    slope = f"{'+' if a.trend.slope >= 0 else ''}{fmt_value(a.trend.slope, unit)}/day"
    if a.trend.growth is not None:
        slope += f" ({a.trend.growth * 100:+.2f} %/day)"
    return slope


def _rows(report: Report) -> list[list[str]]:
    rows = []
    for a in report.sorted():
        rows.append(
            [
                a.series_name,
                a.verdict,
                fmt_value(a.current, a.resource.unit),
                fmt_value(a.threshold, a.resource.unit),
                _rate(a),
                fmt_days(a.days_left(report.now))
                if a.verdict not in ("no-data", "no-limit")
                else "-",
                fmt_time(a.crossing) if a.verdict in ("crossed", "critical", "ok") else "-",
            ]
        )
    return rows


HEADERS = ["series", "verdict", "now", "critical at", "trend", "days left", "crosses"]


def headline(report: Report) -> str:
    days = report.horizon.total_seconds() / DAY
    risky = report.at_risk
    if risky:
        return f"{len(risky)} resource(s) cross their critical band within {days:g} days"
    if not report.has_history:
        return "no history found for any resource"
    return f"nothing crosses its critical band within {days:g} days"


def markdown(report: Report) -> str:
    """A Markdown summary: a headline, one table row per series, errors and notes."""
    window = (report.now - report.start) / DAY
    lines = [
        f"# Capacity report {fmt_time(report.now)}",
        "",
        f"**{headline(report)}** (history {window:g} days, model {report.model}).",
        "",
        "| " + " | ".join(HEADERS) + " |",
        "|" + "---|" * len(HEADERS),
    ]
    lines += [
        "| " + " | ".join(cell.replace("|", "\\|") for cell in r) + " |" for r in _rows(report)
    ]
    notes = [f"- {a.series_name}: {a.note}" for a in report.sorted() if a.note]
    if notes:
        lines += ["", "Notes:", *notes]
    if report.errors:
        lines += ["", "Errors:", *(f"- {e}" for e in report.errors)]
    return "\n".join(lines) + "\n"


def plot_svg(a: Assessment, report: Report) -> str:
    """One series: samples, the linear and growth-rate trends to the horizon, the band.

    The x axis is days from the report's time: "crosses in 15 days" reads off directly.
    """
    from matplotlib.backends.backend_svg import FigureCanvasSVG
    from matplotlib.figure import Figure

    now, horizon = report.now, report.horizon.total_seconds()

    def days(ts: list[float]) -> list[float]:
        return [(t - now) / DAY for t in ts]

    # Bytes plot in GiB: an axis of "1e11" offsets helps nobody.
    unit, scale = ("GiB", float(2**30)) if a.resource.unit == "bytes" else (a.resource.unit, 1.0)

    def ys(vs: Sequence[float | None]) -> list[float]:
        return [(v if v is not None else math.nan) / scale for v in vs]

    # A Figure without pyplot: no global state, no GUI backend, safe in any thread.
    fig = Figure(figsize=(8, 3.2), dpi=96, layout="constrained")
    FigureCanvasSVG(fig)
    ax = fig.add_subplot()
    ax.axvspan(0, horizon / DAY, color="#f0f0f0", zorder=0, label="horizon")
    ax.plot(days(list(a.times)), ys(a.values), ".", ms=2.5, color="#1f77b4", label="observed")
    end = now + horizon
    if a.crossing is not None and a.crossing > end:
        end = min(a.crossing + DAY, now + 4 * horizon)
    if a.trend is not None:
        span = [a.times[0], end]
        ax.plot(
            days(span),
            [a.trend.linear_at(t) for t in span],
            "-",
            color="#444",
            lw=1.2,
            label="linear trend",
        )
        if a.trend.growth is not None:
            steps = [a.times[0] + (end - a.times[0]) * i / 60 for i in range(61)]
            grown = ys([a.trend.growth_at(t) for t in steps])
            ax.plot(days(steps), grown, "--", color="#9467bd", lw=1.0, label="growth-rate trend")
    if a.threshold is not None:
        ax.axhline(a.threshold / scale, color="#b00020", lw=1.0, ls=":", label="critical")
    if a.crossing is not None and a.threshold is not None:
        ax.plot(
            days([a.crossing]),
            [a.threshold],
            "o",
            color=COLOURS[a.verdict],
            ms=6,
            label="projected crossing",
        )
    ax.set_xlabel(f"days from {fmt_time(now)}")
    ax.set_ylabel(unit or "value")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=7, frameon=False)
    ax.set_title(a.series_name, fontsize=9, loc="left")
    return svg_text(fig)


def svg_text(fig: Figure) -> str:
    """The figure as an inline ``<svg>`` element: no XML prolog, no metadata block."""
    import matplotlib

    out = io.StringIO()
    # svg.hashsalt: the same data gives the same ids (reproducible, diffable reports).
    with matplotlib.rc_context({"svg.fonttype": "path", "svg.hashsalt": "stronghold"}):
        fig.savefig(out, format="svg", metadata={"Date": None})
    text = out.getvalue()
    # The RDF metadata block names the generator only; the page needs none of it.
    return re.sub(r"<metadata>.*?</metadata>\s*", "", text[text.index("<svg") :], flags=re.S)


STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:2em;color:#222}
table{border-collapse:collapse;font-size:.9em}th,td{padding:.3em .7em;text-align:left;
border-bottom:1px solid #ddd}.v{font-weight:600}section{margin:1.5em 0}
svg{max-width:100%;height:auto}
"""


def html_report(report: Report) -> str:
    """The whole report as one HTML document: summary table, then a plot per series."""
    esc = html.escape
    head = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>Stronghold capacity report {esc(fmt_time(report.now))}</title>"
        f"<style>{STYLE}</style></head><body>"
    )
    parts = [
        head,
        f"<h1>Capacity report {esc(fmt_time(report.now))}</h1>",
        f"<p><strong>{esc(headline(report))}</strong>; model {esc(report.model)}, history from "
        f"{esc(fmt_time(report.start))}.</p>",
        "<table><thead><tr>" + "".join(f"<th>{esc(h)}</th>" for h in HEADERS) + "</tr></thead>",
        "<tbody>",
    ]
    for a, row in zip(report.sorted(), _rows(report), strict=True):
        cells = [f"<td>{esc(c)}</td>" for c in row]
        cells[1] = (
            f'<td class="v" style="color:{COLOURS[a.verdict]}" '
            f'title="{esc(WORDS[a.verdict])}">{esc(row[1])}</td>'
        )
        parts.append("<tr>" + "".join(cells) + "</tr>")
    parts.append("</tbody></table>")
    if report.errors:
        parts.append("<h2>Errors</h2><ul>")
        parts += [f"<li>{esc(e)}</li>" for e in report.errors]
        parts.append("</ul>")
    for a in report.sorted():
        if a.verdict == "no-data":
            continue
        parts.append(f"<section><h2>{esc(a.resource.title)}</h2>")
        parts.append(
            f"<p>{esc(a.series_name)}: {esc(WORDS[a.verdict])}"
            + (f"; {esc(a.note)}" if a.note else "")
            + ".</p>"
        )
        parts.append(plot_svg(a, report))
        parts.append("</section>")
    parts.append("</body></html>\n")
    return "\n".join(parts)
