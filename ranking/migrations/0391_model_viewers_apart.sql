-- ranking: a model's viewers (LightFM user vectors, per-viewer history rows) stored apart from what
-- every API process loads (ranking/viewer_state.py): an API process reads the artifact only, and each
-- viewer's state from Redis; the trainer reads both. Rows registered before keep everything in the
-- artifact and still load whole.
ALTER TABLE ranking_models ADD COLUMN IF NOT EXISTS viewers_oid oid;
ALTER TABLE ranking_models ADD COLUMN IF NOT EXISTS viewers_bytes bigint;
ALTER TABLE ranking_models ADD COLUMN IF NOT EXISTS viewers_checksum text;

CREATE OR REPLACE FUNCTION ranking_models_unlink_artifact() RETURNS trigger AS $$
BEGIN
    IF OLD.artifact_oid IS NOT NULL THEN
        PERFORM lo_unlink(OLD.artifact_oid);
    END IF;
    IF OLD.viewers_oid IS NOT NULL THEN
        PERFORM lo_unlink(OLD.viewers_oid);
    END IF;
    RETURN OLD;
END;
$$ LANGUAGE plpgsql;
