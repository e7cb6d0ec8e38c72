"""BackupSchedule as a deputy: the restricted Pod Security profile, label values, trusted pods.

The jobTemplate fuzz draws values from the CRD's own jobTemplate schema (a small generator
below: hypothesis-jsonschema 0.23.1 fails on object schemas with this Hypothesis release,
``'many' object has no attribute 'more'``) and checks each with jsonschema as the apiserver
would.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stronghold_operator.builders.backup_job import backup_job
from stronghold_operator.logic import backup as lb
from stronghold_operator.logic.backup_results import JobView, pod_results
from stronghold_operator.models.backup import (
    PRIVILEGED_FIELDS,
    BackupScheduleSpec,
    check_restricted,
    parse_allowance,
    schedule_label,
)
from stronghold_operator.models.base import InvalidSpec, parse
from tests.support import podsecurity

ROOT = Path(__file__).resolve().parents[2]
CRD = yaml.safe_load((ROOT / "crds" / "backupschedule.yaml").read_text())
SPEC_SCHEMA = CRD["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
TEMPLATE_SCHEMA = SPEC_SCHEMA["properties"]["jobTemplate"]
SLOT = datetime(2026, 5, 1, 2, 0, tzinfo=UTC)
BASE: dict[str, Any] = {
    "schedule": "0 2 * * *",
    "database": {
        "host": "127.0.0.1",
        "name": "app",
        "user": "app",
        "password": {"secretKeyRef": {"name": "db", "key": "password"}},
    },
    "storage": {"persistentVolumeClaim": "backups"},
}
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
# Strings that matter to the profile, besides random text.
WORDS = [
    "ALL",
    "NET_BIND_SERVICE",
    "SYS_ADMIN",
    "NET_RAW",
    "container_t",
    "spc_t",
    "system_u",
    "kernel.shm_rmid_forced",
    "net.core.somaxconn",
    "profiles/x.json",
    "",
]


def _plain(node: Any) -> Any:
    if isinstance(node, dict):
        return {
            k: _plain(v)
            for k, v in node.items()
            if not k.startswith("x-kubernetes") and k != "description"
        }
    if isinstance(node, list):
        return [_plain(v) for v in node]
    return node


def strategy(schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Values for one node of a CRD schema (the keywords the jobTemplate schema uses)."""
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    kind = schema.get("type")
    if kind == "boolean":
        return st.booleans()
    if kind == "integer":
        lo = schema.get("minimum", -5)
        return st.one_of(
            st.integers(lo, min(schema.get("maximum", 2**31 - 1), lo + 3)),
            st.integers(lo, schema.get("maximum", 2**31 - 1)),
        )
    if kind == "string":
        return st.one_of(st.sampled_from(WORDS), st.text(max_size=8))
    if kind == "array":
        return st.lists(strategy(schema.get("items", {})), max_size=3)
    if kind == "object":
        props = schema.get("properties")
        if props:
            required = set(schema.get("required", []))
            return st.fixed_dictionaries(
                {k: strategy(v) for k, v in props.items() if k in required},
                optional={k: strategy(v) for k, v in props.items() if k not in required},
            )
        if isinstance(schema.get("additionalProperties"), dict):
            return st.dictionaries(
                st.sampled_from(["disk", "zone", "a.b/c"]),
                strategy(schema["additionalProperties"]),
                max_size=2,
            )
        # Free-form (resources, a toleration): the shapes users write.
        return st.sampled_from(
            [{}, {"limits": {"memory": "512Mi"}}, {"key": "backup", "operator": "Exists"}]
        )
    return st.none()


TEMPLATE_JSON = _plain(TEMPLATE_SCHEMA)


def build(spec: dict[str, Any], name: str = "nightly") -> dict[str, Any]:
    model = parse(BackupScheduleSpec, spec)
    owner = {"metadata": {"name": name, "namespace": "prod", "uid": "u-1"}}
    return backup_job(
        owner=owner,
        job_name=lb.job_name(name, SLOT),
        kind="backup",
        spec=model,
        slot=SLOT,
        trigger="scheduled",
    )


@settings(
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
@given(strategy(TEMPLATE_SCHEMA))
def test_every_schema_valid_job_template_is_restricted_or_refused(tpl: dict[str, Any]) -> None:
    try:
        jsonschema.validate(tpl, TEMPLATE_JSON)
    except jsonschema.ValidationError:
        return  # the apiserver refuses it
    spec = BASE | {"jobTemplate": tpl}
    try:
        model = parse(BackupScheduleSpec, spec)
        check_restricted(model.job_template, frozenset())
    except InvalidSpec as exc:
        assert exc.field.startswith("jobTemplate."), exc
        return
    pod = build(spec)["spec"]["template"]["spec"]
    assert podsecurity.violations(pod) == [], (tpl, pod)


REFUSED = [
    ({"hostNetwork": True}, "jobTemplate.hostNetwork"),
    ({"securityContext": {"privileged": True}}, "jobTemplate.securityContext.privileged"),
    (
        {"securityContext": {"allowPrivilegeEscalation": True}},
        "jobTemplate.securityContext.allowPrivilegeEscalation",
    ),
    ({"securityContext": {"runAsUser": 0}}, "jobTemplate.securityContext.runAsUser"),
    ({"securityContext": {"runAsNonRoot": False}}, "jobTemplate.securityContext.runAsNonRoot"),
    (
        {"securityContext": {"capabilities": {"add": ["SYS_ADMIN"]}}},
        "jobTemplate.securityContext.capabilities.add",
    ),
    (
        {"securityContext": {"capabilities": {"drop": ["NET_RAW"]}}},
        "jobTemplate.securityContext.capabilities.drop",
    ),
    ({"securityContext": {"procMount": "Unmasked"}}, "jobTemplate.securityContext.procMount"),
    (
        {"securityContext": {"seccompProfile": {"type": "Unconfined"}}},
        "jobTemplate.securityContext.seccompProfile.type",
    ),
    (
        {"securityContext": {"seLinuxOptions": {"type": "spc_t"}}},
        "jobTemplate.securityContext.seLinuxOptions.type",
    ),
    ({"podSecurityContext": {"runAsUser": 0}}, "jobTemplate.podSecurityContext.runAsUser"),
    (
        {"podSecurityContext": {"seccompProfile": {"type": "Unconfined"}}},
        "jobTemplate.podSecurityContext.seccompProfile.type",
    ),
    (
        {"podSecurityContext": {"sysctls": [{"name": "net.core.somaxconn", "value": "1"}]}},
        "jobTemplate.podSecurityContext.sysctls",
    ),
    (
        {"podSecurityContext": {"windowsOptions": {"hostProcess": True}}},
        "jobTemplate.podSecurityContext.windowsOptions.hostProcess",
    ),
]


@pytest.mark.parametrize(("tpl", "field"), REFUSED)
def test_each_loosening_field_is_refused_by_name_unless_allowed(
    tpl: dict[str, Any], field: str
) -> None:
    model = parse(BackupScheduleSpec, BASE | {"jobTemplate": tpl})
    with pytest.raises(InvalidSpec) as exc:
        check_restricted(model.job_template, parse_allowance(""))
    assert exc.value.field == field
    assert str(exc.value).startswith(f"spec.{field}: ")
    assert "--allow-privileged-jobs" in str(exc.value)
    # A cluster admin's allowance of that one field (or of all) lets it through.
    top = field.split(".")[1]
    check_restricted(model.job_template, parse_allowance(top))
    check_restricted(model.job_template, parse_allowance("all"))
    others = ",".join(f for f in PRIVILEGED_FIELDS if f != top)
    with pytest.raises(InvalidSpec):
        check_restricted(model.job_template, parse_allowance(others))


def test_unknown_security_fields_and_bad_types_are_invalid_spec() -> None:
    for tpl, where in (
        ({"securityContext": {"hostPID": True}}, "jobTemplate.securityContext.hostPID"),
        ({"podSecurityContext": {"runAsUser": "root"}}, "jobTemplate.podSecurityContext"),
        ({"securityContext": {"seccompProfile": {"type": "Localhost"}}}, "jobTemplate"),
    ):
        with pytest.raises(InvalidSpec) as exc:
            parse(BackupScheduleSpec, BASE | {"jobTemplate": tpl})
        assert exc.value.field.startswith(where), exc.value


def test_restricted_values_and_placement_pass_without_allowance() -> None:
    tpl = {
        "image": "registry.example/any:1",  # any image: restricted PSS does not limit images
        "nodeSelector": {"disk": "ssd"},
        "tolerations": [{"key": "backup", "operator": "Exists"}],
        "securityContext": {
            "readOnlyRootFilesystem": False,
            "capabilities": {"add": ["NET_BIND_SERVICE"]},
            "seccompProfile": {"type": "Localhost", "localhostProfile": "profiles/pg.json"},
        },
        "podSecurityContext": {
            "runAsUser": 70,
            "sysctls": [{"name": "net.ipv4.ping_group_range", "value": "0 0"}],
            "supplementalGroups": [5],
        },
    }
    spec = BASE | {"jobTemplate": tpl}
    check_restricted(parse(BackupScheduleSpec, spec).job_template, frozenset())
    pod = build(spec)["spec"]["template"]["spec"]
    assert podsecurity.violations(pod) == []
    assert pod["containers"][0]["securityContext"]["capabilities"] == {
        "drop": ["ALL"],
        "add": ["NET_BIND_SERVICE"],
    }


def test_allowance_parsing() -> None:
    assert parse_allowance("") == frozenset()
    assert parse_allowance("all") == frozenset(PRIVILEGED_FIELDS)
    assert parse_allowance(" hostNetwork , nonsense") == {"hostNetwork"}


# -- names longer than a label value ---------------------------------------------------------


def test_schedule_label_fits_and_is_deterministic_for_253_characters() -> None:
    long_a = "a" * 200 + "-" + "b" * 52
    long_b = "a" * 200 + "-" + "c" * 52
    assert len(long_a) == 253
    for name in (long_a, long_b, "x" * 64, "a.b-" * 63 + "z"):
        value = schedule_label(name)
        assert len(value) <= 63 and LABEL_VALUE.match(value), value
        assert value == schedule_label(name)
    assert schedule_label(long_a) != schedule_label(long_b)  # same 52-character head
    assert schedule_label(long_a) == long_a[:52] + "-" + schedule_label(long_a)[-10:]
    assert schedule_label("nightly") == "nightly"
    assert schedule_label("n" * 63) == "n" * 63


def test_job_for_a_253_character_schedule_has_valid_names_and_labels() -> None:
    name = "backup-" + "x" * 240 + "-final"
    assert len(name) == 253
    job = build(BASE, name=name)
    assert len(job["metadata"]["name"]) <= 63
    labels = job["metadata"]["labels"] | job["spec"]["template"]["metadata"]["labels"]
    for value in labels.values():
        assert len(value) <= 63 and LABEL_VALUE.match(value), value
    assert job["metadata"]["ownerReferences"][0]["name"] == name  # names may be 253 long


# -- results only from our own pods ----------------------------------------------------------


def _pod(controller_uid: str, message: str) -> dict[str, Any]:
    return {
        "metadata": {
            "labels": {"job-name": "nightly-202605010200"},
            "ownerReferences": [{"kind": "Job", "uid": controller_uid, "controller": True}],
        },
        "status": {
            "phase": "Succeeded",
            "containerStatuses": [{"state": {"terminated": {"message": message}}}],
        },
    }


def test_termination_messages_only_from_pods_of_our_jobs() -> None:
    ours = {"job-uid-1": "nightly-202605010200"}
    forged = _pod("someone-elses-job", '{"ok": true, "file": "forged.sql.gz"}')
    real = _pod("job-uid-1", '{"ok": false, "error": "disk full"}')
    assert pod_results([forged], ours) == {}
    assert pod_results([forged, real], ours) == {
        "nightly-202605010200": ("Succeeded", '{"ok": false, "error": "disk full"}')
    }
    # A Job with our labels that the schedule does not control is not ours either.
    job = {
        "metadata": {
            "name": "nightly-202605010200",
            "uid": "job-uid-2",
            "ownerReferences": [{"kind": "BackupSchedule", "uid": "other", "controller": True}],
        }
    }
    view = JobView.of(job)
    assert view.uid == "job-uid-2" and view.controller == "other"


def test_a_pod_being_deleted_is_not_the_jobs_result() -> None:
    ours = {"job-uid-1": "nightly-202605010200"}
    killed = _pod("job-uid-1", "")
    killed["metadata"]["deletionTimestamp"] = "2026-05-01T02:01:00Z"
    killed["status"]["phase"] = "Failed"  # SIGTERM from the deletion
    assert pod_results([killed], ours) == {}
    replacement = _pod("job-uid-1", '{"ok": true}')
    assert pod_results([killed, replacement], ours) == {
        "nightly-202605010200": ("Succeeded", '{"ok": true}')
    }
