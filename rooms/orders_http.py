"""HTTP routes of verified orders: the order system reports sales, refunds and cancellations.

Writers: a merchant key or an order-system key (role `order_system`, issued per merchant by an
operator with `POST /v1/ops/merchants/{id}/order-keys`). Viewers never reach these routes.
"""

from __future__ import annotations

from typing import Protocol

import asyncpg
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from roomfeed.auth import Role, create_key, require
from roomfeed.errors import NotFound
from roomfeed.http import bound, json, query_int, read_json
from roomfeed.validation import ID_PATTERN, Body
from rooms.catalog import MerchantCatalog
from rooms.orders import EPOCH_MS_MAX, OrderBook, money_field, read_order

WRITERS: tuple[Role, ...] = ("merchant", "order_system")


class OrdersDomain(Protocol):
    """What the order routes use of the rooms domain (rooms.http.Rooms)."""

    orders: OrderBook
    catalog: MerchantCatalog
    pool: asyncpg.Pool


def _order_id(request: Request) -> str:
    value = str(request.path_params["order_id"])
    if not ID_PATTERN.match(value):
        raise NotFound("no such order")
    return value


async def post_order(request: Request, domain: OrdersDomain) -> Response:
    """Report a verified order (the order system, server to server); idempotent by order_id.
    ---
    tags: [orders]
    summary: Report an order
    description: >
      Checked against the merchant's product (price, currency), the room, and the deal (price, window,
      what the viewer claimed). The same order reported again answers 200 with what was recorded;
      the same order_id with other content answers 409. Amounts of 1e12 and above are refused.
      Only verified orders count as GMV, revenue share and alliance credit.
    requestBody:
      required: true
      content:
        application/json:
          schema:
            type: object
            required: [order_id, product_id, quantity, unit_price, currency, ordered_at]
            properties:
              order_id: {type: string, pattern: '^[A-Za-z0-9_.:-]{1,64}$', description: the order system's id}
              product_id: {type: string, pattern: '^[A-Za-z0-9_.:-]{1,64}$'}
              quantity: {type: integer, minimum: 1, maximum: 100000}
              unit_price: {type: number, minimum: 0.01, maximum: 999999999999.99, description: the product's (or deal's) price}
              amount: {type: number, description: "optional; must equal unit_price x quantity"}
              currency: {type: string, pattern: '^[A-Z]{3}$'}
              ordered_at: {type: integer, description: epoch ms}
              viewer_id: {type: string, pattern: '^[A-Za-z0-9_.:-]{1,64}$', description: the buyer's platform account}
              room_id: {type: string, pattern: '^[A-Za-z0-9_.:-]{1,64}$'}
              deal_id: {type: string, pattern: '^[A-Za-z0-9_.:-]{1,64}$'}
          example: {order_id: "o-1001", product_id: "prd_0123456789abcdef", quantity: 1, unit_price: 189.0,
                    currency: "CNY", ordered_at: 1790000000000, viewer_id: "v1"}
    responses:
      201: {description: the order with its entries}
      200: {description: the order was already recorded with this content}
      409: {description: order_id already recorded with other content}
      422: {description: a field does not match the catalogue}
    """
    principal = await require(request, *WRITERS)
    order = read_order(await read_json(request))
    assert principal.merchant_id is not None and principal.key_id is not None
    recorded, created = await domain.orders.record(principal.merchant_id, order, principal.key_id)
    return json(recorded, status=201 if created else 200)


async def post_refund(request: Request, domain: OrdersDomain) -> Response:
    """Refund part of an order (a reversing entry); idempotent by refund_id.
    ---
    tags: [orders]
    summary: Refund an order
    requestBody:
      required: true
      content:
        application/json:
          schema:
            type: object
            required: [refund_id, amount]
            properties:
              refund_id: {type: string, pattern: '^[A-Za-z0-9_.:-]{1,64}$'}
              amount: {type: number, minimum: 0.01, maximum: 999999999999.99, description: at most what is left of the order}
              at: {type: integer, description: epoch ms (default now)}
          example: {refund_id: "r-1", amount: 50.0}
    responses:
      201: {description: the order with its entries}
      200: {description: this refund was already recorded}
      409: {description: the order is cancelled, or refund_id was used with another amount}
    """
    principal = await require(request, *WRITERS)
    order_id = _order_id(request)
    body = Body(await read_json(request))
    refund_id = body.ident("refund_id")
    amount = money_field(body, "amount")
    at = body.integer("at", required=False, minimum=0, maximum=EPOCH_MS_MAX)
    body.finish()
    assert principal.merchant_id is not None
    order, created = await domain.orders.reverse(
        principal.merchant_id,
        order_id,
        "refund",
        refund_id=refund_id,
        amount=amount,
        at=at / 1000 if at is not None else None,
    )
    return json(order, status=201 if created else 200)


async def post_cancel(request: Request, domain: OrdersDomain) -> Response:
    """Cancel an order: one reversing entry of all that is left of it; idempotent.
    ---
    tags: [orders]
    summary: Cancel an order
    requestBody:
      required: false
      content:
        application/json:
          schema:
            type: object
            properties:
              at: {type: integer, description: epoch ms (default now)}
          example: {at: 1790000000000}
    responses:
      201: {description: the order with its entries}
      200: {description: the order was already cancelled}
    """
    principal = await require(request, *WRITERS)
    order_id = _order_id(request)
    raw = await request.body()
    at = None
    if raw.strip():
        body = Body(await read_json(request))
        at = body.integer("at", required=False, minimum=0, maximum=EPOCH_MS_MAX)
        body.finish()
    assert principal.merchant_id is not None
    order, created = await domain.orders.reverse(
        principal.merchant_id, order_id, "cancel", at=at / 1000 if at is not None else None
    )
    return json(order, status=201 if created else 200)


async def get_order(request: Request, domain: OrdersDomain) -> Response:
    """One of the merchant's orders with its entries.
    ---
    tags: [orders]
    summary: Get an order
    responses:
      200: {description: the order}
    """
    principal = await require(request, *WRITERS)
    assert principal.merchant_id is not None
    return json(await domain.orders.get(principal.merchant_id, _order_id(request)))


async def list_orders(request: Request, domain: OrdersDomain) -> Response:
    """The merchant's orders by order_id (`?after=<order_id>&limit=N`), with totals per currency.
    ---
    tags: [orders]
    summary: List orders
    responses:
      200: {description: "{orders: [...], totals: [{currency, orders, gross, refunds, cancellations, reversed, net}]}"}
    """
    principal = await require(request, *WRITERS)
    assert principal.merchant_id is not None
    limit = query_int(request, "limit", 100, 1, 500)
    after = request.query_params.get("after")
    if after is not None and not ID_PATTERN.match(after):
        after = None
    book = domain.orders
    return json(
        {
            "orders": await book.page(principal.merchant_id, limit, after),
            "totals": await book.totals(principal.merchant_id),
        }
    )


async def create_order_key(request: Request, domain: OrdersDomain) -> Response:
    """Issue an order-system key for a merchant (shown once): it may only report that merchant's orders.
    ---
    tags: [orders]
    summary: Issue an order-system key
    requestBody:
      required: false
      content:
        application/json:
          schema: {type: object, description: no fields}
          example: {}
    responses:
      201: {description: "{key_id, key, merchant_id}"}
    """
    await require(request, "operator")
    merchant_id = str(request.path_params["merchant_id"])
    if not ID_PATTERN.match(merchant_id):
        raise NotFound("no such merchant")
    await domain.catalog.get_merchant(merchant_id)
    key_id, key = await create_key(domain.pool, "order_system", merchant_id, label="order system")
    return json({"key_id": key_id, "key": key, "merchant_id": merchant_id}, status=201)


def routes(domain: OrdersDomain) -> list[BaseRoute]:
    return [
        Route("/v1/orders", bound(post_order, domain), methods=["POST"]),
        Route("/v1/orders", bound(list_orders, domain), methods=["GET"]),
        Route("/v1/orders/{order_id}", bound(get_order, domain), methods=["GET"]),
        Route("/v1/orders/{order_id}/refunds", bound(post_refund, domain), methods=["POST"]),
        Route("/v1/orders/{order_id}/cancel", bound(post_cancel, domain), methods=["POST"]),
        Route(
            "/v1/ops/merchants/{merchant_id}/order-keys", bound(create_order_key, domain), methods=["POST"]
        ),
    ]
