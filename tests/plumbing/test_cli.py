"""The CLI as a person and a script meet it: --version, a bad setting named, a service that is down
named with its URL in one line (no traceback, a non-zero status), progress only on a terminal, keys
and migrations answering a script in JSON."""

from __future__ import annotations

import io
import logging
import multiprocessing
import subprocess
import sys

import orjson
import pytest

from roomfeed.cli import main
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


def _drawn_on_a_terminal() -> bool:
    return shown(_Terminal())


def test_a_pools_workers_draw_no_bars() -> None:
    """worlds --jobs: the workers share the parent's terminal; the parent's bar counts their work."""
    assert _drawn_on_a_terminal()
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        assert pool.apply(_drawn_on_a_terminal) is False


def test_migrate_answers_a_script_in_json(settings: Settings) -> None:
    done = _roomfeed(process_env(settings), "migrate", "--json")
    assert done.returncode == 0, done.stderr
    assert orjson.loads(done.stdout) == {"applied": []}  # the session's database is migrated already


def _in_process(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], settings: Settings, *args: str
) -> tuple[int, str, str]:
    """`roomfeed ARGS` through the CLI's own main() in this process (a CLI start costs ~30 s of imports
    on the shared host): (status, stdout, stderr)."""
    for name, value in process_env(settings).items():
        monkeypatch.setenv(name, value)
    root, access = logging.getLogger(), logging.getLogger("uvicorn.access")
    kept = (root.handlers[:], root.level, access.disabled, logging.getLogger("aiokafka").level)
    try:
        status = main(list(args))
    finally:  # main() configures this process's logging, as each verb's own process does
        root.handlers[:], level, access.disabled, kafka_level = kept
        root.setLevel(level)
        logging.getLogger("aiokafka").setLevel(kafka_level)
        logging.captureWarnings(False)
    out, err = capsys.readouterr()
    return status, out, err


def test_keys_answer_a_script_in_json_and_revoke_by_id(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def roomfeed(*args: str) -> tuple[int, str, str]:
        return _in_process(monkeypatch, capsys, settings, *args)

    status, out, err = roomfeed("keys", "create", "--role", "merchant", "--merchant-id", "m-cli", "--json")
    assert status == 0, err
    created = orjson.loads(out)
    assert created["role"] == "merchant" and created["merchant_id"] == "m-cli"
    assert created["key"].startswith(f"rfk_{created['key_id']}_")

    status, out, err = roomfeed("keys", "list", "--merchant-id", "m-cli", "--json")
    assert status == 0, err
    listed = orjson.loads(out)
    assert [k["key_id"] for k in listed["keys"]] == [created["key_id"]]
    assert created["key"] not in out  # shown once, at creation
    assert {"viewer_tokens", "codes"} <= set(listed["signing"])

    status, out, err = roomfeed("keys", "revoke", created["key_id"], "--json")
    assert status == 0, err
    assert orjson.loads(out) == {"key_id": created["key_id"], "revoked": True}
    assert orjson.loads(roomfeed("keys", "list", "--merchant-id", "m-cli", "--json")[1])["keys"] == []
    status, out, _ = roomfeed("keys", "list", "--merchant-id", "m-cli", "--revoked", "--json")
    (revoked,) = orjson.loads(out)["keys"]
    assert revoked["key_id"] == created["key_id"] and revoked["revoked_at"] is not None
    status, out, _ = roomfeed("keys", "revoke", created["key_id"], "--json")
    assert status == 1 and orjson.loads(out)["revoked"] is False  # nothing left to revoke


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--role", "merchant"], "roomfeed keys: --role merchant needs --merchant-id"),
        (
            ["--role", "operator", "--merchant-id", "m1"],
            "roomfeed keys: --role operator takes no --merchant-id",
        ),
    ],
)
def test_a_key_for_the_wrong_owner_is_one_line(
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    says: str,
) -> None:
    status, _, err = _in_process(monkeypatch, capsys, settings, "keys", "create", *args)
    assert status == 2
    assert _one_line(err) == says


async def test_kafka_ack_timeout_is_a_setting_ingest_uses(
    monkeypatch: pytest.MonkeyPatch, settings: Settings
) -> None:
    from dataclasses import replace

    from roomfeed.assembly import create_app

    monkeypatch.setenv("ROOMFEED_KAFKA_ACK_TIMEOUT_S", "7.5")
    assert Settings.from_env().kafka_ack_timeout_s == 7.5
    for bad in ("0", "-1"):
        monkeypatch.setenv("ROOMFEED_KAFKA_ACK_TIMEOUT_S", bad)
        with pytest.raises(SettingsError, match="ROOMFEED_KAFKA_ACK_TIMEOUT_S must be greater than 0"):
            Settings.from_env()
    app = create_app(replace(settings, kafka_ack_timeout_s=7.5), access_log=False)
    assert app.services.events.ingest.ack_timeout == 7.5
