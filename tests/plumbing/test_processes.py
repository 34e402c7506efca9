"""devtools.processes reads /proc for processes that can exit at any moment: a process gone between two
reads is "not alive", never an error (a bench round once crashed on exactly that)."""

from __future__ import annotations

import os
import subprocess
import sys

from devtools.processes import pid_alive, thread_count


def test_a_running_process_has_threads_and_is_alive_by_its_command_line() -> None:
    assert thread_count(os.getpid()) >= 1
    assert pid_alive(os.getpid(), "python")
    assert not pid_alive(os.getpid(), "no-such-needle-in-this-command-line")


def test_a_process_gone_has_no_threads_and_is_not_alive() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()  # reaped: /proc/<pid> is gone
    assert thread_count(child.pid) == 0
    assert not pid_alive(child.pid)
