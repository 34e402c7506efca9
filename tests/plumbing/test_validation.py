"""Body validation names every bad field in one answer."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from roomfeed.errors import ValidationFailed
from roomfeed.validation import ID_PATTERN, Body, Currency, Ident, pattern_reasons
from rooms.models import Url


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


@pytest.mark.parametrize(
    ("kind", "good"),
    [(Ident, "v-1"), (Currency, "CNY"), (Url, "https://cdn.example/live/1.m3u8")],
)
def test_a_value_with_a_line_break_after_it_is_refused(kind: Any, good: str) -> None:
    """Python's `$` also matches before a final line break, so '^...$' took "v-1\\n" as an id (and
    "CNY\\n" as a currency, a URL ending in one as a stream): each would be stored as another value."""
    assert msgspec.convert(good, kind) == good
    for bad in (good + "\n", "\n" + good, good + "\n\n", good + "\r\n"):
        with pytest.raises(msgspec.ValidationError):
            msgspec.convert(bad, kind)
    assert ID_PATTERN.match("v-1") and not ID_PATTERN.match("v-1\n")
    body = Body({"viewer_id": "v-1\n"})
    body.ident("viewer_id")
    with pytest.raises(ValidationFailed) as caught:
        body.finish()
    assert set(caught.value.fields) == {"viewer_id"}


def test_the_documented_patterns_mean_the_same_in_python_and_ecmascript() -> None:
    """A pattern of the document is read by clients as ECMAScript (JSON Schema); the server checks it
    with Python's re. Neither `\\Z` nor a trailing lookahead: the one guard against a final line break
    is a lookahead at the start, which both read alike (and hypothesis generates from)."""
    for pattern in pattern_reasons():
        assert "\\Z" not in pattern and "\\A" not in pattern, pattern
        if pattern.endswith("$"):
            assert pattern.startswith(r"^(?!.*\n)"), pattern
