"""Validation at apply time: the operator's admission webhook on the real apiserver (1.20).

The operator runs as a local process serving HTTPS with a certificate from the testbed's
PKI (stronghold_testbed.pki.webhook_tls); the apiserver on this machine calls it through a
ValidatingWebhookConfiguration made from manifests/components/webhook with a URL instead of
the Service. Other tests share the cluster: the configuration has a name of its own and
matches only this test's namespace (by a label), and is deleted at teardown, always.
"""

from __future__ import annotations

import base64
import copy
import json
import os
import shutil
import signal
import ssl
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from stronghold_operator.models import admission as settings
from stronghold_operator.models.base import InvalidSpec
from stronghold_operator.services import admission as service
from stronghold_testbed import pki
from stronghold_testbed.kubectl import run as kubectl_run
from tests.integration import kit
from tests.support.policies import scaling_policy

REPO = kit.REPO
COMPONENT = REPO / "manifests" / "components" / "webhook"
GROUP_VERSION = "ops.stronghold.io/v1alpha1"
SCOPE_LABEL = "stronghold-admission-test"
PLURALS = {
    "HealthPolicy": "healthpolicies",
    "ScalingPolicy": "scalingpolicies",
    "BackupSchedule": "backupschedules",
    "MaintenanceWindow": "maintenancewindows",
}


@dataclass(frozen=True)
class Webhook:
    namespace: str
    name: str  # the ValidatingWebhookConfiguration's
    port: int
    tls: Path
    policy: str  # failurePolicy, as shipped in manifests/components/webhook

    def env(self) -> dict[str, str]:
        return {
            settings.PORT_ENV: str(self.port),
            settings.ADDRESS_ENV: "127.0.0.1",
            settings.CERT_DIR_ENV: str(self.tls),
        }


def configuration(name: str, namespace: str, port: int, ca: bytes) -> dict[str, Any]:
    """The shipped configuration, pointed at the local operator and scoped to one namespace."""
    vwc: dict[str, Any] = yaml.safe_load(
        (COMPONENT / "validatingwebhookconfiguration.yaml").read_text()
    )
    vwc["metadata"]["name"] = name
    for hook in vwc["webhooks"]:
        path = hook["clientConfig"]["service"]["path"]
        hook["clientConfig"] = {
            "url": f"https://127.0.0.1:{port}{path}",
            "caBundle": base64.b64encode(ca).decode(),
        }
        hook["namespaceSelector"] = {"matchLabels": {SCOPE_LABEL: namespace}}
    return vwc


@pytest.fixture
def webhook(namespace: str, tmp_path: Path) -> Iterator[Webhook]:
    tls = pki.webhook_tls(tmp_path / "tls")
    port = kit.free_port()
    name = f"stronghold-test-{namespace}"
    vwc = configuration(name, namespace, port, (tls / "ca.crt").read_bytes())
    policies = {h["failurePolicy"] for h in vwc["webhooks"]}
    assert len(policies) == 1, policies
    try:
        kit.apply(vwc)
        yield Webhook(namespace, name, port, tls, policies.pop())
    finally:
        # Never left behind: it would refuse this namespace's objects for ever.
        kit.kubectl("delete", "validatingwebhookconfiguration", name, "--wait=false", check=False)


def enable(hook: Webhook) -> None:
    """Put the namespace under the webhook; wait until the apiserver calls it."""
    kit.kubectl("label", "namespace", hook.namespace, f"{SCOPE_LABEL}={hook.namespace}")
    probe = inverted_scaling(hook.namespace, "probe")
    kit.wait_until(
        "the apiserver to call the webhook",
        lambda: "denied the request" in dry_run(probe),
        timeout=30,
    )


def apply(obj: dict[str, Any], *extra: str) -> tuple[bool, str]:
    """kubectl apply: (accepted, what kubectl said)."""
    code, out, err = kubectl_run("apply", *extra, "-f", "-", input=json.dumps(obj))
    return code == 0, out + err


def dry_run(obj: dict[str, Any]) -> str:
    return apply(obj, "--dry-run=server")[1]


def exists(obj: dict[str, Any]) -> bool:
    meta = obj["metadata"]
    out = kit.kubectl(
        "get", PLURALS[obj["kind"]], meta["name"], "-n", meta["namespace"], "-o", "name",
        "--ignore-not-found",
    )  # fmt: skip
    return bool(out.strip())


def inverted_scaling(ns: str, name: str) -> dict[str, Any]:
    obj = scaling_policy(name, "web", minReplicas=5, maxReplicas=2)
    obj["metadata"]["namespace"] = ns
    return obj


def valid_objects(ns: str) -> dict[str, dict[str, Any]]:
    """One valid object of each kind (its spec need not work: the webhook judges the spec)."""
    health = {
        "checks": [{"name": "web", "http": {"url": "http://127.0.0.1:18000/health/"}}],
    }
    backup = {
        "schedule": "0 3 * * *",
        "timeZone": "UTC",
        "database": {
            "host": "127.0.0.1",
            "name": "shop",
            "user": "shop",
            "password": {"secretKeyRef": {"name": "db", "key": "password"}},
        },
        "storage": {"persistentVolumeClaim": "backups"},
    }
    window = {"schedule": {"cron": "0 12 * * 3", "duration": "1h"}, "timeZone": "UTC"}
    scaling = scaling_policy("web", "web")["spec"]
    specs = {
        "HealthPolicy": health,
        "ScalingPolicy": scaling,
        "BackupSchedule": backup,
        "MaintenanceWindow": window,
    }
    return {
        kind: {
            "apiVersion": GROUP_VERSION,
            "kind": kind,
            "metadata": {"name": f"ok-{PLURALS[kind]}", "namespace": ns},
            "spec": spec,
        }
        for kind, spec in specs.items()
    }


def invalid_objects(ns: str) -> list[tuple[dict[str, Any], str]]:
    """(object, the field the refusal must name): semantic errors the CRD schema lets by."""
    made = valid_objects(ns)
    out: list[tuple[dict[str, Any], str]] = []

    def bad(kind: str, name: str, change: Callable[[dict[str, Any]], None], field: str) -> None:
        obj = copy.deepcopy(made[kind])
        obj["metadata"]["name"] = name
        change(obj["spec"])
        out.append((obj, field))

    bands = {"warning": "2s", "critical": "1s"}
    bad("HealthPolicy", "bands", lambda s: s["checks"][0]["http"].update(latency=bands),
        "spec.checks[0].http.latency")  # fmt: skip
    bad("HealthPolicy", "port", lambda s: s["checks"][0]["http"].update(
        url="http://127.0.0.1:70000/"), "spec.checks[0].http.url")  # fmt: skip
    bad("ScalingPolicy", "inverted", lambda s: s.update(minReplicas=5, maxReplicas=2),
        "maxReplicas")  # fmt: skip
    bad("BackupSchedule", "badcron", lambda s: s.update(schedule="61 * * * *"), "spec.schedule")
    bad("MaintenanceWindow", "zone", lambda s: s.update(timeZone="Mars/Olympus"), "spec.timeZone")
    return out


def reconcile_time_message(obj: dict[str, Any]) -> str:
    """What a pass would report as Ready=False/InvalidSpec (the operator's own check)."""
    try:
        # The operator under test allows the host network (kit.start_operator's testbed env).
        service.check_spec(PLURALS[obj["kind"]], obj["spec"], datetime.now(UTC), {"hostNetwork"})
    except InvalidSpec as exc:
        return str(exc)
    raise AssertionError(f"{obj['metadata']['name']}: the operator takes this spec")


def test_invalid_specs_are_refused_at_apply_with_the_field_named(
    webhook: Webhook, run_operator: Callable[..., kit.OperatorProcess]
) -> None:
    ns = webhook.namespace
    run_operator(ns, env=webhook.env())
    enable(webhook)
    for obj, field in invalid_objects(ns):
        name, message = obj["metadata"]["name"], reconcile_time_message(obj)
        assert field in message, (name, message)
        # --dry-run=server reaches the webhook (sideEffects: None) and shows the error.
        said = dry_run(obj)
        assert "denied the request" in said and message in said, (name, said)
        accepted, said = apply(obj)
        assert not accepted, (name, said)
        assert f'admission webhook "{PLURALS[obj["kind"]]}.ops.stronghold.io"' in said, said
        assert message in said, (name, said)
        assert not exists(obj), name
    for obj in valid_objects(ns).values():
        accepted, said = apply(obj, "--dry-run=server")
        assert accepted, said
        assert not exists(obj)  # a dry run stores nothing
        accepted, said = apply(obj)
        assert accepted and exists(obj), said
    # A change that breaks a stored object is refused too; the object keeps its spec.
    web = valid_objects(ns)["ScalingPolicy"]
    patch = json.dumps({"spec": {"minReplicas": 20}})
    code, _, err = kubectl_run(
        "patch", "scalingpolicies", web["metadata"]["name"], "-n", ns, "--type=merge", "-p", patch
    )
    assert code != 0 and "maxReplicas" in err and "denied the request" in err, err
    stored = kit.get(ns, "scalingpolicies", web["metadata"]["name"])
    assert stored["spec"]["minReplicas"] == web["spec"]["minReplicas"]


def test_an_object_stored_before_the_webhook_stays_labellable_but_not_changeable(
    webhook: Webhook, run_operator: Callable[..., kit.OperatorProcess]
) -> None:
    ns = webhook.namespace
    old = inverted_scaling(ns, "old")
    kit.apply(old)  # not yet under the webhook: stored, and reported InvalidSpec by a pass
    run_operator(ns, env=webhook.env())
    enable(webhook)

    def invalid_spec() -> bool:
        ready = kit.condition(kit.get(ns, "scalingpolicies", "old"), "Ready") or {}
        return ready.get("reason") == "InvalidSpec" and "maxReplicas" in ready.get("message", "")

    kit.wait_until("the stored object reported InvalidSpec", invalid_spec, timeout=30)
    kit.kubectl("label", "scalingpolicies", "old", "-n", ns, "team=web")  # spec unchanged
    code, _, err = kubectl_run(
        "patch", "scalingpolicies", "old", "-n", ns, "--type=merge", "-p",
        json.dumps({"spec": {"minReplicas": 4}}),
    )  # fmt: skip
    assert code != 0 and "maxReplicas" in err, err
    fixed = json.dumps({"spec": {"minReplicas": 1}})
    kit.kubectl("patch", "scalingpolicies", "old", "-n", ns, "--type=merge", "-p", fixed)


def test_with_the_operator_stopped_the_failure_policy_holds(
    webhook: Webhook, run_operator: Callable[..., kit.OperatorProcess]
) -> None:
    """docs/admission.md: Fail. With no operator, creating or changing a Stronghold object is
    refused (a GitOps sync of it goes red, not green with nothing checked); anything else in
    the namespace, and deleting a Stronghold object, still goes through."""
    assert webhook.policy == "Fail"
    ns = webhook.namespace
    op = run_operator(ns, env=webhook.env())
    enable(webhook)
    made = valid_objects(ns)
    kept = made.pop("MaintenanceWindow")
    assert apply(kept)[0]
    op.kill(sig=signal.SIGTERM)
    for obj in made.values():
        accepted, said = apply(obj)
        assert not accepted and "failed calling webhook" in said, said
        assert not exists(obj)
    config = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "unrelated"}}
    config["metadata"]["namespace"] = ns
    accepted, said = apply(config)
    assert accepted, said
    kit.kubectl("delete", "maintenancewindows", kept["metadata"]["name"], "-n", ns, "--wait=false")
    # Back up: the same objects are admitted again.
    run_operator(ns, env=webhook.env())
    obj = made["ScalingPolicy"]
    kit.wait_until("the restarted operator's webhook", lambda: apply(obj)[0], timeout=30)


def mount(src: Path, dest: Path, version: str) -> None:
    """Lay ``src``'s files out in ``dest`` as the kubelet mounts a Secret, and swap them in
    at once: ``tls.crt -> ..data/tls.crt``, ``..data -> <version>`` replaced atomically."""
    shutil.copytree(src, dest / version)
    link = dest / "..data_tmp"
    link.symlink_to(version)
    os.replace(link, dest / "..data")
    for key in ("tls.crt", "tls.key", "ca.crt"):
        if not (dest / key).is_symlink():
            (dest / key).symlink_to(f"..data/{key}")


def served(port: int) -> bytes:
    """The certificate the webhook presents (DER)."""
    return ssl.PEM_cert_to_DER_cert(ssl.get_server_certificate(("127.0.0.1", port)))


def served_now(port: int) -> bytes | None:
    """:func:`served`, or None while kopf reopens its listener on the renewed files."""
    try:
        return served(port)
    except ConnectionRefusedError:
        return None


def der(path: Path) -> bytes:
    return ssl.PEM_cert_to_DER_cert(path.read_text())


def test_a_renewed_certificate_is_served_without_a_restart(
    webhook: Webhook, run_operator: Callable[..., kit.OperatorProcess], tmp_path: Path
) -> None:
    ns, mounted = webhook.namespace, tmp_path / "mounted"
    mount(webhook.tls, mounted, "v1")
    env = webhook.env() | {settings.CERT_DIR_ENV: str(mounted), settings.RELOAD_ENV: "1"}
    op = run_operator(ns, env=env)
    enable(webhook)
    first = served(webhook.port)
    assert first == der(webhook.tls / "tls.crt")
    # Renewed: a new key and certificate from the same CA (the caBundle stays valid).
    (webhook.tls / "tls.crt").unlink()
    pki.webhook_tls(webhook.tls)
    renewed = der(webhook.tls / "tls.crt")
    assert renewed != first
    mount(webhook.tls, mounted, "v2")
    kit.wait_until(
        "the renewed certificate served", lambda: served_now(webhook.port) == renewed, 15
    )
    said = dry_run(inverted_scaling(ns, "after-renewal"))
    assert "denied the request" in said and "maxReplicas" in said, said
    assert op.proc.poll() is None  # the same process throughout
