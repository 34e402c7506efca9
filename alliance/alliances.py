"""Alliances, their terms and their members: create, invite, join, leave (tables `alliances`,
`alliance_members`). A merchant sees an alliance only while it is a member (or invited to it);
to anyone else it does not exist (404).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import asyncpg

from roomfeed.errors import Conflict, Forbidden, NotFound
from roomfeed.ids import new_id


@dataclass(frozen=True)
class Terms:
    """An alliance's terms (the ranges a request may set are alliance.models.NewTerms')."""

    exchange_rate: float = 3.0  # boosted impressions owed per qualified visit
    min_dwell_ms: int = 10_000  # a visit qualifies from this dwell on
    boost_share_cap: float = 0.2  # at most this share of a feed page is boosted
    daily_earning_cap: float = 3_000.0  # impressions a merchant may earn per alliance per day
    # A boosted room's predicted enter probability for the viewer is at least this share of the
    # page's other rooms' (their mean): boosts go where viewers want them.
    relevance_floor: float = 0.8
    attribution_window_h: int = 24
    viewer_daily_cap: int = 20  # qualified visits one viewer may contribute per day
    device_daily_cap: int = 30  # ... and one device
    commission_rate: float = 0.05  # revenue share owed to a store on its attributed GMV
    # A counted visit that led to a verified order with the host earns this × exchange_rate more
    # (alliance.conversions): conversion counts most.
    conversion_weight: float = 1.0

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> Terms:
        return cls(**{name: row[name] for name in cls.__dataclass_fields__})


@dataclass(frozen=True)
class Member:
    merchant_id: str
    status: str
    role: str


@dataclass(frozen=True)
class Alliance:
    alliance_id: str
    name: str
    owner_merchant_id: str
    terms: Terms
    members: tuple[Member, ...]
    created_at: float

    def to_json(self) -> dict[str, Any]:
        return {
            "alliance_id": self.alliance_id,
            "name": self.name,
            "owner_merchant_id": self.owner_merchant_id,
            "terms": asdict(self.terms),
            "members": [asdict(m) for m in self.members],
            "created_at": self.created_at,
        }


_TERM_COLUMNS = tuple(Terms.__dataclass_fields__)


class AllianceBook:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def create(self, owner_merchant_id: str, name: str, terms: Terms) -> Alliance:
        alliance_id = new_id("all")
        columns = ", ".join(_TERM_COLUMNS)
        placeholders = ", ".join(f"${i + 4}" for i in range(len(_TERM_COLUMNS)))
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                f"INSERT INTO alliances (alliance_id, name, owner_merchant_id, {columns}) "  # noqa: S608 (fixed column names)
                f"VALUES ($1, $2, $3, {placeholders})",
                alliance_id,
                name,
                owner_merchant_id,
                *(getattr(terms, c) for c in _TERM_COLUMNS),
            )
            await conn.execute(
                """INSERT INTO alliance_members (alliance_id, merchant_id, status, role, joined_at)
                   VALUES ($1, $2, 'active', 'owner', now())""",
                alliance_id,
                owner_merchant_id,
            )
        return await self.get(alliance_id, viewer_merchant_id=None)

    async def get(self, alliance_id: str, viewer_merchant_id: str | None) -> Alliance:
        """The alliance; NotFound unless `viewer_merchant_id` is a member or invitee (None: operator)."""
        row = await self.pool.fetchrow("SELECT * FROM alliances WHERE alliance_id = $1", alliance_id)
        if row is None:
            raise NotFound("no such alliance")
        members = await self.pool.fetch(
            "SELECT merchant_id, status, role FROM alliance_members WHERE alliance_id = $1 ORDER BY invited_at",
            alliance_id,
        )
        if viewer_merchant_id is not None and not any(
            m["merchant_id"] == viewer_merchant_id and m["status"] in ("active", "invited") for m in members
        ):
            raise NotFound("no such alliance")
        return Alliance(
            row["alliance_id"],
            row["name"],
            row["owner_merchant_id"],
            Terms.from_row(row),
            tuple(Member(m["merchant_id"], m["status"], m["role"]) for m in members),
            row["created_at"].timestamp(),
        )

    async def _status(self, conn: asyncpg.Connection, alliance_id: str, merchant_id: str) -> str | None:
        status: str | None = await conn.fetchval(
            "SELECT status FROM alliance_members WHERE alliance_id = $1 AND merchant_id = $2 FOR UPDATE",
            alliance_id,
            merchant_id,
        )
        return status

    async def invite(self, alliance_id: str, by_merchant_id: str, merchant_id: str) -> Alliance:
        alliance = await self.get(alliance_id, by_merchant_id)
        if alliance.owner_merchant_id != by_merchant_id:
            raise Forbidden("only the alliance's owner invites members")
        async with self.pool.acquire() as conn, conn.transaction():
            status = await self._status(conn, alliance_id, merchant_id)
            if status == "active":
                raise Conflict(
                    f"{merchant_id} is already a member", fields={"merchant_id": "is already a member"}
                )
            if status is None:
                await conn.execute(
                    "INSERT INTO alliance_members (alliance_id, merchant_id, status) VALUES ($1, $2, 'invited')",
                    alliance_id,
                    merchant_id,
                )
            else:
                await conn.execute(
                    """UPDATE alliance_members SET status = 'invited', invited_at = now(), left_at = NULL
                       WHERE alliance_id = $1 AND merchant_id = $2""",
                    alliance_id,
                    merchant_id,
                )
        return await self.get(alliance_id, by_merchant_id)

    async def join(self, alliance_id: str, merchant_id: str) -> Alliance:
        async with self.pool.acquire() as conn, conn.transaction():
            status = await self._status(conn, alliance_id, merchant_id)
            if status is None or status == "left":
                raise NotFound("no such alliance (or no invitation to it)")
            if status == "invited":
                await conn.execute(
                    """UPDATE alliance_members SET status = 'active', joined_at = now()
                       WHERE alliance_id = $1 AND merchant_id = $2""",
                    alliance_id,
                    merchant_id,
                )
        return await self.get(alliance_id, merchant_id)

    async def remove(self, alliance_id: str, by_merchant_id: str, merchant_id: str) -> None:
        """A member leaves (by itself) or the owner removes it. The owner cannot leave its alliance."""
        alliance = await self.get(alliance_id, by_merchant_id)
        if by_merchant_id != merchant_id and alliance.owner_merchant_id != by_merchant_id:
            raise Forbidden("only the owner removes other members")
        if merchant_id == alliance.owner_merchant_id:
            raise Conflict("the owner cannot leave its own alliance", fields={"merchant_id": "is the owner"})
        async with self.pool.acquire() as conn, conn.transaction():
            status = await self._status(conn, alliance_id, merchant_id)
            if status is None or status == "left":
                raise NotFound("no such member")
            await conn.execute(
                """UPDATE alliance_members SET status = 'left', left_at = now()
                   WHERE alliance_id = $1 AND merchant_id = $2""",
                alliance_id,
                merchant_id,
            )

    async def of_merchant(self, merchant_id: str) -> list[dict[str, Any]]:
        rows = await self.pool.fetch(
            """SELECT a.alliance_id, a.name, m.status, m.role FROM alliance_members m
               JOIN alliances a USING (alliance_id)
               WHERE m.merchant_id = $1 AND m.status IN ('active', 'invited') ORDER BY a.created_at""",
            merchant_id,
        )
        return [dict(r) for r in rows]


async def partner_terms(conn: asyncpg.Connection) -> tuple[dict[str, Terms], dict[str, set[str]]]:
    """Every alliance's terms and the active members of each (the consumer's view of partnerships)."""
    rows = await conn.fetch("SELECT * FROM alliances")
    terms = {r["alliance_id"]: Terms.from_row(r) for r in rows}
    members: dict[str, set[str]] = {}
    for r in await conn.fetch(
        "SELECT alliance_id, merchant_id FROM alliance_members WHERE status = 'active'"
    ):
        members.setdefault(r["alliance_id"], set()).add(r["merchant_id"])
    return terms, members
