-- Verified orders: what a merchant's order system reports, server to server (POST /v1/orders).
-- The only source of GMV, revenue share and alliance credit; a viewer's `purchase` event is a
-- funnel signal and never lands here. One row per (merchant, order system's order id).
CREATE TABLE orders (
    merchant_id  text NOT NULL REFERENCES merchants,
    order_id     text NOT NULL,
    viewer_id    text,                 -- the buyer's platform account; NULL once the viewer is erased
    room_id      text REFERENCES rooms,
    product_id   text NOT NULL REFERENCES products,
    deal_id      text REFERENCES deals,
    quantity     integer NOT NULL CHECK (quantity > 0),
    unit_price   numeric(12, 2) NOT NULL CHECK (unit_price > 0),
    amount       numeric(14, 2) NOT NULL CHECK (amount > 0),
    currency     char(3) NOT NULL,
    ordered_at   timestamptz NOT NULL,
    recorded_by  text NOT NULL,        -- the key id that reported it
    recorded_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (merchant_id, order_id)
);
CREATE INDEX orders_viewer ON orders (viewer_id) WHERE viewer_id IS NOT NULL;
CREATE INDEX orders_deal_viewer ON orders (deal_id, viewer_id) WHERE deal_id IS NOT NULL;

-- The order ledger: append-only. A sale is one positive entry; a refund or a cancellation is a
-- negative entry that reverses part or all of it; nothing is ever updated or deleted except the
-- delivery mark (handed to the order subscribers, i.e. the alliance's attribution) and, on erasure,
-- nothing at all (entries carry no viewer).
CREATE TABLE order_entries (
    entry_id     text PRIMARY KEY,     -- sale:<merchant>:<order> | refund:<merchant>:<order>:<refund> | cancel:<merchant>:<order>
    merchant_id  text NOT NULL,
    order_id     text NOT NULL,
    kind         text NOT NULL CHECK (kind IN ('sale', 'refund', 'cancel')),
    refund_id    text,
    amount       numeric(14, 2) NOT NULL CHECK ((kind = 'sale') = (amount > 0) AND amount <> 0),
    currency     char(3) NOT NULL,
    at           timestamptz NOT NULL,
    recorded_at  timestamptz NOT NULL DEFAULT now(),
    delivered_at timestamptz,
    FOREIGN KEY (merchant_id, order_id) REFERENCES orders
);
CREATE INDEX order_entries_order ON order_entries (merchant_id, order_id);
CREATE INDEX order_entries_undelivered ON order_entries (recorded_at) WHERE delivered_at IS NULL;

CREATE FUNCTION order_entries_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        RAISE EXCEPTION 'order_entries is append-only';
    END IF;
    IF (NEW.entry_id, NEW.merchant_id, NEW.order_id, NEW.kind, NEW.refund_id, NEW.amount, NEW.currency, NEW.at)
       IS DISTINCT FROM
       (OLD.entry_id, OLD.merchant_id, OLD.order_id, OLD.kind, OLD.refund_id, OLD.amount, OLD.currency, OLD.at) THEN
        RAISE EXCEPTION 'order_entries is append-only: only delivered_at may be set';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER order_entries_append_only BEFORE UPDATE OR DELETE ON order_entries
    FOR EACH ROW EXECUTE FUNCTION order_entries_append_only();
