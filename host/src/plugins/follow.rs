//! Keeping the registry in step with the store: which plugins exist, which version of each is
//! current and under which settings. At start it loads every current version; on a database
//! shared by several nodes it then follows the configuration epoch (`store::changes`), so a
//! version uploaded, a setting changed or a plugin deleted through any node is in force here
//! within a second. A node loads another node's version from the bytes in the store and
//! compiles it into its own data dir on first sight (see `artifacts::prepare`); while it does,
//! that plugin's events wait for it rather than run the version it replaces.
//!
//! A sync only reads the store and changes the registry; uploads, the compiler and the API
//! keep changing the registry themselves, at once. A sync that read before such a change may
//! briefly undo it, and the epoch moved by that change runs another sync after it.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::PluginRuntime;
use super::registry::{LoadedPlugin, Unloaded};
use crate::clock::now_ms;
use crate::model::VersionStatus;
use crate::store::{Store, StoreError};

/// A version still `compiling` after this long may have lost the node compiling it: this
/// node's compiler takes it up too.
const STUCK_COMPILE_MS: i64 = 30_000;

impl PluginRuntime {
    /// Loads every plugin's current version at start-up (from this node's compiled artifact
    /// when it has one for this engine, else by compiling it) and removes artifacts nothing
    /// uses any more. Returns how many are loaded.
    pub async fn load_all(self: &Arc<Self>, store: &Store) -> anyhow::Result<usize> {
        let current = self.sync(store).await?;
        self.prune_artifacts(&current);
        Ok(self.registry.len())
    }

    /// Follows configuration changes made through other nodes until `stop` (only on a store
    /// shared by several nodes; one node's own changes are applied where they are made).
    pub fn start_following(
        self: &Arc<Self>,
        store: Store,
        stop: CancellationToken,
    ) -> Option<JoinHandle<()>> {
        if !store.is_shared() {
            return None;
        }
        let rt = self.clone();
        Some(tokio::spawn(async move {
            let mut changes = store.config_changes().subscribe();
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    changed = changes.changed() => if changed.is_err() { return },
                }
                if let Err(e) = rt.sync(&store).await {
                    tracing::warn!(error = %e, "following plugin changes failed; trying again");
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                    changes.mark_changed();
                }
            }
        }))
    }

    /// Makes sure this node has looked for `id` in the store since it was asked: an event for
    /// a plugin created through another node may be claimed here before this node heard of it.
    /// Syncs at most once per burst of callers.
    pub async fn ensure_known(self: &Arc<Self>, store: &Store, id: &str) {
        if self.registry.knows(id) || !store.is_shared() {
            return;
        }
        let asked = self.syncs_started.load(Ordering::Acquire);
        let _turn = self.sync_turn.lock().await;
        if self.registry.knows(id) || self.syncs_done.load(Ordering::Acquire) > asked {
            return;
        }
        drop(_turn);
        if let Err(e) = self.sync(store).await {
            tracing::warn!(plugin = %id, error = %e, "looking for a plugin failed");
        }
    }

    /// Reads every plugin and its current version and brings the registry in line; returns
    /// the SHA-256 of every current version. One sync at a time.
    pub(super) async fn sync(
        self: &Arc<Self>,
        store: &Store,
    ) -> Result<HashSet<String>, StoreError> {
        let _turn = self.sync_turn.lock().await;
        let number = self.syncs_started.fetch_add(1, Ordering::AcqRel) + 1;
        let plugins = store.all_current_plugins().await?;
        let mut present = HashSet::new();
        let mut current = HashSet::new();
        let mut to_load = Vec::new();
        let mut stuck = false;
        for (plugin, version) in plugins {
            present.insert(plugin.id.clone());
            match version.status {
                VersionStatus::Compiling => {
                    stuck |= now_ms() - version.created_at > STUCK_COMPILE_MS;
                    self.registry
                        .set_unloaded(&plugin.id, Unloaded::Compiling(version.version));
                }
                VersionStatus::Failed => {
                    let why = version.failure.clone().unwrap_or_default();
                    self.registry
                        .set_unloaded(&plugin.id, Unloaded::Failed(version.version, why));
                }
                VersionStatus::Ready => {
                    current.insert(version.sha256.clone());
                    match self.registry.get(&plugin.id) {
                        // Versions only move forward: an older one read before a newer
                        // was loaded here is not a change.
                        Some(loaded) if loaded.version >= version.version => {
                            // Settings only move forward too: a listing read before this
                            // node changed them must not put the old ones back.
                            if loaded.version == version.version
                                && plugin.updated_at > loaded.updated_at
                            {
                                self.registry.update_settings(&plugin);
                            }
                        }
                        _ => {
                            self.registry.set_loading(&plugin.id);
                            to_load.push((plugin, version));
                        }
                    }
                }
            }
        }
        for id in self.registry.ids() {
            if !present.contains(&id) {
                // Only the registry entry: a plugin created on this node after the listing was
                // read is here too, and its next pass loads it again; its directory holds the
                // upload being stored. The node that deletes a plugin removes its files.
                self.registry.remove(&id);
            }
        }
        if stuck {
            self.compiler_wake.notify_one();
        }
        for (plugin, version) in to_load {
            match self.load(store, &plugin.id, &version).await {
                Ok((pre, stack)) => {
                    if self
                        .registry
                        .put_forward(LoadedPlugin::new(&plugin, pre, stack))
                    {
                        tracing::info!(plugin = %plugin.id, version = version.version, "plugin version loaded");
                    }
                }
                Err(e) => {
                    tracing::error!(plugin = %plugin.id, version = version.version, error = %e, "plugin could not be loaded");
                    self.registry.loaded_none(&plugin.id);
                    self.registry.set_unloaded(
                        &plugin.id,
                        Unloaded::Failed(version.version, format!("not loaded on this node: {e}")),
                    );
                }
            }
        }
        self.syncs_done.store(number, Ordering::Release);
        Ok(current)
    }
}
