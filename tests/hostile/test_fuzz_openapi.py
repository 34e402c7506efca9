"""Schemathesis over `/openapi.json`: every operation, fuzzed with valid and invalid data, against a real
`roomfeed serve` (uvicorn on loopback, the session's PostgreSQL/Redis/Kafka) with valid credentials
(operator, merchant or viewer: whichever the authorization matrix says the route is for).
No answer may be a 5xx, and every JSON error must be in the one documented shape."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode

from roomfeed.auth import create_key, sign_viewer_token
from roomfeed.db import create_pool
from roomfeed.settings import REPO_ROOT, Settings
from tests.hostile.test_authorization_matrix import COLUMNS, MATRIX
from tests.support import free_port, process_env, run_sync

EXAMPLES_PER_MODE = int(os.environ.get("ROOMFEED_FUZZ_EXAMPLES", "12"))


@pytest.fixture(scope="module")
def live_server(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    env = process_env(settings)
    log = Path(tmp_path_factory.mktemp("fuzz")) / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "roomfeed.cli", "serve", "--port", str(port), "--no-migrate"],
            cwd=REPO_ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert proc.poll() is None, log.read_text()[-3000:]
            try:
                if httpx.get(f"{base}/readyz", timeout=1).json().get("status") == "ready":
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        else:
            raise AssertionError("roomfeed serve did not get ready:\n" + log.read_text()[-3000:])
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        fives = [line for line in log.read_text().splitlines() if "unhandled error" in line]
        if fives:
            print("server tracebacks:\n" + "\n".join(fives[:20]))


@pytest.fixture(scope="module")
def credentials(settings: Settings, live_server: str) -> dict[str, dict[str, str]]:
    async def operator() -> str:
        pool = await create_pool(settings, min_size=1)
        try:
            return (await create_key(pool, "operator", label="fuzz"))[1]
        finally:
            await pool.close()

    op = run_sync(operator)
    r = httpx.post(
        f"{live_server}/v1/ops/merchants",
        json={"name": "fuzz shop"},
        headers={"Authorization": f"Bearer {op}"},
        timeout=10,
    )
    assert r.status_code == 201, r.text
    return {
        "operator": {"Authorization": f"Bearer {op}"},
        "merchant": {"Authorization": f"Bearer {r.json()['key']}"},
        "viewer": {
            "Authorization": f"Bearer {sign_viewer_token(settings.viewer_token_secret, 'fuzz_viewer')}"
        },
        "none": {},
    }


def _route_key(method: str, path: str) -> str | None:
    """The matrix row of an OpenAPI operation (paths there may carry Starlette converters)."""
    for key in MATRIX:
        m, p = key.split(" ", 1)
        if m == method.upper() and p.replace(":str}", "}") == path:
            return key
    return None


def _role_for(key: str | None) -> str:
    if key is None:
        return "operator"
    expected = MATRIX[key][2]
    for column in ("merchant", "operator", "viewer"):
        want = expected[COLUMNS.index(column)]
        codes = want if isinstance(want, frozenset) else {want}
        if any(200 <= c < 300 for c in codes):
            return column
    return "none"


def _check(case: Any, response: Any) -> str | None:
    """What is wrong with an answer, or None."""
    if response.status_code >= 500:
        return f"{response.status_code} {response.text[:300]}"
    if response.status_code >= 400 and response.headers.get("content-type", [""])[0].startswith(
        "application/json"
    ):
        try:
            error = response.json().get("error")
        except Exception:
            return f"{response.status_code}: error body is not JSON: {response.text[:200]}"
        if not (
            isinstance(error, dict)
            and {"code", "message", "fields"} <= error.keys()
            and isinstance(error["fields"], dict)
        ):
            return f"{response.status_code}: error not in the documented shape: {response.text[:200]}"
    return None


def _fuzz(operation: Any, mode: GenerationMode, base_url: str, headers: dict[str, str]) -> list[str]:
    """Up to three problems found in EXAMPLES_PER_MODE generated requests of one operation."""
    seen: list[str] = []

    @settings(
        max_examples=EXAMPLES_PER_MODE, deadline=None, database=None, suppress_health_check=list(HealthCheck)
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def fuzz(case: Any) -> None:
        response = case.call(base_url=base_url, headers=headers, timeout=20)
        problem = _check(case, response)
        if problem and len(seen) < 3:
            seen.append(f"{case.method} {case.formatted_path} body={str(case.body)[:120]!r}: {problem}")

    try:
        fuzz()
    except Exception as exc:  # schemathesis could not build a request: say so, keep fuzzing the others
        # Generation's own failures are not findings: Unsatisfiable (no value fits), and
        # FlakyStrategyDefinition (hypothesis replaying a negative query case drew differently: seen on
        # GET /v1/ops/ranking-config/history's ?limit=&after= in 1 of 4 runs, never on a server answer).
        if type(exc).__name__ not in {"Unsatisfiable", "FlakyStrategyDefinition"}:
            seen.append(f"{type(exc).__name__}: {str(exc)[:200]}")
    return seen


@pytest.mark.timeout(240)
def test_no_operation_answers_5xx_or_an_undocumented_error_shape(
    live_server: str, credentials: dict[str, dict[str, str]]
) -> None:
    schema = schemathesis.openapi.from_url(f"{live_server}/openapi.json")
    problems: list[str] = []
    operations = 0
    for result in schema.get_all_operations():
        operation = cast(Any, result).ok()
        operations += 1
        key = _route_key(operation.method, operation.path)
        headers = credentials[_role_for(key)]
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            problems += [
                f"{operation.label} [{mode.value}]: {p}" for p in _fuzz(operation, mode, live_server, headers)
            ]
    assert operations >= 50, f"only {operations} operations in /openapi.json"
    assert not problems, "fuzzing found:\n" + "\n".join(problems)
