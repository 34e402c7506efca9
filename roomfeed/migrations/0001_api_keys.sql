-- Merchant and operator keys. Only a SHA-256 of the key is stored; the key itself is shown once.
CREATE TABLE api_keys (
    key_id      text PRIMARY KEY,
    key_hash    bytea NOT NULL UNIQUE,
    role        text NOT NULL CHECK (role IN ('operator', 'merchant')),
    merchant_id text,
    label       text NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz,
    CHECK ((role = 'merchant') = (merchant_id IS NOT NULL))
);
CREATE INDEX api_keys_merchant ON api_keys (merchant_id) WHERE merchant_id IS NOT NULL;
