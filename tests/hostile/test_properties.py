"""Property-based checks (hypothesis) of the two parsers that face the outside world directly:
the event validator (`events.schema.validate`) and the attribution-code parser (`alliance.codes`)."""

from __future__ import annotations

import contextlib
import math
import re
import string
from typing import Any

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from alliance.codes import Attribution, CodeSigner, InvalidCode
from events import schema, vocabulary
from events.schema import Rejection, validate

NOW_MS = 1_790_000_000_000
PROFILE = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

ID_CHARS = string.ascii_letters + string.digits + "_.:-"
ids = st.text(ID_CHARS, min_size=1, max_size=64)


def text(max_size: int) -> st.SearchStrategy[str]:
    """Valid free text: anything but NUL, which no sink can store (events.schema refuses it)."""
    return st.text(st.characters(blacklist_characters="\x00"), max_size=max_size)


ID_RE = re.compile(r"\A[A-Za-z0-9_.:\-]{1,64}\Z")
CURRENCY_RE = re.compile(r"\A[A-Z]{3}\Z")

json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=80)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=10,
)
hostile_ids = (
    st.text(max_size=70)
    | st.integers()
    | st.none()
    | st.booleans()
    | ids.map(lambda s: s + "\n")
    | st.just("")
    | st.just("x" * 65)
)

_SHOWN: dict[str, st.SearchStrategy[Any]] = {
    "position": st.integers(0, 200),
    "boosted": st.booleans(),
    "page_token": ids,
    "variant": text(max_size=64),
    "model_version": text(max_size=64),
    "config_version": st.integers(0, 99) | text(max_size=8),
}
TYPE_FIELDS: dict[str, dict[str, st.SearchStrategy[Any]]] = {
    "impression": _SHOWN,
    "served": {**_SHOWN, "entry": st.booleans(), "displaced_room_id": ids},
    "enter": {"source": st.sampled_from(vocabulary.ENTER_SOURCES)},
    "heartbeat": {},
    "like": {},
    "follow": {},
    "share": {},
    "leave": {"dwell_ms": st.integers(0, 10**9)},
    "comment": {"text": text(max_size=500)},
    "add_to_cart": {"product_id": ids},
    "purchase": {
        "order_id": ids,
        "product_id": ids,
        "amount": st.floats(0.01, 1e9),
        "currency": st.text(string.ascii_uppercase, min_size=3, max_size=3),
    },
    "deal_claim": {"deal_id": ids},
}
REQUIRED_EXTRA = {
    "leave": {"dwell_ms"},
    "add_to_cart": {"product_id"},
    "purchase": {"order_id", "product_id", "amount", "currency"},
    "deal_claim": {"deal_id"},
}
KNOWN = {"event_id", "type", "viewer_id", "session_id", "room_id", "ts", "v", "device_id"}


@st.composite
def valid_events(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from(vocabulary.TYPES))
    event: dict[str, Any] = {
        "event_id": draw(ids),
        "type": kind,
        "viewer_id": draw(ids),
        "session_id": draw(ids),
        "room_id": draw(ids),
        "ts": draw(st.integers(NOW_MS - schema.MAX_AGE_MS, NOW_MS + schema.MAX_AHEAD_MS)),
    }
    if draw(st.booleans()):
        event["device_id"] = draw(ids)
    for name, values in TYPE_FIELDS[kind].items():
        if name in REQUIRED_EXTRA.get(kind, ()) or draw(st.booleans()):
            event[name] = draw(values)
    return event


@st.composite
def tampered_events(draw: st.DrawFn) -> dict[str, Any]:
    """A valid event with some fields replaced by hostile values, removed, or extra fields added."""
    event = draw(valid_events())
    for name in draw(st.lists(st.sampled_from(sorted(event)), max_size=3, unique=True)):
        choice = draw(st.integers(0, 2))
        if choice == 0:
            del event[name]
        elif choice == 1:
            event[name] = draw(hostile_ids)
        else:
            event[name] = draw(json_values)
    for _ in range(draw(st.integers(0, 2))):
        event[draw(st.text(max_size=12))] = draw(json_values)
    return event


def assert_meets_contract(out: dict[str, Any]) -> None:
    """What every consumer relies on in an accepted event (docs/architecture.md, event schema v1)."""
    kind = out["type"]
    assert kind in vocabulary.TYPES and out["v"] == vocabulary.SCHEMA_VERSION
    for name in (
        "event_id",
        "viewer_id",
        "session_id",
        "room_id",
        *(f for f in ("device_id", "product_id", "order_id", "deal_id") if f in out),
    ):
        assert isinstance(out[name], str) and ID_RE.match(out[name]), (name, out[name])
    assert type(out["ts"]) is int and NOW_MS - schema.MAX_AGE_MS <= out["ts"] <= NOW_MS + schema.MAX_AHEAD_MS
    assert REQUIRED_EXTRA.get(kind, set()) <= out.keys()
    assert set(out) <= KNOWN | set(TYPE_FIELDS[kind]), set(out) - KNOWN
    if kind == "leave":
        assert type(out["dwell_ms"]) is int and out["dwell_ms"] >= 0
    if kind == "purchase":
        assert not isinstance(out["amount"], bool) and math.isfinite(out["amount"]) and out["amount"] > 0
        assert isinstance(out["currency"], str) and CURRENCY_RE.match(out["currency"]), repr(out["currency"])
    if kind == "comment" and "text" in out:
        assert isinstance(out["text"], str) and len(out["text"]) <= 500


@PROFILE
@given(valid_events())
def test_every_valid_event_is_accepted_normalised_and_stable(event: dict[str, Any]) -> None:
    out = validate(event, NOW_MS)
    assert not isinstance(out, Rejection), out
    assert_meets_contract(out)
    assert validate(out, NOW_MS) == out  # normalising twice changes nothing (consumers re-validate)


@PROFILE
@given(tampered_events())
def test_tampered_events_are_rejected_naming_a_field_or_meet_the_contract(event: dict[str, Any]) -> None:
    out = validate(event, NOW_MS)
    if isinstance(out, Rejection):
        assert out.code == "validation_failed" and out.message
        assert out.field is None or isinstance(out.field, str)
    else:
        assert_meets_contract(out)


@PROFILE
@given(json_values)
def test_validator_never_raises_on_any_json(value: Any) -> None:
    assert isinstance(validate(value, NOW_MS), dict | Rejection)


@PROFILE
@given(tampered_events())
def test_fast_path_and_field_by_field_checks_agree(event: dict[str, Any]) -> None:
    fast = validate(event, NOW_MS)
    careful = schema._validate_by_field(event, NOW_MS, True)
    assert isinstance(fast, Rejection) == isinstance(careful, Rejection), (fast, careful)
    if not isinstance(fast, Rejection):
        assert fast == careful


@PROFILE
@given(valid_events(), st.sampled_from(["USD\n", "usd", "US", "USDX", "", " USD", 840]))
def test_purchase_currency_is_exactly_three_capitals(event: dict[str, Any], currency: Any) -> None:
    event.update(type="purchase", order_id="o1", product_id="p1", amount=10.0, currency=currency)
    out = validate(event, NOW_MS)
    assert isinstance(out, Rejection) and out.field == "currency", (currency, out)


# --- attribution codes ----------------------------------------------------------------------

packed_ids = st.sampled_from(["mer", "sto", "stf"]).flatmap(
    lambda p: st.text("0123456789abcdef", min_size=16, max_size=16).map(lambda h: f"{p}_{h}")
)
code_ids = packed_ids | ids
attributions = st.builds(Attribution, code_ids, st.none() | code_ids, st.none() | code_ids)
SIGNER = CodeSigner("property-secret")


@PROFILE
@given(attributions)
def test_a_signed_code_parses_back_to_its_attribution(attribution: Attribution) -> None:
    code = SIGNER.sign(attribution)
    assert re.fullmatch(r"[A-Za-z0-9_-]+", code)
    assert SIGNER.parse(code) == attribution


@PROFILE
@given(attributions, st.data())
def test_an_altered_code_is_refused(attribution: Attribution, data: st.DataObject) -> None:
    code = SIGNER.sign(attribution)
    i = data.draw(st.integers(0, len(code) - 1))
    replacement = data.draw(st.sampled_from(string.ascii_letters + string.digits + "-_"))
    assume(replacement != code[i])
    altered = code[:i] + replacement + code[i + 1 :]
    try:
        parsed = SIGNER.parse(altered)
    except InvalidCode:
        return
    # only the unused low bits of the last base64 character can change without changing the bytes
    assert i == len(code) - 1 and parsed == attribution


@PROFILE
@given(attributions)
def test_a_code_signed_with_another_secret_is_refused(attribution: Attribution) -> None:
    code = CodeSigner("someone-elses-secret").sign(attribution)
    try:
        SIGNER.parse(code)
    except InvalidCode:
        return
    raise AssertionError("a code signed with another secret was accepted")


@PROFILE
@given(st.text(max_size=300) | st.binary(max_size=200).map(lambda b: b.hex()) | st.integers() | st.none())
def test_the_code_parser_only_ever_raises_invalid_code(text: Any) -> None:
    with contextlib.suppress(InvalidCode):
        SIGNER.parse(text)
