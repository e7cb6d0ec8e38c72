"""``stronghold run``: start the operator (kopf run -m stronghold_operator.main)."""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import gc
import logging
import os
import re
import sys
import threading
import time
from typing import Any


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser("run", help="run the operator")
    scope = p.add_mutually_exclusive_group()
    scope.add_argument(
        "-n", "--namespace", action="append", default=[], help="watch this namespace (repeatable)"
    )
    scope.add_argument("-A", "--all-namespaces", action="store_true", help="watch cluster-wide")
    p.add_argument(
        "--standalone", action="store_true", help="no peering: do not look for other operators"
    )
    p.add_argument(
        "--peering",
        default=None,
        help="kopf peering object name; HealthPolicy rounds do not pause for a peer,"
        " so run one operator (docs/install.md)",
    )
    p.add_argument("--priority", type=int, default=None, help="peering priority")
    p.add_argument(
        "--liveness",
        default=None,
        metavar="URL",
        help="liveness endpoint, e.g. http://0.0.0.0:8080/healthz",
    )
    p.add_argument("--metrics-port", type=int, default=None, help="serve /metrics on this port")
    p.add_argument(
        "--metrics-address", default="0.0.0.0", help="address /metrics binds to (default: all)"
    )
    p.add_argument(
        "--outbound-allow",
        default=None,
        metavar="LIST",
        help="non-public ranges outbound HTTP may reach: loopback, private, both (comma list)"
        " or none (default: $STRONGHOLD_OUTBOUND_ALLOW, else private; docs/security.md)",
    )
    p.add_argument(
        "--allow-privileged-jobs",
        nargs="?",
        const="all",
        default=None,
        metavar="FIELDS",
        type=_allowance,
        help="let BackupSchedule jobTemplates loosen the restricted Pod Security profile:"
        " 'all' (the default without a value) or a comma-separated list of hostNetwork,"
        " securityContext, podSecurityContext (docs/security.md)",
    )
    _add_budget_flags(p)
    _add_webhook_flags(p)
    _add_leader_flags(p)
    p.add_argument("-v", "--verbose", action="store_true")
    p.add_argument("--debug", action="store_true")
    p.add_argument("-q", "--quiet", action="store_true")
    p.add_argument("--log-format", choices=["plain", "full", "json"], default="full")
    p.set_defaults(func=_run)


def _add_budget_flags(p: argparse.ArgumentParser) -> None:
    """The write budget toward the API server (runtime/budget.py, runtime/events.py)."""
    limits = p.add_argument_group("API server budget (docs/architecture.md, Status)")
    limits.add_argument(
        "--api-qps",
        type=_positive(float),
        default=None,
        help="status writes and Events a second toward the API server"
        " (default: $STRONGHOLD_API_QPS, else 50)",
    )
    limits.add_argument(
        "--api-burst",
        type=_positive(int),
        default=None,
        help="writes that may go at once (default: $STRONGHOLD_API_BURST, else 100)",
    )
    limits.add_argument(
        "--events-qps",
        type=_positive(float),
        default=None,
        help="Events a second, operator-wide (default: $STRONGHOLD_EVENTS_QPS, else 2)",
    )
    limits.add_argument(
        "--events-burst",
        type=_positive(int),
        default=None,
        help="Events at once, operator-wide (default: $STRONGHOLD_EVENTS_BURST, else 30)",
    )


def _add_webhook_flags(p: argparse.ArgumentParser) -> None:
    """The validating admission webhook (docs/admission.md): off unless a port is given."""
    hook = p.add_argument_group("admission webhook (docs/admission.md)")
    hook.add_argument(
        "--webhook-port",
        type=int,
        default=None,
        help="serve the validating admission webhook (HTTPS) on this port (default: off,"
        " or $STRONGHOLD_WEBHOOK_PORT)",
    )
    hook.add_argument(
        "--webhook-address",
        default=None,
        help="address the webhook binds to (default: $STRONGHOLD_WEBHOOK_ADDRESS, else 0.0.0.0)",
    )
    hook.add_argument(
        "--webhook-cert-dir",
        default=None,
        metavar="DIR",
        help="directory with tls.crt and tls.key, e.g. a mounted cert-manager Secret"
        " (default: $STRONGHOLD_WEBHOOK_CERT_DIR, else /etc/stronghold/webhook)",
    )


def _add_leader_flags(p: argparse.ArgumentParser) -> None:
    """Two or more replicas, one active (runtime/leader.py, docs/install.md)."""
    lead = p.add_argument_group("leader election (docs/install.md, High availability)")
    lead.add_argument(
        "--leader-elect",
        action="store_true",
        help="act only while holding a coordination.k8s.io Lease; followers wait and serve"
        " liveness and /metrics",
    )
    lead.add_argument(
        "--leader-elect-lease",
        default="stronghold-operator",
        metavar="NAME",
        help="the Lease's name (default: stronghold-operator)",
    )
    lead.add_argument(
        "--leader-elect-namespace",
        default=None,
        metavar="NS",
        help="the Lease's namespace (default: $POD_NAMESPACE, else the kubeconfig's)",
    )


def _webhook(args: argparse.Namespace) -> None:
    """Hand the webhook flags on as environment (main.py and settings.py read it) and check
    the certificate is there: a missing file must stop the start, not fail every request."""
    from stronghold_operator.models import admission

    for value, env in (
        (args.webhook_port, admission.PORT_ENV),
        (args.webhook_address, admission.ADDRESS_ENV),
        (args.webhook_cert_dir, admission.CERT_DIR_ENV),
    ):
        if value is not None:
            os.environ[env] = str(value)
    try:
        config = admission.WebhookSettings.from_env()
    except ValueError as exc:
        raise SystemExit(f"stronghold run: {exc}") from None
    if config is None:
        return
    for path in (config.certfile, config.keyfile):
        if not os.path.isfile(path):
            raise SystemExit(f"stronghold run: the webhook's certificate: no file {path}")


def _positive(kind: type[float] | type[int]) -> Any:
    def parse(value: str) -> float | int:
        try:
            number = kind(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {value!r}") from None
        if number <= 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {value!r}")
        return number

    return parse


# Flag -> the environment variable runtime/budget.py and runtime/events.py read.
_BUDGET_ENV = {
    "api_qps": "STRONGHOLD_API_QPS",
    "api_burst": "STRONGHOLD_API_BURST",
    "events_qps": "STRONGHOLD_EVENTS_QPS",
    "events_burst": "STRONGHOLD_EVENTS_BURST",
}


def _allowance(value: str) -> str:
    from stronghold_operator.models.backup import PRIVILEGED_FIELDS

    names = {n.strip() for n in value.split(",") if n.strip()}
    unknown = names - {"all", *PRIVILEGED_FIELDS}
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"expected 'all' or some of {', '.join(PRIVILEGED_FIELDS)}, got {value!r}"
        )
    return ",".join(sorted(names))


# The long-lived objects leave the cyclic collector's scans (see _tune_gc): first this long
# after the start, then every GC_REFREEZE_S after one full collection.
GC_FIRST_FREEZE_S = 60.0
GC_REFREEZE_S = 300.0


def _tune_gc() -> None:
    """The startup's objects out of every collection now, the policies' (specs, statuses,
    loops) once they are loaded (:func:`_refreeze`), and each collection's pause on /metrics.

    CPython collects its oldest generation whenever enough objects were promoted: in a
    storm at 5,000 policies every few seconds, each collection scanning the 550,000 objects
    of every policy's state, 0.5-1 s a time — a fifth of the operator's time, and stalls the
    loop-stall check (runtime/load.py) counted against probes. Frozen, those objects are
    never scanned; the young and middle generations keep CPython's thresholds, so the
    garbage of each watch event (kopf's body is a reference cycle) is freed at once (a
    young generation of 50,000 objects instead cost 60 MiB at 10,000 policies).
    """
    from stronghold_operator.runtime.load import GcPauses

    gc.freeze()  # modules, classes, kopf's registries: never garbage, never scanned again
    gc.callbacks.append(GcPauses())


def _refreeze(loop: asyncio.AbstractEventLoop) -> None:
    """Thaw, collect everything once, freeze what is left; again in ``GC_REFREEZE_S``.

    A frozen object is still freed by its reference count; only a reference cycle among
    frozen objects (a deleted policy's loop) waits for the next full collection here. Run
    on the event loop between callbacks, as an automatic collection would be.
    """
    gc.unfreeze()
    gc.collect()
    gc.freeze()
    loop.call_later(GC_REFREEZE_S, _refreeze, loop)


# glibc's mallopt() parameters: see _tune_malloc.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8
HEAP_TRIM_S = float(os.environ.get("STRONGHOLD_HEAP_TRIM_INTERVAL", "10"))


def _tune_malloc(arenas: int = 2, mmap_threshold: int = 128 * 1024) -> None:
    """Keep glibc from holding on to memory the operator has freed.

    - Arenas: glibc gives each thread that allocates its own arena (up to 8 per core) and
      seldom returns freed memory from them; the event loop does nearly all the allocating,
      so two are plenty. ``MALLOC_ARENA_MAX`` in the environment, if set, wins.
    - A fixed mmap threshold: glibc raises it each time a large block is freed, after which
      TLS read buffers (256 KiB per API connection) and big JSON documents land in the heap,
      where one live block pins freed memory around it. Fixed, they are mapped and unmapped.
    - Every ``STRONGHOLD_HEAP_TRIM_INTERVAL`` seconds (0: never) ``malloc_trim`` hands the
      free pages inside the heap back. A thousand policies starting at once leave a couple of
      hundred MiB free but resident otherwise (measured: benchmarks/health.py, RSS column).

    Not glibc (musl, macOS): nothing to do.
    """
    try:
        libc = ctypes.CDLL(None)
        mallopt, malloc_trim = libc.mallopt, libc.malloc_trim
    except (OSError, AttributeError):
        return
    if "MALLOC_ARENA_MAX" not in os.environ:
        mallopt(_M_ARENA_MAX, arenas)
    if "MALLOC_MMAP_THRESHOLD_" not in os.environ:
        mallopt(_M_MMAP_THRESHOLD, mmap_threshold)
    if "MALLOC_TRIM_THRESHOLD_" not in os.environ:
        mallopt(_M_TRIM_THRESHOLD, 4 * mmap_threshold)
    if HEAP_TRIM_S > 0:

        def trim() -> None:
            while True:
                time.sleep(HEAP_TRIM_S)
                malloc_trim(0)

        threading.Thread(target=trim, name="heap-trim", daemon=True).start()


def _event_loop() -> asyncio.AbstractEventLoop:
    """uvloop where it is installed (a dependency on Linux), else asyncio's own loop.

    Every probe, status write and watch event is a few trips through the event loop: with
    asyncio's pure-Python loop and transports, polling and socket writes were about 40% of
    the operator's CPU at a thousand HTTP checks (py-spy; benchmarks/health.py measures the
    result). ``STRONGHOLD_EVENT_LOOP=asyncio`` forces asyncio's. The long-lived objects are
    frozen on it (:func:`_refreeze`).
    """
    if os.environ.get("STRONGHOLD_EVENT_LOOP", "uvloop") == "uvloop":
        try:
            import uvloop
        except ImportError:
            pass
        else:
            loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    else:
        loop = asyncio.new_event_loop()
    loop.call_later(GC_FIRST_FREEZE_S, _refreeze, loop)
    return loop


# kopf's line for each run of a watch-event handler (``*track``) or an index.
_ROUTINE = re.compile(r"(Handler '[\w-]*track'|Indexer '[^']*') succeeded\.")


def _routine_success(record: logging.LogRecord) -> bool:
    """Drop kopf's success line for the handlers that run on every watch event.

    They run for every event, our own status writes included: with a thousand policies
    that was a "Handler 'track' succeeded." every 60 ms (and one per index per event),
    nothing else in the log. Their failures are still logged; ``--verbose`` shows everything.
    """
    return not (isinstance(record.msg, str) and _ROUTINE.fullmatch(record.msg))


# kopf's line for an admission handler that refused the request.
_REFUSED = re.compile(r"Webhook 'validate-[a-z]+' failed permanently: .*", re.DOTALL)


def _refusal_is_info(record: logging.LogRecord) -> bool:
    """Log a refused apply (a user's invalid spec) at INFO, not kopf's ERROR: the webhook
    did its job, and an alert on operator errors must not fire on someone's typo."""
    msg = record.msg
    if record.levelno == logging.ERROR and isinstance(msg, str) and _REFUSED.fullmatch(msg):
        record.levelno, record.levelname = logging.INFO, "INFO"
    return True


# Kubernetes clients kopf imports when they are installed, for login and model checks the
# operator never uses (its client is lightkube): the official one alone is ~19 MiB of RSS.
# Hidden from the operator process so a dev install behaves like the image (which has none).
_OTHER_CLIENTS = ("kubernetes", "kubernetes_asyncio", "pykube")


def _memory_profile() -> None:
    """``STRONGHOLD_MEMORY_PROFILE=PATH``: trace allocations, and on SIGUSR2 write the 60
    largest live ones by line to PATH (how docs/performance.md's memory figures were found;
    tracing costs CPU and memory, so it is off unless asked for)."""
    path = os.environ.get("STRONGHOLD_MEMORY_PROFILE")
    if not path:
        return
    import signal
    import tracemalloc

    tracemalloc.start(int(os.environ.get("STRONGHOLD_MEMORY_PROFILE_FRAMES", "1")))

    def dump(_signum: int, _frame: Any) -> None:
        stats = tracemalloc.take_snapshot().statistics("traceback")
        total = sum(s.size for s in stats)
        lines = [f"total {total / 2**20:.1f} MiB in {len(stats)} places"]
        for s in stats[:60]:
            lines.append(f"{s.size / 2**20:8.2f} MiB {s.count:9d} blocks")
            lines.extend(f"    {frame}" for frame in s.traceback.format())
        with open(path, "w") as f:
            f.write("\n".join(lines) + "\n")

    signal.signal(signal.SIGUSR2, dump)


def _prepare_process() -> None:
    """Memory settings, the optional allocation profile, and kopf's startup gate made linear."""
    from stronghold_operator.runtime import kopf_startup

    if not kopf_startup.install():
        logging.getLogger("stronghold").warning(
            "kopf's ToggleSet changed shape: its startup index gate is left quadratic"
        )
    _tune_malloc()
    _tune_gc()
    _memory_profile()


def _hide_other_clients() -> None:
    for name in _OTHER_CLIENTS:
        sys.modules.setdefault(name, None)  # type: ignore[arg-type]  # `import` then fails


def _run(args: argparse.Namespace) -> int:
    _hide_other_clients()
    import kopf

    _prepare_process()

    _webhook(args)  # before main: it registers the admission handlers only when configured
    from stronghold_operator import main, metrics
    from stronghold_operator.models.backup import ALLOW_PRIVILEGED_ENV

    _ = main  # importing it registers the handlers
    fmt = {"plain": kopf.LogFormat.PLAIN, "full": kopf.LogFormat.FULL, "json": kopf.LogFormat.JSON}
    kopf.configure(
        debug=args.debug, verbose=args.verbose, quiet=args.quiet, log_format=fmt[args.log_format]
    )
    logging.getLogger("kopf.objects").addFilter(_refusal_is_info)
    if not (args.debug or args.verbose):
        logging.getLogger("kopf.objects").addFilter(_routine_success)
        # lightkube's HTTP client logs every request at INFO: 17 lines/s of status writes
        # with a thousand HealthPolicies. Failures reach our own logs as ApiError.
        logging.getLogger("httpx2").setLevel(logging.WARNING)
    if args.namespace:
        # settings.py reads this to scope its own LIST calls (the watchdog) the same way.
        os.environ["STRONGHOLD_NAMESPACES"] = ",".join(args.namespace)
    from stronghold_operator.models.outbound import ENV, OutboundPolicy

    if args.outbound_allow is not None:
        os.environ[ENV] = args.outbound_allow  # the one place every HTTP client reads it
    try:
        OutboundPolicy.from_env()  # a typo must stop the start, not weaken the policy
    except ValueError as exc:
        raise SystemExit(f"stronghold run: {exc}") from None
    if args.allow_privileged_jobs is not None:
        # controllers/backup.py reads it on every pass (a cluster admin's setting, not the spec's).
        os.environ[ALLOW_PRIVILEGED_ENV] = args.allow_privileged_jobs
    for flag, env in _BUDGET_ENV.items():
        if getattr(args, flag) is not None:  # read on first use, after this
            os.environ[env] = str(getattr(args, flag))
    if args.metrics_port is not None:
        metrics.serve(args.metrics_port, args.metrics_address)
    options: dict[str, Any] = {
        "standalone": args.standalone or None,
        "peering_name": args.peering,
        "priority": args.priority,
        "liveness_endpoint": args.liveness,
        "clusterwide": not args.namespace,
        "namespaces": args.namespace,
    }
    if not args.leader_elect:
        kopf.run(loop=_event_loop(), **options)
        return 0
    from stronghold_operator.cli.leading import lead_then_run

    loop = _event_loop()
    try:
        return loop.run_until_complete(lead_then_run(args, options))
    finally:
        loop.close()
