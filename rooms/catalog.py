"""Merchants and what they own off-air: stores, staff and the product catalogue.

Owns `MerchantCatalog(pool)`: the writes and reads behind the merchant routes, and the contract
other domains use: `merchant_features()` (feature tokens for training), `exists(merchant_id)`,
`store_and_staff(merchant_id, store_id, staff_id)`. Every read and write of a merchant's object is
scoped by its merchant_id: another merchant's object is simply "not found".
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import asyncpg

from roomfeed.errors import NotFound, ValidationFailed
from roomfeed.ids import new_id
from roomfeed.paging import keyset_page, page, position


def _json(*columns: str) -> Callable[[Mapping[str, Any]], dict[str, Any]]:
    """A row as its API answer: these columns as they are, then `created_at` in epoch seconds."""

    def as_json(row: Mapping[str, Any]) -> dict[str, Any]:
        answer = {column: row[column] for column in columns}
        created = row["created_at"]
        answer["created_at"] = created.timestamp() if created is not None else None
        return answer

    return as_json


merchant_json = _json("merchant_id", "name", "category", "description")
store_json = _json("store_id", "name", "city", "address")
staff_json = _json("staff_id", "store_id", "name", "role")
_product_columns = _json("product_id", "title", "price", "currency", "category")


def product_json(row: Mapping[str, Any]) -> dict[str, Any]:
    return _product_columns(row) | {"price": float(row["price"])}  # NUMERIC arrives as Decimal


class MerchantCatalog:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    # --- merchants (operators create them) -----------------------------------------------------

    async def create_merchant(self, name: str, category: str | None, description: str = "") -> dict[str, Any]:
        row = await self.pool.fetchrow(
            "INSERT INTO merchants (merchant_id, name, category, description) VALUES ($1, $2, $3, $4) "
            "RETURNING *",
            new_id("mer"),
            name,
            category,
            description,
        )
        return merchant_json(row)

    async def list_merchants(
        self, limit: int = 100, after: str | None = None
    ) -> tuple[list[dict[str, Any]], str | None]:
        """Merchants by id, a page of `limit` after the cursor `after`, and the next page's cursor."""
        at = position(after, tuple[str])
        rows = await self.pool.fetch(
            "SELECT * FROM merchants WHERE ($1::text IS NULL OR merchant_id > $1) ORDER BY merchant_id LIMIT $2",
            at[0] if at else None,
            limit + 1,
        )
        kept, following = page(rows, limit, lambda r: (r["merchant_id"],))
        return [merchant_json(r) for r in kept], following

    async def _one(
        self,
        sql: str,
        args: tuple[str, ...],
        missing: str,
        to_json: Callable[[Mapping[str, Any]], dict[str, Any]],
    ) -> dict[str, Any]:
        """The one row `sql` finds as JSON, or 404 `missing` (another merchant's row is not found)."""
        row = await self.pool.fetchrow(sql, *args)
        if row is None:
            raise NotFound(missing)
        return to_json(row)

    async def get_merchant(self, merchant_id: str) -> dict[str, Any]:
        return await self._one(
            "SELECT * FROM merchants WHERE merchant_id = $1",
            (merchant_id,),
            "no such merchant",
            merchant_json,
        )

    async def get_store(self, merchant_id: str, store_id: str) -> dict[str, Any]:
        return await self._one(
            "SELECT * FROM stores WHERE store_id = $1 AND merchant_id = $2",
            (store_id, merchant_id),
            "no such store",
            store_json,
        )

    async def get_staff(self, merchant_id: str, store_id: str, staff_id: str) -> dict[str, Any]:
        return await self._one(
            "SELECT * FROM staff WHERE staff_id = $1 AND store_id = $2 AND merchant_id = $3",
            (staff_id, store_id, merchant_id),
            "no such staff member",
            staff_json,
        )

    async def get_product(self, merchant_id: str, product_id: str) -> dict[str, Any]:
        return await self._one(
            "SELECT * FROM products WHERE product_id = $1 AND merchant_id = $2",
            (product_id, merchant_id),
            "no such product",
            product_json,
        )

    async def exists(self, merchant_id: str) -> bool:
        return bool(
            await self.pool.fetchval(
                "SELECT EXISTS (SELECT 1 FROM merchants WHERE merchant_id = $1)", merchant_id
            )
        )

    # --- stores and staff ----------------------------------------------------------------------

    async def create_store(
        self, merchant_id: str, name: str, city: str | None, address: str | None
    ) -> dict[str, Any]:
        row = await self.pool.fetchrow(
            "INSERT INTO stores (store_id, merchant_id, name, city, address) VALUES ($1, $2, $3, $4, $5) "
            "RETURNING *",
            new_id("sto"),
            merchant_id,
            name,
            city,
            address,
        )
        return store_json(row)

    async def list_stores(
        self, merchant_id: str, limit: int = 100, after: str | None = None
    ) -> tuple[list[dict[str, Any]], str | None]:
        """The merchant's stores, oldest first: a page and the next page's cursor."""
        rows, following = await keyset_page(
            self.pool,
            "SELECT * FROM stores WHERE merchant_id = $1"
            " AND ($2::timestamptz IS NULL OR (created_at, store_id) > ($2, $3::text))"
            " ORDER BY created_at, store_id LIMIT $4",
            (merchant_id,),
            after=after,
            limit=limit,
            key=("created_at", "store_id"),
        )
        return [store_json(r) for r in rows], following

    async def add_staff(self, merchant_id: str, store_id: str, name: str, role: str | None) -> dict[str, Any]:
        row = await self.pool.fetchrow(
            """
            INSERT INTO staff (staff_id, store_id, merchant_id, name, role)
            SELECT $1, store_id, merchant_id, $4, $5 FROM stores WHERE store_id = $2 AND merchant_id = $3
            RETURNING *
            """,
            new_id("stf"),
            store_id,
            merchant_id,
            name,
            role,
        )
        if row is None:
            raise NotFound("no such store")
        return staff_json(row)

    async def list_staff(
        self, merchant_id: str, store_id: str, limit: int = 100, after: str | None = None
    ) -> tuple[list[dict[str, Any]], str | None]:
        """A store's staff, oldest first: a page and the next page's cursor."""
        async with self.pool.acquire() as conn:
            if not await conn.fetchval(
                "SELECT EXISTS (SELECT 1 FROM stores WHERE store_id = $1 AND merchant_id = $2)",
                store_id,
                merchant_id,
            ):
                raise NotFound("no such store")
            rows, following = await keyset_page(
                conn,
                "SELECT * FROM staff WHERE store_id = $1 AND merchant_id = $2"
                " AND ($3::timestamptz IS NULL OR (created_at, staff_id) > ($3, $4::text))"
                " ORDER BY created_at, staff_id LIMIT $5",
                (store_id, merchant_id),
                after=after,
                limit=limit,
                key=("created_at", "staff_id"),
            )
        return [staff_json(r) for r in rows], following

    async def store_and_staff(self, merchant_id: str, store_id: str | None, staff_id: str | None) -> bool:
        """Do this store and this staff member (either may be None) belong to this merchant?"""
        if store_id is None and staff_id is None:
            return await self.exists(merchant_id)
        return bool(
            await self.pool.fetchval(
                """
                SELECT ($2::text IS NULL OR EXISTS (SELECT 1 FROM stores WHERE store_id = $2 AND merchant_id = $1))
                   AND ($3::text IS NULL OR EXISTS (
                        SELECT 1 FROM staff WHERE staff_id = $3 AND merchant_id = $1
                           AND ($2::text IS NULL OR store_id = $2)))
                """,
                merchant_id,
                store_id,
                staff_id,
            )
        )

    # --- products ------------------------------------------------------------------------------

    async def create_product(
        self, merchant_id: str, title: str, price: float, currency: str, category: str | None
    ) -> dict[str, Any]:
        row = await self.pool.fetchrow(
            "INSERT INTO products (product_id, merchant_id, title, price, currency, category) "
            "VALUES ($1, $2, $3, $4, $5, $6) RETURNING *",
            new_id("prd"),
            merchant_id,
            title,
            price,
            currency,
            category,
        )
        return product_json(row)

    async def list_products(
        self, merchant_id: str, limit: int = 100, after: str | None = None
    ) -> tuple[list[dict[str, Any]], str | None]:
        """The merchant's catalogue, oldest first: a page and the next page's cursor."""
        rows, following = await keyset_page(
            self.pool,
            "SELECT * FROM products WHERE merchant_id = $1"
            " AND ($2::timestamptz IS NULL OR (created_at, product_id) > ($2, $3::text))"
            " ORDER BY created_at, product_id LIMIT $4",
            (merchant_id,),
            after=after,
            limit=limit,
            key=("created_at", "product_id"),
        )
        return [product_json(r) for r in rows], following

    async def own_products(self, merchant_id: str, product_ids: list[str]) -> set[str]:
        rows = await self.pool.fetch(
            "SELECT product_id FROM products WHERE merchant_id = $1 AND product_id = ANY($2::text[])",
            merchant_id,
            product_ids,
        )
        return {r["product_id"] for r in rows}

    async def categories(self, merchant_ids: list[str]) -> dict[str, str | None]:
        """merchant_id → its category: the one its profile names, else the one most of its rooms have
        (None: neither). The alliance compares contributors within a category (never_converts)."""
        rows = await self.pool.fetch(
            """
            SELECT m.merchant_id,
                   coalesce(m.category,
                            (SELECT r.category FROM rooms r
                              WHERE r.merchant_id = m.merchant_id AND r.category IS NOT NULL
                              GROUP BY r.category ORDER BY count(*) DESC, r.category LIMIT 1)) AS category
              FROM merchants m WHERE m.merchant_id = ANY($1::text[])
            """,
            merchant_ids,
        )
        return {r["merchant_id"]: r["category"] for r in rows}

    # --- features for ranking ------------------------------------------------------------------

    async def merchant_features(self) -> dict[str, list[str]]:
        """merchant_id → feature tokens from its profile and its rooms (most used values first)."""
        rows = await self.pool.fetch(
            """
            SELECT m.merchant_id, m.category AS merchant_category,
                   array_agg(DISTINCT r.category) FILTER (WHERE r.category IS NOT NULL) AS categories,
                   array_agg(DISTINCT r.price_band) FILTER (WHERE r.price_band IS NOT NULL) AS bands,
                   array_agg(DISTINCT r.format) FILTER (WHERE r.format IS NOT NULL) AS formats,
                   array_agg(DISTINCT r.host) FILTER (WHERE r.host <> '') AS hosts,
                   (SELECT array_agg(DISTINCT t) FROM rooms r2, unnest(r2.tags) t
                     WHERE r2.merchant_id = m.merchant_id) AS tags
              FROM merchants m LEFT JOIN rooms r ON r.merchant_id = m.merchant_id
             GROUP BY m.merchant_id, m.category
            """
        )
        features: dict[str, list[str]] = {}
        for r in rows:
            categories = set(r["categories"] or ())
            if r["merchant_category"]:
                categories.add(r["merchant_category"])
            tokens = [f"category:{c}" for c in sorted(categories)]
            tokens += [f"price:{b}" for b in sorted(r["bands"] or ())]
            tokens += [f"tag:{t}" for t in sorted(r["tags"] or ())]
            tokens += [f"format:{f}" for f in sorted(r["formats"] or ())]
            tokens += [f"host:{h}" for h in sorted(r["hosts"] or ())]
            features[r["merchant_id"]] = tokens
        return features


def require_known(found: set[str], wanted: list[str], field: str) -> None:
    missing = [p for p in wanted if p not in found]
    if missing:
        raise ValidationFailed(
            "unknown product ids: " + ", ".join(missing[:10]),
            fields={field: "unknown: " + ", ".join(missing[:10])},
        )
