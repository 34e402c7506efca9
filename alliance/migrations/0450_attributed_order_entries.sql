-- Attributed sales come from verified orders only (rooms' order ledger, POST /v1/orders), never from
-- a viewer's `purchase` event: the event-fed table goes, and each verified order entry (sale, refund,
-- cancellation) that falls in a viewer's attribution window is copied here with that attribution.
-- A reversal carries the attribution of its sale. Append-only, idempotent by entry_id.
DROP TABLE attributed_orders;

CREATE TABLE attributed_order_entries (
    entry_id           text PRIMARY KEY,
    sale_entry_id      text NOT NULL,
    kind               text NOT NULL CHECK (kind IN ('sale', 'refund', 'cancel')),
    order_id           text NOT NULL,
    seller_merchant_id text NOT NULL,
    viewer_id          text,             -- NULL once the viewer is erased
    merchant_id        text NOT NULL,    -- attributed to (the code's merchant)
    store_id           text,
    staff_id           text,
    room_id            text,
    product_id         text NOT NULL,
    amount             numeric(14, 2) NOT NULL CHECK (amount <> 0),
    currency           text NOT NULL,
    at                 timestamptz NOT NULL
);
CREATE INDEX attributed_order_entries_merchant ON attributed_order_entries (merchant_id, at);
CREATE INDEX attributed_order_entries_sale ON attributed_order_entries (sale_entry_id);
