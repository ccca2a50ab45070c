-- `wasmhook listen`: a subscription whose deliveries are handed to a command line connected to
-- the server (never sent to an address). Non-null marks such a subscription: it is deleted once
-- this time passes with no command line connected.
ALTER TABLE subscriptions ADD COLUMN listen_expires_at INTEGER;
CREATE INDEX subscriptions_listen_expiry ON subscriptions(listen_expires_at)
    WHERE listen_expires_at IS NOT NULL;
