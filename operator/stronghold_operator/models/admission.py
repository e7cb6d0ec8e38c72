"""The admission webhook's settings: off unless a port is configured (pure, no I/O).

``stronghold run --webhook-port`` and friends set these variables, as the other flags do,
so ``kopf run -m stronghold_operator.main`` reads the same settings. docs/admission.md.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import PurePath

PORT_ENV = "STRONGHOLD_WEBHOOK_PORT"
ADDRESS_ENV = "STRONGHOLD_WEBHOOK_ADDRESS"
CERT_DIR_ENV = "STRONGHOLD_WEBHOOK_CERT_DIR"
RELOAD_ENV = "STRONGHOLD_WEBHOOK_CERT_RELOAD"
DEFAULT_ADDRESS = "0.0.0.0"
# Where manifests/components/webhook mounts the certificate's Secret.
DEFAULT_CERT_DIR = "/etc/stronghold/webhook"
# Seconds between reads of the certificate files: a renewed one is served from then on.
DEFAULT_RELOAD_S = 60.0
# The Secret's keys: the layout cert-manager writes (kubernetes.io/tls plus ca.crt).
CERT_FILE, KEY_FILE, CA_FILE = "tls.crt", "tls.key", "ca.crt"


@dataclass(frozen=True)
class WebhookSettings:
    port: int
    address: str = DEFAULT_ADDRESS
    cert_dir: str = DEFAULT_CERT_DIR
    reload_s: float = DEFAULT_RELOAD_S

    @property
    def certfile(self) -> PurePath:
        return PurePath(self.cert_dir) / CERT_FILE

    @property
    def keyfile(self) -> PurePath:
        return PurePath(self.cert_dir) / KEY_FILE

    @property
    def cafile(self) -> PurePath:
        return PurePath(self.cert_dir) / CA_FILE

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> WebhookSettings | None:
        """The settings, or None when no port is set (the webhook is off); ValueError if bad."""
        env = os.environ if env is None else env
        raw = env.get(PORT_ENV, "").strip()
        if not raw:
            return None
        try:
            port = int(raw)
        except ValueError:
            raise ValueError(f"{PORT_ENV}: expected a port number, got {raw!r}") from None
        if not 1 <= port <= 65535:
            raise ValueError(f"{PORT_ENV}: port must be between 1 and 65535, got {port}")
        reload = env.get(RELOAD_ENV, "").strip() or str(DEFAULT_RELOAD_S)
        try:
            reload_s = float(reload)
        except ValueError:
            raise ValueError(f"{RELOAD_ENV}: expected seconds, got {reload!r}") from None
        if not 0.1 <= reload_s <= 3600:  # NaN fails too
            raise ValueError(f"{RELOAD_ENV}: must be between 0.1 and 3600 seconds, got {reload}")
        return cls(
            port=port,
            address=env.get(ADDRESS_ENV, "").strip() or DEFAULT_ADDRESS,
            cert_dir=env.get(CERT_DIR_ENV, "").strip() or DEFAULT_CERT_DIR,
            reload_s=reload_s,
        )
