-- Idempotency-Key: a create, claim or booking answered once per (caller, key); a retry with the same
-- key and body gets the stored answer. `status` is NULL while the first request is being answered.
CREATE TABLE idempotency_keys (
    scope        text NOT NULL,          -- the caller: role and merchant, viewer or key id
    key          text NOT NULL,
    request_hash bytea NOT NULL,         -- sha256 of method, path and body
    status       integer,
    body         bytea,
    location     text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (scope, key)
);
CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at);
