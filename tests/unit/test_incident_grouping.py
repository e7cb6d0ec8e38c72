"""A shared target's storm records its policies' incidents on one Incident (issue 26)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from stronghold_operator.logic import health as logic
from stronghold_operator.logic import incident as li
from stronghold_operator.logic.health import damping
from stronghold_operator.logic.health.classification import Classification
from stronghold_operator.models.base import parse
from stronghold_operator.models.health import HealthPolicySpec
from stronghold_operator.services import health as service

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
WEB = "https://web.example:8443/health/?token=abc"
TARGET = "https://web.example:8443"


def policy() -> HealthPolicySpec:
    return parse(
        HealthPolicySpec,
        {
            "failureThreshold": 1,
            "flapDamping": {"resolveAfter": 1},
            "checks": [
                {"name": "web", "http": {"url": WEB}},
                {"name": "db", "postgres": {"host": "db"}},
            ],
        },
    )


class Leads:
    """The keeper's side of the port: the storm leads it knows, by target, and what people
    asked of Incidents, by name."""

    def __init__(self, hands: dict[str, li.Hand] | None = None, **leads: str) -> None:
        self.leads = {TARGET if k == "web" else k: v for k, v in leads.items()}
        self.hands = hands or {}

    def hand(self, name: str) -> li.Hand | None:
        return self.hands.get(name)

    def lead(self, target: str) -> str | None:
        return self.leads.get(target)

    def record(self, *args: Any) -> None:
        raise AssertionError("not called here")


def incident(root: str = "web", **extra: Any) -> dict[str, Any]:
    return {"id": "p7-20260101-120000", "severity": "P2", "rootCause": root, **extra}


def test_a_storm_on_the_root_cause_target_groups_the_incident_on_its_lead() -> None:
    inc = incident()
    service.name_incident(policy(), inc, (TARGET, "failing"), Leads(web="p1-20260101-115958"))
    assert inc["incidentName"] == "p1-20260101-115958" and inc["grouped"] is True


def test_otherwise_the_incident_has_an_object_of_its_own() -> None:
    own = "p7-20260101-120000"
    cases = [
        (incident(), None, Leads(web="lead")),  # no storm counted this policy
        (incident(), (TARGET, "recovered"), Leads(web="lead")),  # the storm is a recovery
        (incident(root="db"), (TARGET, "failing"), Leads(web="lead")),  # another root cause
        (incident(), (TARGET, "failing"), Leads()),  # no lead yet: this one will lead
    ]
    for inc, fold, port in cases:
        service.name_incident(policy(), inc, fold, port)
        assert inc["incidentName"] == own and "grouped" not in inc, (inc, fold)
    inc = incident()
    service.name_incident(policy(), inc, (TARGET, "failing"), None)  # no Incident objects
    assert inc["incidentName"] == own


def test_the_root_cause_target_is_what_the_spec_names_in_clear() -> None:
    assert service.root_target(policy(), incident()) == TARGET  # no path, no token
    assert service.root_target(policy(), incident(root="gone")) is None


def test_a_resolved_incident_keeps_the_incident_that_records_it() -> None:
    open_ = {**incident(), "startedAt": "2026-01-01T12:00:00Z", "incidentName": "lead"}
    open_["grouped"] = True
    step = logic.step_incident(policy(), "p7", open_, [], None, None, T0)
    (closed,) = step.recent
    assert closed["incidentName"] == "lead" and closed["grouped"] is True
    assert [n.kind for n in step.notifications] == ["Resolved"]


def test_a_reopened_incident_goes_on_where_it_was_recorded() -> None:
    closed = {**incident(), "incidentName": "lead", "grouped": True, "escalationLevel": 1}
    found = Classification("P2", "web", "web: timeout", ("web",))
    again = damping.reopened(closed, found, None)
    assert again["incidentName"] == "lead" and again["grouped"] is True
    assert again["reopened"] == 1
    own = damping.reopened({**incident(), "incidentName": "p7-20260101-120000"}, found, None)
    assert own["incidentName"] == "p7-20260101-120000" and "grouped" not in own


def test_the_group_counts_every_member_and_names_the_first() -> None:
    members = [f"ns/p{i}" for i in range(5000)]
    group = li.grouped(TARGET, len(members), iter(members))
    assert group == {"target": TARGET, "count": 5000, "policies": members[: li.MAX_GROUPED_NAMES]}
    assert li.grouped("x" * 400, 1, ["ns/a"])["target"] == "x" * li.MAX_TEXT


def test_acknowledging_the_lead_acknowledges_every_incident_grouped_on_it() -> None:
    grouped = {**incident(), "startedAt": "2026-01-01T12:00:00Z", "incidentName": "lead"}
    grouped["grouped"] = True
    port = Leads(hands={"lead": li.Hand("alice")})
    current, notes = service.honour_hand(policy(), "p7", {"incident": grouped}, port, None, T0)
    assert current["incident"]["acknowledgedBy"] == "alice" and notes == []
    own = {**grouped, "incidentName": "p7-20260101-120000", "grouped": False}
    current, _ = service.honour_hand(policy(), "p7", {"incident": own}, port, None, T0)
    assert "acknowledgedBy" not in current["incident"]  # another Incident's hand
