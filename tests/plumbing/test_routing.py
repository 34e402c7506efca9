"""The hot paths are tried first, and that changes no route's answer: for every path of every route,
the route that answers it (method included) is the one the declaration order would have chosen."""

from __future__ import annotations

import re
from typing import Any

from starlette.routing import Match, Route

from roomfeed.app import HOT_PATHS, hot_first
from roomfeed.assembly import create_app
from roomfeed.settings import Settings


def _answering(routes: list[Any], path: str, method: str) -> Any:
    """The route Starlette's router picks for `method path`: the first full match, else the first partial."""
    scope = {"type": "http", "path": path, "method": method, "root_path": ""}
    partial = None
    for route in routes:
        match, _ = route.matches(scope)
        if match == Match.FULL:
            return route
        if match == Match.PARTIAL and partial is None:
            partial = route
    return partial


async def test_hot_paths_first_answer_every_path_as_the_declared_order_does() -> None:
    app = create_app(Settings.from_env())
    dispatch = app.router.routes
    assert [getattr(r, "path", None) for r in dispatch[: len(HOT_PATHS)]] == list(HOT_PATHS)
    rest = [r for r in dispatch if getattr(r, "path", None) not in HOT_PATHS]
    hot = [r for r in dispatch if getattr(r, "path", None) in HOT_PATHS]
    assert hot_first([*rest, *hot]) == dispatch
    # Every route's path with each parameter filled in, asked with each of its methods: the same route
    # answers whether the hot paths come first or last, so wherever they are declared.
    checked = 0
    for route in dispatch:
        if not isinstance(route, Route):
            continue
        path = re.sub(r"\{[^}]+\}", "p_0123456789abcdef", route.path)
        for method in route.methods or {"GET"}:
            assert _answering([*rest, *hot], path, method) is _answering(dispatch, path, method), (
                method,
                path,
            )
            checked += 1
    assert checked >= 60
