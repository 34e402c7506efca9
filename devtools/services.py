"""Local PostgreSQL, Redis and Kafka without Docker: the project-owned instances and private ones.

This module owns the server processes that `roomfeed services up` starts under the data folder
(`<data_dir>/postgres`, `<data_dir>/redis`, `<data_dir>/kafka`): their files, pid files and logs.
`down` stops exactly those processes (found through their pid files), never anything else.
A service named by DATABASE_URL, REDIS_URL or KAFKA_BOOTSTRAP is external and left alone.

Each server class has an explicit lifecycle (`init`/`start`/`wait_ready`/`stop`/`kill`), so a
test can run a private instance on free ports in a temp folder, kill -9 it and start it again
on the same data.

Processes are launched through a small reaper shell that waits on them: PID 1 on some machines
never reaps orphans, and a zombie postmaster would make PostgreSQL refuse to restart after a
kill -9 (its stale lock file would name a pid that still "exists").
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import fcntl
import logging
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from roomfeed.settings import REPO_ROOT, SERVICES, Settings, external_services

log = logging.getLogger("devtools.services")

PG_BIN = Path("/usr/lib/postgresql/15/bin")
KAFKA_POM = REPO_ROOT / "infra" / "kafka" / "pom.xml"
KAFKA_LOG4J = REPO_ROOT / "infra" / "kafka" / "log4j2.properties"
SERVICE_NAMES = SERVICES

T = TypeVar("T")

# The reaper: `( service & echo $! > pidfile; wait ) &` — the subshell outlives the launcher and
# reaps the service when it dies, so a killed server leaves no zombie holding its pid.
_LAUNCHER = r"""
log=$1; pidfile=$2; shift 2
( "$@" </dev/null >>"$log" 2>&1 &
  echo $! >"$pidfile.tmp" && mv -f "$pidfile.tmp" "$pidfile"
  wait ) </dev/null >/dev/null 2>&1 &
"""


class ServiceError(RuntimeError):
    """A local service could not be installed, started or reached."""


# --- processes ------------------------------------------------------------------------------


def _pid_alive(pid: int, *needles: str) -> bool:
    """True when `pid` is a live (not zombie) process whose command line contains every needle.

    The needles (binary, data folder, port) make sure a stale pid file never names someone else's process.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return False
    state = stat.rsplit(")", 1)[1].split()[0]
    # A killed JVM's main thread turns zombie while its other threads (and its sockets) still exit.
    if state in ("Z", "X") and len(os.listdir(f"/proc/{pid}/task")) <= 1:
        return False
    return all(needle in cmdline for needle in needles)


def _read_pid(path: Path) -> int | None:
    try:
        first = path.read_text().splitlines()[0].strip()
        return int(first)
    except (FileNotFoundError, IndexError, ValueError):
        return None


def _spawn(
    cmd: list[str], log_path: Path, pid_path: Path, cwd: Path, env: dict[str, str] | None = None
) -> int:
    """Start `cmd` detached (own session, stdout/stderr appended to `log_path`); returns its pid."""
    pid_path.unlink(missing_ok=True)
    subprocess.run(
        ["sh", "-c", _LAUNCHER, "sh", str(log_path), str(pid_path), *cmd],
        cwd=cwd,
        env=env,
        check=True,
        start_new_session=True,
        stdin=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        pid = _read_pid(pid_path)
        if pid is not None:
            return pid
        time.sleep(0.01)
    raise ServiceError(f"{cmd[0]} did not start (no pid in {pid_path})")


def _signal(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _pid_alive(pid):
            return True
        time.sleep(0.05)
    return not _pid_alive(pid)


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.append(int(entry.name))
    return found


def _port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def _ensure_port_free(port: int, timeout: float = 5.0) -> None:
    """Wait briefly for a port a just-killed server may still hold; fail naming whoever keeps it."""
    deadline = time.monotonic() + timeout
    while _port_open(port):
        if time.monotonic() > deadline:
            raise _port_taken(port)
        time.sleep(0.1)


def _port_taken(port: int) -> ServiceError:
    """The error for a port someone else listens on, naming the listener when `ss` can tell."""
    who = ""
    if shutil.which("ss"):
        proc = subprocess.run(
            ["ss", "-ltnpH", f"sport = :{port}"], capture_output=True, text=True, check=False
        )
        who = proc.stdout.strip()
    return ServiceError(f"port {port} is already taken by another process {who}".rstrip())


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return f"(no log at {path})"


def _run_coroutine(factory: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine to completion on a private loop in a worker thread (safe inside a running loop)."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(lambda: asyncio.run(factory())).result()


def _apt_install(*packages: str) -> None:
    if os.geteuid() != 0:
        raise ServiceError(
            f"{' '.join(packages)} missing; install with: sudo apt-get install -y {' '.join(packages)}"
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    cmd = ["apt-get", "install", "-y", "--no-install-recommends", *packages]
    if subprocess.run(cmd, env=env, check=False).returncode != 0:
        subprocess.run(["apt-get", "update"], env=env, check=True)
        subprocess.run(cmd, env=env, check=True)


# --- PostgreSQL ------------------------------------------------------------------------------


class PostgresServer:
    """A PostgreSQL 15 cluster in `data_dir/pgdata`: trust auth on 127.0.0.1, role and database `roomfeed`."""

    def __init__(self, data_dir: Path, port: int) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.port = port
        self.pgdata = self.data_dir / "pgdata"
        self.log_path = self.data_dir / "postgres.log"
        self.launch_pid_path = self.data_dir / "launcher.pid"
        self._marker = self.data_dir / ".initialized"

    def _as_postgres(self, cmd: list[str]) -> list[str]:
        return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd

    def ensure_installed(self) -> None:
        if not (PG_BIN / "postgres").exists():
            _apt_install("postgresql-15")

    def init(self) -> None:
        """Create the cluster once (initdb as the postgres user), then role and database `roomfeed`."""
        if self._marker.exists():
            return
        self.ensure_installed()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self.pgdata.exists():  # a half-made cluster from an interrupted init
            shutil.rmtree(self.pgdata)
        if os.geteuid() == 0:
            shutil.chown(self.data_dir, "postgres", "postgres")
            if subprocess.run(self._as_postgres(["test", "-w", str(self.data_dir)]), check=False).returncode:
                raise ServiceError(
                    f"the postgres user cannot write {self.data_dir}; make its parent folders searchable (chmod o+x)"
                )
        self._run_pg(
            [
                str(PG_BIN / "initdb"),
                "-D",
                str(self.pgdata),
                "-U",
                "postgres",
                "--auth=trust",
                "--no-locale",
                "-E",
                "UTF8",
                "--no-sync",
            ]
        )
        with (self.pgdata / "postgresql.conf").open("a") as conf:
            conf.write(
                "\n# roomfeed local instance\n"
                "listen_addresses = '127.0.0.1'\n"
                f"unix_socket_directories = '{self.pgdata}'\n"
                "max_connections = 200\n"
                "shared_buffers = 128MB\n"
                "log_min_messages = warning\n"
                "log_checkpoints = off\n"
            )
        # Single-user mode: no server, no port, no race; one command per line.
        script = "CREATE ROLE roomfeed SUPERUSER LOGIN\nCREATE DATABASE roomfeed OWNER roomfeed\n"
        out = self._run_pg([str(PG_BIN / "postgres"), "--single", "-D", str(self.pgdata), "postgres"], script)
        if "ERROR" in out:
            raise ServiceError(f"creating role/database failed:\n{out}")
        self._marker.write_text("ok\n")

    def _run_pg(self, cmd: list[str], stdin: str | None = None) -> str:
        proc = subprocess.run(
            self._as_postgres(cmd), input=stdin, capture_output=True, text=True, check=False, cwd="/"
        )
        if proc.returncode != 0:
            raise ServiceError(
                f"{Path(cmd[0]).name} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
            )
        return proc.stdout + proc.stderr

    def postmaster_pid(self) -> int | None:
        pid = _read_pid(self.pgdata / "postmaster.pid")
        return pid if pid is not None and _pid_alive(pid, "postgres", f"-D {self.pgdata}") else None

    def is_running(self) -> bool:
        return self.postmaster_pid() is not None

    def start(self) -> None:
        if self.is_running():
            return
        self.init()
        _ensure_port_free(self.port)
        self.log_path.touch()
        cmd = self._as_postgres([str(PG_BIN / "postgres"), "-D", str(self.pgdata), "-p", str(self.port)])
        _spawn(cmd, self.log_path, self.launch_pid_path, cwd=self.data_dir)

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Return once `select 1` answers over TCP as role roomfeed."""
        deadline = time.monotonic() + timeout
        env = {**os.environ, "PGCONNECT_TIMEOUT": "2"}
        cmd = [str(PG_BIN / "psql"), "-X", "-A", "-t", "-q", "-c", "select 1", self.url()]
        while True:
            if _port_open(self.port):
                proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
                if proc.returncode == 0 and proc.stdout.strip() == "1":
                    return
            launcher = _read_pid(self.launch_pid_path)
            if not self.is_running() and (launcher is None or not _pid_alive(launcher)):
                raise ServiceError(
                    f"postgres on port {self.port} is not running; log:\n{_tail(self.log_path)}"
                )
            if time.monotonic() > deadline:
                raise ServiceError(
                    f"postgres on port {self.port} did not answer in {timeout}s:\n{_tail(self.log_path)}"
                )
            time.sleep(0.1)

    def stop(self, timeout: float = 30.0) -> None:
        """Fast shutdown (SIGINT: roll back sessions, checkpoint); SIGKILL if it hangs."""
        pid = self.postmaster_pid()
        if pid is None:
            return
        _signal(pid, signal.SIGINT)
        if not _wait_gone(pid, timeout):
            self.kill()

    def kill(self) -> None:
        """SIGKILL the postmaster and its children: a crash, with recovery on the next start."""
        pid = self.postmaster_pid()
        if pid is None:
            return
        children = _children(pid)
        _signal(pid, signal.SIGKILL)
        for child in children:
            _signal(child, signal.SIGKILL)
        _wait_gone(pid, 10)
        for child in children:
            _wait_gone(child, 5)

    def url(self, dbname: str = "roomfeed") -> str:
        return f"postgresql://roomfeed@127.0.0.1:{self.port}/{dbname}"


# --- Redis -----------------------------------------------------------------------------------


class _TerminatedServer:
    """A server that shuts down cleanly on SIGTERM (Redis flushes its append-only file, Kafka does a
    controlled shutdown); `stop` waits `stop_timeout` seconds, then SIGKILLs it, like `kill`."""

    stop_timeout = 15.0

    def pid(self) -> int | None:
        raise NotImplementedError

    def stop(self, timeout: float | None = None) -> None:
        pid = self.pid()
        if pid is None:
            return
        _signal(pid, signal.SIGTERM)
        if not _wait_gone(pid, self.stop_timeout if timeout is None else timeout):
            self.kill()

    def kill(self) -> None:
        pid = self.pid()
        if pid is None:
            return
        _signal(pid, signal.SIGKILL)
        _wait_gone(pid, 10)


@dataclass(frozen=True)
class RedisTls:
    """PEM files for a redis-server that speaks only TLS: its certificate and key, and the CA clients trust."""

    cert: Path
    key: Path
    ca: Path


class RedisServer(_TerminatedServer):
    """A redis-server with an append-only file (fsync every second) in `data_dir`.

    With `tls` it listens only on a TLS port (`port`) and its URL is `rediss://`; `extra_args` go to
    redis-server as they are (a cluster node's `--cluster-enabled yes`, for example)."""

    def __init__(
        self, data_dir: Path, port: int, *, tls: RedisTls | None = None, extra_args: tuple[str, ...] = ()
    ) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.port = port
        self.tls = tls
        self.extra_args = extra_args
        self.pid_path = self.data_dir / "redis.pid"
        self.log_path = self.data_dir / "redis.log"

    @staticmethod
    def binary() -> str | None:
        return shutil.which("redis-server") or (
            "/usr/bin/redis-server" if Path("/usr/bin/redis-server").exists() else None
        )

    def ensure_installed(self) -> None:
        if self.binary() is None:
            _apt_install("redis-server")

    def pid(self) -> int | None:
        pid = _read_pid(self.pid_path)
        if pid is None:
            return None
        # The port is in the command line both as started (--port N) and once redis-server
        # retitles itself ("redis-server 127.0.0.1:N"). The retitle rewrites argv in place, so a
        # read at that instant can see a torn command line: look twice before calling it gone.
        for attempt in range(3):
            if _pid_alive(pid, "redis", str(self.port)):
                return pid
            if attempt < 2:
                time.sleep(0.05)
        return None

    def is_running(self) -> bool:
        return self.pid() is not None

    def start(self) -> None:
        if self.is_running():
            return
        self.ensure_installed()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        _ensure_port_free(self.port)
        binary = self.binary()
        assert binary is not None
        listen = ["--port", str(self.port)]
        if self.tls is not None:
            listen = ["--port", "0", "--tls-port", str(self.port), "--tls-cert-file", str(self.tls.cert)]
            listen += ["--tls-key-file", str(self.tls.key), "--tls-ca-cert-file", str(self.tls.ca)]
            listen += ["--tls-auth-clients", "no", "--tls-replication", "yes", "--tls-cluster", "yes"]
        cmd = [
            binary,
            *listen,
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.data_dir),
            "--appendonly",
            "yes",
            "--appendfsync",
            "everysec",
            "--daemonize",
            "no",
            "--save",
            "",
            "--loglevel",
            "notice",
            *self.extra_args,
        ]
        _spawn(cmd, self.log_path, self.pid_path, cwd=self.data_dir)

    def wait_ready(self, timeout: float = 15.0) -> None:
        """Return once PING answers PONG (not LOADING)."""
        deadline = time.monotonic() + timeout
        while True:
            if self._ping():
                return
            if not self.is_running():
                raise ServiceError(f"redis on port {self.port} is not running; log:\n{_tail(self.log_path)}")
            if time.monotonic() > deadline:
                raise ServiceError(
                    f"redis on port {self.port} did not answer in {timeout}s:\n{_tail(self.log_path)}"
                )
            time.sleep(0.05)

    def _ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as raw:
                s = raw
                if self.tls is not None:
                    s = ssl.create_default_context(cafile=str(self.tls.ca)).wrap_socket(
                        raw, server_hostname="127.0.0.1"
                    )
                s.sendall(b"PING\r\n")
                return s.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def url(self, db: int = 0) -> str:
        if self.tls is not None:
            return f"rediss://127.0.0.1:{self.port}/{db}?ssl_ca_certs={self.tls.ca}"
        return f"redis://127.0.0.1:{self.port}/{db}"


class RedisClusterServers:
    """A Redis Cluster on one machine: `masters` primaries, each with `replicas_each` replicas
    (redis-server --cluster-enabled yes, then redis-cli --cluster create), for tests and benchmarks
    of roomfeed on a cluster: a master can be failed over or killed and started again."""

    def __init__(
        self, data_dir: Path, ports: list[int], *, replicas_each: int = 1, node_timeout_ms: int = 2000
    ) -> None:
        self.replicas_each = replicas_each
        self.nodes = [
            RedisServer(
                Path(data_dir) / f"node{port}",
                port,
                extra_args=(
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    str(node_timeout_ms),
                    "--appendfsync",
                    "always",  # a killed node restarts with every write it acknowledged
                ),
            )
            for port in ports
        ]

    def url(self) -> str:
        return f"redis+cluster://127.0.0.1:{self.nodes[0].port}/0"

    def start(self) -> None:
        for node in self.nodes:
            node.start()
        for node in self.nodes:
            node.wait_ready()
        if self._info(self.nodes[0]).get("cluster_state") == "ok":
            return  # formed before (a restart on the same data)
        cmd = ["redis-cli", "--cluster", "create", *(f"127.0.0.1:{n.port}" for n in self.nodes)]
        cmd += ["--cluster-replicas", str(self.replicas_each), "--cluster-yes"]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=60)
        if proc.returncode != 0:
            raise ServiceError(f"redis-cli --cluster create failed:\n{proc.stdout}\n{proc.stderr}")

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Until every running node says cluster_state:ok and sees every slot served."""
        deadline = time.monotonic() + timeout
        while True:
            infos = [self._info(n) for n in self.nodes if n.is_running()]
            if infos and all(
                i.get("cluster_state") == "ok" and i.get("cluster_slots_ok") == "16384" for i in infos
            ):
                return
            if time.monotonic() > deadline:
                raise ServiceError(f"redis cluster not ok in {timeout}s: {infos}")
            time.sleep(0.2)

    @staticmethod
    def _cli(node: RedisServer, *args: str) -> str:
        proc = subprocess.run(
            ["redis-cli", "-p", str(node.port), *args],
            capture_output=True,
            text=True,
            check=False,
            timeout=10,
        )
        return proc.stdout

    def _info(self, node: RedisServer) -> dict[str, str]:
        pairs = (
            line.split(":", 1) for line in self._cli(node, "cluster", "info").splitlines() if ":" in line
        )
        return {k.strip(): v.strip() for k, v in pairs}

    def master_of(self, key: str) -> RedisServer:
        """The node serving `key`'s slot now."""
        slot = int(self._cli(self.nodes[0], "cluster", "keyslot", key).strip())
        for line in self._cli(self.nodes[0], "cluster", "nodes").splitlines():
            fields = line.split()
            if "master" not in fields[2] or "fail" in fields[2]:
                continue
            for span in fields[8:]:
                first, _, last = span.partition("-")
                if first.isdigit() and int(first) <= slot <= int(last or first):
                    port = int(fields[1].split("@")[0].rsplit(":", 1)[1])
                    return next(n for n in self.nodes if n.port == port)
        raise ServiceError(f"no master serves slot {slot}")

    def replica_of(self, master: RedisServer, timeout: float = 30.0) -> RedisServer:
        """A replica of `master` that the master's view lists as healthy and whose replication link is
        up. Waits for one: right after `--cluster create` (or a restart) a replica is attached by gossip
        and then syncs, so the master's view can lack it for a moment (a failover asked then is refused)."""
        node_id = self._cli(master, "cluster", "myid").strip()
        deadline = time.monotonic() + timeout
        while True:
            for line in self._cli(master, "cluster", "nodes").splitlines():
                fields = line.split()
                if fields[3] == node_id and "slave" in fields[2] and "fail" not in fields[2]:
                    port = int(fields[1].split("@")[0].rsplit(":", 1)[1])
                    replica = next(n for n in self.nodes if n.port == port)
                    if self._link_up(replica):
                        return replica
            if time.monotonic() > deadline:
                raise ServiceError(f"master on port {master.port} has no healthy replica in {timeout}s")
            time.sleep(0.2)

    def _link_up(self, replica: RedisServer) -> bool:
        """Whether `replica` has finished its sync and follows its master (INFO replication)."""
        info = self._cli(replica, "info", "replication")
        return "master_link_status:up" in info and "master_sync_in_progress:0" in info

    def fail_over(self, master: RedisServer) -> RedisServer:
        """A manual failover (CLUSTER FAILOVER on a replica: it catches up, then takes over the slots);
        returns the new master."""
        replica = self.replica_of(master)
        reply = self._cli(replica, "cluster", "failover").strip()
        if reply != "OK":
            raise ServiceError(f"cluster failover refused: {reply}")
        deadline = time.monotonic() + 20
        replica_id = self._cli(replica, "cluster", "myid").strip()
        while not (
            self._cli(replica, "role").splitlines()[:1] == ["master"]
            and all(self._sees_master(n, replica_id) for n in self.nodes if n.is_running())
        ):
            if time.monotonic() > deadline:
                raise ServiceError(f"replica on port {replica.port} did not take over")
            time.sleep(0.1)
        return replica

    def _sees_master(self, node: RedisServer, node_id: str) -> bool:
        """Whether `node`'s view of the cluster already lists `node_id` as a master (gossip spreads a
        failover to the other nodes a moment after the replica has taken over)."""
        for line in self._cli(node, "cluster", "nodes").splitlines():
            fields = line.split()
            if fields[0] == node_id:
                return "master" in fields[2]
        return False

    def kill(self) -> None:
        for node in self.nodes:
            node.kill()


# --- Kafka -----------------------------------------------------------------------------------


def resolve_kafka_jars(libs_dir: Path) -> Path:
    """Copy the broker's runtime jars (infra/kafka/pom.xml) into `libs_dir` once; Maven caches them."""
    marker = libs_dir / ".complete"
    if marker.exists():
        return libs_dir
    if shutil.which("mvn") is None or shutil.which("java") is None:
        _apt_install("maven", "openjdk-17-jre-headless")
    libs_dir.mkdir(parents=True, exist_ok=True)
    with _file_lock(libs_dir / ".lock"):
        if marker.exists():
            return libs_dir
        cmd = [
            "mvn",
            "-q",
            "-B",
            "-f",
            str(KAFKA_POM),
            "dependency:copy-dependencies",
            f"-DoutputDirectory={libs_dir}",
            "-DincludeScope=runtime",
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise ServiceError(f"resolving Kafka jars failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
        marker.write_text("ok\n")
    return libs_dir


# JVM options for short-lived brokers (tests): C1 only and the serial collector start faster and
# burn far less CPU on a small, busy machine than the server defaults.
QUICK_START_JVM = ("-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC", "-Xshare:auto")


class KafkaBroker(_TerminatedServer):
    """A KRaft Apache Kafka node (broker and controller in one JVM) in `data_dir`: on its own by
    default, or node `node_id` of a cluster whose controller quorum is `voters` (`KafkaCluster`)."""

    stop_timeout = 30.0

    def __init__(
        self,
        data_dir: Path,
        port: int,
        controller_port: int,
        *,
        libs_dir: Path | None = None,
        partitions: int = 6,
        heap: str = "512m",
        jvm_options: tuple[str, ...] = ("-XX:+UseG1GC",),
        node_id: int = 1,
        voters: str | None = None,
        cluster_id: str | None = None,
        replication: int = 1,
    ) -> None:
        self.node_id = node_id
        self.voters = voters or f"{node_id}@127.0.0.1:{controller_port}"
        self.cluster_id = cluster_id
        # Copies of Kafka's own topics (consumer offsets, transaction state): the cluster's size.
        self.replication = replication
        self.data_dir = Path(data_dir).resolve()
        self.port = port
        self.controller_port = controller_port
        # Private test brokers share the project's jars instead of copying 100 MB each.
        self.libs_dir = Path(libs_dir).resolve() if libs_dir else self.data_dir / "libs"
        self.partitions = partitions
        self.heap = heap
        self.jvm_options = jvm_options
        self.log_dirs = self.data_dir / "log-dirs"
        self.properties_path = self.data_dir / "server.properties"
        self.pid_path = self.data_dir / "kafka.pid"
        self.stdout_path = self.data_dir / "kafka.out"
        self._formatted = self.data_dir / ".formatted"

    def ensure_installed(self) -> None:
        resolve_kafka_jars(self.libs_dir)

    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _write_properties(self) -> None:
        props = {
            "node.id": str(self.node_id),
            "process.roles": "broker,controller",
            "controller.quorum.voters": self.voters,
            "listeners": f"PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "inter.broker.listener.name": "PLAINTEXT",
            "log.dirs": str(self.log_dirs),
            "num.partitions": str(self.partitions),
            "offsets.topic.replication.factor": str(self.replication),
            "offsets.topic.num.partitions": "10",
            "transaction.state.log.replication.factor": str(self.replication),
            "transaction.state.log.min.isr": str(min(2, self.replication)),
            "share.coordinator.state.topic.replication.factor": str(self.replication),
            "share.coordinator.state.topic.min.isr": str(min(2, self.replication)),
            "default.replication.factor": str(self.replication),
            "group.initial.rebalance.delay.ms": "0",
            # Test consumers use short session timeouts to notice a dead peer quickly.
            "group.min.session.timeout.ms": "1000",
            # After a kill -9 the new incarnation cannot register until the old one's session
            # expires (default 9 s); a short session makes a crashed broker serve again sooner.
            "broker.session.timeout.ms": "3000",
            "broker.heartbeat.interval.ms": "500",
            "auto.create.topics.enable": "true",
            "delete.topic.enable": "true",
        }
        text = "# Written by devtools.services; rewritten on every start.\n"
        text += "".join(f"{k}={v}\n" for k, v in props.items())
        self.properties_path.write_text(text)

    def _java(self, main: str, *args: str, quick: bool = False) -> list[str]:
        cmd = [
            "java",
            f"-Xmx{self.heap}",
            *(QUICK_START_JVM if quick else self.jvm_options),
            "-Djava.awt.headless=true",
            f"-Dkafka.logs.dir={self.data_dir}",
        ]
        if KAFKA_LOG4J.exists():
            cmd.append(f"-Dlog4j2.configurationFile={KAFKA_LOG4J}")
        return [*cmd, "-cp", f"{self.libs_dir}/*", main, *args]

    def init(self) -> None:
        """Resolve jars, write server.properties, format the storage once."""
        self.ensure_installed()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._write_properties()
        if self._formatted.exists():
            return
        if self.log_dirs.exists():  # an interrupted format
            shutil.rmtree(self.log_dirs)
        # URL-safe base64 may start with "-": passed as --cluster-id=ID so it is never read as an option.
        cluster_id = self.cluster_id or new_kafka_cluster_id()
        cmd = self._java(
            "kafka.tools.StorageTool",
            "format",
            f"--cluster-id={cluster_id}",
            "-c",
            str(self.properties_path),
            quick=True,
        )
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=self.data_dir)
        if proc.returncode != 0:
            raise ServiceError(f"formatting Kafka storage failed:\n{proc.stdout}\n{proc.stderr}")
        self._formatted.write_text(cluster_id + "\n")

    def pid(self) -> int | None:
        pid = _read_pid(self.pid_path)
        return pid if pid is not None and _pid_alive(pid, "kafka.Kafka", str(self.properties_path)) else None

    def is_running(self) -> bool:
        return self.pid() is not None

    def start(self) -> None:
        if self.is_running():
            return
        self.init()
        for port in (self.port, self.controller_port):
            _ensure_port_free(port)
        _spawn(
            self._java("kafka.Kafka", str(self.properties_path)),
            self.stdout_path,
            self.pid_path,
            cwd=self.data_dir,
        )

    def wait_ready(self, timeout: float = 90.0) -> None:
        """Return once a real metadata request answers with this broker in the cluster."""
        deadline = time.monotonic() + timeout
        while True:
            if _port_open(self.port) and self._metadata_answers():
                return
            if not self.is_running():
                raise ServiceError(
                    f"kafka on port {self.port} is not running; {self.stdout_path}:\n{_tail(self.stdout_path)}\n"
                    f"{self.data_dir / 'server.log'}:\n{_tail(self.data_dir / 'server.log')}"
                )
            if time.monotonic() > deadline:
                raise ServiceError(
                    f"kafka on port {self.port} did not answer in {timeout}s:\n"
                    f"{_tail(self.data_dir / 'server.log')}"
                )
            time.sleep(0.2)

    def _metadata_answers(self) -> bool:
        return _run_coroutine(lambda: kafka_answers(self.bootstrap()))


def new_kafka_cluster_id() -> str:
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")


class KafkaCluster:
    """`size` KRaft nodes (each broker and controller) on one machine: one cluster id, one quorum.

    For tests and benchmarks of roomfeed on a Kafka cluster (replication, a broker killed): every
    node is a `KafkaBroker` that can be killed and started again on its own data."""

    def __init__(
        self,
        data_dir: Path,
        ports: list[tuple[int, int]],
        *,
        libs_dir: Path | None = None,
        partitions: int = 6,
        heap: str = "384m",
        jvm_options: tuple[str, ...] = QUICK_START_JVM,
    ) -> None:
        voters = ",".join(f"{n}@127.0.0.1:{controller}" for n, (_, controller) in enumerate(ports, 1))
        cluster_id = new_kafka_cluster_id()
        self.brokers = [
            KafkaBroker(
                Path(data_dir) / f"node{n}",
                port,
                controller,
                libs_dir=libs_dir,
                partitions=partitions,
                heap=heap,
                jvm_options=jvm_options,
                node_id=n,
                voters=voters,
                cluster_id=cluster_id,
                replication=min(3, len(ports)),
            )
            for n, (port, controller) in enumerate(ports, 1)
        ]

    def bootstrap(self) -> str:
        return ",".join(broker.bootstrap() for broker in self.brokers)

    def start(self) -> None:
        """Format and start every node (in parallel: a quorum forms only once most of them run)."""
        with ThreadPoolExecutor(len(self.brokers)) as pool:
            list(pool.map(lambda broker: broker.init(), self.brokers))
        for broker in self.brokers:
            broker.start()

    def wait_ready(self, timeout: float = 120.0) -> None:
        for broker in self.brokers:
            broker.wait_ready(timeout)

    def kill(self) -> None:
        for broker in self.brokers:
            broker.kill()


async def kafka_answers(bootstrap: str, timeout_ms: int = 3000) -> bool:
    """True when the broker answers a metadata request and lists at least one broker."""
    from aiokafka.admin import AIOKafkaAdminClient

    aiokafka_log = logging.getLogger("aiokafka")
    level = aiokafka_log.level
    aiokafka_log.setLevel(logging.CRITICAL)  # a probe that fails is expected while the broker boots
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=timeout_ms)
    try:
        await asyncio.wait_for(admin.start(), timeout_ms / 1000)
        cluster = await asyncio.wait_for(admin.describe_cluster(), timeout_ms / 1000)
        return bool(cluster.get("brokers"))
    except Exception:
        return False
    finally:
        with contextlib.suppress(Exception):
            await admin.close()
        aiokafka_log.setLevel(level)


# --- the project-owned instances --------------------------------------------------------------


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """Serialise `up`/`down` across processes (parallel test runs share the data folder)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _port_of(url: str, default: int) -> int:
    return urlsplit(url if "//" in url else f"//{url}").port or default


def project_servers(settings: Settings) -> dict[str, PostgresServer | RedisServer | KafkaBroker]:
    """The project-owned instances for the services the environment does not name."""
    external = external_services()
    servers: dict[str, PostgresServer | RedisServer | KafkaBroker] = {}
    root = settings.data_dir
    if not external["postgres"]:
        servers["postgres"] = PostgresServer(root / "postgres", _port_of(settings.database_url, 5432))
    if not external["redis"]:
        servers["redis"] = RedisServer(root / "redis", _port_of(settings.redis_url, 6379))
    if not external["kafka"]:
        port = _port_of(settings.kafka_bootstrap, 9092)
        # The controller listens one port below the broker's (59091 beside 59092).
        servers["kafka"] = KafkaBroker(root / "kafka", port, port - 1, partitions=settings.kafka_partitions)
    return servers


def _url_of(name: str, settings: Settings) -> str:
    return {
        "postgres": settings.database_url,
        "redis": settings.redis_url,
        "kafka": settings.kafka_bootstrap,
    }[name]


def _server_url(server: PostgresServer | RedisServer | KafkaBroker) -> str:
    return server.bootstrap() if isinstance(server, KafkaBroker) else server.url()


def _bring_up(name: str, server: PostgresServer | RedisServer | KafkaBroker) -> None:
    if server.is_running():
        try:
            server.wait_ready(timeout=60)
            return
        except ServiceError:
            log.warning("%s is running but does not answer; restarting it", name)
            server.stop()
    log.info("starting %s (%s) in %s", name, _server_url(server), server.data_dir)
    server.start()
    server.wait_ready()


def up(settings: Settings) -> dict[str, str]:
    """Start (once) and wait for the project-owned services; returns service name → URL for all three."""
    servers = project_servers(settings)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    with _file_lock(settings.data_dir / "services.lock"):
        with ThreadPoolExecutor(max_workers=len(servers) or 1) as pool:
            futures = {name: pool.submit(_bring_up, name, server) for name, server in servers.items()}
            errors = []
            for name, future in futures.items():
                try:
                    future.result()
                except Exception as exc:
                    errors.append(f"{name}: {exc}")
        if errors:
            raise ServiceError("\n".join(errors))
    urls = {name: _url_of(name, settings) for name in SERVICE_NAMES}
    urls.update({name: _server_url(server) for name, server in servers.items()})
    return urls


def down(settings: Settings) -> None:
    """Stop the project-owned services that `up` started (by their pid files); nothing else."""
    servers = project_servers(settings)
    if not settings.data_dir.exists():
        return
    with (
        _file_lock(settings.data_dir / "services.lock"),
        ThreadPoolExecutor(max_workers=len(servers) or 1) as pool,
    ):
        for future in [pool.submit(server.stop) for server in servers.values()]:
            future.result()


def status(settings: Settings) -> dict[str, str]:
    """Service name → `running`, `not answering`, `stopped` or `external`."""
    servers = project_servers(settings)
    states: dict[str, str] = {}
    for name in SERVICE_NAMES:
        server = servers.get(name)
        if server is None:
            states[name] = "external"
        elif not server.is_running():
            states[name] = "stopped"
        else:
            try:
                server.wait_ready(timeout=2)
                states[name] = "running"
            except ServiceError:
                states[name] = "not answering"
    return states


def cli_main(argv: list[str]) -> int:
    """`roomfeed services up|down|status` (argv is what follows `services`)."""
    parser = argparse.ArgumentParser(
        prog="roomfeed services", description=__doc__.splitlines()[0] if __doc__ else None
    )
    parser.add_argument(
        "action",
        choices=["up", "down", "status", "jars"],
        help="start, stop or report the local services; `jars` only resolves Kafka's jars",
    )
    args = parser.parse_args(argv)
    settings = Settings.from_env()
    try:
        if args.action == "jars":
            print(resolve_kafka_jars(settings.data_dir / "kafka" / "libs"))
            return 0
        if args.action == "up":
            urls = up(settings)
            states = status(settings)
        elif args.action == "down":
            down(settings)
            urls = {name: _url_of(name, settings) for name in SERVICE_NAMES}
            states = status(settings)
        else:
            urls = {name: _url_of(name, settings) for name in SERVICE_NAMES}
            states = status(settings)
    except ServiceError as exc:
        print(f"roomfeed services {args.action}: {exc}", file=sys.stderr)
        return 1
    for name in SERVICE_NAMES:
        print(f"{name:<9} {states[name]:<14} {urls[name]}")
    if args.action == "status":
        return 0 if all(s in ("running", "external") for s in states.values()) else 3
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    sys.exit(cli_main(sys.argv[1:]))
