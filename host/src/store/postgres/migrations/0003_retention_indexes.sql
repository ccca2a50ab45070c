-- Indexes for retention (`postgres::retention`), which runs every quarter of `--retention` (at
-- most hourly). Without them each run reads whole tables, even when it finds nothing to delete:
-- - settled deliveries changed before the cutoff, oldest first: partial, so the pending part of
--   the queue (the hot rows) is not in it, with the same condition as the query's;
-- - events received before the cutoff, oldest first;
-- - messages by event: deleting an event checks that no message refers to it (the query's NOT
--   EXISTS, and the foreign key's own check for each deleted row).
-- Built inside the migration's transaction (not CONCURRENTLY): on a large installation the
-- upgrade's `wasmhook migrate` holds writes to these tables while they build.
CREATE INDEX deliveries_settled ON deliveries(updated_at, seq)
    WHERE status IN ('succeeded', 'failed', 'filtered');
CREATE INDEX events_received ON events(received_at, seq);
CREATE INDEX messages_event ON messages(event_seq);
