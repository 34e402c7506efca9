"""Room and viewer features as the ranking domain sees them.

Owns `RoomFeatures` (the plain-data shape the rooms domain hands to ranking) and the one
mapping from a room's or a viewer's attributes to LightFM feature names. Training, the scorer
and evaluation all name features through `item_feature_names` / `user_feature_names`, so a
merchant that first appears at scoring time is described exactly as training described it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

# Rooms' words for a room (rooms.inputs checks them at the API); ranking codes them by position.
from rooms.inputs import FORMATS as FORMATS
from rooms.inputs import PRICE_BANDS as PRICE_BANDS


@dataclass(frozen=True)
class RoomFeatures:
    """What ranking needs to know about one live room (produced by the rooms domain)."""

    room_id: str
    merchant_id: str
    category: str
    tags: list[str] = field(default_factory=list)
    price_band: str = "mid"
    format: str = "one_to_many"
    host: str = ""
    started_at: float = 0.0


def item_feature_names(room: RoomFeatures) -> list[str]:
    """Feature names for a room's merchant (rooms are short-lived; merchants are the items)."""
    names = [f"cat:{room.category}", f"band:{room.price_band}", f"fmt:{room.format}"]
    names.extend(f"tag:{t}" for t in room.tags)
    if room.host:
        names.append(f"host:{room.host}")
    return names


def user_feature_names(entry_merchant_ids: Iterable[str] = ()) -> list[str]:
    """Viewer features we know without history: the merchants whose codes brought them in."""
    return [f"entry:{m}" for m in entry_merchant_ids]
