"""Processes of the local servers (devtools.postgres, devtools.redis, devtools.kafka): started
detached with a pid file, found again only through it (a stale pid file never names someone else's
process: the command line must match), stopped by SIGTERM and then SIGKILL.

Processes are launched through a small reaper shell that waits on them: PID 1 on some machines
never reaps orphans, and a zombie postmaster would make PostgreSQL refuse to restart after a
kill -9 (its stale lock file would name a pid that still "exists").
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

# The reaper: `( service & echo $! > pidfile; wait ) &` — the subshell outlives the launcher and
# reaps the service when it dies, so a killed server leaves no zombie holding its pid.
LAUNCHER = r"""
log=$1; pidfile=$2; shift 2
( "$@" </dev/null >>"$log" 2>&1 &
  echo $! >"$pidfile.tmp" && mv -f "$pidfile.tmp" "$pidfile"
  wait ) </dev/null >/dev/null 2>&1 &
"""


class ServiceError(RuntimeError):
    """A local service could not be installed, started or reached."""


# --- processes ------------------------------------------------------------------------------


def pid_alive(pid: int, *needles: str) -> bool:
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
    if state in ("Z", "X") and thread_count(pid) <= 1:
        return False
    return all(needle in cmdline for needle in needles)


def thread_count(pid: int) -> int:
    """How many threads `pid` still has; 0 once it is gone (it can be reaped between two reads of /proc)."""
    try:
        return len(os.listdir(f"/proc/{pid}/task"))
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return 0


def read_pid(path: Path) -> int | None:
    try:
        first = path.read_text().splitlines()[0].strip()
        return int(first)
    except (FileNotFoundError, IndexError, ValueError):
        return None


def spawn(
    cmd: list[str], log_path: Path, pid_path: Path, cwd: Path, env: dict[str, str] | None = None
) -> int:
    """Start `cmd` detached (own session, stdout/stderr appended to `log_path`); returns its pid."""
    pid_path.unlink(missing_ok=True)
    subprocess.run(
        ["sh", "-c", LAUNCHER, "sh", str(log_path), str(pid_path), *cmd],
        cwd=cwd,
        env=env,
        check=True,
        start_new_session=True,
        stdin=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        pid = read_pid(pid_path)
        if pid is not None:
            return pid
        time.sleep(0.01)
    raise ServiceError(f"{cmd[0]} did not start (no pid in {pid_path})")


def send_signal(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return True
        time.sleep(0.05)
    return not pid_alive(pid)


def child_pids(pid: int) -> list[int]:
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


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def ensure_port_free(port: int, timeout: float = 5.0) -> None:
    """Wait briefly for a port a just-killed server may still hold; fail naming whoever keeps it."""
    deadline = time.monotonic() + timeout
    while port_open(port):
        if time.monotonic() > deadline:
            raise port_taken(port)
        time.sleep(0.1)


def port_taken(port: int) -> ServiceError:
    """The error for a port someone else listens on, naming the listener when `ss` can tell."""
    who = ""
    if shutil.which("ss"):
        proc = subprocess.run(
            ["ss", "-ltnpH", f"sport = :{port}"], capture_output=True, text=True, check=False
        )
        who = proc.stdout.strip()
    return ServiceError(f"port {port} is already taken by another process {who}".rstrip())


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return f"(no log at {path})"


def run_coroutine(factory: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine to completion on a private loop in a worker thread (safe inside a running loop)."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(lambda: asyncio.run(factory())).result()


def apt_install(*packages: str) -> None:
    if os.geteuid() != 0:
        raise ServiceError(
            f"{' '.join(packages)} missing; install with: sudo apt-get install -y {' '.join(packages)}"
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    cmd = ["apt-get", "install", "-y", "--no-install-recommends", *packages]
    if subprocess.run(cmd, env=env, check=False).returncode != 0:
        subprocess.run(["apt-get", "update"], env=env, check=True)
        subprocess.run(cmd, env=env, check=True)


class TerminatedServer:
    """A server that shuts down cleanly on SIGTERM (Redis flushes its append-only file, Kafka does a
    controlled shutdown); `stop` waits `stop_timeout` seconds, then SIGKILLs it, like `kill`."""

    stop_timeout = 15.0

    def pid(self) -> int | None:
        raise NotImplementedError

    def stop(self, timeout: float | None = None) -> None:
        pid = self.pid()
        if pid is None:
            return
        send_signal(pid, signal.SIGTERM)
        if not wait_gone(pid, self.stop_timeout if timeout is None else timeout):
            self.kill()

    def kill(self) -> None:
        pid = self.pid()
        if pid is None:
            return
        send_signal(pid, signal.SIGKILL)
        wait_gone(pid, 10)


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Serialise work on one folder across processes (parallel test runs share the data folder)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
