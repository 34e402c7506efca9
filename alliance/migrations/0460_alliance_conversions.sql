-- Conversion counts most (issue 16, item 2): a counted visit that led to a verified order with the
-- host (rooms' order ledger, attributed in attributed_order_entries) earns `conversion_weight` x the
-- exchange rate on top of its visit credit. The bonus is part of the visit's `amount` (held,
-- confirmed and clawed back with it); `conversion_entry_id` is the sale that converted it (one visit
-- per sale, one sale per visit), `conversion_amount` the bonus that stands (0 once the sale was
-- refunded or cancelled in full).
ALTER TABLE alliances
    ADD COLUMN conversion_weight double precision NOT NULL DEFAULT 1.0
        CHECK (conversion_weight >= 0 AND conversion_weight <= 10);

ALTER TABLE alliance_visits
    ADD COLUMN conversion_entry_id text,
    ADD COLUMN conversion_amount   numeric(18, 4) NOT NULL DEFAULT 0;
CREATE UNIQUE INDEX alliance_visits_conversion ON alliance_visits (conversion_entry_id)
    WHERE conversion_entry_id IS NOT NULL;

CREATE INDEX attributed_order_entries_viewer ON attributed_order_entries (viewer_id, seller_merchant_id, at)
    WHERE kind = 'sale';
