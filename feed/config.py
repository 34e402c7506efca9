"""The ranking config: operator weights and knobs, their valid ranges, and how a change is read.

A config is a flat set of named numbers (weights of the blend, knobs of filters, diversity and
exploration). A partial update (an operator's change, an experiment variant's overrides) is checked
against `RANGES` by the typed model built from them (feed.models.RankingConfigChange). Versions,
authors and hot reload live in `feed.config_store`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, TypeVar, cast

T = TypeVar("T", int, float)


def _knob(default: T, low: float, high: float) -> T:
    """A config field with its valid range [low, high]; an int default makes an integer field."""
    return field(default=default, metadata={"range": (low, high)})


@dataclass(frozen=True)
class RankingConfig:
    # Multipliers of the learned ranker's column groups (ranking.ranker.GROUPS); 1.0 everywhere is the
    # ranker the promotion gate judged, whose weights were learned from this platform's log.
    w_model: float = _knob(1.0, 0.0, 10.0)  # LightFM's columns
    w_popularity: float = _knob(1.0, 0.0, 10.0)  # long-term, daily and live popularity, the room's heat
    w_repeat: float = _knob(1.0, 0.0, 10.0)  # the viewer's history, co-visitation, category/price affinity
    w_session_category: float = _knob(1.0, 0.0, 10.0)  # this session's category shares and swipe-aways
    # Feed terms on top of the judged ranker (0 = exactly the ranker the gate judged; it learns
    # freshness itself). Conversion is off.
    w_conversion: float = _knob(0.0, 0.0, 10.0)
    w_freshness: float = _knob(0.0, 0.0, 10.0)
    # In-session penalty for rooms like the ones the viewer just swiped away from.
    w_session: float = _knob(0.8, 0.0, 10.0)
    # How fast freshness decays (a room that just went live is "fresh").
    freshness_half_life_s: float = _knob(1800.0, 60.0, 86_400.0)
    # Rooms the viewer swiped away from (a leave shorter than events.vocabulary.SWIPE_AWAY_MS, which
    # events owns: its live stats count swipe-aways by it) are hidden for this long.
    swipe_away_window_s: int = _knob(3600, 0, 86_400)
    # Diversity: at most this many rooms in a row of one category or one merchant.
    diversity_max_run: int = _knob(2, 1, 50)
    # Exploration: this share of slots goes to new or little-seen rooms.
    exploration_share: float = _knob(0.1, 0.0, 0.5)
    exploration_max_impressions_1h: int = _knob(20, 0, 100_000)
    exploration_new_room_s: int = _knob(600, 0, 86_400)


# field → (minimum, maximum), from the fields above; integers are fields whose default is an int.
RANGES: dict[str, tuple[float, float]] = {f.name: f.metadata["range"] for f in fields(RankingConfig)}
FIELD_NAMES = tuple(f.name for f in fields(RankingConfig))
_INTEGER_FIELDS = {f.name for f in fields(RankingConfig) if isinstance(f.default, int)}


def apply_values(config: RankingConfig, values: dict[str, float | int]) -> RankingConfig:
    # `values` are checked field names (validate_values); replace() cannot be typed over a dict.
    return replace(config, **cast(dict[str, Any], values)) if values else config


def as_dict(config: RankingConfig) -> dict[str, float | int]:
    return asdict(config)


# Fields of the hand-tuned blend the learned ranker replaced: a config stored with them holds absolute
# blend weights, not multipliers, so its weights are not carried over.
_BLEND_ERA = ("w_repeat_skip", "w_session_skip", "w_session_lightfm", "repeat_half_life_h")
_MULTIPLIERS = ("w_model", "w_popularity", "w_repeat", "w_session_category", "w_freshness")


def from_dict(stored: dict[str, Any]) -> RankingConfig:
    """A stored config; fields added since it was written take their defaults."""
    known = {k: v for k, v in stored.items() if k in RANGES}
    if any(k in stored for k in _BLEND_ERA):
        known = {k: v for k, v in known.items() if k not in _MULTIPLIERS}
    return replace(RankingConfig(), **known)


def diff(before: RankingConfig, after: RankingConfig) -> dict[str, dict[str, float | int]]:
    old, new = as_dict(before), as_dict(after)
    return {k: {"from": old[k], "to": new[k]} for k in FIELD_NAMES if old[k] != new[k]}
