"""MaintenanceWindow: the spec model (when, what it covers, pre-checks, post-checks).

Everything here is validated at the edge with :func:`~stronghold_operator.models.base.parse`;
the schedule itself (cron/RRULE evaluation, time zones) is checked by
:func:`stronghold_operator.logic.recurrence.from_spec`, which needs more than field rules.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from datetime import date as Date
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo

from pydantic import Field, field_validator, model_validator

from stronghold_operator.models.base import Duration, SpecModel, check_port, within
from stronghold_operator.models.common import zone
from stronghold_operator.models.status import Condition, StatusModel, Vocabulary

# The annotation a window puts on every object it covers. Its value is the comma-separated,
# sorted list of the names of the windows currently holding the object, so overlapping
# windows can share a target and the last one to end removes the annotation.
# BackupSchedule's on-demand trigger (issue 4): a new value runs one backup.
BACKUP_NOW_ANNOTATION = "ops.stronghold.io/backup-now"
# Manual control of a window: a new value ends the open window now / runs pre-checks now.
END_NOW_ANNOTATION = "ops.stronghold.io/end-now"
PRECHECK_NOW_ANNOTATION = "ops.stronghold.io/precheck-now"
# A new value starts an on-demand window now (through the spec's pre-checks), lasting the
# schedule's duration or start-now-duration; ``stronghold window start`` writes both.
START_NOW_ANNOTATION = "ops.stronghold.io/start-now"
START_NOW_DURATION_ANNOTATION = "ops.stronghold.io/start-now-duration"
# The RFC 3339 start of the one scheduled window not to hold (``stronghold window skip``).
SKIP_ANNOTATION = "ops.stronghold.io/skip"

PreCheckFailurePolicy = Literal["Skip", "Proceed"]
EndBehavior = Literal["Release"]
# What a post-check comparison with the snapshot can find (see logic/snapshot.py).
DifferenceKind = Literal[
    "ReplicasChanged",
    "ImageChanged",
    "ConfigChanged",
    "WorkloadMissing",
    "WorkloadAdded",
    "DatabaseSizeChanged",
    "DatabaseMissing",
    "QueueNotEmpty",
    "HealthWorse",
]
DEFAULT_FAIL_ON: tuple[DifferenceKind, ...] = ("WorkloadMissing", "QueueNotEmpty", "HealthWorse")

_NAME = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"
_LABEL_KEY = re.compile(
    r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
)
MIN_DURATION = timedelta(minutes=1)
MAX_DURATION = timedelta(days=31)
EARLIEST_YEAR = 1970
LATEST_YEAR = 9000


class Schedule(SpecModel):
    """When the window is open: a recurrence with a duration, or one start/end pair.

    ``start``/``end`` without an offset are wall-clock times in ``spec.timeZone``.
    """

    cron: str | None = Field(default=None, min_length=1, max_length=200)
    rrule: str | None = Field(default=None, min_length=1, max_length=2000)
    start: datetime | None = None
    end: datetime | None = None
    duration: Duration | None = None

    @model_validator(mode="after")
    def _one_form(self) -> Schedule:
        forms = [f for f in ("cron", "rrule", "start") if getattr(self, f) is not None]
        if len(forms) != 1:
            raise ValueError("set exactly one of cron, rrule or start (with end or duration)")
        if self.start is None:
            if self.end is not None:
                raise ValueError("end belongs to a one-off window (start/end)")
            if self.duration is None:
                raise ValueError(f"a {forms[0]} schedule needs a duration")
        elif (self.end is None) == (self.duration is None):
            raise ValueError("a one-off window needs end or duration (exactly one)")
        for when in (self.start, self.end):
            # Far from datetime's limits, so start + duration (+ a zone offset) never overflows.
            if when is not None and not EARLIEST_YEAR <= when.year <= LATEST_YEAR:
                raise ValueError(
                    f"start and end must be in the years {EARLIEST_YEAR} to {LATEST_YEAR}"
                )
        if self.start is not None and self.end is not None:
            if (self.start.tzinfo is None) != (self.end.tzinfo is None):
                raise ValueError("write start and end both with an offset or both without")
            if self.end <= self.start:
                raise ValueError("end must be after start")
        if self.duration is not None and not MIN_DURATION <= self.duration <= MAX_DURATION:
            raise ValueError("duration must be between 1m and 744h (31 days)")
        return self


class Exclusion(SpecModel):
    """Local dates (inclusive) on which no window may be open: ``date``, or ``start``..``end``."""

    date: Date | None = None
    start: Date | None = None
    end: Date | None = None
    reason: str = Field(default="", max_length=200)

    @model_validator(mode="after")
    def _date_or_range(self) -> Exclusion:
        for day in (self.date, self.start, self.end):
            if day is not None and not EARLIEST_YEAR <= day.year <= LATEST_YEAR:
                raise ValueError(f"dates must be in the years {EARLIEST_YEAR} to {LATEST_YEAR}")
        if self.date is not None:
            if self.start is not None or self.end is not None:
                raise ValueError("set date, or start and end, not both")
        elif self.start is None or self.end is None:
            raise ValueError("set date, or both start and end")
        elif self.end < self.start:
            raise ValueError("end must not be before start")
        return self

    @property
    def first(self) -> Date:
        day = self.date or self.start
        assert day is not None  # guaranteed by the validator
        return day

    @property
    def last(self) -> Date:
        day = self.date or self.end
        assert day is not None
        return day


class LabelSelectorRequirement(SpecModel):
    key: str = Field(min_length=1, max_length=316)
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"]
    values: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _values_for_operator(self) -> LabelSelectorRequirement:
        if not _LABEL_KEY.match(self.key):
            raise ValueError(f"{self.key!r} is not a valid label key")
        if self.operator in ("In", "NotIn") and not self.values:
            raise ValueError(f"operator {self.operator} needs values")
        if self.operator in ("Exists", "DoesNotExist") and self.values:
            raise ValueError(f"operator {self.operator} takes no values")
        return self

    def matches(self, labels: Mapping[str, str]) -> bool:
        if self.operator == "In":
            return labels.get(self.key) in self.values
        if self.operator == "NotIn":
            return labels.get(self.key) not in self.values
        if self.operator == "Exists":
            return self.key in labels
        return self.key not in labels


class LabelSelector(SpecModel):
    """A Kubernetes label selector; the empty selector ``{}`` matches every object."""

    match_labels: dict[str, str] = Field(default_factory=dict, alias="matchLabels")
    match_expressions: list[LabelSelectorRequirement] = Field(
        default_factory=list, alias="matchExpressions"
    )

    def matches(self, labels: Mapping[str, str]) -> bool:
        if any(labels.get(k) != v for k, v in self.match_labels.items()):
            return False
        return all(e.matches(labels) for e in self.match_expressions)


class TargetSelector(SpecModel):
    """Objects of one kind in the window's namespace: listed by name, or matching a selector."""

    names: list[str] = Field(default_factory=list, max_length=100)
    selector: LabelSelector | None = None

    @field_validator("names")
    @classmethod
    def _dns_names(cls, names: list[str]) -> list[str]:
        for n in names:
            if not re.match(_NAME, n) or len(n) > 253:
                raise ValueError(f"{n!r} is not a valid object name")
        return names

    def selects(self, name: str, labels: Mapping[str, str] | None) -> bool:
        if name in self.names:
            return True
        return self.selector is not None and self.selector.matches(labels or {})


class Targets(SpecModel):
    """What the window covers. A kind left out is not touched."""

    health_policies: TargetSelector | None = Field(default=None, alias="healthPolicies")
    scaling_policies: TargetSelector | None = Field(default=None, alias="scalingPolicies")
    backup_schedules: TargetSelector | None = Field(default=None, alias="backupSchedules")

    def for_plural(self, plural: str) -> TargetSelector | None:
        return {
            "healthpolicies": self.health_policies,
            "scalingpolicies": self.scaling_policies,
            "backupschedules": self.backup_schedules,
        }.get(plural)


class BackupPreCheck(SpecModel):
    """Run an on-demand backup of this BackupSchedule and wait until it is verified."""

    backup_schedule: str = Field(alias="backupSchedule", min_length=1, max_length=253)
    timeout: Annotated[Duration, within(MIN_DURATION, timedelta(hours=24))] = Field(
        default=timedelta(minutes=30)
    )


class PreChecks(SpecModel):
    """Steps before the window opens; the window opens only when they pass (or Proceed)."""

    lead_time: Duration = Field(default=timedelta(minutes=30), alias="leadTime")
    backup: BackupPreCheck | None = None
    snapshot: bool = True

    @field_validator("lead_time")
    @classmethod
    def _lead_bounded(cls, v: timedelta) -> timedelta:
        if v > timedelta(days=7):
            raise ValueError("leadTime must be at most 168h (7 days)")
        return v


class HttpCheck(SpecModel):
    """One page that must answer after the window, within a latency budget."""

    name: str = Field(min_length=1, max_length=63, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    url: str = Field(min_length=1, max_length=2048, pattern=r"^https?://[^\s]+$")
    expected_status: list[int] = Field(default_factory=lambda: [200], alias="expectedStatus")
    latency_budget: Annotated[Duration, within(timedelta(0), timedelta(minutes=5))] = Field(
        default=timedelta(milliseconds=500), alias="latencyBudget"
    )
    timeout: Annotated[Duration, within(timedelta(milliseconds=100), timedelta(minutes=5))] = Field(
        default=timedelta(seconds=5)
    )

    @field_validator("url")
    @classmethod
    def _port(cls, url: str) -> str:
        check_port(url)
        return url

    @field_validator("expected_status")
    @classmethod
    def _codes(cls, codes: list[int]) -> list[int]:
        if not codes or any(not 100 <= c <= 599 for c in codes):
            raise ValueError("status codes must be between 100 and 599")
        return codes


class PostChecks(SpecModel):
    """Checks after the window closes, compared with the pre-window snapshot."""

    healthy_within: Annotated[Duration, within(timedelta(0), timedelta(hours=24))] = Field(
        default=timedelta(minutes=10), alias="healthyWithin"
    )
    compare_snapshot: bool = Field(default=True, alias="compareSnapshot")
    fail_on: list[DifferenceKind] = Field(
        default_factory=lambda: list(DEFAULT_FAIL_ON), alias="failOn"
    )
    database_growth_percent: float = Field(
        default=10.0, alias="databaseSizeTolerancePercent", ge=0, le=1000
    )
    http: list[HttpCheck] = Field(default_factory=list, max_length=20)

    @field_validator("http")
    @classmethod
    def _unique_names(cls, checks: list[HttpCheck]) -> list[HttpCheck]:
        names = [c.name for c in checks]
        if len(names) != len(set(names)):
            raise ValueError("http check names must be unique")
        return checks


class MaintenanceWindowSpec(SpecModel):
    schedule: Schedule
    time_zone: str = Field(default="UTC", alias="timeZone", min_length=1, max_length=64)
    exclusions: list[Exclusion] = Field(default_factory=list, max_length=200)
    suspend: bool = False
    targets: Targets = Field(default_factory=Targets)
    pre_checks: PreChecks = Field(default_factory=PreChecks, alias="preChecks")
    on_pre_check_failure: PreCheckFailurePolicy = Field(default="Skip", alias="onPreCheckFailure")
    post_checks: PostChecks = Field(default_factory=PostChecks, alias="postChecks")
    end_behavior: EndBehavior = Field(default="Release", alias="endBehavior")
    history_limit: int = Field(default=10, alias="historyLimit", ge=1, le=50)

    @field_validator("time_zone")
    @classmethod
    def _known_zone(cls, name: str) -> str:
        zone(name)
        return name

    @property
    def tz(self) -> ZoneInfo:
        return zone(self.time_zone)


def holders(value: str | None) -> list[str]:
    """The window names in a maintenance annotation value (sorted, unique)."""
    return sorted({n.strip() for n in (value or "").split(",") if n.strip()})


def holding(value: str | None, placed: str | None, windows: Collection[str]) -> str | None:
    """The maintenance annotation as it holds now, from the current set of ``windows``.

    A name a window placed (listed in ``placed``, the windows' own annotation) holds only
    while that window exists; any other name (a human's hold) holds until removed. Level-
    triggered: a window deleted with its finalizer stripped stops holding when it is gone,
    whether or not its release ever ran. None: nothing holds.
    """
    by_windows = set(holders(placed))
    rest = [n for n in holders(value) if n not in by_windows or n in windows]
    return ",".join(rest) if rest else None


def with_holder(value: str | None, name: str) -> str:
    """The annotation value once window ``name`` holds the object too."""
    return ",".join(sorted({*holders(value), name}))


def without_holder(value: str | None, name: str) -> str | None:
    """The annotation value once window ``name`` lets go; None: remove the annotation."""
    rest = [n for n in holders(value) if n != name]
    return ",".join(rest) if rest else None


# -- status ----------------------------------------------------------------------------------

READY = "Ready"
SCHEDULED = "Scheduled"
PRE_CHECKS_PASSED = "PreChecksPassed"
ACTIVE = "Active"
POST_CHECKS_PASSED = "PostChecksPassed"

VOCABULARY = Vocabulary(
    types=(READY, SCHEDULED, PRE_CHECKS_PASSED, ACTIVE, POST_CHECKS_PASSED),
    reasons=frozenset(
        {
            "Initializing",
            "InvalidSpec",
            "Reconciled",
            "Suspended",
            "NextWindow",
            "NoUpcomingWindow",
            "NotInWindow",
            "NotRunYet",
            "WaitingForPreChecks",
            "WindowOpen",
            "Ended",
            "Running",
            "Passed",
            "Failed",
            "Pending",
            "NotRequired",
            "Skipped",
        }
    ),
)


class WindowTimes(StatusModel):
    """An occurrence's times, in UTC and in the window's time zone (RFC 3339 strings)."""

    start: str | None = None
    end: str | None = None
    start_local: str | None = Field(default=None, alias="startLocal")
    end_local: str | None = Field(default=None, alias="endLocal")


class PreChecksProgress(StatusModel):
    state: str | None = None
    attempt: int | None = None
    manual: bool | None = None
    started_at: str | None = Field(default=None, alias="startedAt")
    message: str | None = None
    backup_request: str | None = Field(default=None, alias="backupRequest")
    backup_requested_at: str | None = Field(default=None, alias="backupRequestedAt")
    backup: str | None = None


class PostChecksProgress(StatusModel):
    state: str | None = None
    started_at: str | None = Field(default=None, alias="startedAt")
    message: str | None = None


class SkippedWindow(WindowTimes):
    """A scheduled window that the skip annotation cancels (until its start has passed)."""

    id: str | None = None


class CurrentWindow(WindowTimes):
    """The window being handled: the record that makes every step happen once."""

    id: str | None = None
    trigger: str | None = None  # the start-now value of an on-demand window
    pre_checks: PreChecksProgress | None = Field(default=None, alias="preChecks")
    snapshot_config_map: str | None = Field(default=None, alias="snapshotConfigMap")
    opened_at: str | None = Field(default=None, alias="openedAt")
    skipped: bool | None = None
    ended_at: str | None = Field(default=None, alias="endedAt")
    end_reason: str | None = Field(default=None, alias="endReason")
    post_checks: PostChecksProgress | None = Field(default=None, alias="postChecks")


class Difference(StatusModel):
    kind: str | None = None
    target: str | None = None
    before: str | None = None
    after: str | None = None
    message: str | None = None
    failing: bool | None = None


class CheckResult(StatusModel):
    name: str
    type: str
    passed: bool
    message: str = ""
    latency_ms: float | None = Field(default=None, alias="latencyMs")


class HistoryItem(StatusModel):
    id: str | None = None
    trigger: str | None = None
    start: str | None = None
    end: str | None = None
    ended_at: str | None = Field(default=None, alias="endedAt")
    end_reason: str | None = Field(default=None, alias="endReason")
    pre_checks: str | None = Field(default=None, alias="preChecks")
    post_checks: str | None = Field(default=None, alias="postChecks")
    result: str | None = None
    backup: str | None = None
    snapshot_config_map: str | None = Field(default=None, alias="snapshotConfigMap")
    message: str | None = None


class MaintenanceWindowStatus(StatusModel):
    """Everything the operator writes to a window's status (crds/maintenancewindow.yaml)."""

    observed_generation: int | None = Field(default=None, alias="observedGeneration")
    conditions: list[Condition] = Field(default_factory=list)
    next_window: WindowTimes | None = Field(default=None, alias="nextWindow")
    current_window: CurrentWindow | None = Field(default=None, alias="currentWindow")
    frozen_targets: list[str] | None = Field(default=None, alias="frozenTargets")
    snapshot_config_map: str | None = Field(default=None, alias="snapshotConfigMap")
    differences: list[Difference] | None = None
    checks: list[CheckResult] | None = None
    history: list[HistoryItem] | None = None
    last_result: str | None = Field(default=None, alias="lastResult")
    handled_end_now: str | None = Field(default=None, alias="handledEndNow")
    handled_precheck_now: str | None = Field(default=None, alias="handledPrecheckNow")
    handled_start_now: str | None = Field(default=None, alias="handledStartNow")
    handled_skip: str | None = Field(default=None, alias="handledSkip")
    skipping: SkippedWindow | None = None

    def to_status(self) -> dict[str, Any]:
        # A field set to None at the top deletes it; inside a nested object None and ""
        # are left out, as the window has always written them (no null inside objects).
        return {k: v if v is None else clean(v) for k, v in super().to_status().items()}


def clean(value: Any) -> Any:
    """Nested None and "" left out, through dicts and lists: what a status patch may carry."""
    if isinstance(value, dict):
        return {k: clean(v) for k, v in value.items() if v is not None and v != ""}
    if isinstance(value, list):
        return [clean(v) for v in value]
    return value
