"""Request-body validation: one small reader that collects every bad field before answering.

    body = Body(payload)
    name = body.text("name", max_len=120)
    tags = body.text_list("tags", required=False, max_items=20, max_len=40)
    body.finish()            # raises ValidationFailed naming each bad field

Readers return a typed value (or None when optional and absent, or when invalid: the error is
recorded and `finish()` raises), so handlers stay a few lines long.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from typing import Annotated, Any

from msgspec import Meta

from roomfeed.errors import ValidationFailed

_MISSING = object()
# What a value that does not match a typed model's `pattern` is told, by pattern (roomfeed.operations).
_PATTERN_REASONS: dict[str, str] = {}


def describe_pattern(pattern: str, reason: str) -> str:
    """Register what a value not matching `pattern` is told ("must be ..."); returns `pattern`."""
    _PATTERN_REASONS[pattern] = reason
    return pattern


def pattern_reason(pattern: str) -> str:
    return _PATTERN_REASONS.get(pattern, "has an invalid format")


def pattern_reasons() -> dict[str, str]:
    """Every pattern typed models declare, with its reason (tests: the document's patterns are these)."""
    return dict(_PATTERN_REASONS)


# Whole-value patterns open with `(?!.*\n)`: Python's `$` (msgspec checks patterns with re.search) also
# matches before a final line break, so "v-1\n" passed as an id. The guard is a lookahead at the start,
# which ECMAScript (the document's clients) reads alike; `\Z` it does not know.
WHOLE = r"^(?!.*\n)"
ID_PATTERN = re.compile(
    describe_pattern(WHOLE + r"[A-Za-z0-9_.:\-]{1,64}$", "must be 1 to 64 of [A-Za-z0-9_.:-]")
)
# Text that is not only white space.
NOT_BLANK = describe_pattern(r"\S", "must not be blank")
# An id as typed models declare it (roomfeed.operations).
Ident = Annotated[str, Meta(pattern=ID_PATTERN.pattern, description="1 to 64 of [A-Za-z0-9_.:-]")]
CURRENCY = re.compile(describe_pattern(WHOLE + r"[A-Z]{3}$", "must be 3 upper-case letters (ISO 4217)"))
Currency = Annotated[str, Meta(pattern=CURRENCY.pattern, description="ISO 4217")]


def text(max_len: int, *, blank_ok: bool = False, description: str | None = None) -> Meta:
    """A text field's constraints for a typed model: `Annotated[str, text(120)]` is 1 to 120 characters,
    not only white space (`blank_ok`: 0 to 120, anything). Text never holds NUL (PostgreSQL text cannot
    store it): typed bodies refuse it wherever it appears (roomfeed.operations.decode_body)."""
    if blank_ok:
        return Meta(max_length=max_len, description=description)
    return Meta(min_length=1, max_length=max_len, pattern=NOT_BLANK, description=description)


class Body:
    def __init__(self, payload: Any, prefix: str = "") -> None:
        self.errors: dict[str, str] = {}
        self.prefix = prefix
        if isinstance(payload, dict):
            self.data: dict[str, Any] = payload
        else:
            self.data = {}
            self.errors[prefix.rstrip(".") or "body"] = "must be a JSON object"

    def _name(self, field: str) -> str:
        return f"{self.prefix}{field}"

    def fail(self, field: str, reason: str) -> None:
        self.errors.setdefault(self._name(field), reason)

    def _get(self, field: str, required: bool) -> Any:
        value = self.data.get(field, _MISSING)
        if value is _MISSING or value is None:
            if required:
                self.fail(field, "is required")
            return _MISSING
        return value

    def text(
        self,
        field: str,
        *,
        required: bool = True,
        max_len: int = 200,
        min_len: int = 1,
        pattern: re.Pattern[str] | None = None,
        default: str | None = None,
    ) -> Any:
        value = self._get(field, required)
        if value is _MISSING:
            return default
        if not isinstance(value, str):
            self.fail(field, "must be a string")
            return None
        if "\x00" in value:  # PostgreSQL text cannot hold U+0000
            self.fail(field, "must not contain NUL characters")
            return None
        if len(value) > max_len:
            self.fail(field, f"must be at most {max_len} characters")
            return None
        if len(value.strip()) < min_len:
            self.fail(field, f"must be at least {min_len} characters")
            return None
        if pattern is not None and not pattern.match(value):
            self.fail(field, "has an invalid format")
            return None
        return value

    def ident(self, field: str, *, required: bool = True) -> Any:
        return self.text(field, required=required, max_len=64, pattern=ID_PATTERN)

    def choice(
        self, field: str, options: Iterable[str], *, required: bool = True, default: str | None = None
    ) -> Any:
        allowed = tuple(options)
        value = self._get(field, required)
        if value is _MISSING:
            return default
        if not isinstance(value, str) or value not in allowed:
            self.fail(field, "must be one of: " + ", ".join(allowed))
            return None
        return value

    def integer(
        self,
        field: str,
        *,
        required: bool = True,
        minimum: int | None = None,
        maximum: int | None = None,
        default: int | None = None,
    ) -> Any:
        value = self._get(field, required)
        if value is _MISSING:
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(field, "must be an integer")
            return None
        if minimum is not None and value < minimum:
            self.fail(field, f"must be at least {minimum}")
            return None
        if maximum is not None and value > maximum:
            self.fail(field, f"must be at most {maximum}")
            return None
        return value

    def number(
        self,
        field: str,
        *,
        required: bool = True,
        minimum: float | None = None,
        maximum: float | None = None,
        exclusive_minimum: bool = False,
        default: float | None = None,
    ) -> Any:
        value = self._get(field, required)
        if value is _MISSING:
            return default
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            self.fail(field, "must be a number")
            return None
        if minimum is not None and (value <= minimum if exclusive_minimum else value < minimum):
            self.fail(field, f"must be {'greater than' if exclusive_minimum else 'at least'} {minimum}")
            return None
        if maximum is not None and value > maximum:
            self.fail(field, f"must be at most {maximum}")
            return None
        return float(value)

    def boolean(self, field: str, *, required: bool = True, default: bool | None = None) -> Any:
        value = self._get(field, required)
        if value is _MISSING:
            return default
        if not isinstance(value, bool):
            self.fail(field, "must be true or false")
            return None
        return value

    def text_list(
        self,
        field: str,
        *,
        required: bool = True,
        max_items: int = 20,
        max_len: int = 40,
        default: list[str] | None = None,
    ) -> Any:
        value = self._get(field, required)
        if value is _MISSING:
            return list(default) if default is not None else []
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            self.fail(field, "must be a list of strings")
            return None
        if len(value) > max_items:
            self.fail(field, f"must have at most {max_items} items")
            return None
        if any("\x00" in v for v in value):  # PostgreSQL text cannot hold U+0000
            self.fail(field, "items must not contain NUL characters")
            return None
        if any(len(v) > max_len or not v.strip() for v in value):
            self.fail(field, f"items must be 1 to {max_len} characters")
            return None
        return value

    def obj(self, field: str, *, required: bool = True) -> Body | None:
        value = self._get(field, required)
        if value is _MISSING:
            return None
        sub = Body(value, prefix=self._name(field) + ".")
        if sub.errors:
            self.errors.update(sub.errors)
            return None
        return sub

    def merge(self, other: Body) -> None:
        self.errors.update(other.errors)

    def finish(self, message: str = "the request has invalid fields") -> None:
        if self.errors:
            raise ValidationFailed(message, fields=self.errors)
