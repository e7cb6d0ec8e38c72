"""Reading a workload's logs for logs checks: Docker Engine logs API or the pods/log API.

Both read from a time on (``since``), with timestamps, without following, and stop at a
byte cap shared by the round's sources: reading costs what is read, never the whole log.
A line cut at the cap is dropped (counted); the lines after it are read next round, from
the timestamp the cut source reached (``LogRead.limit_ns``).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from stronghold_operator.models.health import ComposeLogSource, LogRead, LogsCheck, PodLogSource
from stronghold_operator.models.logtime import split_stamp
from stronghold_operator.models.scaling import TargetNotFound
from stronghold_operator.platforms import compose
from stronghold_operator.platforms.executors import DOCKER, run_in
from stronghold_operator.platforms.kube import PODS, Kube, label_selector
from stronghold_operator.platforms.workloads import read_scale

MAX_LINE = 16_384  # a longer line is dropped whole (no access log line is this long)


class _Cut:
    """Splits chunks into lines, each source under its share of the round's byte cap (an
    equal share: a loud container cannot starve a quiet one)."""

    def __init__(self) -> None:
        self.read = 0
        self.lines: list[str] = []
        self.dropped = 0
        self.limits: list[int] = []  # last timestamp of each source cut at its share

    def take(self, chunks: Iterable[bytes], share: int) -> None:
        """Lines of one source up to ``share`` bytes (the caller closes the stream)."""
        pending = b""
        last_ns: int | None = None
        used = 0
        cut = False
        for chunk in chunks:
            part = chunk[: share - used]
            used += len(part)
            pending += part
            *whole, pending = pending.split(b"\n")
            for raw in whole:
                if len(raw) > MAX_LINE:
                    self.dropped += 1
                    continue
                text = raw.decode("utf-8", "replace")
                self.lines.append(text)
                last_ns = split_stamp(text)[0] or last_ns
            if len(part) < len(chunk) or used >= share:
                cut = True
                break
            if len(pending) > MAX_LINE:
                self.dropped += 1
                pending = b""
        self.read += used
        if cut:
            self.dropped += 1 if pending else 0  # the line cut at the cap
            if last_ns is not None:
                self.limits.append(last_ns)
        elif pending:
            self.lines.append(pending.decode("utf-8", "replace"))

    def result(self) -> LogRead:
        return LogRead(
            tuple(self.lines),
            self.read,
            self.dropped,
            truncated=bool(self.limits),
            limit_ns=min(self.limits) if self.limits else None,
        )


# --- Docker Engine --------------------------------------------------------------------------


def _compose_read(source: ComposeLogSource, since_s: float, max_bytes: int) -> LogRead:
    target = compose.ComposeTarget(source.project, source.service, source.docker_host)
    client = compose.connect(source.docker_host)
    try:
        found = compose.containers(client, target, running=False)
        if not found:
            raise TargetNotFound(
                f"no containers labelled {compose.PROJECT}={source.project},"
                f" {compose.SERVICE}={source.service}"
            )
        cut, share = _Cut(), max(1, max_bytes // len(found))
        for container in found:
            stream = container.logs(
                stdout=True,
                stderr=True,
                timestamps=True,
                since=max(since_s, 0.000001),  # 0 would mean "no since"
                stream=True,
                follow=False,
            )
            try:
                cut.take(stream, share)
            finally:
                stream.close()
        return cut.result()
    finally:
        client.close()


async def read_compose_logs(source: ComposeLogSource, since_s: float, max_bytes: int) -> LogRead:
    """The service's containers' stdout and stderr since ``since_s`` (at most ``max_bytes``)."""
    return await run_in(DOCKER, _compose_read, source, since_s, max_bytes)


# --- Kubernetes pods/log --------------------------------------------------------------------


def _since_time(since_s: float) -> str:
    # sinceTime has second precision: start at the second, the cursor drops what is older.
    return datetime.fromtimestamp(int(since_s), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


async def _pod_log(
    kube: Kube, namespace: str, pod: str, container: str, since_s: float, limit: int
) -> list[bytes]:
    params = {
        "container": container,
        "timestamps": True,
        "sinceTime": _since_time(since_s),
        "limitBytes": limit,
    }
    return [await kube.pod_log(namespace, pod, params)]


async def read_pod_logs(
    kube: Kube, namespace: str, source: PodLogSource, since_s: float, max_bytes: int
) -> LogRead:
    """Every running pod's container(s) of the workload since ``since_s`` (pods/log)."""
    ref = source.target_ref
    scale = await read_scale(kube, namespace, ref.kind, ref.name or "")
    pods = await kube.list(PODS, namespace, labels=label_selector(scale.selector))
    sources: list[tuple[str, str]] = []
    for pod in pods:
        meta: dict[str, Any] = pod.get("metadata") or {}
        if (pod.get("status") or {}).get("phase") not in ("Running", "Succeeded", "Failed"):
            continue  # a pending pod has no log yet
        names = [c.get("name", "") for c in (pod.get("spec") or {}).get("containers") or ()]
        for container in [source.container] if source.container else names:
            sources.append((str(meta.get("name", "")), str(container)))
    cut, share = _Cut(), max(1, max_bytes // max(1, len(sources)))
    for pod_name, container in sources:
        cut.take(await _pod_log(kube, namespace, pod_name, container, since_s, share), share)
    return cut.result()


async def read_logs(
    kube: Kube | None, namespace: str, spec: LogsCheck, since_s: float, max_bytes: int
) -> LogRead:
    """The check's source since ``since_s``: its Compose service, or its workload's pods."""
    if spec.compose is not None:
        return await read_compose_logs(spec.compose, since_s, max_bytes)
    assert spec.pods is not None
    if kube is None:
        raise LookupError("no Kubernetes API access (in-cluster config or kubeconfig)")
    return await read_pod_logs(kube, namespace, spec.pods, since_s, max_bytes)
