-- The change feed that keeps every node's view of the configuration current (see
-- `postgres::changes`). Each node caches what it runs from (loaded plugin versions and their
-- settings, the subscription a claimed delivery is signed for); a write to that configuration,
-- through any node or any path (API, console, compiler, listener expiry, import), bumps
-- `config_epoch.n` in its own transaction and notifies `wasmhook_config`, which PostgreSQL
-- delivers at the commit. Nodes listen for it and poll `n` as the backstop, then reload.
--
-- Triggers rather than code at each write, so that no path can forget one. One row, so that a
-- poller never sees a later change committed before an earlier one (a sequence could).
-- Writes that are not configuration (a subscription's failure streak, breaker state or listener
-- expiry, a version's engine hash) do not bump it: they happen per delivery.

CREATE TABLE config_epoch (
    id  BOOLEAN PRIMARY KEY DEFAULT true CHECK (id),
    n   BIGINT NOT NULL
);
INSERT INTO config_epoch (id, n) VALUES (true, 0);

CREATE FUNCTION wasmhook_config_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE config_epoch SET n = n + 1;
    PERFORM pg_notify('wasmhook_config', '');
    RETURN NULL;
END;
$$;

CREATE TRIGGER plugins_changed AFTER INSERT OR UPDATE OR DELETE ON plugins
    FOR EACH STATEMENT EXECUTE FUNCTION wasmhook_config_changed();
CREATE TRIGGER plugin_versions_changed AFTER INSERT OR DELETE OR UPDATE OF status ON plugin_versions
    FOR EACH STATEMENT EXECUTE FUNCTION wasmhook_config_changed();
-- A subscription's configuration: what a delivery is sent to, signed with, filtered by and
-- scheduled under. `updated_at` covers any change made through the API.
CREATE TRIGGER subscriptions_changed AFTER UPDATE ON subscriptions
    FOR EACH ROW WHEN ((OLD.url, OLD.plugin_id, OLD.transform_plugin_id, OLD.event_types, OLD.headers,
                        OLD.format, OLD.status, OLD.secret, OLD.previous_secret,
                        OLD.previous_secret_expires_at, OLD.verify, OLD.rate_limit_per_second,
                        OLD.airy_api_secret, OLD.max_in_flight, OLD.ordering, OLD.updated_at)
                       IS DISTINCT FROM
                       (NEW.url, NEW.plugin_id, NEW.transform_plugin_id, NEW.event_types, NEW.headers,
                        NEW.format, NEW.status, NEW.secret, NEW.previous_secret,
                        NEW.previous_secret_expires_at, NEW.verify, NEW.rate_limit_per_second,
                        NEW.airy_api_secret, NEW.max_in_flight, NEW.ordering, NEW.updated_at))
    EXECUTE FUNCTION wasmhook_config_changed();
CREATE TRIGGER subscriptions_deleted AFTER DELETE ON subscriptions
    FOR EACH STATEMENT EXECUTE FUNCTION wasmhook_config_changed();
