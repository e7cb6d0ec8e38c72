"""HealthPolicy decisions: measurement -> band -> state -> severity -> incident -> status.

Everything here is pure: probe results and the previous status come in, the new status,
conditions and notifications go out. ``now`` is always an argument.

The code lives in one module per concern; this package only re-exports their public API
(so ``from stronghold_operator.logic import health`` keeps working). Look for things here:

- ``vocabulary``: condition types, reasons and severity words of a HealthPolicy's status
- ``findings``: a finding and the warning/critical bands that raise one
- ``checks``: per check type (http, postgres, memcached, rabbitmq, prometheus, resources),
  one probe result -> findings and measurements
- ``assessment``: one check's verdict on one probe result (``assess``)
- ``thresholds``: consecutive-result counting (``count``)
- ``classification``: severity P1-P4 and the dependency-aware root cause (``classify``)
- ``overload``: when a slow result is the operator's own overload (``Load``, ``discounted``)
- ``incidents``: the incident lifecycle and its notifications (``step_incident``)
- ``evaluation``: one whole round -> status and conditions (``evaluate``)
- ``logs``: access-log parsing, security rules over sliding windows (logs checks)
- ``redaction``: secret values out of status and messages, credentials out of log lines
- ``notify``: webhook bodies
- ``backoff``: retry delays
"""

from stronghold_operator.logic.health.assessment import Assessment, assess
from stronghold_operator.logic.health.backoff import missing_secret_backoff, retry_delays
from stronghold_operator.logic.health.checks import (
    assess_http,
    assess_logs,
    assess_memcached,
    assess_postgres,
    assess_prometheus,
    assess_rabbitmq,
    assess_resources,
)
from stronghold_operator.logic.health.classification import (
    DEFAULT_RULES,
    CheckVerdict,
    Classification,
    classify,
    component_check,
    dependencies,
    rules_of,
    severity_of,
)
from stronghold_operator.logic.health.evaluation import (
    Evaluation,
    evaluate,
    format_latency,
    policy_conditions,
)
from stronghold_operator.logic.health.findings import (
    Finding,
    Level,
    band_latency,
    band_lower,
    band_upper,
)
from stronghold_operator.logic.health.incidents import (
    MAX_RECENT_INCIDENTS,
    IncidentStep,
    Notification,
    NotificationKind,
    incident_id,
    step_incident,
)
from stronghold_operator.logic.health.logs import log_cursors
from stronghold_operator.logic.health.notify import webhook_body
from stronghold_operator.logic.health.overload import REASON_OVERLOADED, Load, discounted
from stronghold_operator.logic.health.redaction import redact
from stronghold_operator.logic.health.thresholds import Counted, count
from stronghold_operator.logic.health.vocabulary import (
    CONDITION_TYPES,
    DEGRADED,
    HEALTHY,
    INCIDENT_OPEN,
    NO_SEVERITY,
    REASON_MAINTENANCE,
    REASON_RATE_LIMITED,
    SEVERITY_REASON,
    SEVERITY_TEXT,
)

__all__ = [
    "CONDITION_TYPES",
    "DEFAULT_RULES",
    "DEGRADED",
    "HEALTHY",
    "INCIDENT_OPEN",
    "MAX_RECENT_INCIDENTS",
    "NO_SEVERITY",
    "REASON_MAINTENANCE",
    "REASON_OVERLOADED",
    "REASON_RATE_LIMITED",
    "SEVERITY_REASON",
    "SEVERITY_TEXT",
    "Assessment",
    "CheckVerdict",
    "Classification",
    "Counted",
    "Evaluation",
    "Finding",
    "IncidentStep",
    "Level",
    "Load",
    "Notification",
    "NotificationKind",
    "assess",
    "assess_http",
    "assess_logs",
    "assess_memcached",
    "assess_postgres",
    "assess_prometheus",
    "assess_rabbitmq",
    "assess_resources",
    "band_latency",
    "band_lower",
    "band_upper",
    "classify",
    "component_check",
    "count",
    "dependencies",
    "discounted",
    "evaluate",
    "format_latency",
    "incident_id",
    "log_cursors",
    "missing_secret_backoff",
    "policy_conditions",
    "redact",
    "retry_delays",
    "rules_of",
    "severity_of",
    "step_incident",
    "webhook_body",
]
