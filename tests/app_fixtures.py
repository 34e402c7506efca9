"""Application-level fixtures: the ASGI app with its lifespan running, a client, keys and tokens."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import httpx
import pytest

from roomfeed.app import Api
from roomfeed.assembly import Services, create_app
from roomfeed.auth import create_key, sign_viewer_token
from roomfeed.settings import Settings


async def running_app(settings: Settings) -> AsyncIterator[Api[Services]]:
    app = create_app(settings, access_log=False)
    async with app.router.lifespan_context(app):
        await app.resources.wait_for_kafka(30)
        await app.services.events.topics_made()  # ingest answers 503 until the topics exist
        yield app


def client_for(app: Api[Services]) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver", timeout=30)


@pytest.fixture(scope="session")
async def app(migrated: Settings) -> AsyncIterator[Api[Services]]:
    async for instance in running_app(migrated):
        yield instance


@pytest.fixture(scope="session")
async def app_client(app: Api[Services]) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(app) as client:
        yield client


@pytest.fixture(scope="session")
async def operator_key(app: Api[Services]) -> str:
    _, key = await create_key(app.resources.pool, "operator", label="tests")
    return key


@pytest.fixture(scope="session")
def viewer_token(settings: Settings) -> Callable[[str], str]:
    def make(viewer_id: str) -> str:
        return sign_viewer_token(settings.viewer_token_secret, viewer_id)

    return make


def bearer(credential: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {credential}"}
