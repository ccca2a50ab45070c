-- Times are Unix milliseconds (INTEGER) unless a column keeps a client's RFC 3339 text.
-- Every row that belongs to an account carries account_id, so isolation is one WHERE away.

CREATE TABLE accounts (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    created_at  INTEGER NOT NULL
);

CREATE TABLE api_keys (
    id          TEXT PRIMARY KEY,
    account_id  TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    key_hash    BLOB NOT NULL UNIQUE,
    prefix      TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    revoked_at  INTEGER
);
CREATE INDEX api_keys_account ON api_keys(account_id);

CREATE TABLE subscriptions (
    seq                         INTEGER PRIMARY KEY,
    id                          TEXT NOT NULL UNIQUE,
    account_id                  TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    url                         TEXT,
    plugin_id                   TEXT,
    transform_plugin_id         TEXT,
    description                 TEXT NOT NULL DEFAULT '',
    event_types                 TEXT NOT NULL,           -- JSON array
    headers                     TEXT NOT NULL,           -- JSON object
    format                      TEXT NOT NULL,
    status                      TEXT NOT NULL,
    status_reason               TEXT,
    secret                      TEXT NOT NULL,
    previous_secret             TEXT,
    previous_secret_expires_at  INTEGER,
    verify                      INTEGER NOT NULL DEFAULT 0,
    verification_token          TEXT,
    rate_limit_per_second       INTEGER,
    airy_api_secret             TEXT,
    failing_since               INTEGER,
    created_at                  INTEGER NOT NULL,
    updated_at                  INTEGER NOT NULL
);
CREATE INDEX subscriptions_account ON subscriptions(account_id, seq);
-- One Airy webhook per account.
CREATE UNIQUE INDEX subscriptions_airy ON subscriptions(account_id) WHERE airy_api_secret IS NOT NULL;

-- The matching index used at ingest: (account, event type) -> subscriptions. '*' matches all.
CREATE TABLE subscription_event_types (
    account_id        TEXT NOT NULL,
    event_type        TEXT NOT NULL,
    subscription_seq  INTEGER NOT NULL REFERENCES subscriptions(seq) ON DELETE CASCADE,
    PRIMARY KEY (account_id, event_type, subscription_seq)
) WITHOUT ROWID;
CREATE INDEX subscription_event_types_sub ON subscription_event_types(subscription_seq);

CREATE TABLE events (
    seq              INTEGER PRIMARY KEY,
    id               TEXT NOT NULL,
    account_id       TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    type             TEXT NOT NULL,
    payload          TEXT NOT NULL,
    occurred_at      TEXT NOT NULL,
    received_at      INTEGER NOT NULL,
    idempotency_key  TEXT,
    body_hash        BLOB,
    cause_plugin_id  TEXT,
    cause_event_id   TEXT,
    cause_depth      INTEGER NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX events_public_id ON events(account_id, id);
CREATE UNIQUE INDEX events_idempotency ON events(account_id, idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE INDEX events_account_type ON events(account_id, type, seq);

CREATE TABLE deliveries (
    seq               INTEGER PRIMARY KEY,
    id                TEXT NOT NULL UNIQUE,
    account_id        TEXT NOT NULL,
    event_seq         INTEGER NOT NULL REFERENCES events(seq) ON DELETE CASCADE,
    subscription_seq  INTEGER NOT NULL REFERENCES subscriptions(seq) ON DELETE CASCADE,
    status            TEXT NOT NULL,       -- pending | succeeded | failed | filtered
    attempts          INTEGER NOT NULL DEFAULT 0,
    next_attempt_at   INTEGER,
    lease_until       INTEGER,
    last_error        TEXT,
    created_at        INTEGER NOT NULL,
    updated_at        INTEGER NOT NULL
);
CREATE INDEX deliveries_due ON deliveries(status, next_attempt_at);
CREATE INDEX deliveries_subscription ON deliveries(subscription_seq, seq);
CREATE INDEX deliveries_event ON deliveries(event_seq);

CREATE TABLE attempts (
    seq            INTEGER PRIMARY KEY,
    delivery_seq   INTEGER NOT NULL REFERENCES deliveries(seq) ON DELETE CASCADE,
    attempted_at   INTEGER NOT NULL,
    duration_ms    INTEGER NOT NULL,
    status_code    INTEGER,
    error_kind     TEXT,
    error_message  TEXT,
    response_body  TEXT
);
CREATE INDEX attempts_delivery ON attempts(delivery_seq, seq);

CREATE TABLE conversations (
    account_id       TEXT NOT NULL,
    conversation_id  TEXT NOT NULL,
    customer_id      TEXT,
    source           TEXT,
    updated_at       INTEGER NOT NULL,
    PRIMARY KEY (account_id, conversation_id)
) WITHOUT ROWID;

CREATE TABLE messages (
    seq              INTEGER PRIMARY KEY,
    id               TEXT NOT NULL UNIQUE,
    account_id       TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    conversation_id  TEXT NOT NULL,
    text             TEXT NOT NULL,
    sender_id        TEXT NOT NULL,
    sender_type      TEXT NOT NULL,
    sent_at          INTEGER NOT NULL,
    event_seq        INTEGER NOT NULL REFERENCES events(seq)
);
