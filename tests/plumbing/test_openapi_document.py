"""The served OpenAPI document, checked by a real tool (openapi-spec-validator), and the typed
operations' contract: every bad field named, Location on a 201, the page declared."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest
from openapi_spec_validator import OpenAPIV31SpecValidator

from roomfeed.assembly import create_app
from roomfeed.settings import Settings


@pytest.fixture(scope="module")
async def document() -> dict[str, Any]:
    return create_app(Settings.from_env()).openapi


def _operations(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        f"{method.upper()} {path}": operation
        for path, item in document["paths"].items()
        for method, operation in item.items()
    }


def test_the_document_is_valid_openapi_3_1(document: dict[str, Any]) -> None:
    errors = [e.message for e in OpenAPIV31SpecValidator(document).iter_errors()]
    assert document["openapi"] == "3.1.0"
    assert errors == []


def test_every_operation_has_a_summary_a_unique_operation_id_and_a_tag(document: dict[str, Any]) -> None:
    operations = _operations(document)
    assert len(operations) >= 60
    assert all(op.get("summary") and op.get("operationId") for op in operations.values())
    ids = [op["operationId"] for op in operations.values()]
    assert len(ids) == len(set(ids))


def test_the_feed_page_declares_its_page_token_and_rooms(document: dict[str, Any]) -> None:
    op = _operations(document)["GET /v1/sessions/{session_id}/feed"]
    assert {p["name"] for p in op["parameters"]} == {"session_id", "count", "after"}
    page = document["components"]["schemas"]["FeedPage"]
    assert {"page_token", "rooms", "session_id"} <= set(page["required"])
    assert "score" not in document["components"]["schemas"]["FeedRoom"]["properties"]


async def test_a_typed_body_names_every_bad_field_in_the_one_error_shape(
    app_client: httpx.AsyncClient, viewer_token: Callable[[str], str]
) -> None:
    headers = {"Authorization": f"Bearer {viewer_token('v-typed')}"}
    r = await app_client.post(
        "/v1/sessions", json={"entry": {"room_id": 5}, "count": 99, "colour": "red"}, headers=headers
    )
    assert r.status_code == 422
    error = r.json()["error"]
    assert error["code"] == "validation_failed"
    assert set(error["fields"]) == {"viewer_id", "entry.room_id", "count", "colour"}
    r = await app_client.post("/v1/sessions", content=b"{not json", headers=headers)
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_json"
    r = await app_client.get("/v1/sessions/ses_0000000000000000/feed?count=abc", headers=headers)
    assert r.status_code == 422 and set(r.json()["error"]["fields"]) == {"count"}


async def test_a_created_session_says_where_its_feed_is(
    app_client: httpx.AsyncClient, viewer_token: Callable[[str], str]
) -> None:
    headers = {"Authorization": f"Bearer {viewer_token('v-located')}"}
    r = await app_client.post("/v1/sessions", json={"viewer_id": "v-located"}, headers=headers)
    assert r.status_code == 201, r.text
    assert r.headers["location"] == f"/v1/sessions/{r.json()['session_id']}/feed"


async def test_a_required_body_of_only_whitespace_is_a_400_not_a_500(
    app_client: httpx.AsyncClient, viewer_token: Callable[[str], str]
) -> None:
    """Found by the fuzz test: POST /v1/rooms with the body "\\r" reached the handler without a body."""
    headers = {"Authorization": f"Bearer {viewer_token('v-blank')}", "Content-Type": "application/json"}
    for blank in (b"\r", b" \n\t "):
        r = await app_client.post("/v1/sessions", content=blank, headers=headers)
        assert r.status_code == 400, r.text
        assert r.json()["error"]["code"] == "invalid_json" and set(r.json()["error"]["fields"]) == {"body"}
