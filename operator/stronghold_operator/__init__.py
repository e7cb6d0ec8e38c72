"""Stronghold operator: importing this package registers every kopf handler.

Run with ``stronghold run`` or ``kopf run -m stronghold_operator``.
"""

from stronghold_operator import settings as settings

__all__ = ["settings"]
