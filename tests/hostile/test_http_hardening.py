"""HTTP hardening: oversize bodies refused early (413), console security headers and no CORS grants,
secrets never in the logs, every SQL statement parameterised."""

from __future__ import annotations

import ast
import io
import logging
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest

from roomfeed.app import Api
from roomfeed.assembly import Services
from roomfeed.errors import InvalidJson
from roomfeed.logs import JsonFormatter
from roomfeed.observability import RequestMiddleware
from roomfeed.operations import decode_body
from roomfeed.settings import REPO_ROOT
from tests.app_fixtures import bearer
from tests.hostile.conftest import Tenant

TEN_MB = 10 * 1024 * 1024
CHUNK = 64 * 1024


async def _post_streamed(
    app: Any, path: str, headers: dict[str, str], total: int, declare_length: bool
) -> tuple[int, int, dict[str, Any]]:
    """POST `total` bytes straight through ASGI; returns (status, bytes the app pulled, error body)."""
    raw_headers = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    raw_headers.append((b"content-type", b"application/json"))
    if declare_length:
        raw_headers.append((b"content-length", str(total).encode()))
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": raw_headers,
        "client": ("127.0.0.1", 1),
        "server": ("test", 80),
    }
    pulled = 0
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        nonlocal pulled
        if pulled >= total:
            return {"type": "http.disconnect"}
        size = min(CHUNK, total - pulled)
        pulled += size
        body = b"[" + b" " * (size - 1) if pulled == size else b" " * size
        return {"type": "http.request", "body": body, "more_body": pulled < total}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    import orjson

    body = orjson.loads(b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body"))
    return status, pulled, body


@pytest.mark.parametrize("declare_length", [True, False], ids=["content-length", "chunked"])
async def test_ten_megabyte_event_batch_is_refused_413_without_reading_it(
    app: Api[Services], viewer_token: Callable[[str], str], declare_length: bool
) -> None:
    status, pulled, body = await _post_streamed(
        app, "/v1/events", bearer(viewer_token("big_poster")), TEN_MB, declare_length
    )
    assert status == 413 and body["error"]["code"] == "payload_too_large"
    limit = app.settings.max_body_bytes
    # declared: refused before the first byte; streamed: stops one chunk past the limit
    assert pulled <= (0 if declare_length else limit + CHUNK), pulled


@pytest.mark.parametrize("declare_length", [True, False], ids=["content-length", "chunked"])
async def test_ten_megabyte_merchant_body_is_refused_413_without_reading_it(
    app: Api[Services], merchant: Tenant, declare_length: bool
) -> None:
    status, pulled, body = await _post_streamed(app, "/v1/stores", merchant.headers, TEN_MB, declare_length)
    assert status == 413 and body["error"]["code"] == "payload_too_large"
    assert pulled <= (0 if declare_length else app.settings.max_body_bytes + CHUNK), pulled


async def test_console_page_and_files_carry_security_headers(app_client: httpx.AsyncClient) -> None:
    for path in ("/console", "/console/static/console.js"):
        r = await app_client.get(path)
        assert r.status_code == 200
        csp = r.headers["content-security-policy"]
        assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp and "object-src 'none'" in csp
        assert r.headers["x-frame-options"] == "DENY"
        assert r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["referrer-policy"] == "no-referrer"


async def test_api_answers_are_never_content_sniffed(
    app_client: httpx.AsyncClient, operator_key: str
) -> None:
    for r in (
        await app_client.get("/healthz"),
        await app_client.get("/v1/ops/metrics"),
        await app_client.get("/v1/ops/merchants", headers=bearer(operator_key)),
        await app_client.get("/no/such/route"),
    ):
        assert r.headers["x-content-type-options"] == "nosniff", r.url


async def test_no_cross_origin_access_is_granted(app_client: httpx.AsyncClient, operator_key: str) -> None:
    """The console is served by the API's own origin and mobile apps need no CORS: a foreign origin
    gets no Access-Control-Allow-Origin, for preflights or for real requests."""
    evil = {"Origin": "https://evil.example"}
    preflight = await app_client.options(
        "/v1/ops/merchants",
        headers={
            **evil,
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "authorization",
        },
    )
    assert preflight.status_code in (400, 404, 405)
    assert "access-control-allow-origin" not in preflight.headers
    real = await app_client.get("/v1/ops/merchants", headers={**evil, **bearer(operator_key)})
    assert "access-control-allow-origin" not in real.headers
    assert "access-control-allow-credentials" not in real.headers


async def test_keys_and_tokens_never_reach_the_logs(
    app: Api[Services], operator_key: str, viewer_token: Callable[[str], str]
) -> None:
    """Access log on, DEBUG everywhere: requests with a key, a viewer token, a bad key, a key in the query
    string, and a merchant creation (whose answer carries a new key) leave no secret in the log text."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    # the test's own HTTP client logs the URLs it calls (a key in a query string is the caller's leak)
    client_log = logging.getLogger("httpx")
    client_level = client_log.level
    client_log.setLevel(logging.WARNING)
    token = viewer_token("log_watcher")
    bogus = "rfk_deadbeef0000_" + "s" * 43
    logged_app = RequestMiddleware(app, access_log=True)
    transport = httpx.ASGITransport(app=logged_app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://logs.test") as client:
            made = await client.post(
                "/v1/ops/merchants", json={"name": "log shop"}, headers=bearer(operator_key)
            )
            assert made.status_code == 201
            new_key = made.json()["key"]
            await client.get("/v1/stores", headers=bearer(new_key))
            await client.post("/v1/events", json=[{"event_id": "x"}], headers=bearer(token))
            await client.get("/v1/ops/merchants", headers=bearer(bogus))
            await client.get(f"/v1/ops/merchants?key={operator_key}", headers=bearer(operator_key))
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
        client_log.setLevel(client_level)
    text = stream.getvalue()
    assert '"request"' in text and "/v1/ops/merchants" in text, "the access log did not run"
    for secret in (operator_key, new_key, token, bogus, token.rsplit(".", 1)[1]):
        assert secret not in text


# --- SQL ----------------------------------------------------------------------------------------

QUERY_METHODS = {"execute", "executemany", "fetch", "fetchrow", "fetchval", "prepare", "cursor"}
CODE_DIRS = ("roomfeed", "rooms", "events", "ranking", "alliance", "feed", "console", "simulator", "bench")
# f-string SQL whose interpolations are identifiers from a fixed table, reviewed: (file, expression).
REVIEWED_IDENTIFIERS = {
    ("rooms/lifecycle.py", "assignment"),  # from _TRANSITIONS, a constant table
    ("rooms/lifecycle.py", "needs"),  # the status a transition starts from, same table
    ("rooms/outbox.py", "room_columns('r')"),  # a column list qualified by a literal alias
    ("rooms/consults.py", "stamp"),  # a column assignment chosen by the caller's transition
    ("alliance/alliances.py", "columns"),  # Terms' field names
    ("alliance/alliances.py", "placeholders"),  # $4.. placeholders
    ("events/archive.py", "partition_name(day)"),  # interactions_YYYYMMDD
    ("events/archive.py", "lower.isoformat()"),  # a date the sink computes
    ("events/archive.py", "upper.isoformat()"),
    ("events/archive.py", "name"),  # a partition name matched by strptime
    ("bench/bench_live_index.py", "dbname"),  # CREATE/DROP DATABASE of a bench run
    ("bench/bench_ingest.py", "dbname"),
    ("bench/bench_feed.py", "dbname"),
}


def _sql_interpolations() -> list[tuple[str, int, str]]:
    """(file, line, problem) for every query built by formatting that is not a reviewed identifier."""
    problems = []
    for folder in CODE_DIRS:
        for path in sorted((REPO_ROOT / folder).rglob("*.py")):
            rel = str(path.relative_to(REPO_ROOT))
            for node in ast.walk(ast.parse(path.read_text(), rel)):
                if not (
                    isinstance(node, ast.Call)
                    and isinstance(node.func, ast.Attribute)
                    and node.func.attr in QUERY_METHODS
                    and node.args
                ):
                    continue
                sql = node.args[0]
                if isinstance(sql, ast.BinOp) or (
                    isinstance(sql, ast.Call)
                    and isinstance(sql.func, ast.Attribute)
                    and sql.func.attr == "format"
                ):
                    problems.append(
                        (rel, node.lineno, f"query built with % / + / .format: {ast.unparse(sql)[:80]}")
                    )
                elif isinstance(sql, ast.JoinedStr):
                    for part in sql.values:
                        if not isinstance(part, ast.FormattedValue):
                            continue
                        expr = ast.unparse(part.value)
                        constant = isinstance(part.value, ast.Name) and part.value.id.isupper()
                        if not constant and (rel, expr) not in REVIEWED_IDENTIFIERS:
                            problems.append((rel, node.lineno, f"f-string SQL interpolates {expr!r}"))
    return problems


def test_every_sql_statement_is_parameterised() -> None:
    problems = _sql_interpolations()
    assert not problems, "SQL built from values (use $1 parameters):\n" + "\n".join(
        f"{f}:{line}: {what}" for f, line, what in problems
    )


def test_ruff_s608_finds_no_string_built_sql() -> None:
    ruff = Path(REPO_ROOT / ".venv/bin/ruff")
    result = subprocess.run(
        [str(ruff), "check", "--select", "S608", *CODE_DIRS],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_api_keys_are_stored_only_as_hashes(app: Api[Services], operator_key: str) -> None:
    from roomfeed.auth import hash_key
    from tests.support import run_sync

    async def rows() -> list[Any]:
        import asyncpg

        conn = await asyncpg.connect(app.settings.database_url)
        try:
            return list(await conn.fetch("SELECT * FROM api_keys"))
        finally:
            await conn.close()

    stored = run_sync(rows)
    assert stored
    flat = " ".join(str(dict(r)) for r in stored)
    assert operator_key not in flat
    assert any(r["key_hash"] == hash_key(operator_key) for r in stored)


class _Entry(msgspec.Struct):
    code: str


@pytest.mark.parametrize("raw", [b"7\x1f\xfb\x84[\x8d", b'{"code": 7, "x": "\xed\xa0\x80"}'])
def test_a_body_that_is_not_utf8_json_is_a_400_naming_the_body(raw: bytes) -> None:
    """Found by the OpenAPI fuzz test: msgspec refused the value before reaching the bad bytes, and
    the field check's orjson read raised on them (a 500)."""
    with pytest.raises(InvalidJson) as refused:
        decode_body(raw, msgspec.json.Decoder(_Entry), _Entry)
    assert refused.value.status == 400 and "body" in refused.value.fields
