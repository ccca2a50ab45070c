//! Following configuration changes made through other nodes (see `store::changes`). The
//! migration `0002_config_changes` makes every configuration write bump `config_epoch.n` in its
//! own transaction (triggers, so no write path can forget) and notify `wasmhook_config`, which
//! PostgreSQL delivers at the commit. This node hears the notification on its listening
//! connection (see `super::listen`) and, as the backstop that correctness rests on, polls
//! `n` every [`POLL`]: a lost notification delays a change by at most that.

use std::sync::{Arc, Weak};

use deadpool_postgres::Pool;

use super::{PgStore, db};
use crate::store::StoreError;
use crate::store::changes::{ConfigChanges, POLL};

/// The channel configuration changes are notified on (named in the migration's trigger).
pub(super) const CONFIG_CHANNEL: &str = "wasmhook_config";

const READ_EPOCH: &str = "SELECT n FROM config_epoch";

/// Reads the database's configuration epoch.
async fn read_epoch(pool: &Pool) -> Result<i64, StoreError> {
    let client = pool.get().await.map_err(super::pool_error)?;
    let row = client.query_one(READ_EPOCH, &[]).await.map_err(db)?;
    Ok(row.get(0))
}

/// Polls the database's epoch every [`POLL`] and moves this node's when it moved; ends when
/// the store is closed or dropped.
pub(super) async fn poll(pool: Pool, changes: Weak<ConfigChanges>) {
    let mut seen: Option<i64> = None;
    let mut every = tokio::time::interval(POLL);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        if pool.is_closed() {
            return;
        }
        let Some(changes) = changes.upgrade() else {
            return;
        };
        match read_epoch(&pool).await {
            Ok(n) => {
                if seen.is_some_and(|s| s != n) {
                    changes.bump();
                }
                seen = Some(n);
            }
            Err(e) => tracing::debug!(error = %e, "reading the configuration epoch failed"),
        }
    }
}

impl PgStore {
    /// The database's configuration epoch (for tests: it moves with every configuration write).
    pub async fn config_epoch(&self) -> Result<i64, StoreError> {
        read_epoch(&self.pool).await
    }

    /// This node's view of configuration changes.
    pub fn changes(&self) -> Arc<ConfigChanges> {
        self.changes.clone()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::subscriptions::tests::nodes;
    use crate::model::{LogLevel, Plugin, PluginVersion, VersionStatus};
    use crate::quotas::Quotas;

    fn plugin() -> (Plugin, PluginVersion) {
        let plugin = Plugin {
            id: "plg_f".into(),
            account_id: "acc_a".into(),
            name: "f".into(),
            config: Default::default(),
            secret_keys: Default::default(),
            allowed_hosts: vec![],
            limits: Default::default(),
            log_level: LogLevel::Info,
            instances: Default::default(),
            version: 1,
            latest_version: 1,
            status: VersionStatus::Compiling,
            failure: None,
            created_at: 0,
            updated_at: 0,
        };
        let version = PluginVersion {
            version: 1,
            sha256: String::new(),
            size_bytes: 0,
            wasm_path: String::new(),
            cwasm_path: String::new(),
            engine_hash: String::new(),
            created_at: 0,
            status: VersionStatus::Compiling,
            failure: None,
        };
        (plugin, version)
    }

    /// Every configuration write moves the database's epoch, whichever node makes it, and the
    /// other node's own epoch follows (a notification, or the poll); the bookkeeping of
    /// deliveries (failure streak, circuit breaker, a listener's expiry, an artifact's engine
    /// hash) does not move it.
    #[tokio::test]
    async fn configuration_writes_move_the_epoch_and_other_nodes_follow() {
        let Some(nodes) = nodes(Quotas::UNLIMITED, 2).await else {
            return;
        };
        let (a, b) = (&nodes[0], &nodes[1]);
        let req = serde_json::from_value(serde_json::json!({
            "url": "https://example.com/hook", "event_types": ["a"]}))
        .unwrap();
        let sub = crate::subscriptions::build("acc_a", req, &Default::default()).unwrap();
        let sub = a.create_subscription(sub).await.unwrap();
        let (plugin, version) = plugin();
        a.create_plugin(plugin, version).await.unwrap();

        // Bookkeeping: the epoch stays.
        let before = a.config_epoch().await.unwrap();
        let client = a.client().await.unwrap();
        client
            .execute(
                "UPDATE subscriptions SET failing_since = 5, breaker_failures = 3,
                     breaker_until = 9, breaker_trips = 1, listen_expires_at = 7 WHERE seq = $1",
                &[&sub.seq],
            )
            .await
            .unwrap();
        a.set_plugin_engine_hash("plg_f".into(), 1, "e".into())
            .await
            .unwrap();
        assert_eq!(a.config_epoch().await.unwrap(), before);

        // Configuration, through either node: the epoch moves each time, and the node that did
        // not make the change sees its own epoch move.
        let steps: Vec<(&str, usize)> = vec![
            ("rotate a secret", 0),
            ("disable", 1),
            ("change a plugin's settings", 0),
            ("make a version ready", 1),
            ("delete the subscription", 0),
            ("delete the plugin", 1),
        ];
        for (what, through) in steps {
            let (writer, other) = if through == 0 { (a, b) } else { (b, a) };
            let db_before = writer.config_epoch().await.unwrap();
            let seen = other.changes().epoch();
            let mut moved = other.changes().subscribe();
            moved.mark_unchanged();
            match what {
                "rotate a secret" => {
                    writer
                        .update_subscription("acc_a".into(), sub.id.clone(), |s| {
                            crate::subscriptions::rotate_secret(s, 1);
                            Ok(())
                        })
                        .await
                        .unwrap();
                }
                "disable" => {
                    writer
                        .update_subscription("acc_a".into(), sub.id.clone(), |s| {
                            s.status = crate::model::SubscriptionStatus::Disabled;
                            Ok(())
                        })
                        .await
                        .unwrap();
                }
                "change a plugin's settings" => {
                    writer
                        .update_plugin("acc_a".into(), "plg_f".into(), |p| {
                            p.log_level = LogLevel::Debug
                        })
                        .await
                        .unwrap();
                }
                "make a version ready" => {
                    writer
                        .plugin_version_ready("plg_f".into(), 1, "e".into())
                        .await
                        .unwrap();
                }
                "delete the subscription" => writer
                    .delete_subscription("acc_a".into(), sub.id.clone())
                    .await
                    .unwrap(),
                "delete the plugin" => {
                    writer
                        .delete_plugin("acc_a".into(), "plg_f".into())
                        .await
                        .unwrap();
                }
                _ => unreachable!(),
            }
            assert_ne!(writer.config_epoch().await.unwrap(), db_before, "{what}");
            tokio::time::timeout(Duration::from_secs(10), moved.changed())
                .await
                .unwrap_or_else(|_| panic!("{what}: the other node never saw it"))
                .unwrap();
            assert_ne!(other.changes().epoch(), seen, "{what}");
        }
    }

    /// Without any notification (a change whose NOTIFY was lost), the poll alone moves a
    /// node's epoch.
    #[tokio::test]
    async fn the_poll_sees_a_change_no_notification_announced() {
        let Some(nodes) = nodes(Quotas::UNLIMITED, 1).await else {
            return;
        };
        let node = &nodes[0];
        // The listener moves the epoch once when it starts listening; after that, nothing
        // but the poll can move it here.
        let mut started = node.changes().subscribe();
        tokio::time::timeout(Duration::from_secs(10), started.wait_for(|n| *n >= 1))
            .await
            .expect("the listener starts")
            .unwrap();
        let seen = node.changes().epoch();
        let client = node.client().await.unwrap();
        // Changed until the node notices (the first change may come before the poll's first
        // reading, which it then takes as the starting point).
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while node.changes().epoch() == seen {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the poll never saw the change"
            );
            client
                .execute("UPDATE config_epoch SET n = n + 1", &[])
                .await
                .unwrap();
            let mut moved = node.changes().subscribe();
            let _ = tokio::time::timeout(super::POLL * 2, moved.changed()).await;
        }
    }
}
