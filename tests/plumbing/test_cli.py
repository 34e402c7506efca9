"""The CLI as a person and a script meet it: --version, a bad setting named, a service that is down
named with its URL in one line (no traceback, a non-zero status), progress only on a terminal."""

from __future__ import annotations

import io
import subprocess
import sys

import orjson
import pytest

from roomfeed.progress import Progress, shown
from roomfeed.settings import REPO_ROOT, Settings, SettingsError
from tests.support import free_port, process_env

pytestmark = [pytest.mark.timeout(120)]


def _roomfeed(env: dict[str, str], *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "roomfeed.cli", *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _one_line(stderr: str) -> str:
    """The CLI's own lines (JSON log lines of the libraries may come before them)."""
    mine = [line for line in stderr.splitlines() if line.startswith("roomfeed")]
    assert len(mine) == 1, stderr
    assert "Traceback" not in stderr, stderr
    return mine[0]


def test_version(settings: Settings) -> None:
    done = _roomfeed(process_env(settings), "--version")
    assert done.returncode == 0
    assert done.stdout.startswith("roomfeed ") and done.stdout.split()[1][0].isdigit()


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("ROOMFEED_PORT", "abc", "ROOMFEED_PORT='abc' is not an integer"),
        ("ROOMFEED_RATE_VIEWER_PER_S", "fast", "ROOMFEED_RATE_VIEWER_PER_S='fast' is not a number"),
        ("ROOMFEED_ACCESS_LOG", "maybe", "ROOMFEED_ACCESS_LOG='maybe' is not a boolean"),
        ("ROOMFEED_ARCHIVE_RETENTION_DAYS", "3", "ROOMFEED_ARCHIVE_RETENTION_DAYS must be at least"),
        ("ROOMFEED_PORT", "70000", "ROOMFEED_PORT must be a TCP port"),
    ],
)
def test_a_bad_setting_is_named_in_one_line(settings: Settings, name: str, value: str, says: str) -> None:
    done = _roomfeed({**process_env(settings), name: value}, "migrate")
    assert done.returncode == 2
    assert says in _one_line(done.stderr)


def test_settings_error_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROOMFEED_PG_POOL_MAX", "ten")
    with pytest.raises(SettingsError, match="ROOMFEED_PG_POOL_MAX='ten'"):
        Settings.from_env()


def test_postgres_down_is_one_line_naming_it(settings: Settings) -> None:
    url = f"postgresql://roomfeed:hunter2@127.0.0.1:{free_port()}/roomfeed"
    for verb in (["migrate"], ["train"], ["keys", "create", "--role", "operator"]):
        done = _roomfeed({**process_env(settings), "DATABASE_URL": url}, *verb)
        line = _one_line(done.stderr)
        assert done.returncode == 69, (verb, done.stderr)
        assert line.startswith(f"roomfeed {verb[0]}: PostgreSQL at ")
        assert f"127.0.0.1:{url.rsplit(':', 1)[1].split('/')[0]}" in line
        assert "hunter2" not in done.stderr  # the password is never printed


def test_redis_down_is_one_line_naming_it(settings: Settings) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    done = _roomfeed({**process_env(settings), "REDIS_URL": url}, "rebuild", "--no-migrate")
    assert done.returncode == 69, done.stderr
    assert _one_line(done.stderr).startswith(f"roomfeed rebuild: Redis at {url} is unreachable")


def test_kafka_down_is_one_line_naming_it(settings: Settings) -> None:
    bootstrap = f"127.0.0.1:{free_port()}"
    done = _roomfeed(
        {**process_env(settings), "KAFKA_BOOTSTRAP": bootstrap}, "rebuild", "--no-migrate", "--live-stats"
    )
    assert done.returncode == 69, done.stderr
    assert _one_line(done.stderr).startswith(f"roomfeed rebuild: Kafka at {bootstrap} is unreachable")


def test_cli_logs_are_json_lines(settings: Settings) -> None:
    env = {
        **process_env(settings),
        "ROOMFEED_LOG_LEVEL": "INFO",
        "KAFKA_BOOTSTRAP": f"127.0.0.1:{free_port()}",
    }
    done = _roomfeed(env, "rebuild", "--no-migrate", "--live-stats")
    logged = [line for line in done.stderr.splitlines() if not line.startswith("roomfeed")]
    assert logged, done.stderr
    for line in logged:
        assert {"ts", "level", "logger", "msg"} <= set(orjson.loads(line))


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_is_drawn_on_a_terminal_only() -> None:
    piped = io.StringIO()
    assert not shown(piped)
    with Progress("import", 10, stream=piped) as bar:
        bar.update(10)
        bar.note(rejected=0)
    assert piped.getvalue() == ""
    terminal = _Terminal()
    with Progress("import", 10, stream=terminal) as bar:
        bar.update(10)
    assert "import" in terminal.getvalue() and "10/10" in terminal.getvalue()


def test_migrate_answers_a_script_in_json(settings: Settings) -> None:
    done = _roomfeed(process_env(settings), "migrate", "--json")
    assert done.returncode == 0, done.stderr
    assert orjson.loads(done.stdout) == {"applied": []}  # the session's database is migrated already
