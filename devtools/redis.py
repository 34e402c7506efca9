"""redis-server instances of their own: one with an append-only file (`RedisServer`, optionally TLS
only), and a Redis Cluster of masters and replicas (`RedisClusterServers`) for the cluster tests.
"""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from devtools.processes import (
    ServiceError,
    TerminatedServer,
    apt_install,
    ensure_port_free,
    pid_alive,
    read_pid,
    spawn,
    tail,
)


@dataclass(frozen=True)
class RedisTls:
    """PEM files for a redis-server that speaks only TLS: its certificate and key, and the CA clients trust."""

    cert: Path
    key: Path
    ca: Path


class RedisServer(TerminatedServer):
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
            apt_install("redis-server")

    def pid(self) -> int | None:
        pid = read_pid(self.pid_path)
        if pid is None:
            return None
        # The port is in the command line both as started (--port N) and once redis-server
        # retitles itself ("redis-server 127.0.0.1:N"). The retitle rewrites argv in place, so a
        # read at that instant can see a torn command line: look twice before calling it gone.
        for attempt in range(3):
            if pid_alive(pid, "redis", str(self.port)):
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
        ensure_port_free(self.port)
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
        spawn(cmd, self.log_path, self.pid_path, cwd=self.data_dir)

    def wait_ready(self, timeout: float = 15.0) -> None:
        """Return once PING answers PONG (not LOADING)."""
        deadline = time.monotonic() + timeout
        while True:
            if self._ping():
                return
            if not self.is_running():
                raise ServiceError(f"redis on port {self.port} is not running; log:\n{tail(self.log_path)}")
            if time.monotonic() > deadline:
                raise ServiceError(
                    f"redis on port {self.port} did not answer in {timeout}s:\n{tail(self.log_path)}"
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
