-- ranking: model artifacts as PostgreSQL large objects (ranking/artifacts.py). A bytea value stops at
-- 1 GB; a large object does not (up to 4 TB), and is written and read in chunks, so an artifact never
-- has to pass through one bytea. Rows registered before keep their bytea artifact and still load.
ALTER TABLE ranking_models ADD COLUMN IF NOT EXISTS artifact_oid oid;
ALTER TABLE ranking_models ADD COLUMN IF NOT EXISTS artifact_bytes bigint;
ALTER TABLE ranking_models ALTER COLUMN artifact DROP NOT NULL;
ALTER TABLE ranking_models DROP CONSTRAINT IF EXISTS ranking_models_one_artifact;
ALTER TABLE ranking_models ADD CONSTRAINT ranking_models_one_artifact
    CHECK ((artifact IS NULL) <> (artifact_oid IS NULL));

-- A large object outlives the row that names it unless unlinked: deleting a model unlinks it.
CREATE OR REPLACE FUNCTION ranking_models_unlink_artifact() RETURNS trigger AS $$
BEGIN
    IF OLD.artifact_oid IS NOT NULL THEN
        PERFORM lo_unlink(OLD.artifact_oid);
    END IF;
    RETURN OLD;
END;
$$ LANGUAGE plpgsql;

DROP TRIGGER IF EXISTS ranking_models_unlink_artifact ON ranking_models;
CREATE TRIGGER ranking_models_unlink_artifact AFTER DELETE ON ranking_models
    FOR EACH ROW EXECUTE FUNCTION ranking_models_unlink_artifact();
