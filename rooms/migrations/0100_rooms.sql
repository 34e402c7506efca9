-- The rooms domain: merchants, their stores and staff, products, rooms and their lifecycle,
-- flash deals and their claims, one-to-one consult slots and bookings.
-- PostgreSQL is the durable truth for all of it; Redis holds the live-room index derived from it.

CREATE TABLE merchants (
    merchant_id text PRIMARY KEY,
    name        text NOT NULL,
    category    text,
    description text NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE stores (
    store_id    text PRIMARY KEY,
    merchant_id text NOT NULL REFERENCES merchants,
    name        text NOT NULL,
    city        text,
    address     text,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX stores_merchant ON stores (merchant_id, created_at);

CREATE TABLE staff (
    staff_id    text PRIMARY KEY,
    store_id    text NOT NULL REFERENCES stores,
    merchant_id text NOT NULL REFERENCES merchants,
    name        text NOT NULL,
    role        text,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX staff_store ON staff (store_id, created_at);

CREATE TABLE products (
    product_id  text PRIMARY KEY,
    merchant_id text NOT NULL REFERENCES merchants,
    title       text NOT NULL,
    price       numeric(12, 2) NOT NULL CHECK (price > 0),
    currency    char(3) NOT NULL,
    category    text,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX products_merchant ON products (merchant_id, created_at);

-- Every change a live-index reader must see bumps index_version (from one sequence), in the same
-- transaction as the change, so the Redis index can apply changes idempotently and in order.
CREATE SEQUENCE room_index_version;

CREATE TABLE rooms (
    room_id       text PRIMARY KEY,
    merchant_id   text NOT NULL REFERENCES merchants,
    title         text NOT NULL,
    host          text NOT NULL DEFAULT '',
    category      text NOT NULL,
    tags          text[] NOT NULL DEFAULT '{}',
    price_band    text NOT NULL CHECK (price_band IN ('low', 'mid', 'high', 'luxury')),
    format        text NOT NULL CHECK (format IN ('one_to_many', 'one_to_one')),
    scheduled_at  timestamptz,
    stream_url    text NOT NULL DEFAULT '',
    status        text NOT NULL DEFAULT 'scheduled' CHECK (status IN ('scheduled', 'live', 'ended')),
    started_at    timestamptz,
    ended_at      timestamptz,
    replay_url    text,
    index_version bigint NOT NULL DEFAULT nextval('room_index_version'),
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX rooms_merchant ON rooms (merchant_id, created_at DESC);
CREATE INDEX rooms_live ON rooms (status) WHERE status = 'live';
CREATE INDEX rooms_replays ON rooms (ended_at DESC) WHERE status = 'ended' AND replay_url IS NOT NULL;

-- The outbox of room changes: written in the transaction that changes the room, cleared once the
-- change is in the Redis live index (indexed) and on the room-lifecycle topic (published). A crash
-- between the PostgreSQL commit and either write leaves the row here, and the reconciler finishes it.
CREATE TABLE room_changes (
    change_id   bigserial PRIMARY KEY,
    room_id     text NOT NULL REFERENCES rooms,
    status      text NOT NULL,
    version     bigint NOT NULL,
    at          timestamptz NOT NULL DEFAULT now(),
    indexed     boolean NOT NULL DEFAULT false,
    published   boolean NOT NULL DEFAULT false
);
CREATE INDEX room_changes_pending ON room_changes (change_id) WHERE NOT (indexed AND published);

CREATE TABLE room_products (
    room_id    text NOT NULL REFERENCES rooms,
    product_id text NOT NULL REFERENCES products,
    position   integer NOT NULL DEFAULT 0,
    added_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (room_id, product_id)
);

-- Stock truth: deals.remaining, changed only by a conditional UPDATE (remaining >= quantity) in
-- the claim's transaction. Redis holds an admission gate in front of it (see rooms/deals.py).
CREATE TABLE deals (
    deal_id          text PRIMARY KEY,
    room_id          text NOT NULL REFERENCES rooms,
    merchant_id      text NOT NULL REFERENCES merchants,
    product_id       text NOT NULL REFERENCES products,
    price            numeric(12, 2) NOT NULL CHECK (price > 0),
    currency         char(3) NOT NULL,
    quantity         integer NOT NULL CHECK (quantity > 0),
    remaining        integer NOT NULL CHECK (remaining >= 0 AND remaining <= quantity),
    per_viewer_limit integer NOT NULL CHECK (per_viewer_limit > 0),
    starts_at        timestamptz NOT NULL,
    ends_at          timestamptz NOT NULL CHECK (ends_at > starts_at),
    created_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX deals_room ON deals (room_id, created_at);

-- How many units each viewer holds of a deal: the per-viewer limit is a conditional upsert on it.
CREATE TABLE deal_viewer_claims (
    deal_id   text NOT NULL REFERENCES deals,
    viewer_id text NOT NULL,
    claimed   integer NOT NULL CHECK (claimed > 0),
    PRIMARY KEY (deal_id, viewer_id)
);

CREATE TABLE deal_claims (
    claim_id     text PRIMARY KEY,
    deal_id      text NOT NULL REFERENCES deals,
    room_id      text NOT NULL,
    merchant_id  text NOT NULL,
    viewer_id    text NOT NULL,
    session_id   text,
    quantity     integer NOT NULL CHECK (quantity > 0),
    claimed_at   timestamptz NOT NULL DEFAULT now(),
    published_at timestamptz
);
CREATE INDEX deal_claims_deal ON deal_claims (deal_id);
CREATE INDEX deal_claims_unpublished ON deal_claims (claimed_at) WHERE published_at IS NULL;

-- One-to-one consults: the merchant opens slots in a one_to_one room; a viewer books one.
CREATE TABLE consult_slots (
    slot_id     text PRIMARY KEY,
    room_id     text NOT NULL REFERENCES rooms,
    merchant_id text NOT NULL REFERENCES merchants,
    staff_id    text REFERENCES staff,
    starts_at   timestamptz NOT NULL,
    ends_at     timestamptz NOT NULL CHECK (ends_at > starts_at),
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX consult_slots_room ON consult_slots (room_id, starts_at);

CREATE TABLE bookings (
    booking_id   text PRIMARY KEY,
    slot_id      text NOT NULL REFERENCES consult_slots,
    room_id      text NOT NULL REFERENCES rooms,
    merchant_id  text NOT NULL REFERENCES merchants,
    viewer_id    text NOT NULL,
    status       text NOT NULL DEFAULT 'booked' CHECK (status IN ('booked', 'cancelled', 'no_show')),
    note         text NOT NULL DEFAULT '',
    created_at   timestamptz NOT NULL DEFAULT now(),
    cancelled_at timestamptz,
    no_show_at   timestamptz
);
-- Capacity one: at most one booking that is not cancelled per slot.
CREATE UNIQUE INDEX bookings_one_per_slot ON bookings (slot_id) WHERE status <> 'cancelled';
CREATE INDEX bookings_merchant ON bookings (merchant_id);
CREATE INDEX bookings_viewer ON bookings (viewer_id);
