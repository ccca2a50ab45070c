-- What each attempt sent: the URL, every header (signatures included, as a JSON object) and the
-- body after any transform, the body capped at a few KiB with its full size beside it. All
-- nullable: attempts recorded before this migration, and attempts that sent no request (a
-- plugin subscriber, a transform that dropped the event), have none.
ALTER TABLE attempts ADD COLUMN request_url TEXT;
ALTER TABLE attempts ADD COLUMN request_headers TEXT;
ALTER TABLE attempts ADD COLUMN request_body TEXT;
ALTER TABLE attempts ADD COLUMN request_body_bytes INTEGER;

-- An account's deliveries newest first, in one status or in any (one page per status, merged):
-- GET /v1/deliveries.
CREATE INDEX deliveries_account_status ON deliveries(account_id, status, seq);
