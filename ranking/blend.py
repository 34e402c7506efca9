"""The ranker's blend: how the feed combines LightFM with the viewer's history and the session.

Owns `BlendWeights` (operator-tunable, range-checked) and `blend`, a plain function over
per-candidate numpy arrays. The feed calls exactly this, and evaluation judges exactly this.
Inputs, one value per candidate room (all shaped (n,)):

- `lightfm`: `Scorer.score(...)` for the viewer (z-scored over the candidates here);
- `repeat_dwell_s`: the viewer's own decayed dwell seconds on the room's merchant
  (`decayed_sum` with `repeat_half_life_h`), 0 if never watched;
- `repeat_skips`: the viewer's decayed count of times they swiped this merchant away;
- `popularity`: live popularity (decayed enters of the merchant's room, e.g. from room stats);
- `session_dwell_share`: share of this session's dwell spent on the room's category;
- `session_skip_share`: share of this session's swipe-aways on the room's category.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np

RANGES: dict[str, tuple[float, float]] = {
    "lightfm": (0.0, 10.0),
    "repeat": (0.0, 10.0),
    "repeat_skip": (0.0, 10.0),
    "popularity": (0.0, 10.0),
    "session_category": (0.0, 20.0),
    "session_skip": (0.0, 20.0),
    "repeat_half_life_h": (1.0, 24.0 * 60),
    "popularity_half_life_min": (1.0, 24.0 * 60),
}


@dataclass(frozen=True)
class BlendWeights:
    lightfm: float = 1.0
    repeat: float = 1.0
    repeat_skip: float = 0.3
    popularity: float = 0.5
    session_category: float = 1.0
    session_skip: float = 0.5
    repeat_half_life_h: float = 72.0
    popularity_half_life_min: float = 60.0

    def __post_init__(self) -> None:
        for f in fields(self):
            lo, hi = RANGES[f.name]
            value = getattr(self, f.name)
            if not isinstance(value, int | float) or not lo <= float(value) <= hi:
                raise ValueError(f"blend weight {f.name}={value!r} outside [{lo}, {hi}]")

    def to_dict(self) -> dict[str, float]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BlendWeights:
        unknown = set(data) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown blend weights: {sorted(unknown)}")
        return cls(**{k: float(v) for k, v in data.items()})


def zscore(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float32, copy=False)
    sd = float(x.std())
    return (x - float(x.mean())) / sd if sd > 1e-9 else np.zeros_like(x)


def decayed_sum(values: np.ndarray, ages_s: np.ndarray, half_life_s: float) -> float:
    """Sum of values with exponential decay by age (what 'recent, decayed' means everywhere)."""
    return float(np.sum(values * np.power(0.5, ages_s / half_life_s)))


def rank_discounted(values: np.ndarray) -> np.ndarray:
    """The j-th strongest positive value (0-based) divided by 1 + j.

    A viewer's favourites should open the page, not fill it: with a plain linear term every live
    favourite outranks every discovery, so HR@5 on new targets collapses whenever several are live.
    """
    out = np.zeros_like(values, dtype=np.float32)
    pos = np.flatnonzero(values > 0)
    if pos.size:
        order = pos[np.argsort(-values[pos], kind="stable")]
        out[order] = values[order] / (1.0 + np.arange(order.size))
    return out


COLUMNS: tuple[str, ...] = ("lightfm", "repeat", "repeat_skip", "popularity", "session_category", "session_skip")


def blend_columns(
    lightfm: np.ndarray, repeat_dwell_s: np.ndarray, repeat_skips: np.ndarray, popularity: np.ndarray,
    session_dwell_share: np.ndarray, session_skip_share: np.ndarray,
) -> np.ndarray:
    """(n, 6) signed, scaled signals in `COLUMNS` order; the score is this times the weights."""
    return np.stack([
        zscore(lightfm),
        rank_discounted(np.log1p(repeat_dwell_s / 60.0)),
        -np.log1p(repeat_skips),
        zscore(np.log1p(popularity)),
        session_dwell_share,
        -session_skip_share,
    ], axis=1).astype(np.float32)


def weight_vector(w: BlendWeights) -> np.ndarray:
    return np.array([getattr(w, c) for c in COLUMNS], dtype=np.float32)


def blend(
    w: BlendWeights, lightfm: np.ndarray, repeat_dwell_s: np.ndarray, repeat_skips: np.ndarray,
    popularity: np.ndarray, session_dwell_share: np.ndarray, session_skip_share: np.ndarray,
) -> np.ndarray:
    """The ranker score per candidate (higher first)."""
    cols = blend_columns(lightfm, repeat_dwell_s, repeat_skips, popularity, session_dwell_share, session_skip_share)
    out: np.ndarray = cols @ weight_vector(w)
    return out
