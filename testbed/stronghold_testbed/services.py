"""The platform's services on 127.0.0.1: started when absent, reused when present.

Only what this module started is ever stopped (by pid).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from stronghold_testbed import docker_engine, packages, procs, progress, prometheus
from stronghold_testbed.procs import TestbedError

POSTGRES_PORT = 5432
AMQP_PORT = 5672
RABBITMQ_MGMT_PORT = 15672
MEMCACHED_PORT = 11211


def _postgres() -> str:
    if procs.port_open(POSTGRES_PORT):
        return "reused"
    clusters = sorted(Path("/etc/postgresql").glob("*/main"))
    if not clusters or shutil.which("pg_ctlcluster") is None:
        packages.ensure(["postgresql"])
        clusters = sorted(Path("/etc/postgresql").glob("*/main"))
    if not clusters:
        raise TestbedError("PostgreSQL is not installed and no cluster exists in /etc/postgresql")
    version = clusters[-1].parent.name
    procs.run(["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "start"])
    procs.wait_for("PostgreSQL", lambda: procs.port_open(POSTGRES_PORT), 60)
    return "started"


def _rabbitmq() -> str:
    state = "reused"
    if not procs.port_open(AMQP_PORT):
        if shutil.which("rabbitmq-server") is None:
            packages.ensure(["rabbitmq-server"])
        procs.run(["rabbitmq-server", "-detached"])
        procs.wait_for("RabbitMQ", lambda: procs.port_open(AMQP_PORT), 120)
        state = "started"
    if not procs.port_open(RABBITMQ_MGMT_PORT):
        # Bind the management API to loopback before the plugin starts (it would listen on
        # every address by default), then enable it on the running node.
        procs.run(
            [
                "rabbitmqctl",
                "eval",
                "application:set_env(rabbitmq_management, tcp_config, "
                f'[{{ip, "127.0.0.1"}}, {{port, {RABBITMQ_MGMT_PORT}}}]).',
            ]
        )
        procs.run(["rabbitmq-plugins", "enable", "--online", "rabbitmq_management"])
        procs.wait_for("RabbitMQ management API", lambda: procs.port_open(RABBITMQ_MGMT_PORT), 120)
        state += "+management"
    return state


def _memcached() -> str:
    if procs.port_open(MEMCACHED_PORT):
        return "reused"
    start_memcached("memcached", MEMCACHED_PORT, megabytes=64)
    return "started"


def start_memcached(name: str, port: int, megabytes: int) -> None:
    """A Memcached on 127.0.0.1:``port`` that we own (pid file ``name``)."""
    packages.ensure(["memcached"])
    user = "memcache" if _user_exists("memcache") else "nobody"
    procs.start(
        name,
        [
            shutil.which("memcached") or "/usr/bin/memcached",
            "-l",
            "127.0.0.1",
            "-p",
            str(port),
            "-U",
            "0",
            "-m",
            str(megabytes),
            "-c",
            "1024",
            "-u",
            user,
        ],
    )
    procs.wait_for(f"Memcached on port {port}", lambda: procs.port_open(port), 30, log=name)


def _user_exists(name: str) -> bool:
    return subprocess.run(["id", name], capture_output=True, check=False).returncode == 0


def up(out: progress.Progress | None = None) -> dict[str, str]:
    """Ensure every service answers on 127.0.0.1; say for each whether it was reused."""
    p = out or progress.Progress("services up", 6)
    with p.step("Debian packages (apt-get install what is missing)"):
        packages.ensure()
    states: dict[str, str] = {}
    for name, ensure in (
        ("postgresql", _postgres),
        ("rabbitmq", _rabbitmq),
        ("memcached", _memcached),
        ("docker", docker_engine.ensure),
        ("prometheus", prometheus.up),
    ):
        with p.step(name):
            states[name] = ensure()
    return states


def status() -> dict[str, str]:
    def state(port: int, name: str) -> str:
        if not procs.port_open(port):
            return "down"
        return "up (started by stronghold)" if procs.owned_pid(name) else "up"

    return {
        "postgresql": state(POSTGRES_PORT, "postgresql"),
        "rabbitmq": state(AMQP_PORT, "rabbitmq"),
        "rabbitmq-management": state(RABBITMQ_MGMT_PORT, "rabbitmq"),
        "memcached": state(MEMCACHED_PORT, "memcached"),
        "docker": "up" if docker_engine.running() else "down",
        **prometheus.status(),
    }


def down() -> list[str]:
    """Stop only the services this module started (memcached, Prometheus, node exporter);
    PostgreSQL and RabbitMQ are machine services we never stop."""
    stopped = ["memcached"] if procs.stop("memcached") else []
    return stopped + prometheus.down()
