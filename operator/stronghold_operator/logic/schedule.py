"""When each of many policies runs next: one heap instead of one sleeping task per policy."""

from __future__ import annotations

import heapq


class Schedule:
    """Due times by key; a key has at most one due time, the last one set.

    Setting a key again leaves its old heap entry behind; stale entries are skipped when
    they surface and the heap is rebuilt when they outnumber the live ones.
    """

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, str]] = []
        self._due: dict[str, tuple[float, int]] = {}
        self._seq = 0

    def __len__(self) -> int:
        return len(self._due)

    def __contains__(self, key: object) -> bool:
        return key in self._due

    def due(self, key: str) -> float | None:
        entry = self._due.get(key)
        return None if entry is None else entry[0]

    def at(self, key: str, when: float) -> None:
        """Run ``key`` at ``when`` (replacing any earlier plan for it)."""
        self._seq += 1
        self._due[key] = (when, self._seq)
        heapq.heappush(self._heap, (when, self._seq, key))
        if len(self._heap) > 2 * len(self._due) + 64:
            self._heap = [(w, s, k) for k, (w, s) in self._due.items()]
            heapq.heapify(self._heap)

    def sooner(self, key: str, when: float) -> None:
        """Run ``key`` at ``when`` unless it is already due earlier."""
        current = self.due(key)
        if current is None or when < current:
            self.at(key, when)

    def drop(self, key: str) -> None:
        self._due.pop(key, None)

    def next_at(self) -> float | None:
        """The earliest due time, or None when nothing is planned."""
        self._skip_stale()
        return self._heap[0][0] if self._heap else None

    def pop_due(self, now: float) -> list[tuple[str, float]]:
        """Remove and return ``(key, due time)`` of every key due at or before ``now``."""
        out: list[tuple[str, float]] = []
        while True:
            self._skip_stale()
            if not self._heap or self._heap[0][0] > now:
                return out
            when, _, key = heapq.heappop(self._heap)
            del self._due[key]
            out.append((key, when))

    def _skip_stale(self) -> None:
        heap = self._heap
        while heap:
            when, seq, key = heap[0]
            if self._due.get(key) == (when, seq):
                return
            heapq.heappop(heap)
