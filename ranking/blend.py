"""The ranker's blend: how the feed combines LightFM with the viewer's history and the session.

Owns `BlendWeights` (operator-tunable, range-checked) and `blend`, a plain function over
per-candidate numpy arrays. The feed calls exactly this, and evaluation judges exactly this.
Inputs, one value per candidate room (all shaped (n,)):

- `lightfm`: `Scorer.score(...)` for the viewer;
- `repeat_dwell_s`: the viewer's own decayed dwell seconds on the room's merchant
  (`decayed_sum` with `repeat_half_life_h`), 0 if never watched;
- `repeat_skips`: the viewer's decayed count of times they swiped this merchant away;
- `popularity`: live popularity (decayed enters of the merchant's room, e.g. from room stats);
- `session_dwell_share`: share of this session's dwell spent on the room's category;
- `session_skip_share`: share of this session's swipe-aways on the room's category;
- `session_lightfm` (optional): `Scorer.session_similarity(...)`, cosine between the room's
  merchant and what this session watched, in LightFM's item space (0 when nothing watched yet);
- `lightfm_personal` (optional, default True): False when the scorer had no vector for the viewer
  (`Scorer.is_personal` is False: unknown viewer, no entry source) and fell back to training
  popularity. The LightFM column then counts nothing: live popularity already says that better.

Structure: candidates split into *favourites* (the viewer has watched the merchant, dwell > 0)
and *discovery* (never watched). The repeat term (rank-discounted, so favourites open the page
without filling it) orders favourites; LightFM and popularity are standardised over the
discovery candidates only and count only there, so they order what the viewer has not seen —
the job LightFM is for. A linear blend with LightFM z-scored over all candidates spent its
weight on re-ranking favourites, which the repeat term already does better (docs/ranking.md).
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
    "session_lightfm": (0.0, 20.0),
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
    session_lightfm: float = 0.0

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


# The weights tuned on the full simulator run's validation day (docs/ranking.md, Results), rounded:
# what the feed's ranking config should start from, and what training's promotion gate ranks with.
TUNED_WEIGHTS = BlendWeights(
    lightfm=0.095,
    repeat=8.4,
    repeat_skip=0.0,
    popularity=0.071,
    session_category=0.051,
    session_skip=0.156,
    session_lightfm=0.127,
)


def zscore(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float32, copy=False)
    sd = float(x.std())
    return (x - float(x.mean())) / sd if sd > 1e-9 else np.zeros_like(x)


def zscore_over(x: np.ndarray, group: np.ndarray) -> np.ndarray:
    """`x` standardised by the mean and spread of `x[group]`, zero outside the group."""
    out = np.zeros(x.shape[0], dtype=np.float32)
    if int(group.sum()) < 2:
        return out
    v = x[group].astype(np.float32, copy=False)
    sd = float(v.std())
    if sd > 1e-9:
        out[group] = (v - float(v.mean())) / sd
    return out


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


COLUMNS: tuple[str, ...] = (
    "lightfm",
    "repeat",
    "repeat_skip",
    "popularity",
    "session_category",
    "session_skip",
    "session_lightfm",
)
# The columns that come from the LightFM model (dropped together in the ablation).
LIGHTFM_COLUMNS: tuple[str, ...] = ("lightfm", "session_lightfm")


def blend_columns(
    lightfm: np.ndarray,
    repeat_dwell_s: np.ndarray,
    repeat_skips: np.ndarray,
    popularity: np.ndarray,
    session_dwell_share: np.ndarray,
    session_skip_share: np.ndarray,
    session_lightfm: np.ndarray | None = None,
    lightfm_personal: bool = True,
) -> np.ndarray:
    """(n, len(COLUMNS)) signed, scaled signals in `COLUMNS` order; the score is this times the weights."""
    discovery = repeat_dwell_s <= 0
    n = lightfm.shape[0]
    return np.stack(
        [
            zscore_over(lightfm, discovery) if lightfm_personal else np.zeros(n, dtype=np.float32),
            rank_discounted(np.log1p(repeat_dwell_s / 60.0)),
            -np.log1p(repeat_skips),
            zscore_over(np.log1p(popularity), discovery),
            session_dwell_share,
            -session_skip_share,
            session_lightfm if session_lightfm is not None else np.zeros(n, dtype=np.float32),
        ],
        axis=1,
    ).astype(np.float32)


def weight_vector(w: BlendWeights) -> np.ndarray:
    return np.array([getattr(w, c) for c in COLUMNS], dtype=np.float32)


def blend(
    w: BlendWeights,
    lightfm: np.ndarray,
    repeat_dwell_s: np.ndarray,
    repeat_skips: np.ndarray,
    popularity: np.ndarray,
    session_dwell_share: np.ndarray,
    session_skip_share: np.ndarray,
    session_lightfm: np.ndarray | None = None,
    lightfm_personal: bool = True,
) -> np.ndarray:
    """The ranker score per candidate (higher first)."""
    cols = blend_columns(
        lightfm,
        repeat_dwell_s,
        repeat_skips,
        popularity,
        session_dwell_share,
        session_skip_share,
        session_lightfm,
        lightfm_personal,
    )
    out: np.ndarray = cols @ weight_vector(w)
    return out
