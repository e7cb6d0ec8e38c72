"""The operator's kopf handlers: importing this module registers every one of them.

Run with ``stronghold run`` or ``kopf run -m stronghold_operator.main``.
"""

from stronghold_operator import settings
from stronghold_operator.handlers import backup, health, incident, maintenance, scaling
from stronghold_operator.models.admission import WebhookSettings

if WebhookSettings.from_env() is not None:
    # kopf refuses to start with admission handlers but no server: only when configured.
    from stronghold_operator.handlers import admission  # noqa: F401

__all__ = ["backup", "health", "incident", "maintenance", "scaling", "settings"]
