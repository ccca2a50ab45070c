-- Plugin config keys whose values are secret: sealed at rest, masked in every response.
-- (Signing secrets keep their columns: the start-up pass seals the values in place.)
ALTER TABLE plugins ADD COLUMN secret_keys TEXT NOT NULL DEFAULT '[]';   -- JSON array of config keys

-- The key id the server seals new secrets with, written at each start: `wasmhook keys prune`
-- never removes it, even when no stored value uses it yet.
CREATE TABLE encryption_state (
    id              INTEGER PRIMARY KEY CHECK (id = 1),
    sealing_key_id  TEXT NOT NULL,
    started_at      INTEGER NOT NULL
);
