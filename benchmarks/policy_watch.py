"""Each HealthPolicy's ``Healthy`` condition as one watch tells it, timed as it arrives:
the storm scenario's outage and recovery, and the steady runs' "Healthy after start"."""

from __future__ import annotations

import subprocess
import threading
import time

from tests.integration import kit

from stronghold_testbed import paths


class Conditions:
    """Each policy's ``Healthy`` condition as a watch tells it, with when each change arrived.

    One ``kubectl get --watch-only`` for the run: the API server sends each written object once, as
    it does to the operator's own watch. Polling a LIST of every policy instead (as this
    benchmark did) cost the API server and the benchmark seconds of CPU per poll at 5,000
    policies (27 MB of JSON), on the cores the storm is measured on, and timed to the poll.
    """

    FORMAT = '{.metadata.name}{" "}{.status.conditions[?(@.type=="Healthy")].status}{"\\n"}'

    def __init__(self, ns: str) -> None:
        self.changes: list[tuple[float, str, str]] = []  # (monotonic, policy, status)
        self.now: dict[str, str] = {}
        # The API server closes a watch whose reader falls behind ("Forcing watcher close
        # due to unresponsiveness"): it is opened again (its first LIST gives the state).
        self.restarts = 0
        self._argv = [
            "kubectl",
            f"--kubeconfig={paths.admin_kubeconfig()}",
            *("get", "healthpolicies", "-n", ns, "--watch"),
            *("-o", f"jsonpath={self.FORMAT}"),
        ]
        self._lock = threading.Lock()
        self._closing = False
        self._proc = self._open()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _open(self) -> subprocess.Popen[str]:
        """The watch (changes only), then the state now from a LIST: ``kubectl get --watch
        -o jsonpath`` prints its first listing with empty fields (found when the policies
        were already Healthy before the watch saw a change)."""
        proc = subprocess.Popen(
            [*self._argv, "--watch-only"],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        every = "{range .items[*]}" + self.FORMAT + "{end}"
        listed = kit.kubectl(*self._argv[2:6], "-o", f"jsonpath={every}", check=False)
        for line in listed.splitlines():
            name, _, status = line.strip().partition(" ")
            if name:
                self._seen(name, status)
        return proc

    def _read(self) -> None:
        while True:
            assert self._proc.stdout is not None
            for line in self._proc.stdout:
                name, _, status = line.strip().partition(" ")
                if name:
                    self._seen(name, status)
            self._proc.wait()
            time.sleep(0.5)  # not a tight loop if kubectl cannot start at all
            with self._lock:
                if self._closing:
                    return
                self.restarts += 1
            self._proc = self._open()  # (close() may race it: the run ends either way)

    def _seen(self, name: str, status: str) -> None:
        with self._lock:
            if self.now.get(name) != status:
                self.now[name] = status
                self.changes.append((time.monotonic(), name, status))

    def count(self, want: str) -> int:
        with self._lock:
            return sum(s == want for s in self.now.values())

    def reported(self) -> int:
        """Policies whose ``Healthy`` condition has been written (status "": not yet)."""
        with self._lock:
            return sum(s != "" for s in self.now.values())

    def first(self, want: str, since: float, until: float = float("inf")) -> dict[str, float]:
        """Per policy, seconds from ``since`` until it first showed ``want`` (before ``until``;
        0 for one that showed it already)."""
        seen: dict[str, float] = {}
        with self._lock:
            for name, status in self._at(since).items():
                if status == want:
                    seen[name] = 0.0
            for at, name, status in self.changes:
                if since <= at < until and status == want and name not in seen:
                    seen[name] = at - since
        return seen

    def _at(self, when: float) -> dict[str, str]:
        states: dict[str, str] = {}
        for at, name, status in self.changes:
            if at >= when:
                break
            states[name] = status
        return states

    def close(self) -> None:
        with self._lock:
            self._closing = True
        for _ in range(3):  # the reader may be opening a new watch just now
            self._proc.terminate()
            self._proc.wait(timeout=30)
            self._reader.join(timeout=2)
            if not self._reader.is_alive():
                return
