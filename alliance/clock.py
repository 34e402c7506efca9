"""The alliance's clock: every duration the alliance reasons in (dwell, heartbeat cadence, holding
period, pacing window, attribution window, the day its caps count in) passes through here.

In production the scale is 1 and a day is a UTC day. A benchmark that plays 24 hours in 24 minutes
sets `ROOMFEED_ALLIANCE_TIME_SCALE=60` and the origin to its start: then a 10 s minimum dwell is
1/6 s of wall time, a 2 h holding period is 2 minutes, and "today" is the 24 minutes from the
origin. Nothing else changes: events still carry wall-clock times and the server still judges on
its own wall clock, only the lengths are scaled.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

DAY_S = 86_400.0
_EPOCH = date(1970, 1, 1)


@dataclass(frozen=True)
class AllianceClock:
    scale: float = 1.0  # simulated seconds per wall second
    origin: float = 0.0  # wall epoch s where simulated day 0 starts

    @classmethod
    def of(cls, settings: object) -> AllianceClock:
        return cls(
            float(getattr(settings, "alliance_time_scale", 1.0)),
            float(getattr(settings, "alliance_clock_origin", 0.0)),
        )

    def wall(self, seconds: float) -> float:
        """A duration of the alliance's world (e.g. a 2 h holding period) in wall seconds."""
        return seconds / self.scale

    def wall_ms(self, ms: float) -> float:
        return ms / self.scale

    def alliance_s(self, wall_seconds: float) -> float:
        """A wall-clock duration in the alliance's seconds (the inverse of `wall`)."""
        return wall_seconds * self.scale

    def day_index(self, t: float) -> int:
        return math.floor((t - self.origin) * self.scale / DAY_S)

    def day(self, t: float) -> date:
        """The alliance's day of wall time `t` (what daily caps count in)."""
        return _EPOCH + timedelta(days=self.day_index(t))

    def day_start(self, t: float) -> float:
        """Wall epoch s where the alliance's day of `t` began."""
        return self.origin + self.day_index(t) * DAY_S / self.scale

    def day_start_ts(self, t: float) -> datetime:
        return datetime.fromtimestamp(self.day_start(t), UTC)
