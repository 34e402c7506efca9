"""The Redis keys events owns (`rf:{ev}:*`) and the bucket arithmetic its writer and reader share.

Every key starts with PREFIX, whose hash tag `{ev}` puts them all in one Redis Cluster slot: the
realtime sink's script applies a whole batch (many rooms and viewers, its dedup sets and watermarks)
atomically, and on a cluster a script's keys must live on one node. (On one Redis server the tag
changes nothing.) Sliding windows are sums of fixed buckets, each key expiring on its own once no
window can read it (R = rf:{ev}:r:ROOM):
  10-second counters  R:s:{t10}                enters, for the 1-minute window (6 buckets)
  minute counters     R:m:{min}                enters, for the 15-minute window (15 buckets)
  5-minute hashes     R:b:{b5}                 every per-room count, for the 1-hour window (12 buckets)
  5-minute HLLs       R:uv:{b5}                unique visitors (viewers who entered), 1 hour
  viewers now         R:now                    sorted set viewer → last seen (ms); 60 s without a sign → gone
  recent visits       rf:{ev}:v:VIEWER:recent  list of the viewer's last visits (leave events), newest first
  platform totals     room "*" in the same layout (rf:{ev}:r:*:b:{b5} ...)
  dedup               rf:{ev}:seen:{hour}      set of event ids applied in that hour (3 hours kept)
  watermarks          rf:{ev}:wm:{topic}:{part} highest Kafka offset applied per partition
  room heat           rf:{ev}:heat...          events/heat.py
A window ending now covers whole buckets, so it spans between (window - bucket) and window.
"""

from __future__ import annotations

import numpy as np

from events.vocabulary import (
    ADD_TO_CART,
    COMMENT,
    DEAL_CLAIM,
    ENTER,
    FOLLOW,
    IMPRESSION,
    LEAVE,
    LIKE,
    PURCHASE,
    SHARE,
)

PREFIX = "rf:{ev}:"  # the hash tag keeps every events key in one cluster slot (see above)
PLATFORM = "*"
TEN_S_MS = 10_000
MINUTE_MS = 60_000
FIVE_MIN_MS = 300_000
PRESENCE_MS = 60_000

# The types counted per room in the 5-minute hash, and the field each is counted in. A type not
# listed here is deduped by the realtime sink and otherwise ignored.
HOUR_FIELD = {
    IMPRESSION: "impression",
    ENTER: "enter",
    LEAVE: "leave",
    LIKE: "like",
    COMMENT: "comment",
    FOLLOW: "follow",
    SHARE: "share",
    ADD_TO_CART: "cart",
    PURCHASE: "order",
    DEAL_CLAIM: "deal_claim",
}
# Every field of the 5-minute hash, in the order the reader returns them: the counts above, then
# leaves shorter than SWIPE_AWAY_MS, the dwell of leaves and the GMV of purchases.
HOUR_FIELDS = (*HOUR_FIELD.values(), "swipe_away", "dwell_ms", "gmv")


def room_prefix(room_id: str) -> str:
    return f"{PREFIX}r:{room_id}:"


def recent_key(viewer_id: str) -> str:
    return f"{PREFIX}v:{viewer_id}:recent"


def seen_key(hour: int) -> str:
    return f"{PREFIX}seen:{hour}"


def mark_key(topic: str, partition: int) -> str:
    return f"{PREFIX}wm:{topic}:{partition}"


def buckets(now_ms: int) -> tuple[list[int], list[int], list[int]]:
    """Bucket numbers of the 1-minute, 15-minute and 1-hour windows ending at now_ms."""
    t10 = now_ms // TEN_S_MS
    minute = now_ms // MINUTE_MS
    b5 = now_ms // FIVE_MIN_MS
    return (
        list(range(t10 - 5, t10 + 1)),
        list(range(minute - 14, minute + 1)),
        list(range(b5 - 11, b5 + 1)),
    )


# Room heat: the heat sink (events.heat_sink) writes it, RoomHeat (events.heat) reads it.
# rf:{ev}:heat               hash room_id → 48 bytes, little-endian float64 x6:
# enters, impressions, dwell_s, orders, landings, as of ts_ms (the 6th value). `landings` are the
# enters not from the feed (a code's, a deep link's room: `enter.source`), counted in `enters` too,
# so a feed-sourced rate (enters − landings) / (impressions − landings) exists. A 40-byte record
# (the layout without landings) is read by the sink as landings 0 and rewritten.
# rf:{ev}:heat:wm:{topic}:{p} highest Kafka offset applied per partition
# rf:{ev}:heat:seq           change counter: every room update takes the next number
# rf:{ev}:heat:epoch         when the counter started (set with it): a new one means readers rescan
# rf:{ev}:heat:changed       sorted set room_id → number of its last update
HEAT_KEY = f"{PREFIX}heat"
SEQ_KEY = f"{PREFIX}heat:seq"
EPOCH_KEY = f"{PREFIX}heat:epoch"
CHANGED_KEY = f"{PREFIX}heat:changed"
HALF_LIFE_S = 15 * 60.0
SIGNALS = ("enters", "impressions", "dwell_s", "orders", "landings")
HEAT_RECORD = np.dtype("<f8")
HEAT_WIDTH = len(SIGNALS) + 1  # the signals, then ts_ms


def heat_watermark_key(topic: str, partition: int) -> str:
    return f"{PREFIX}heat:wm:{topic}:{partition}"
