"""The operator's kopf handlers: importing this module registers every one of them.

Run with ``stronghold run`` or ``kopf run -m stronghold_operator.main``.
"""

from stronghold_operator import settings
from stronghold_operator.handlers import backup, health, incident, maintenance, scaling

__all__ = ["backup", "health", "incident", "maintenance", "scaling", "settings"]
