"""Keys and viewer tokens: hashed at rest, rejected when missing, wrong, revoked or of another role."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from roomfeed.app import Api, _api_error
from roomfeed.assembly import Services
from roomfeed.auth import (
    Guard,
    KeyVerifier,
    Principal,
    create_key,
    hash_key,
    revoke_key,
    sign_viewer_token,
    verify_viewer_token,
)
from roomfeed.errors import ApiError, Forbidden, NotFound
from roomfeed.http import json
from roomfeed.settings import Settings
from tests.app_fixtures import bearer


class Probe(Starlette):
    """An app of one route that demands one role, guarded by the running app's guard."""

    def __init__(self, guard: Guard) -> None:
        super().__init__(routes=[Route("/probe/{role}", _probe)], exception_handlers={ApiError: _api_error})
        self.guard = guard


async def _probe(request: Request) -> Response:
    from roomfeed.auth import require

    principal = await require(request, request.path_params["role"])
    return json(
        {"role": principal.role, "merchant_id": principal.merchant_id, "viewer_id": principal.viewer_id}
    )


@pytest.fixture(scope="module")
def probe_client(app: Api[Services]) -> httpx.AsyncClient:
    # A route that demands one role, mounted on the running app (its key verifier, its settings).
    probe = Probe(app.guard)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=probe), base_url="http://probe")


async def test_keys_are_stored_hashed_and_shown_once(app: Api[Services]) -> None:
    pool = app.resources.pool
    key_id, key = await create_key(pool, "merchant", "mer_hashcheck")
    row = await pool.fetchrow("SELECT * FROM api_keys WHERE key_id = $1", key_id)
    assert row["key_hash"] == hash_key(key)
    assert key.encode() not in b"".join(str(v).encode() for v in row.values())


async def test_missing_key_is_401(probe_client: httpx.AsyncClient) -> None:
    response = await probe_client.get("/probe/operator")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthorized"
    assert response.headers["www-authenticate"] == "Bearer"


async def test_wrong_key_is_401(probe_client: httpx.AsyncClient) -> None:
    response = await probe_client.get("/probe/operator", headers=bearer("rfk_000000000000_not-a-real-key"))
    assert response.status_code == 401


async def test_key_of_another_role_is_403(
    app: Api[Services], probe_client: httpx.AsyncClient, operator_key: str
) -> None:
    _, merchant_key = await create_key(app.resources.pool, "merchant", "mer_roles")
    assert (await probe_client.get("/probe/operator", headers=bearer(merchant_key))).status_code == 403
    assert (await probe_client.get("/probe/merchant", headers=bearer(operator_key))).status_code == 403
    ok = await probe_client.get("/probe/merchant", headers=bearer(merchant_key))
    assert ok.status_code == 200 and ok.json()["merchant_id"] == "mer_roles"


async def test_revoked_key_is_refused(app: Api[Services], probe_client: httpx.AsyncClient) -> None:
    key_id, key = await create_key(app.resources.pool, "operator")
    assert (await probe_client.get("/probe/operator", headers=bearer(key))).status_code == 200
    assert await revoke_key(app.resources.pool, key_id)
    assert (await probe_client.get("/probe/operator", headers=bearer(key))).status_code == 401


async def test_viewer_token_identifies_the_viewer(
    probe_client: httpx.AsyncClient, viewer_token: Callable[[str], str]
) -> None:
    response = await probe_client.get("/probe/viewer", headers=bearer(viewer_token("v-42")))
    assert response.status_code == 200 and response.json()["viewer_id"] == "v-42"
    assert (
        await probe_client.get("/probe/merchant", headers=bearer(viewer_token("v-42")))
    ).status_code == 403


def test_forged_or_expired_viewer_tokens_are_rejected(settings: Settings) -> None:
    secret = settings.viewer_token_secret
    token = sign_viewer_token(secret, "alice")
    assert verify_viewer_token(secret, token) == "alice"
    assert verify_viewer_token("another-secret", token) is None
    head, viewer, expiry, signature = token.split(".")
    forged_viewer = sign_viewer_token(secret, "mallory").split(".")[1]
    assert verify_viewer_token(secret, ".".join([head, forged_viewer, expiry, signature])) is None
    assert verify_viewer_token(secret, ".".join([head, viewer, str(int(expiry) + 10), signature])) is None
    assert verify_viewer_token(secret, sign_viewer_token(secret, "alice", ttl_seconds=-1)) is None
    assert verify_viewer_token(secret, "rfv1.garbage") is None


async def test_key_cache_does_not_outlive_revocation(app: Api[Services]) -> None:
    verifier: KeyVerifier = app.guard.keys
    key_id, key = await create_key(app.resources.pool, "operator")
    assert (await verifier.verify(key)) is not None
    await revoke_key(app.resources.pool, key_id)
    assert (await verifier.verify(key)) is None


def test_a_principal_says_whom_it_acts_for_and_what_it_may_see() -> None:
    merchant = Principal("merchant", key_id="k1", merchant_id="mer_1")
    assert merchant.own_merchant() == "mer_1"
    merchant.check_scope("mer_1")
    with pytest.raises(NotFound):  # another merchant's objects are "not found", never "forbidden"
        merchant.check_scope("mer_2")
    Principal("operator", key_id="k0").check_scope("mer_2")  # operators see every merchant
    viewer = Principal("viewer", viewer_id="v-1")
    assert viewer.own_viewer() == "v-1"
    with pytest.raises(Forbidden):
        viewer.own_merchant()
    with pytest.raises(Forbidden):
        merchant.own_viewer()
    assert merchant.own_key() == "k1"
    with pytest.raises(Forbidden):  # a viewer token is no stored key
        viewer.own_key()
