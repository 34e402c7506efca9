-- feed/: ranking config versions (audited), experiments, viewer blocks, sessions.

CREATE TABLE feed_ranking_configs (
    version     integer PRIMARY KEY,
    config      jsonb NOT NULL,
    diff        jsonb NOT NULL,
    author      text NOT NULL,
    note        text NOT NULL DEFAULT '',
    rollback_of integer,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE feed_experiments (
    experiment_id text PRIMARY KEY,
    name          text NOT NULL,
    variants      jsonb NOT NULL,
    status        text NOT NULL DEFAULT 'running' CHECK (status IN ('running', 'stopped')),
    author        text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    stopped_at    timestamptz
);
CREATE INDEX feed_experiments_running ON feed_experiments (created_at) WHERE status = 'running';

CREATE TABLE feed_blocks (
    viewer_id   text NOT NULL,
    merchant_id text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (viewer_id, merchant_id)
);

CREATE TABLE feed_sessions (
    session_id  text PRIMARY KEY,
    viewer_id   text NOT NULL,
    entry       jsonb NOT NULL,
    attribution jsonb,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX feed_sessions_viewer ON feed_sessions (viewer_id, created_at);
