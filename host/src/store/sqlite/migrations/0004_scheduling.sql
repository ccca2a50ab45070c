-- Fair and ordered scheduling (see the dispatcher): per-subscription concurrency, ordering and
-- circuit breaker; per-delivery ordering key and claim token.

-- NULL: the server's default (--subscription-max-in-flight).
ALTER TABLE subscriptions ADD COLUMN max_in_flight INTEGER;
-- 'none' or 'conversation'. Plugin subscribers default to 'conversation'.
ALTER TABLE subscriptions ADD COLUMN ordering TEXT NOT NULL DEFAULT 'none';
UPDATE subscriptions SET ordering = 'conversation' WHERE plugin_id IS NOT NULL;
-- Consecutive endpoint failures, and while the breaker is tripped, when the next probe may go.
ALTER TABLE subscriptions ADD COLUMN breaker_failures INTEGER NOT NULL DEFAULT 0;
ALTER TABLE subscriptions ADD COLUMN breaker_until INTEGER;
-- Times tripped since the last success: the pause doubles each time.
ALTER TABLE subscriptions ADD COLUMN breaker_trips INTEGER NOT NULL DEFAULT 0;

-- The conversation of an ordered subscription's delivery. A pending delivery with a NULL
-- next_attempt_at is held back behind an earlier one of the same key.
ALTER TABLE deliveries ADD COLUMN ordering_key TEXT;
-- Set by each claim; an outcome is recorded only with the token of the current claim.
ALTER TABLE deliveries ADD COLUMN claim_token INTEGER;

DROP INDEX deliveries_due;
CREATE INDEX deliveries_due ON deliveries(next_attempt_at) WHERE status = 'pending';
CREATE INDEX deliveries_subscription_due ON deliveries(subscription_seq, next_attempt_at)
    WHERE status = 'pending';
CREATE INDEX deliveries_ordering ON deliveries(subscription_seq, ordering_key, seq)
    WHERE status = 'pending' AND ordering_key IS NOT NULL;
CREATE INDEX deliveries_leased ON deliveries(lease_until, subscription_seq)
    WHERE lease_until IS NOT NULL;
CREATE INDEX subscriptions_tripped ON subscriptions(breaker_until) WHERE breaker_until IS NOT NULL;
