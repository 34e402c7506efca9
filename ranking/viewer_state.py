"""Where a viewer's model state lives and how the feed reads it: the LightFM vector and the ranker's history.

Owns `ViewerState` — one viewer's share of a model version: the LightFM user representation and the
graded history with each merchant as of the model's round (ranking.history) — and the stores it is
read from: the artifact itself (`from_model`, for the offline replay, tests and a model loaded with
its viewers) and Redis (below), written by the trainer before a model is promoted, so an API process
holds no per-viewer state and its memory does not grow with the number of viewers.

The contract with the ranker: the feed's rank and score stages read `FeedContext.viewer` (a
`ViewerState` of the serving model's version) and nothing else about the viewer's past; a state
of another version, or none, is a viewer the model does not know (popularity, co-visitation of the
session, the visits since the round).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ranking.history import ViewerHistory


@dataclass(frozen=True)
class ViewerState:
    """One viewer's state under model `version` (`found`: the store knew the viewer)."""

    version: str
    vector: np.ndarray | None = None  # (k,) float32 LightFM user representation
    bias: float = 0.0
    history: ViewerHistory = field(default_factory=ViewerHistory.empty)  # merchant positions of `version`
    found: bool = False

    @classmethod
    def missing(cls, version: str) -> ViewerState:
        return cls(version)


def from_model(scorer: Any, viewer_id: str) -> ViewerState:
    """The state a scorer's model carries in memory (none when it was loaded without its viewers)."""
    model = scorer.model
    user = scorer.user_vector(viewer_id) if scorer.is_known(viewer_id) else None
    histories = getattr(model, "histories", None)
    history = histories.of(viewer_id) if histories is not None else ViewerHistory.empty()
    if user is None and len(history) == 0:
        return ViewerState.missing(scorer.model_version)
    vector = np.asarray(user[0], dtype=np.float32) if user is not None else None
    return ViewerState(scorer.model_version, vector, float(user[1]) if user else 0.0, history, True)
