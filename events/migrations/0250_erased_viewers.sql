-- Erased viewers (DELETE /v1/ops/viewers/{id}): the tombstone that keeps a Kafka replay from
-- bringing an erased viewer's events back. Holds the viewer id and when it was erased, nothing else;
-- consumers drop records keyed by the viewer and produced before `erased_at`.
CREATE TABLE erased_viewers (
    viewer_id  text PRIMARY KEY,
    erased_at  timestamptz NOT NULL DEFAULT now(),
    erased_by  text NOT NULL
);
