"""A typed operation's query string reads as Starlette reads it (roomfeed.operations.query_values: a split
when there is nothing to unescape, Starlette's parser otherwise)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from starlette.datastructures import QueryParams

from roomfeed.operations import query_values

# What a query string is made of, escapes and separators included, and a byte above ASCII.
ALPHABET = b"ab=&%+;2Fcount10\xe9 "
QUERY_BYTES = st.binary(max_size=60).map(lambda raw: bytes(ALPHABET[b % len(ALPHABET)] for b in raw))


@given(QUERY_BYTES)
def test_a_query_string_reads_as_starlette_reads_it(raw: bytes) -> None:
    assert query_values(raw) == dict(QueryParams(raw))


def test_the_last_value_of_a_name_wins_and_a_bare_name_is_empty() -> None:
    assert query_values(b"count=3&&count=10&after") == {"count": "10", "after": ""}
    assert query_values(b"after=a%2Bb+c") == {"after": "a+b c"}
