"""Remediation actions carried out (services/health.Remedy): the platform call, its failure
as data (a one-line result for the timeline; never a URL or credential), and the metric."""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping

from prometheus_client import Counter

from stronghold_operator import conditions as cond
from stronghold_operator.logic import ratelimit
from stronghold_operator.metrics import registry
from stronghold_operator.models.errors import ApiError
from stronghold_operator.models.health import HealthPolicySpec, RemediationAction
from stronghold_operator.platforms import remediation as act
from stronghold_operator.platforms.compose import ComposeService, ComposeTarget
from stronghold_operator.platforms.kube import Kube
from stronghold_operator.runtime.budget import budget

log = logging.getLogger("stronghold.remediation")

ACTIONS = Counter(
    "stronghold_remediation_actions_total",
    "Remediation actions taken, by action kind and result (ok, failed; dry runs: dryRun)",
    ["action", "result"],
    registry=registry,
)


class Remedies:
    """The operator's :class:`~stronghold_operator.services.health.Remedy`."""

    def __init__(self, kube: Kube) -> None:
        self.kube = kube

    async def __call__(
        self,
        policy: HealthPolicySpec,
        action: RemediationAction,
        namespace: str,
        secrets: Mapping[str, str],
        dry_run: bool,
    ) -> tuple[bool, str]:
        if dry_run:  # nothing is touched: the timeline says what would have been done
            ACTIONS.labels(action.kind, "dryRun").inc()
            return True, "dry run"
        try:
            detail = await self._run(policy, action, namespace, secrets)
        except ApiError as exc:
            ok, detail = False, f"API {exc}"[:300]
        except TimeoutError:
            ok, detail = False, "timed out"
        except Exception as exc:  # a failed action is a result on the timeline, not a crash
            ok, detail = False, f"{exc.__class__.__name__}: {str(exc).splitlines()[0][:200]}"
        else:
            ok = True
        ACTIONS.labels(action.kind, "ok" if ok else "failed").inc()
        if not ok:
            log.warning("%s: remediation %s failed: %s", namespace, action.name, detail)
        return ok, detail

    async def _run(
        self,
        policy: HealthPolicySpec,
        action: RemediationAction,
        namespace: str,
        secrets: Mapping[str, str],
    ) -> str:
        if action.rollout_restart is not None:
            r = action.rollout_restart
            send = functools.partial(
                act.rollout_restart,
                self.kube,
                namespace,
                r.kind,
                r.name,
                cond.rfc3339(cond.utcnow()),
            )
            await budget().send(ratelimit.SIGNIFICANT, send)
            return "restarted (kubectl.kubernetes.io/restartedAt set)"
        if action.compose_restart is not None:
            c = action.compose_restart
            target = ComposeService(ComposeTarget(c.project, c.service, c.docker_host))
            names = await target.restart()
            return f"restarted {len(names)} container(s): {', '.join(names[:10])}"
        check = policy.check(action.check_ref or "")
        assert check is not None  # the spec's validation holds references to its checks
        timeout = policy.timeout_of(check).total_seconds()
        if action.terminate_queries is not None:
            assert check.postgres is not None
            older = action.terminate_queries.older_than.total_seconds()
            done = await act.terminate_queries(
                check.postgres, secrets.get("password", ""), older, timeout
            )
            out = f"terminated {len(done.terminated)} session(s)"
            if done.terminated:
                out += f" (pids {', '.join(map(str, done.terminated[:10]))})"
            if done.refused:
                out += (
                    f"; {len(done.refused)} refused (the role needs pg_signal_backend or to be"
                    " the sessions' role)"
                )
                if not done.terminated:
                    raise PermissionError(out)
            if done.hidden:
                out += (
                    f"; {done.hidden} session(s) of other roles not visible (the role needs"
                    " pg_read_all_stats to see them)"
                )
            return out
        assert check.memcached is not None
        await act.flush_memcached(check.memcached, timeout)
        return "flushed (flush_all)"
