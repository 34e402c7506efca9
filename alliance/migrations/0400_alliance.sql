-- The alliance domain: alliances and membership, attribution codes and attributed viewers,
-- qualified visits (with the reason a visit earned nothing), attributed orders, and the
-- append-only double-entry exposure ledger with its derived balances.

CREATE TABLE alliances (
    alliance_id          text PRIMARY KEY,
    name                 text NOT NULL,
    owner_merchant_id    text NOT NULL,
    -- terms
    exchange_rate        double precision NOT NULL CHECK (exchange_rate > 0),
    min_dwell_ms         integer NOT NULL CHECK (min_dwell_ms >= 0),
    boost_share_cap      double precision NOT NULL CHECK (boost_share_cap > 0 AND boost_share_cap <= 1),
    daily_earning_cap    double precision NOT NULL CHECK (daily_earning_cap > 0),
    relevance_floor      double precision NOT NULL CHECK (relevance_floor >= 0 AND relevance_floor <= 1),
    attribution_window_h integer NOT NULL CHECK (attribution_window_h > 0),
    viewer_daily_cap     integer NOT NULL CHECK (viewer_daily_cap > 0),
    device_daily_cap     integer NOT NULL CHECK (device_daily_cap > 0),
    commission_rate      double precision NOT NULL CHECK (commission_rate >= 0 AND commission_rate <= 1),
    created_at           timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE alliance_members (
    alliance_id  text NOT NULL REFERENCES alliances (alliance_id),
    merchant_id  text NOT NULL,
    status       text NOT NULL CHECK (status IN ('invited', 'active', 'left')),
    role         text NOT NULL DEFAULT 'member' CHECK (role IN ('owner', 'member')),
    invited_at   timestamptz NOT NULL DEFAULT now(),
    joined_at    timestamptz,
    left_at      timestamptz,
    PRIMARY KEY (alliance_id, merchant_id)
);
CREATE INDEX alliance_members_merchant ON alliance_members (merchant_id);

CREATE TABLE attribution_codes (
    code         text PRIMARY KEY,
    merchant_id  text NOT NULL,
    store_id     text,
    staff_id     text,
    opens        bigint NOT NULL DEFAULT 0,
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX attribution_codes_merchant ON attribution_codes (merchant_id, created_at);

-- A viewer attributed to a merchant (store, staff) from `starts_at` until `ends_at`.
CREATE TABLE attributions (
    attribution_id bigserial PRIMARY KEY,
    viewer_id      text NOT NULL,
    session_id     text,
    merchant_id    text NOT NULL,
    store_id       text,
    staff_id       text,
    code           text,
    device_id      text,
    starts_at      timestamptz NOT NULL,
    ends_at        timestamptz NOT NULL
);
CREATE INDEX attributions_viewer ON attributions (viewer_id, starts_at DESC);
CREATE INDEX attributions_code ON attributions (code, starts_at);

-- When and from which device the alliance first saw a viewer id (burst-created viewers).
CREATE TABLE alliance_viewers (
    viewer_id     text PRIMARY KEY,
    device_id     text,
    code          text,
    first_seen_at timestamptz NOT NULL
);
CREATE INDEX alliance_viewers_device ON alliance_viewers (device_id, first_seen_at) WHERE device_id IS NOT NULL;
CREATE INDEX alliance_viewers_code ON alliance_viewers (code, first_seen_at) WHERE code IS NOT NULL;

-- Every visit by an attributed viewer to a room not of the attributing merchant, judged once.
CREATE TABLE alliance_visits (
    source_event_id  text PRIMARY KEY,
    viewer_id        text NOT NULL,
    device_id        text,
    contributor_id   text NOT NULL,
    host_merchant_id text NOT NULL,
    room_id          text NOT NULL,
    alliance_id      text,
    dwell_ms         integer NOT NULL,
    day              date NOT NULL,
    at               timestamptz NOT NULL,
    earned           boolean NOT NULL,
    reason           text NOT NULL
);
-- One qualified visit per viewer per partner room per day.
CREATE UNIQUE INDEX alliance_visits_once_a_day
    ON alliance_visits (contributor_id, viewer_id, room_id, day) WHERE earned;
CREATE INDEX alliance_visits_viewer_day ON alliance_visits (viewer_id, day) WHERE earned;
CREATE INDEX alliance_visits_device_day ON alliance_visits (device_id, day) WHERE earned;
CREATE INDEX alliance_visits_short ON alliance_visits (device_id, at) WHERE dwell_ms < 3000;
CREATE INDEX alliance_visits_contributor ON alliance_visits (contributor_id, at);

-- Purchases by attributed viewers, credited to the attributing merchant's store and staff.
CREATE TABLE attributed_orders (
    source_event_id    text PRIMARY KEY,
    order_id           text NOT NULL,
    viewer_id          text NOT NULL,
    merchant_id        text NOT NULL,
    store_id           text,
    staff_id           text,
    seller_merchant_id text NOT NULL,
    room_id            text NOT NULL,
    product_id         text NOT NULL,
    amount             numeric(14, 2) NOT NULL CHECK (amount > 0),
    currency           text NOT NULL,
    at                 timestamptz NOT NULL
);
CREATE INDEX attributed_orders_merchant ON attributed_orders (merchant_id, at);

-- The exposure ledger. One transaction per source event and kind (idempotent under replay);
-- each transaction's postings sum to zero (checked at commit); rows are never updated or deleted.
CREATE TABLE ledger_transactions (
    txn_id       bigserial PRIMARY KEY,
    source_id    text NOT NULL,
    kind         text NOT NULL CHECK (kind IN ('earned', 'delivered', 'expired')),
    merchant_id  text NOT NULL,
    alliance_id  text NOT NULL REFERENCES alliances (alliance_id),
    amount       numeric(18, 4) NOT NULL CHECK (amount > 0),
    at           timestamptz NOT NULL,
    recorded_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (source_id, kind)
);
CREATE INDEX ledger_transactions_merchant ON ledger_transactions (merchant_id, at);
CREATE INDEX ledger_transactions_at ON ledger_transactions (at);

CREATE TABLE ledger_postings (
    txn_id       bigint NOT NULL REFERENCES ledger_transactions (txn_id),
    account      text NOT NULL CHECK (account IN ('merchant', 'pool')),
    alliance_id  text NOT NULL,
    merchant_id  text,
    amount       numeric(18, 4) NOT NULL,   -- credit > 0, debit < 0
    PRIMARY KEY (txn_id, account)
);

CREATE FUNCTION ledger_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the exposure ledger is append-only (% on %)', TG_OP, TG_TABLE_NAME;
END $$;
CREATE TRIGGER ledger_transactions_append_only BEFORE UPDATE OR DELETE ON ledger_transactions
    FOR EACH ROW EXECUTE FUNCTION ledger_append_only();
CREATE TRIGGER ledger_postings_append_only BEFORE UPDATE OR DELETE ON ledger_postings
    FOR EACH ROW EXECUTE FUNCTION ledger_append_only();

CREATE FUNCTION ledger_balanced() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE total numeric; legs integer;
BEGIN
    SELECT COALESCE(sum(amount), 0), count(*) INTO total, legs FROM ledger_postings WHERE txn_id = NEW.txn_id;
    IF total <> 0 OR legs < 2 THEN
        RAISE EXCEPTION 'ledger transaction % does not balance (sum %)', NEW.txn_id, total;
    END IF;
    RETURN NULL;
END $$;
CREATE CONSTRAINT TRIGGER ledger_postings_balance AFTER INSERT ON ledger_postings
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION ledger_balanced();
CREATE CONSTRAINT TRIGGER ledger_transactions_balance AFTER INSERT ON ledger_transactions
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION ledger_balanced();

-- Balances per merchant and alliance, maintained in the same transaction as the ledger rows
-- (a read model: `Ledger.rebuild_balances` recomputes it from the postings).
CREATE TABLE ledger_balances (
    merchant_id  text NOT NULL,
    alliance_id  text NOT NULL,
    visits       bigint NOT NULL DEFAULT 0,
    earned       numeric(18, 4) NOT NULL DEFAULT 0,
    delivered    numeric(18, 4) NOT NULL DEFAULT 0,
    expired      numeric(18, 4) NOT NULL DEFAULT 0,
    PRIMARY KEY (merchant_id, alliance_id)
);
