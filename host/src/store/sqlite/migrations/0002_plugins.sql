CREATE TABLE plugins (
    id               TEXT PRIMARY KEY,
    account_id       TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    name             TEXT NOT NULL,
    config           TEXT NOT NULL DEFAULT '{}',   -- JSON object of strings
    allowed_hosts    TEXT NOT NULL DEFAULT '[]',   -- JSON array
    limits           TEXT NOT NULL DEFAULT '{}',   -- JSON object, overrides of the defaults
    current_version  INTEGER NOT NULL,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL
);
CREATE INDEX plugins_account ON plugins(account_id, created_at);

CREATE TABLE plugin_versions (
    plugin_id    TEXT NOT NULL REFERENCES plugins(id) ON DELETE CASCADE,
    version      INTEGER NOT NULL,
    sha256       TEXT NOT NULL,
    size_bytes   INTEGER NOT NULL,
    wasm_path    TEXT NOT NULL,
    cwasm_path   TEXT NOT NULL,
    engine_hash  TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    PRIMARY KEY (plugin_id, version)
) WITHOUT ROWID;

CREATE TABLE plugin_kv (
    plugin_id  TEXT NOT NULL REFERENCES plugins(id) ON DELETE CASCADE,
    key        TEXT NOT NULL,
    value      BLOB NOT NULL,
    PRIMARY KEY (plugin_id, key)
) WITHOUT ROWID;

CREATE TABLE plugin_logs (
    seq        INTEGER PRIMARY KEY,
    plugin_id  TEXT NOT NULL REFERENCES plugins(id) ON DELETE CASCADE,
    event_id   TEXT,
    level      TEXT NOT NULL,
    message    TEXT NOT NULL,
    at         INTEGER NOT NULL
);
CREATE INDEX plugin_logs_plugin ON plugin_logs(plugin_id, seq);
