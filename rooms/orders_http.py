"""HTTP routes of verified orders: the order system reports sales, refunds and cancellations.

Writers: a merchant key or an order-system key (role `order_system`, issued per merchant by an
operator with `POST /v1/ops/merchants/{id}/order-keys`). Viewers never reach these routes.
"""

from __future__ import annotations

from typing import Any, Protocol

import asyncpg
import msgspec
from starlette.routing import BaseRoute

from roomfeed.auth import Principal, Role, create_key
from roomfeed.operations import Created, created, encode, operation
from roomfeed.validation import Ident
from rooms.catalog import MerchantCatalog
from rooms.inputs import order_in
from rooms.models import NewOrder, NewRefund, Order, OrderCancel, OrderKey, OrderList, OrdersQuery
from rooms.orders import OrderBook, amounts

WRITERS: tuple[Role, ...] = ("merchant", "order_system")


class OrdersDomain(Protocol):
    """What the order routes use of the rooms domain (rooms.http.Rooms)."""

    orders: OrderBook
    catalog: MerchantCatalog
    pool: asyncpg.Pool


def _recorded(order: dict[str, Any], fresh: bool) -> Any:
    """201 with where the order is read when this request recorded it; 200 when it was already."""
    if fresh:
        return created(Order, order, "/v1/orders/{order_id}")
    return encode(msgspec.convert(order, Order), 200)


_AGAIN = {200: "already recorded with this content (the order as it stands)"}


@operation(
    "POST",
    "/v1/orders",
    roles=WRITERS,
    tag="orders",
    others=_AGAIN,
    example={
        "order_id": "o-1001",
        "product_id": "prd_0123456789abcdef",
        "quantity": 1,
        "unit_price": 189.0,
        "currency": "CNY",
        "ordered_at": 1790000000000,
        "viewer_id": "v1",
    },
)
async def post_order(domain: OrdersDomain, principal: Principal, body: NewOrder) -> Created[Order]:
    """Report a verified order (the order system, server to server); idempotent by order_id.

    Checked against the merchant's product (price, currency), the room, and the deal (price, window,
    what the viewer claimed). The same order reported again answers 200 with what was recorded; the
    same order_id with other content answers 409. Amounts of 1e12 and above are refused. Only
    verified orders count as GMV, revenue share and alliance credit."""
    order = order_in(body)
    recorded, fresh = await domain.orders.record(principal.own_merchant(), order, principal.own_key())
    return _recorded(recorded, fresh)  # type: ignore[no-any-return]


@operation(
    "POST",
    "/v1/orders/{order_id}/refunds",
    roles=WRITERS,
    tag="orders",
    others={200: "this refund was already recorded (the order as it stands)"},
    example={"refund_id": "r-1", "amount": 50.0},
)
async def post_refund(
    domain: OrdersDomain, principal: Principal, order_id: Ident, body: NewRefund
) -> Created[Order]:
    """Refund part of an order (a reversing entry); idempotent by refund_id.

    409 when the order is cancelled or the refund_id was used with another amount."""
    money = amounts({"amount": body.amount})
    order, fresh = await domain.orders.reverse(
        principal.own_merchant(),
        order_id,
        "refund",
        refund_id=body.refund_id,
        amount=money["amount"],
        at=body.at / 1000 if body.at is not None else None,
    )
    return _recorded(order, fresh)  # type: ignore[no-any-return]


@operation(
    "POST",
    "/v1/orders/{order_id}/cancel",
    roles=WRITERS,
    tag="orders",
    others={200: "the order was already cancelled"},
    example={"at": 1790000000000},
)
async def post_cancel(
    domain: OrdersDomain, principal: Principal, order_id: Ident, body: OrderCancel | None = None
) -> Created[Order]:
    """Cancel an order: one reversing entry of all that is left of it; idempotent."""
    at = body.at if body is not None else None
    order, fresh = await domain.orders.reverse(
        principal.own_merchant(), order_id, "cancel", at=at / 1000 if at is not None else None
    )
    return _recorded(order, fresh)  # type: ignore[no-any-return]


@operation("GET", "/v1/orders/{order_id}", roles=WRITERS, tag="orders")
async def get_order(domain: OrdersDomain, principal: Principal, order_id: Ident) -> Order:
    """One of the merchant's orders with its entries."""
    return msgspec.convert(await domain.orders.get(principal.own_merchant(), order_id), Order)


@operation("GET", "/v1/orders", roles=WRITERS, tag="orders")
async def list_orders(domain: OrdersDomain, principal: Principal, query: OrdersQuery) -> OrderList:
    """The merchant's orders by order_id, with totals per currency."""
    merchant_id, book = principal.own_merchant(), domain.orders
    orders = await book.page(merchant_id, query.limit, query.after)
    last = orders[-1]["order_id"] if len(orders) == query.limit else None
    body = {"orders": orders, "totals": await book.totals(merchant_id), "next": last}
    return msgspec.convert(body, OrderList)


@operation("POST", "/v1/ops/merchants/{merchant_id}/order-keys", roles=("operator",), tag="orders")
async def create_order_key(
    domain: OrdersDomain, principal: Principal, merchant_id: Ident
) -> Created[OrderKey]:
    """Issue an order-system key for a merchant (shown once): it may only report that merchant's orders."""
    await domain.catalog.get_merchant(merchant_id)
    key_id, key = await create_key(domain.pool, "order_system", merchant_id, label="order system")
    return Created(
        OrderKey(key_id=key_id, key=key, merchant_id=merchant_id), location=f"/v1/ops/merchants/{merchant_id}"
    )


def routes(domain: OrdersDomain) -> list[BaseRoute]:
    operations = (post_order, list_orders, get_order, post_refund, post_cancel, create_order_key)
    return [route.bound(domain) for route in operations]
