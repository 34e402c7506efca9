"""A PostgreSQL 15 server of its own: `initdb` once in its folder, started and stopped through its pid file."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

from devtools.processes import (
    ServiceError,
    apt_install,
    child_pids,
    ensure_port_free,
    pid_alive,
    port_open,
    read_pid,
    send_signal,
    spawn,
    tail,
    wait_gone,
)

PG_BIN = Path("/usr/lib/postgresql/15/bin")


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
            apt_install("postgresql-15")

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
        pid = read_pid(self.pgdata / "postmaster.pid")
        return pid if pid is not None and pid_alive(pid, "postgres", f"-D {self.pgdata}") else None

    def is_running(self) -> bool:
        return self.postmaster_pid() is not None

    def start(self) -> None:
        if self.is_running():
            return
        self.init()
        ensure_port_free(self.port)
        self.log_path.touch()
        cmd = self._as_postgres([str(PG_BIN / "postgres"), "-D", str(self.pgdata), "-p", str(self.port)])
        spawn(cmd, self.log_path, self.launch_pid_path, cwd=self.data_dir)

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Return once `select 1` answers over TCP as role roomfeed."""
        deadline = time.monotonic() + timeout
        env = {**os.environ, "PGCONNECT_TIMEOUT": "2"}
        cmd = [str(PG_BIN / "psql"), "-X", "-A", "-t", "-q", "-c", "select 1", self.url()]
        while True:
            if port_open(self.port):
                proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
                if proc.returncode == 0 and proc.stdout.strip() == "1":
                    return
            launcher = read_pid(self.launch_pid_path)
            if not self.is_running() and (launcher is None or not pid_alive(launcher)):
                raise ServiceError(
                    f"postgres on port {self.port} is not running; log:\n{tail(self.log_path)}"
                )
            if time.monotonic() > deadline:
                raise ServiceError(
                    f"postgres on port {self.port} did not answer in {timeout}s:\n{tail(self.log_path)}"
                )
            time.sleep(0.1)

    def stop(self, timeout: float = 30.0) -> None:
        """Fast shutdown (SIGINT: roll back sessions, checkpoint); SIGKILL if it hangs."""
        pid = self.postmaster_pid()
        if pid is None:
            return
        send_signal(pid, signal.SIGINT)
        if not wait_gone(pid, timeout):
            self.kill()

    def kill(self) -> None:
        """SIGKILL the postmaster and its children: a crash, with recovery on the next start."""
        pid = self.postmaster_pid()
        if pid is None:
            return
        children = child_pids(pid)
        send_signal(pid, signal.SIGKILL)
        for child in children:
            send_signal(child, signal.SIGKILL)
        wait_gone(pid, 10)
        for child in children:
            wait_gone(child, 5)

    def url(self, dbname: str = "roomfeed") -> str:
        return f"postgresql://roomfeed@127.0.0.1:{self.port}/{dbname}"
