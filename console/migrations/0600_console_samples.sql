-- The console's own memory: periodic snapshots of the marketplace numbers and of each merchant's
-- alliance account, so dashboards draw time series (live stats in Redis keep only rolling windows).
CREATE TABLE console_samples (
    kind    text        NOT NULL CHECK (kind IN ('marketplace', 'alliance')),
    subject text        NOT NULL DEFAULT '',   -- '' for marketplace, merchant_id for alliance
    at      timestamptz NOT NULL,
    data    jsonb       NOT NULL,
    PRIMARY KEY (kind, subject, at)
);
CREATE INDEX console_samples_recent ON console_samples (kind, at);
