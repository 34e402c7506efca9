-- An open of an attribution code is counted once per device: the landing page's device cookie or the
-- app's device id (only a SHA-256 of it is kept). attribution_codes.opens counts the rows here.
CREATE TABLE code_opens (
    code        text NOT NULL REFERENCES attribution_codes ON DELETE CASCADE,
    device_hash bytea NOT NULL,
    first_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (code, device_hash)
);
