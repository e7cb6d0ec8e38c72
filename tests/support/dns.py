"""A tiny DNS server on 127.0.0.1 and an aiohttp resolver that asks it (rebinding tests).

The server answers A queries with the next address of a script (the last one repeats), so a
test can make a name resolve to 127.0.0.1 first and to a forbidden address afterwards; AAAA
and other queries get an empty NOERROR answer. Packets are built by hand (RFC 1035): only
what these tests need.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import struct
from typing import Any

from aiohttp.abc import AbstractResolver, ResolveResult

A, AAAA, IN = 1, 28, 1


def _name(labels: str) -> bytes:
    out = b""
    for label in labels.rstrip(".").split("."):
        out += bytes([len(label)]) + label.encode()
    return out + b"\0"


def _read_name(packet: bytes, at: int) -> tuple[str, int]:
    labels = []
    while packet[at]:
        n = packet[at]
        labels.append(packet[at + 1 : at + 1 + n].decode())
        at += 1 + n
    return ".".join(labels), at + 1


def query(qid: int, name: str, qtype: int = A) -> bytes:
    return (
        struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0)
        + _name(name)
        + struct.pack("!HH", qtype, IN)
    )


def answer_addresses(packet: bytes) -> list[str]:
    """The A records of an answer packet."""
    _, _, qd, an, _, _ = struct.unpack("!HHHHHH", packet[:12])
    at = 12
    for _ in range(qd):
        _, at = _read_name(packet, at)
        at += 4
    out = []
    for _ in range(an):
        at += 2  # a compressed pointer to the question's name
        rtype, _, _, length = struct.unpack("!HHIH", packet[at : at + 10])
        at += 10
        if rtype == A:
            out.append(str(ipaddress.IPv4Address(packet[at : at + length])))
        at += length
    return out


class ScriptedDns(asyncio.DatagramProtocol):
    """Answers the n-th A query with ``script[n]`` (then the last entry again)."""

    def __init__(self, script: list[str]) -> None:
        self.script = script
        self.asked: list[str] = []  # names of the A queries, in order
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        qid = struct.unpack("!H", data[:2])[0]
        name, end = _read_name(data, 12)
        qtype = struct.unpack("!H", data[end : end + 2])[0]
        question = data[12 : end + 4]
        answers = b""
        count = 0
        if qtype == A:
            address = self.script[min(len(self.asked), len(self.script) - 1)]
            self.asked.append(name)
            rdata = ipaddress.IPv4Address(address).packed
            answers = struct.pack("!HHHIH", 0xC00C, A, IN, 0, len(rdata)) + rdata  # TTL 0
            count = 1
        header = struct.pack("!HHHHHH", qid, 0x8180, 1, count, 0, 0)
        assert self.transport is not None
        self.transport.sendto(header + question + answers, addr)


async def serve(script: list[str]) -> tuple[ScriptedDns, asyncio.DatagramTransport]:
    loop = asyncio.get_running_loop()
    transport, proto = await loop.create_datagram_endpoint(
        lambda: ScriptedDns(script), local_addr=("127.0.0.1", 0)
    )
    return proto, transport


class _Reply(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.reply: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if not self.reply.done():
            self.reply.set_result(data)


class UdpResolver(AbstractResolver):
    """An aiohttp resolver that asks one DNS server (A records only)."""

    def __init__(self, server: tuple[str, int]) -> None:
        self.server = server
        self._qid = 0

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        self._qid += 1
        loop = asyncio.get_running_loop()
        transport, proto = await loop.create_datagram_endpoint(_Reply, remote_addr=self.server)
        try:
            transport.sendto(query(self._qid, host))
            packet = await asyncio.wait_for(proto.reply, 2)
        finally:
            transport.close()
        addresses = answer_addresses(packet)
        if not addresses:
            raise OSError(f"{host}: no A record")
        return [
            ResolveResult(hostname=host, host=a, port=port, family=socket.AF_INET, proto=0, flags=0)
            for a in addresses
        ]

    async def close(self) -> None:
        pass


def only_loopback(monkeypatch: Any) -> list[tuple[Any, ...]]:
    """Make the running loop refuse TCP connections to anything but 127.0.0.1 (a test of a
    guard must not send a packet elsewhere even if the guard fails); the attempts made."""
    loop = asyncio.get_running_loop()
    attempts: list[tuple[Any, ...]] = []
    real_connect = loop.sock_connect

    async def connect(sock: socket.socket, address: Any) -> None:
        if sock.type == socket.SOCK_STREAM:  # not a resolver's own UDP queries
            attempts.append(tuple(address))
        if address[0] != "127.0.0.1":
            raise ConnectionRefusedError(f"test guard: {address[0]} is not 127.0.0.1")
        await real_connect(sock, address)

    monkeypatch.setattr(loop, "sock_connect", connect)
    return attempts
