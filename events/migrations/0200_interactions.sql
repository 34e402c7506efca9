-- events: the durable interaction log (ranking reads it) and the event-id ledger that makes it unique.
--
-- `interactions` is partitioned by day on ts so old days are dropped, not deleted. A unique key on a
-- partitioned table must contain the partition key, and (event_id, ts) would let a retried event with
-- a different ts in twice; uniqueness by event_id alone lives in `event_ids` instead (see docs/events.md).
CREATE TABLE interactions (
    event_id    text        NOT NULL,
    type        text        NOT NULL,
    viewer_id   text        NOT NULL,
    session_id  text        NOT NULL,
    room_id     text        NOT NULL,
    merchant_id text,
    ts          timestamptz NOT NULL,
    dwell_ms    integer,
    amount      numeric(14, 2),
    payload     jsonb       NOT NULL DEFAULT '{}'::jsonb,
    device_id   text,
    received_at timestamptz NOT NULL
) PARTITION BY RANGE (ts);

CREATE INDEX interactions_viewer_ts ON interactions (viewer_id, ts);
CREATE INDEX interactions_room_ts ON interactions (room_id, ts);
CREATE INDEX interactions_type_ts ON interactions (type, ts);

-- One row per event ever archived; pruned past the ingest age limit (7 days) plus a margin.
CREATE TABLE event_ids (
    event_id    text        PRIMARY KEY,
    ts          timestamptz NOT NULL,
    archived_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX event_ids_archived_at ON event_ids (archived_at);
