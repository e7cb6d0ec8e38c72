"""Reading logs under a byte cap (platforms/logs.py's line splitter, on in-memory chunks),
where a logs check's read starts (probes/runner.py) and what the probe counts in /metrics."""

from __future__ import annotations

import time

from prometheus_client import Counter

from stronghold_operator.models.base import parse
from stronghold_operator.models.health import HealthPolicySpec, LogRead, LogsCheck
from stronghold_operator.models.logtime import parse_stamp
from stronghold_operator.platforms.logs import MAX_LINE, _Cut
from stronghold_operator.probes import logs as probe_logs
from stronghold_operator.probes.runner import _since


def lines(n: int, second: int = 0) -> list[bytes]:
    return [f"2026-12-06T01:00:{second:02d}.{i:09d}Z GET /{i}\n".encode() for i in range(n)]


def test_a_source_within_its_share_is_read_whole_in_any_chunking() -> None:
    data = b"".join(lines(10))
    cut = _Cut()
    cut.take([data[:7], data[7:50], data[50:]], share=10_000)
    got = cut.result()
    assert len(got.lines) == 10 and got.bytes_read == len(data)
    assert got.dropped == 0 and not got.truncated and got.limit_ns is None


def test_a_source_over_its_share_stops_there_and_holds_the_round_at_its_last_line() -> None:
    chunks = lines(10)
    share = sum(len(c) for c in chunks[:4]) + 5  # four lines and part of the fifth
    cut = _Cut()
    cut.take(chunks, share)
    got = cut.result()
    assert got.bytes_read == share
    assert len(got.lines) == 4 and got.dropped == 1 and got.truncated
    assert got.limit_ns == parse_stamp(got.lines[-1].split(" ")[0])


def test_the_limit_is_the_earliest_of_the_cut_sources() -> None:
    a, b = lines(10, second=1), lines(10, second=2)
    share = sum(len(c) for c in a[:3]) + 1
    cut = _Cut()
    cut.take(b, share)
    cut.take(a, share)
    got = cut.result()
    assert got.limit_ns == parse_stamp(a[2].decode().split(" ")[0])


def test_overlong_lines_are_dropped_not_kept() -> None:
    cut = _Cut()
    cut.take([b"x" * (MAX_LINE + 10) + b"\n", *lines(1)], share=10 * MAX_LINE)
    got = cut.result()
    assert got.dropped == 1 and len(got.lines) == 1


def _logs_policy(window: str = "1h") -> HealthPolicySpec:
    return parse(
        HealthPolicySpec,
        {
            "checks": [
                {
                    "name": "web-logs",
                    "logs": {
                        "compose": {"project": "p", "service": "s"},
                        "rules": [{"name": "failed-logins", "window": window}],
                    },
                }
            ]
        },
    )


def test_reads_start_at_the_cursor_but_never_before_the_longest_window() -> None:
    check = _logs_policy().checks[0]
    now = time.time()
    assert abs(_since(check, None) - (now - 3600)) < 5  # first read: one window ago
    assert _since(check, now - 10) == now - 10
    assert abs(_since(check, now - 86_400) - (now - 3600)) < 5  # too far behind: skip
    only_short = _logs_policy("10m").checks[0]
    assert abs(_since(only_short, None) - (now - 3600)) < 5  # the other defaults are 1h


async def test_the_probe_counts_lines_bytes_and_drops_read_in_its_metrics() -> None:
    check = _logs_policy().checks[0].logs
    assert check is not None
    read = LogRead(tuple(s.decode() for s in lines(3)), bytes_read=120, dropped=2)

    async def reader(spec: LogsCheck, namespace: str, since_s: float, cap: int) -> LogRead:
        return read

    def value(counter: Counter) -> float:
        return float(counter.labels("compose")._value.get())

    before = [value(c) for c in (probe_logs.LINES, probe_logs.BYTES, probe_logs.DROPPED)]
    result = await probe_logs.LogsProbe(reader).probe(
        check, timeout_s=5, secrets={}, since_s=time.time() - 60
    )
    after = [value(c) for c in (probe_logs.LINES, probe_logs.BYTES, probe_logs.DROPPED)]
    assert [a - b for a, b in zip(after, before, strict=True)] == [3, 120, 2]
    assert result.numbers["linesRead"] == 3 and result.numbers["bytesRead"] == 120
