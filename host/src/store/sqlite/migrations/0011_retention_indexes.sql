-- Indexes for retention (`sqlite::retention`), which runs every quarter of `--retention` (at
-- most hourly). Without them each run reads whole tables, even when it finds nothing to delete:
-- - settled deliveries changed before the cutoff, oldest first: partial, so the pending part of
--   the queue is not in it, with the very condition the query uses (SQLite uses a partial index
--   only for a query whose WHERE contains its condition as written);
-- - events received before the cutoff, oldest first;
-- - messages by event: deleting an event checks that no message refers to it.
CREATE INDEX deliveries_settled ON deliveries(updated_at, seq)
    WHERE status IN ('succeeded', 'failed', 'filtered');
CREATE INDEX events_received ON events(received_at, seq);
CREATE INDEX messages_event ON messages(event_seq);
