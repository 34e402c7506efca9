"""One vocabulary: event types, their codes, topics and what a swipe-away is are written once in
events/vocabulary.py, and everything else uses them by name."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import get_args

import numpy as np

from events.live_stats import RecentVisit
from events.vocabulary import CODE, DEAD_LETTERS, FIELDS, SWIPE_AWAY_MS, TYPES, VIEWER_EVENTS, EventType
from feed.config import RANGES, RankingConfig
from ranking import dataset
from ranking.dataset import from_events, from_simulator
from roomfeed.settings import REPO_ROOT
from simulator import Marketplace

VOCABULARY = REPO_ROOT / "events" / "vocabulary.py"
# Where type names must not be spelled out: the product packages and the benchmarks.
PRODUCT = (
    "roomfeed",
    "rooms",
    "events",
    "ranking",
    "alliance",
    "feed",
    "console",
    "simulator",
    "bulk",
    "worlds",
    "devtools",
    "bench",
)
TOPICS = (VIEWER_EVENTS, DEAD_LETTERS)


def _sources(packages: tuple[str, ...]) -> list[Path]:
    return [p for package in packages for p in sorted((REPO_ROOT / package).rglob("*.py")) if p != VOCABULARY]


def _names(node: ast.AST) -> list[str]:
    """The event type names among the string constants directly inside `node`."""
    items: list[ast.expr | None]
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        items = list(node.elts)
    elif isinstance(node, ast.Dict):
        items = list(node.keys)
    elif isinstance(node, ast.Compare):
        items = [node.left, *node.comparators]
    else:
        return []
    return [
        i.value for i in items if isinstance(i, ast.Constant) and isinstance(i.value, str) and i.value in CODE
    ]


def test_codes_are_the_positions_in_the_one_type_list() -> None:
    assert len(set(TYPES)) == len(TYPES)
    assert get_args(EventType) == TYPES
    assert [CODE[name] for name in TYPES] == list(range(len(TYPES)))
    assert set(FIELDS) == set(TYPES)
    assert max(CODE.values()) < np.iinfo(np.int8).max  # the columnar logs store codes as int8


def test_no_module_lists_or_compares_event_types_by_literal() -> None:
    """A second list of the types (ranking once copied the simulator's codes by position), a table
    keyed by type names or `kind == "leave"` outside the vocabulary fails here: use the names."""
    found = []
    for path in _sources(PRODUCT):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = _names(node)
            if names and (isinstance(node, ast.Compare) or len(names) >= 2):
                found.append(f"{path.relative_to(REPO_ROOT)}:{getattr(node, 'lineno', '?')} {names}")
    assert found == []


def test_topic_names_are_written_once() -> None:
    found = []
    for path in _sources((*PRODUCT, "tests")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Constant) and node.value in TOPICS:
                found.append(f"{path.relative_to(REPO_ROOT)}:{node.lineno} {node.value}")
    assert found == []


def test_simulator_and_dataset_read_the_same_codes_by_name() -> None:
    market = Marketplace(seed=11, n_merchants=40, n_viewers=300, days=1)
    events = list(market.events())
    columnar = from_simulator(market)
    assert [TYPES[int(code)] for code in columnar.type] == [e["type"] for e in events]
    from_dicts = from_events(events)
    assert from_dicts.type.tolist() == columnar.type.tolist()
    assert {TYPES[c] for c in (dataset.IMPRESSION, dataset.ENTER, dataset.LEAVE, dataset.PURCHASE)} == {
        "impression",
        "enter",
        "leave",
        "purchase",
    }


def test_swipe_away_has_one_owner() -> None:
    """events decides what a swipe-away is; the feed's config only says how long such rooms stay hidden."""
    assert RecentVisit("r", "m", SWIPE_AWAY_MS - 1, 0).swiped_away
    assert not RecentVisit("r", "m", SWIPE_AWAY_MS, 0).swiped_away
    swipe_knobs = [name for name in RANGES if name.startswith("swipe_away")]
    assert swipe_knobs == ["swipe_away_window_s"]


def test_config_fields_carry_their_ranges() -> None:
    config = RankingConfig()
    for name, (low, high) in RANGES.items():
        assert low <= getattr(config, name) <= high, name


def _word_lists(path: Path) -> list[tuple[tuple[str, ...], int]]:
    """Every tuple, list or set of three or more string constants in a module, with its line."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, (ast.Tuple, ast.List, ast.Set)) and len(node.elts) >= 3:
            words = [e.value for e in node.elts if isinstance(e, ast.Constant) and isinstance(e.value, str)]
            if len(words) == len(node.elts):
                found.append((tuple(sorted(words)), node.lineno))
    return found


def test_no_list_of_words_is_written_in_two_modules() -> None:
    """A set of words written out in two modules (price bands, key roles, the heat table's columns, the
    services) drifts apart, and code that numbers them by position silently disagrees: one module
    writes them, the others import that name."""
    where: dict[tuple[str, ...], set[str]] = {}
    for path in [*_sources(PRODUCT), VOCABULARY]:
        for words, line in _word_lists(path):
            where.setdefault(words, set()).add(f"{path.relative_to(REPO_ROOT)}:{line}")
    twice = {
        words: sorted(places)
        for words, places in where.items()
        if len({place.split(":")[0] for place in places}) > 1
    }
    assert twice == {}
