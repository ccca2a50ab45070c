-- The web console: sign-in sessions, and the indexes its list pages read.

-- The cookie carries a random token; only its SHA-256 is kept. account_id NULL is the admin.
-- A session made with an API key ends when that key is revoked (api_key_id, checked at lookup).
CREATE TABLE console_sessions (
    token_hash  BLOB PRIMARY KEY,
    account_id  TEXT REFERENCES accounts(id) ON DELETE CASCADE,
    api_key_id  TEXT REFERENCES api_keys(id) ON DELETE CASCADE,
    csrf_token  TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX console_sessions_expiry ON console_sessions(expires_at);

-- A subscription's deliveries filtered by status, newest first.
CREATE INDEX deliveries_subscription_status ON deliveries(subscription_seq, status, seq);
-- The overview's "deliveries settled in the last hour" by status, per account (counted from
-- the index alone).
CREATE INDEX deliveries_account_updated ON deliveries(account_id, updated_at, status);
-- An account's events newest first (the index ends with the rowid, seq), by time range, and by
-- conversation (the payload's conversation_id, as text).
CREATE INDEX events_account ON events(account_id);
CREATE INDEX events_account_received ON events(account_id, received_at);
-- (Payloads are always JSON objects: ingest checks them.)
CREATE INDEX events_conversation
    ON events(account_id, CAST(json_extract(payload, '$.conversation_id') AS TEXT));
-- The events a plugin emitted while handling an event (the event page's causation chain).
CREATE INDEX events_caused ON events(account_id, cause_event_id) WHERE cause_event_id IS NOT NULL;
