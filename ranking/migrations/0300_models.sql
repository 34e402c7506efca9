-- ranking: the model registry. One row per trained model; the artifact lives here (bytea) so
-- every API process can load it without a shared filesystem. At most one row is 'promoted'.
CREATE TABLE IF NOT EXISTS ranking_models (
    version      text PRIMARY KEY,
    created_at   timestamptz NOT NULL DEFAULT now(),
    params       jsonb       NOT NULL DEFAULT '{}'::jsonb,
    data_since   timestamptz,
    data_until   timestamptz,
    metrics      jsonb       NOT NULL DEFAULT '{}'::jsonb,
    status       text        NOT NULL DEFAULT 'candidate'
                 CHECK (status IN ('candidate', 'promoted', 'retired')),
    artifact     bytea       NOT NULL,
    checksum     text        NOT NULL,
    promoted_at  timestamptz,
    promoted_by  text
);

CREATE UNIQUE INDEX IF NOT EXISTS ranking_models_one_promoted
    ON ranking_models (status) WHERE status = 'promoted';

-- Every promotion, manual or automatic, so a rollback knows what was live before.
CREATE TABLE IF NOT EXISTS ranking_model_promotions (
    id         bigserial PRIMARY KEY,
    version    text        NOT NULL REFERENCES ranking_models (version),
    previous   text,
    action     text        NOT NULL CHECK (action IN ('promote', 'auto_promote', 'rollback')),
    by_whom    text        NOT NULL,
    at         timestamptz NOT NULL DEFAULT now()
);
