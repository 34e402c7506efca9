"""Body validation names every bad field in one answer."""

from __future__ import annotations

import pytest

from roomfeed.errors import ValidationFailed
from roomfeed.validation import Body


def test_every_bad_field_is_named_at_once() -> None:
    body = Body({"name": "", "price": "12", "tags": ["ok", 3], "format": "circus", "qty": True})
    body.text("name")
    body.number("price")
    body.text_list("tags")
    body.choice("format", ["one_to_many", "one_to_one"])
    body.integer("qty")
    body.text("missing")
    with pytest.raises(ValidationFailed) as caught:
        body.finish()
    assert set(caught.value.fields) == {"name", "price", "tags", "format", "qty", "missing"}
    assert caught.value.status == 422


def test_oversize_strings_and_nested_fields() -> None:
    body = Body({"title": "x" * 201, "entry": {"code": 5}})
    body.text("title", max_len=200)
    entry = body.obj("entry")
    assert entry is not None
    entry.text("code")
    body.merge(entry)
    with pytest.raises(ValidationFailed) as caught:
        body.finish()
    assert caught.value.fields == {
        "title": "must be at most 200 characters",
        "entry.code": "must be a string",
    }


def test_non_object_body_is_refused() -> None:
    with pytest.raises(ValidationFailed) as caught:
        Body([1, 2]).finish()
    assert caught.value.fields == {"body": "must be a JSON object"}


def test_valid_body_passes_with_typed_values() -> None:
    body = Body({"name": "Glow Lab", "price": 12, "tags": ["skincare"], "live": False})
    assert body.text("name") == "Glow Lab"
    assert body.number("price", minimum=0, exclusive_minimum=True) == 12.0
    assert body.text_list("tags") == ["skincare"]
    assert body.boolean("live") is False
    assert body.integer("limit", required=False, default=1) == 1
    body.finish()
