"""Validation at apply time: the webhook refuses exactly what a pass reports as InvalidSpec."""

from __future__ import annotations

import argparse
import asyncio
import copy
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import kopf
import pytest
import yaml

from stronghold_operator.cli import run as cli_run
from stronghold_operator.controllers import admission as controller
from stronghold_operator.models import admission as settings
from stronghold_operator.models.backup import PRIVILEGED_FIELDS
from stronghold_operator.models.base import InvalidSpec, parse
from stronghold_operator.models.health import HealthPolicySpec
from stronghold_operator.models.scaling import ScalingPolicySpec
from stronghold_operator.services import admission as service
from stronghold_operator.services import backup, maintenance

REPO = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)


def examples(name: str) -> list[dict[str, Any]]:
    """The spec of every Stronghold object in an example file (some add a Secret)."""
    docs = yaml.safe_load_all((REPO / "examples" / name).read_text())
    return [d["spec"] for d in docs if d and d["apiVersion"].startswith("ops.stronghold.io/")]


def example(name: str) -> dict[str, Any]:
    spec, *_ = examples(name)
    return spec


async def _inline(fn: Callable[..., Any], /, *args: Any) -> Any:
    return fn(*args)


def reconcile_time(plural: str, raw: dict[str, Any], allowed: frozenset[str]) -> str:
    """The message a pass would put in Ready=False/InvalidSpec ("" if it takes the spec)."""
    try:
        if plural == "healthpolicies":
            parse(HealthPolicySpec, raw)  # controllers/health.py
        elif plural == "scalingpolicies":
            parse(ScalingPolicySpec, raw)  # handlers/scaling.py and controllers/scaling.py
        elif plural == "backupschedules":
            backup.compile_spec(raw, allowed)  # controllers/backup.py
        else:
            state = maintenance.State.from_status({})
            asyncio.run(maintenance.compile_spec(state, raw, NOW, _inline))
    except InvalidSpec as exc:
        return str(exc)
    return ""


def bad(name: str, change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    spec = copy.deepcopy(example(name))
    change(spec)
    return spec


HEALTH, SCALING = "healthpolicy-minimal.yaml", "scalingpolicy-minimal.yaml"
BACKUP, WINDOW = "backupschedule-minimal.yaml", "maintenancewindow-minimal.yaml"
INVERTED_BANDS = {"warning": "2s", "critical": "1s"}

# (plural, spec, the field the message must name): semantic errors the CRD schema lets by.
INVALID: list[tuple[str, dict[str, Any], str]] = [
    (
        "healthpolicies",
        bad(HEALTH, lambda s: s["checks"][0]["http"].update(latency=INVERTED_BANDS)),
        "spec.checks[0].http.latency",
    ),
    (
        "healthpolicies",
        bad(HEALTH, lambda s: s["checks"][0]["http"].update(url="http://127.0.0.1:70000/")),
        "spec.checks[0].http.url",
    ),
    (
        "scalingpolicies",
        bad(SCALING, lambda s: s.update(minReplicas=5, maxReplicas=2)),
        "maxReplicas",
    ),
    ("backupschedules", bad(BACKUP, lambda s: s.update(schedule="61 * * * *")), "spec.schedule"),
    ("backupschedules", bad(BACKUP, lambda s: s.update(timeZone="Mars/Olympus")), "timeZone"),
    (
        "backupschedules",
        bad(BACKUP, lambda s: s.update(jobTemplate={"hostNetwork": True})),
        "spec.jobTemplate.hostNetwork",
    ),
    (
        "maintenancewindows",
        bad(WINDOW, lambda s: s.update(timeZone="Mars/Olympus")),
        "spec.timeZone",
    ),
    (
        "maintenancewindows",
        bad(WINDOW, lambda s: s["schedule"].update(cron="0 25 * * *")),
        "spec.schedule.cron",
    ),
]  # fmt: skip

VALID = [
    ("healthpolicies", "healthpolicy-minimal.yaml"),
    ("healthpolicies", "healthpolicy-full.yaml"),
    ("scalingpolicies", "scalingpolicy-minimal.yaml"),
    ("scalingpolicies", "scalingpolicy-full.yaml"),
    ("backupschedules", "backupschedule-minimal.yaml"),
    ("backupschedules", "backupschedule-full.yaml"),
    ("maintenancewindows", "maintenancewindow-minimal.yaml"),
    ("maintenancewindows", "maintenancewindow-weekly.yaml"),
]


def test_every_kind_has_a_check() -> None:
    assert set(service.CHECKS) == {
        "healthpolicies",
        "scalingpolicies",
        "backupschedules",
        "maintenancewindows",
    }


@pytest.mark.parametrize(("plural", "spec", "field"), INVALID)
def test_refused_with_the_message_a_pass_reports(
    plural: str, spec: dict[str, Any], field: str
) -> None:
    expected = reconcile_time(plural, spec, frozenset())
    assert field in expected, expected  # the case is what it says it is
    with pytest.raises(InvalidSpec) as caught:
        service.check_spec(plural, spec, NOW, frozenset())
    assert str(caught.value) == expected


@pytest.mark.parametrize(("plural", "name"), VALID)
def test_the_examples_pass(plural: str, name: str) -> None:
    # The full BackupSchedule example asks for the host network, as the testbed allows.
    allowed = frozenset(PRIVILEGED_FIELDS) if name.endswith("-full.yaml") else frozenset()
    specs = examples(name)
    assert specs
    for spec in specs:
        assert reconcile_time(plural, spec, allowed) == ""
        service.check_spec(plural, spec, NOW, allowed)  # raises if refused


def test_the_cluster_admins_allowance_counts_as_at_reconcile_time() -> None:
    spec = bad(BACKUP, lambda s: s.update(jobTemplate={"hostNetwork": True}))
    allowed = frozenset(PRIVILEGED_FIELDS)
    assert reconcile_time("backupschedules", spec, allowed) == ""
    service.check_spec("backupschedules", spec, NOW, allowed)


OBJ = {"metadata": {"name": "x"}, "spec": {"minReplicas": 1}}
CHANGED = {"metadata": {"name": "x"}, "spec": {"minReplicas": 2}}
LABELLED = {"metadata": {"name": "x", "labels": {"a": "b"}}, "spec": {"minReplicas": 1}}
DELETING = {"metadata": {"name": "x", "deletionTimestamp": "2026-12-06T00:00:00Z"}, "spec": {}}


@pytest.mark.parametrize(
    ("operation", "new", "old", "expected"),
    [
        ("CREATE", OBJ, None, True),
        ("UPDATE", CHANGED, OBJ, True),
        ("UPDATE", {"metadata": {}}, OBJ, True),  # the spec removed
        # A stored invalid spec stays labellable, annotatable, and its finalizers removable.
        ("UPDATE", LABELLED, OBJ, False),
        ("UPDATE", DELETING, OBJ, False),
        ("DELETE", None, OBJ, False),
        ("CONNECT", OBJ, None, False),
        (None, OBJ, None, False),
    ],
)
def test_needs_check(
    operation: str | None, new: dict[str, Any] | None, old: dict[str, Any] | None, expected: bool
) -> None:
    assert service.needs_check(operation, new, old) is expected


def test_review_answers_422_with_the_field_named() -> None:
    spec = bad(SCALING, lambda s: s.update(minReplicas=5, maxReplicas=2))
    with pytest.raises(kopf.AdmissionError) as caught:
        asyncio.run(controller.review("scalingpolicies", "CREATE", {"spec": spec}, None))
    assert caught.value.code == 422
    assert str(caught.value) == reconcile_time("scalingpolicies", spec, frozenset())
    # The same spec already stored, only a label added: admitted.
    labelled = {"metadata": {"labels": {"a": "b"}}, "spec": spec}
    asyncio.run(controller.review("scalingpolicies", "UPDATE", labelled, {"spec": spec}))


def test_settings_are_off_without_a_port() -> None:
    assert settings.WebhookSettings.from_env({}) is None
    assert settings.WebhookSettings.from_env({settings.PORT_ENV: " "}) is None


def test_settings_from_the_environment() -> None:
    config = settings.WebhookSettings.from_env(
        {settings.PORT_ENV: "9443", settings.CERT_DIR_ENV: "/certs"}
    )
    assert config == settings.WebhookSettings(9443, "0.0.0.0", "/certs", 60.0)
    assert str(config.certfile) == "/certs/tls.crt" and str(config.keyfile) == "/certs/tls.key"


@pytest.mark.parametrize("port", ["x", "0", "65536"])
def test_a_bad_port_is_refused(port: str) -> None:
    with pytest.raises(ValueError, match=settings.PORT_ENV):
        settings.WebhookSettings.from_env({settings.PORT_ENV: port})


@pytest.mark.parametrize("seconds", ["x", "0", "nan", "inf", "7200"])
def test_a_bad_reload_interval_is_refused(seconds: str) -> None:
    with pytest.raises(ValueError, match=settings.RELOAD_ENV):
        settings.WebhookSettings.from_env({settings.PORT_ENV: "9443", settings.RELOAD_ENV: seconds})


def test_run_stops_when_the_certificate_is_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for env in (settings.PORT_ENV, settings.ADDRESS_ENV, settings.CERT_DIR_ENV):
        # setenv first: monkeypatch then restores (removes) what _webhook sets. A bare delenv
        # of an unset name records nothing, and the leaked port armed the webhook in every
        # operator later tests of the same worker started (CI, 14 failures).
        monkeypatch.setenv(env, "")
        monkeypatch.delenv(env)
    args = argparse.Namespace(
        webhook_port=9443, webhook_address="127.0.0.1", webhook_cert_dir=str(tmp_path)
    )
    with pytest.raises(SystemExit, match=r"tls\.crt"):
        cli_run._webhook(args)
    (tmp_path / "tls.crt").write_text("x")
    (tmp_path / "tls.key").write_text("x")
    cli_run._webhook(args)  # both there: the start goes on
    assert settings.WebhookSettings.from_env() == settings.WebhookSettings(
        9443, "127.0.0.1", str(tmp_path)
    )


def test_the_server_uses_the_mounted_certificate() -> None:
    server = controller.server(settings.WebhookSettings(9443, "0.0.0.0", "/certs", 5.0))
    assert (server.addr, server.port) == ("0.0.0.0", 9443)
    assert (server.certfile, server.pkeyfile) == ("/certs/tls.crt", "/certs/tls.key")
    assert server.file_check_interval == 5.0  # a renewed certificate is reloaded


def test_the_testbed_certificate_has_the_secret_layout(tmp_path: Path) -> None:
    from stronghold_testbed import pki

    tls = pki.webhook_tls(tmp_path / "tls")
    assert {"tls.crt", "tls.key", "ca.crt"} <= {p.name for p in tls.iterdir()}
    first = (tls / "tls.crt").read_bytes()
    assert pki.webhook_tls(tls) == tls and (tls / "tls.crt").read_bytes() == first  # reused
    secret = pki.webhook_secret(tls)
    assert secret["type"] == "kubernetes.io/tls"
    assert set(secret["data"]) == {"tls.crt", "tls.key", "ca.crt"}
    assert secret["metadata"] == {
        "name": "stronghold-operator-webhook-tls",
        "namespace": "stronghold-system",
    }
