"""Schemathesis over `/openapi.json`: every operation, fuzzed with valid and invalid data, against a real
`roomfeed serve` (uvicorn on loopback, the session's PostgreSQL/Redis/Kafka) with valid credentials
(operator, merchant or viewer: whichever the authorization matrix says the route is for).
No answer may be a 5xx, and every JSON error must be in the one documented shape.

Where a run's time goes (measured at load 6-13, docs/reliability.md "What the fuzz run costs"): ~20 s
of this process's CPU — ~13 s hypothesis and schemathesis generating the cases, ~4.5 s sending them —
and ~3.5 s of the server's, for ~1,750 requests; the wall time is that CPU divided by the share of a core
the host gives (a tenth at load 15: 130-200 s). The test prints its own split at the end (`-s`)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
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


@dataclass(frozen=True)
class Server:
    base: str
    pid: int

    def cpu_seconds(self) -> float:
        """The server process's CPU time so far (user + system)."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.fixture(scope="module")
def server(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
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
        yield Server(base, proc.pid)
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
def live_server(server: Server) -> str:
    return server.base


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


def _breakable(operation: dict[str, Any]) -> bool:
    """Can negative generation make any part of this operation's request invalid? Not when it has no
    body, no credentials and only path parameters that take any string (a path is text): schemathesis
    then draws ~460 cases, keeps none and sends nothing (GET /v1/codes/{code}.png, /c/{code}, /healthz,
    /readyz, /metrics), a second of CPU for no request."""
    if operation.get("requestBody") or operation.get("security"):
        return True
    parameters = operation.get("parameters", [])
    return any(p.get("in") != "path" or p.get("schema", {}) != {"type": "string"} for p in parameters)


@dataclass
class Cost:
    """Where a fuzz run's time goes: requests sent, and this process's CPU in sending them."""

    requests: int = 0
    sending_cpu_s: float = 0.0


def _fuzz(
    operation: Any, mode: GenerationMode, base_url: str, headers: dict[str, str], cost: Cost
) -> list[str]:
    """Up to three problems found in EXAMPLES_PER_MODE generated requests of one operation."""
    seen: list[str] = []

    @settings(
        max_examples=EXAMPLES_PER_MODE, deadline=None, database=None, suppress_health_check=list(HealthCheck)
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def fuzz(case: Any) -> None:
        started = time.process_time()
        response = case.call(base_url=base_url, headers=headers, timeout=20)
        cost.requests += 1
        cost.sending_cpu_s += time.process_time() - started
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
    server: Server, live_server: str, credentials: dict[str, dict[str, str]]
) -> None:
    schema = schemathesis.openapi.from_url(f"{live_server}/openapi.json")
    problems: list[str] = []
    operations = 0
    cost, cpu, server_cpu, started = Cost(), time.process_time(), server.cpu_seconds(), time.monotonic()
    for result in schema.get_all_operations():
        operation = cast(Any, result).ok()
        operations += 1
        key = _route_key(operation.method, operation.path)
        headers = credentials[_role_for(key)]
        modes = [GenerationMode.POSITIVE]
        if _breakable(operation.definition.raw):
            modes.append(GenerationMode.NEGATIVE)
        for mode in modes:
            problems += [
                f"{operation.label} [{mode.value}]: {p}"
                for p in _fuzz(operation, mode, live_server, headers, cost)
            ]
    cpu = time.process_time() - cpu
    print(
        f"fuzz: {operations} operations, {cost.requests} requests in {time.monotonic() - started:.0f} s "
        f"(load {os.getloadavg()[0]:.1f}); this process's CPU {cpu:.1f} s "
        f"(generating {cpu - cost.sending_cpu_s:.1f}, sending {cost.sending_cpu_s:.1f}), "
        f"the server's {server.cpu_seconds() - server_cpu:.1f} s"
    )
    assert operations >= 50, f"only {operations} operations in /openapi.json"
    assert cost.requests >= operations * EXAMPLES_PER_MODE, (
        "fewer requests than one mode's worth per operation"
    )
    assert not problems, "fuzzing found:\n" + "\n".join(problems)
