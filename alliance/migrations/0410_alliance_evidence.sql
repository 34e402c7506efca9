-- Evidence that is costly to fake, and credit that is provisional until it has held.
--
-- A qualified visit's credit is posted to the merchant's *held* account first ('provisional'),
-- moves to its spendable account when the holding period passes without evidence of farming
-- ('confirmed'), or goes back to the pool ('clawed_back', from held or, when later evidence comes
-- after confirmation, from the spendable account). Only spendable credit is paid back as exposure.
-- 'earned' stays for transactions recorded before holding existed (they credited the merchant at once).

ALTER TABLE ledger_transactions DROP CONSTRAINT ledger_transactions_kind_check;
ALTER TABLE ledger_transactions ADD CONSTRAINT ledger_transactions_kind_check
    CHECK (kind IN ('earned', 'provisional', 'confirmed', 'clawed_back', 'delivered', 'expired'));

ALTER TABLE ledger_postings DROP CONSTRAINT ledger_postings_account_check;
ALTER TABLE ledger_postings ADD CONSTRAINT ledger_postings_account_check
    CHECK (account IN ('merchant', 'held', 'pool'));

ALTER TABLE ledger_balances
    ADD COLUMN held        numeric(18, 4) NOT NULL DEFAULT 0,
    ADD COLUMN clawed_back numeric(18, 4) NOT NULL DEFAULT 0,
    ADD COLUMN orders      bigint NOT NULL DEFAULT 0;

-- What the server knows of a viewer beyond its events: the account's age from the platform's
-- token (when the token carries it) and the device of the request that started its session.
ALTER TABLE alliance_viewers ADD COLUMN account_created_at timestamptz;
ALTER TABLE attributions ADD COLUMN account_created_at timestamptz;

-- A visit is one enter of one room (visit_id = the enter's event id); it is judged once, by the
-- heartbeat that qualifies it or by its leave, whichever comes first.
ALTER TABLE alliance_visits
    ADD COLUMN visit_id        text,
    ADD COLUMN session_id      text,
    ADD COLUMN code            text,
    ADD COLUMN young_account   boolean NOT NULL DEFAULT false,
    ADD COLUMN declared_dwell_ms integer,
    ADD COLUMN amount          numeric(18, 4) NOT NULL DEFAULT 0,
    -- For visits that earned: held until `hold_until`, then confirmed or clawed back (and why).
    ADD COLUMN state           text CHECK (state IN ('held', 'confirmed', 'clawed_back')),
    ADD COLUMN hold_until      timestamptz,
    ADD COLUMN settled_at      timestamptz,
    ADD COLUMN clawback_reason text;
UPDATE alliance_visits SET state = 'confirmed', settled_at = at WHERE earned AND state IS NULL;
CREATE UNIQUE INDEX alliance_visits_visit ON alliance_visits (visit_id) WHERE visit_id IS NOT NULL;
CREATE INDEX alliance_visits_held ON alliance_visits (hold_until) WHERE state = 'held';
CREATE INDEX alliance_visits_host ON alliance_visits (host_merchant_id, at) WHERE earned;
CREATE INDEX alliance_visits_code ON alliance_visits (code, at) WHERE earned AND code IS NOT NULL;

-- The relevance floor is now a share of the page's predicted enter probability (up to 2: "at
-- least twice as wanted as the page's rooms").
ALTER TABLE alliances DROP CONSTRAINT alliances_relevance_floor_check;
ALTER TABLE alliances ADD CONSTRAINT alliances_relevance_floor_check
    CHECK (relevance_floor >= 0 AND relevance_floor <= 2);
