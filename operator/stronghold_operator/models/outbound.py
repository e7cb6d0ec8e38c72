"""Where the operator may send a request: the outbound policy (pure, no I/O).

Always refused, whatever the settings: cloud metadata names and addresses, link-local,
unspecified (``0.0.0.0`` and ``::`` reach the local host), multicast, broadcast and other
reserved ranges. IPv6 forms that embed an IPv4 address (IPv4-mapped, IPv4-compatible,
NAT64 ``64:ff9b::/96``, 6to4, Teredo) are judged by the embedded IPv4 address, and the legacy
numeric IPv4 forms that libc still accepts (``2852039166``, ``0251.0376.0251.0376``,
``0xa9.0xfe.0xa9.0xfe``, ``169.254.43518``) by the address libc would connect to.

Loopback and private ranges are the operator's (cluster admin's) choice, never a spec
author's: :class:`OutboundPolicy` comes from the operator's environment
(``STRONGHOLD_OUTBOUND_ALLOW``). docs/security.md describes the policy.
"""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass

Address = ipaddress.IPv4Address | ipaddress.IPv6Address

# Hostnames of cloud metadata services; link-local addresses are refused as a range.
METADATA_HOSTS = frozenset(
    {
        "metadata",
        "metadata.google.internal",
        "metadata.goog",
        "metadata.azure.com",
        "instance-data",
        "instance-data.ec2.internal",
        "169.254.169.254",
        "fd00:ec2::254",
        "100.100.100.200",
    }
)
_METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(h) for h in METADATA_HOSTS if h[0].isdigit() or ":" in h
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")  # RFC 8215: prefix length unknown
_THIS_NETWORK = ipaddress.ip_network("0.0.0.0/8")  # Linux connects 0.0.0.0 to the local host
_SHARED = ipaddress.ip_network("100.64.0.0/10")  # carrier-grade NAT: private in practice
_LEGACY_PART = re.compile(r"^(0[xX][0-9a-fA-F]*|0[0-7]*|[1-9][0-9]*)$")

ENV = "STRONGHOLD_OUTBOUND_ALLOW"
CHOICES = ("loopback", "private")
DEFAULT_ALLOW = "private"  # in-cluster Services live in private ranges


@dataclass(frozen=True)
class OutboundPolicy:
    """What the operator's own settings allow beyond public addresses."""

    allow_loopback: bool = False
    allow_private: bool = True

    @classmethod
    def parse(cls, value: str) -> OutboundPolicy:
        """``"loopback,private"``, ``"private"``, ``""`` (public addresses only)."""
        words = {w.strip().lower() for w in value.split(",") if w.strip()}
        unknown = sorted(words - set(CHOICES) - {"none"})
        if unknown:
            raise ValueError(f"{ENV}: unknown value(s) {', '.join(unknown)}; use {CHOICES}")
        return cls(allow_loopback="loopback" in words, allow_private="private" in words)

    @classmethod
    def from_env(cls) -> OutboundPolicy:
        return cls.parse(os.environ.get(ENV, DEFAULT_ALLOW))


def legacy_ipv4(host: str) -> ipaddress.IPv4Address | None:
    """The address libc's inet_aton makes of ``host`` (1-4 parts, decimal/octal/hex), or None."""
    parts = host.split(".")
    if not 1 <= len(parts) <= 4 or not all(_LEGACY_PART.match(p) for p in parts):
        return None
    try:
        nums = [int(p, 0) if p[:2].lower() == "0x" else int(p, 8 if p[0] == "0" else 10)
                for p in parts]  # fmt: skip
    except ValueError:  # a bare "0x"
        return None
    *head, last = nums
    if any(n > 255 for n in head) or last >= 1 << (8 * (5 - len(nums))):
        return None
    value = 0
    for n in head:
        value = value << 8 | n
    value = value << (8 * (5 - len(nums))) | last
    return ipaddress.IPv4Address(value)


def literal_address(host: str) -> Address | None:
    """``host`` as an IP address if it is one in any form a client would accept."""
    name = host.strip("[]").rstrip(".")
    try:
        return ipaddress.ip_address(name.split("%", 1)[0])  # a zone id does not change the range
    except ValueError:
        return legacy_ipv4(name)


def embedded_ipv4(addr: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address stands for (mapped, compatible, NAT64, 6to4, Teredo)."""
    if addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    if addr in _NAT64 or (int(addr) >> 32 == 0 and int(addr) > 1):  # NAT64, ::a.b.c.d
        return ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF)
    if addr.sixtofour is not None:
        return addr.sixtofour
    if addr.teredo is not None:
        return addr.teredo[1]
    return None


def address_refusal(addr: Address, policy: OutboundPolicy | None = None) -> str | None:
    """Why a request must not go to ``addr``, or None.

    With ``policy`` None only the always-refused ranges are judged (spec validation: the
    loopback/private choice is made where the request is sent).
    """
    if isinstance(addr, ipaddress.IPv6Address):
        if addr in _NAT64_LOCAL:
            return f"{addr} is a NAT64 address"
        inner = embedded_ipv4(addr)
        if inner is not None:
            why = address_refusal(inner, policy)
            return f"{addr} embeds {inner}: {why}" if why else None
    if addr in _METADATA_ADDRESSES:
        return f"{addr} is a cloud metadata address"
    if addr.is_unspecified or addr in _THIS_NETWORK:
        return f"{addr} is the unspecified address"
    if addr.is_link_local:
        return f"{addr} is a link-local address"
    if addr.is_multicast:
        return f"{addr} is a multicast address"
    if addr.is_loopback:
        if policy is not None and not policy.allow_loopback:
            return f"{addr} is a loopback address (not allowed by {ENV})"
        return None
    if addr.is_reserved:  # before is_private, which counts 240/4 and the broadcast address
        return f"{addr} is a reserved address"
    if addr.is_private or addr in _SHARED:
        # is_private includes documentation and benchmarking ranges; they are harmless.
        if policy is not None and not policy.allow_private:
            return f"{addr} is a private address (not allowed by {ENV})"
        return None
    if not addr.is_global:
        return f"{addr} is a reserved address"
    return None


def host_refusal(host: str, policy: OutboundPolicy | None = None) -> str | None:
    """Why ``host`` (a name or an address literal, as written) must not be contacted."""
    name = host.strip("[]").rstrip(".").lower()
    if name in METADATA_HOSTS:
        return f"{host} is a cloud metadata address"
    addr = literal_address(name)
    if addr is not None:
        why = address_refusal(addr, policy)
        return f"{host}: {why}" if why and str(addr) != name else why
    loopback_name = name == "localhost" or name.endswith(".localhost")
    if loopback_name and policy is not None and not policy.allow_loopback:
        return f"{host} is a loopback name (not allowed by {ENV})"
    return None


# -- which Secret may go where ---------------------------------------------------------------

# On a Secret: the destinations (``host`` or ``host:port``, comma-separated) its values may be
# sent to. Only someone who can write the Secret can set it; a policy author who can only
# reference the Secret cannot send it anywhere else (docs/security.md, "Secrets").
ALLOWED_DESTINATIONS = "ops.stronghold.io/allowed-destinations"
Destination = tuple[str, int | None]  # host (lower case, no trailing dot), port (None: any)


def _host(text: str) -> str:
    return text.strip().strip("[]").rstrip(".").lower()


def parse_destinations(text: str | None) -> frozenset[Destination]:
    """The annotation's entries; an entry that is not ``host[:port]`` allows nothing."""
    out: set[Destination] = set()
    for entry in (e.strip() for e in (text or "").split(",")):
        if not entry:
            continue
        host, port = entry, None
        if entry.startswith("["):  # [v6]:port
            inside, _, rest = entry[1:].partition("]")
            host, port_text = inside, rest[1:] if rest.startswith(":") else ""
            port = int(port_text) if port_text.isdigit() else None
        elif entry.count(":") == 1:
            host, _, port_text = entry.partition(":")
            if not port_text.isdigit():
                continue
            port = int(port_text)
        out.add((_host(host), port))
    return frozenset(out)


def destination_allowed(allowed: frozenset[Destination], host: str, port: int) -> bool:
    """Whether ``host:port`` is one of ``allowed`` (an entry without a port allows any)."""
    name = _host(host)
    return (name, port) in allowed or (name, None) in allowed


def secret_refusal(
    field: str,
    secret: str,
    allowed: frozenset[Destination],
    host: str,
    port: int,
    shown: str | None = None,
) -> str | None:
    """Why the Secret referenced at ``field`` must not be sent to ``host:port``, or None
    (``shown``: how the message names a destination that is itself secret)."""
    if destination_allowed(allowed, host, port):
        return None
    return (
        f"{field}: Secret {secret} does not allow sending it to {shown or f'{_host(host)}:{port}'}"
        f" (annotation {ALLOWED_DESTINATIONS} on the Secret); nothing was sent"
    )
