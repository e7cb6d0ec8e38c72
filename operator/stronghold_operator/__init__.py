"""Stronghold operator: importing this package registers every kopf handler.

Run with ``stronghold run`` or ``kopf run -m stronghold_operator``.
"""

from stronghold_operator import settings as settings
from stronghold_operator.handlers import backup as backup
from stronghold_operator.handlers import health as health
from stronghold_operator.handlers import maintenance as maintenance
from stronghold_operator.handlers import scaling as scaling

__all__ = ["backup", "health", "maintenance", "scaling", "settings"]
