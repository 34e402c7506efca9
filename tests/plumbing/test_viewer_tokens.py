"""Viewer tokens: roomfeed's own (with key ids), standard JWTs (EdDSA, RS256, HS256 from a JWKS),
rotation (signed before a rotation still verifies after it; refused once the old key is retired),
and the same through the running API."""

from __future__ import annotations

import dataclasses
import functools
import http.server
import json
import threading
import time
from pathlib import Path

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from starlette.applications import Starlette

from roomfeed.auth import (
    ViewerTokens,
    sign_viewer_token,
    sign_viewer_token_with,
    viewer_keyring,
)
from roomfeed.settings import Settings
from tests.app_fixtures import bearer

HS_SECRET = b"a-shared-secret-of-the-platform-login-0123456789"


def _jwks(path: Path, ed: ed25519.Ed25519PrivateKey, rs: rsa.RSAPrivateKey, *, with_hs: bool = True) -> None:
    keys = [
        {**json.loads(jwt.algorithms.OKPAlgorithm.to_jwk(ed.public_key())), "kid": "ed-1", "alg": "EdDSA"},
        {**json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(rs.public_key())), "kid": "rs-1", "alg": "RS256"},
    ]
    if with_hs:
        keys.append(
            {**json.loads(jwt.algorithms.HMACAlgorithm.to_jwk(HS_SECRET)), "kid": "hs-1", "alg": "HS256"}
        )
    path.write_text(json.dumps({"keys": keys}))


@pytest.fixture()
def keys(tmp_path: Path) -> tuple[Path, ed25519.Ed25519PrivateKey, rsa.RSAPrivateKey]:
    ed = ed25519.Ed25519PrivateKey.generate()
    rs = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path = tmp_path / "jwks.json"
    _jwks(path, ed, rs)
    return path, ed, rs


def _claims(sub: str, **extra: object) -> dict[str, object]:
    return {"sub": sub, "exp": int(time.time()) + 600, "iat": int(time.time()), **extra}


async def test_jwts_of_each_algorithm_verify_with_their_kid(
    keys: tuple[Path, ed25519.Ed25519PrivateKey, rsa.RSAPrivateKey],
) -> None:
    path, ed, rs = keys
    tokens = ViewerTokens(Settings(viewer_jwks=str(path)))
    created = int(time.time()) - 86_400 * 40
    ed_token = jwt.encode(_claims("v-ed", account_created_at=created), ed, "EdDSA", headers={"kid": "ed-1"})
    rs_token = jwt.encode(_claims("v-rs"), rs, "RS256", headers={"kid": "rs-1"})
    hs_token = jwt.encode(_claims("v-hs"), HS_SECRET, "HS256", headers={"kid": "hs-1"})
    identity = await tokens.verify(ed_token)
    assert identity is not None and identity.viewer_id == "v-ed" and identity.account_created_at == created
    assert (await tokens.verify(rs_token)).viewer_id == "v-rs"  # type: ignore[union-attr]
    assert (await tokens.verify(hs_token)).viewer_id == "v-hs"  # type: ignore[union-attr]


async def test_bad_jwts_are_refused(keys: tuple[Path, ed25519.Ed25519PrivateKey, rsa.RSAPrivateKey]) -> None:
    path, ed, rs = keys
    tokens = ViewerTokens(Settings(viewer_jwks=str(path), viewer_jwt_issuer="https://login.example"))
    other = ed25519.Ed25519PrivateKey.generate()
    iss = {"iss": "https://login.example"}
    refused = [
        jwt.encode(_claims("v1", **iss), other, "EdDSA", headers={"kid": "ed-1"}),  # another key
        jwt.encode(_claims("v1", **iss), ed, "EdDSA"),  # no kid
        jwt.encode(_claims("v1", **iss), ed, "EdDSA", headers={"kid": "nope"}),  # unknown kid
        jwt.encode({"sub": "v1", **iss}, ed, "EdDSA", headers={"kid": "ed-1"}),  # no exp
        jwt.encode(_claims("v1", **iss, exp=int(time.time()) - 3600), ed, "EdDSA", headers={"kid": "ed-1"}),
        jwt.encode(_claims("v1", iss="https://evil.example"), ed, "EdDSA", headers={"kid": "ed-1"}),
        jwt.encode(_claims("v 1", **iss), ed, "EdDSA", headers={"kid": "ed-1"}),  # not a viewer id
        jwt.encode(
            _claims("v1", **iss),
            b"guessed-secret-guessed-secret-guessed-secret",
            "HS256",
            headers={"kid": "ed-1"},
        ),  # alg confusion
        jwt.encode(_claims("v1", **iss), rs, "RS256", headers={"kid": "ed-1"}),  # key of another alg
        "not.a.jwt",
    ]
    for token in refused:
        assert await tokens.verify(token) is None, token
    assert (
        await tokens.verify(jwt.encode(_claims("v1", **iss), ed, "EdDSA", headers={"kid": "ed-1"}))
        is not None
    )


async def test_a_key_added_to_the_jwks_is_picked_up_and_a_removed_one_is_refused(
    keys: tuple[Path, ed25519.Ed25519PrivateKey, rsa.RSAPrivateKey],
) -> None:
    path, ed, rs = keys
    tokens = ViewerTokens(Settings(viewer_jwks=str(path)))
    hs_token = jwt.encode(_claims("v-hs"), HS_SECRET, "HS256", headers={"kid": "hs-1"})
    _jwks(path, ed, rs, with_hs=False)
    assert await tokens.refresh_jwks() == ["ed-1", "rs-1"]
    assert await tokens.verify(hs_token) is None  # retired
    _jwks(path, ed, rs, with_hs=True)
    tokens._jwks_read_at = 0  # the refresh interval has passed
    assert (await tokens.verify(hs_token)) is not None  # an unknown kid makes it re-read the JWKS


async def test_own_tokens_rotate_old_verify_until_retired() -> None:
    before = Settings(viewer_token_keys="k1:first-secret")
    old_token = sign_viewer_token_with(viewer_keyring(before), "v-rot")
    assert old_token.startswith("rfv2.k1.")
    rotated = Settings(viewer_token_keys="k2:second-secret,k1:first-secret")
    new_token = sign_viewer_token_with(viewer_keyring(rotated), "v-rot")
    assert new_token.startswith("rfv2.k2.")
    during = ViewerTokens(rotated)
    assert (await during.verify(old_token)) is not None and (await during.verify(new_token)) is not None
    retired = ViewerTokens(Settings(viewer_token_keys="k2:second-secret"))
    assert await retired.verify(old_token) is None
    assert (await retired.verify(new_token)).viewer_id == "v-rot"  # type: ignore[union-attr]
    # The first format (no key id) verifies with key k0, the legacy secret, until k0 is retired.
    legacy = sign_viewer_token("legacy-secret", "v-old")
    assert (await ViewerTokens(Settings(viewer_token_secret="legacy-secret")).verify(legacy)) is not None
    assert (
        await ViewerTokens(Settings(viewer_token_keys="k2:x,k0:legacy-secret")).verify(legacy)
    ) is not None
    assert await ViewerTokens(Settings(viewer_token_keys="k2:x")).verify(legacy) is None


def test_a_malformed_keyring_is_refused() -> None:
    for text in ("nokid", "k1:a,k1:b", ":secret", "k 1:secret"):
        with pytest.raises(ValueError):
            viewer_keyring(Settings(viewer_token_keys=text))


async def test_the_api_accepts_a_jwt_viewer_and_keeps_its_account_age(
    app: Starlette, keys: tuple[Path, ed25519.Ed25519PrivateKey, rsa.RSAPrivateKey]
) -> None:
    path, ed, _ = keys
    settings = dataclasses.replace(app.settings, viewer_jwks=str(path))  # type: ignore[attr-defined]
    saved = app.guard  # type: ignore[attr-defined]
    app.guard = dataclasses.replace(saved, viewer_tokens=ViewerTokens(settings))  # type: ignore[attr-defined]
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            token = jwt.encode(
                _claims("v-jwt", account_created_at=1_700_000_000), ed, "EdDSA", headers={"kid": "ed-1"}
            )
            r = await client.post(
                "/v1/sessions", json={"viewer_id": "v-jwt", "entry": {}}, headers=bearer(token)
            )
            assert r.status_code == 201, r.text
            r = await client.post(
                "/v1/sessions", json={"viewer_id": "v-other", "entry": {}}, headers=bearer(token)
            )
            assert r.status_code == 403
            forged = jwt.encode(
                _claims("v-jwt"), ed25519.Ed25519PrivateKey.generate(), "EdDSA", headers={"kid": "ed-1"}
            )
            r = await client.post(
                "/v1/sessions", json={"viewer_id": "v-jwt", "entry": {}}, headers=bearer(forged)
            )
            assert r.status_code == 401
    finally:
        app.guard = saved  # type: ignore[attr-defined]


async def test_the_jwks_is_read_from_a_url(
    keys: tuple[Path, ed25519.Ed25519PrivateKey, rsa.RSAPrivateKey],
) -> None:
    """The platform's login publishes its JWKS over HTTP(S); roomfeed reads it from there as from a file."""
    path, ed, _ = keys
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(path.parent))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/{path.name}"
        tokens = ViewerTokens(Settings(viewer_jwks=url))
        assert sorted(await tokens.refresh_jwks()) == ["ed-1", "hs-1", "rs-1"]
        principal = await tokens.verify(jwt.encode(_claims("v-url"), ed, "EdDSA", headers={"kid": "ed-1"}))
        assert principal is not None and principal.viewer_id == "v-url"
        forged = ed25519.Ed25519PrivateKey.generate()
        assert (
            await tokens.verify(jwt.encode(_claims("v-url"), forged, "EdDSA", headers={"kid": "ed-1"}))
            is None
        )
    finally:
        server.shutdown()
        server.server_close()
