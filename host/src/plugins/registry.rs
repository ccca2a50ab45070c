//! Plugin id → the loaded current version. Swapping an entry is atomic: an invocation holds
//! the `Arc` it started with, so calls in flight finish on the old version while new events
//! see the new one. A plugin with no loaded version yet is known here too, while its first
//! version compiles (its deliveries wait for it) or after it failed (they fail with why).
//!
//! Every entry put here is a new generation: a version swap, a settings change or a deletion
//! throws away the plugin's idle instances (see `super::reuse`), and an instance of an older
//! generation is never kept again.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use super::bindings::PluginPre;
use super::context::Pool;
use super::host::HostState;
use super::limits::Limits;
use super::reuse::{Discard, IdleInstances};
use super::stack::StackMap;
use crate::model::{InstanceMode, LogLevel, Plugin};

/// Generations of loaded plugins, unique in the process.
static GENERATIONS: AtomicU64 = AtomicU64::new(1);

fn next_generation() -> u64 {
    GENERATIONS.fetch_add(1, Ordering::Relaxed)
}

/// A plugin version ready to instantiate, with the settings it runs under.
pub struct LoadedPlugin {
    /// Plugin id.
    pub id: String,
    /// Owner.
    pub account_id: String,
    /// The version loaded.
    pub version: u32,
    /// When its settings last changed (the plugin's `updated_at`): a node following another
    /// node's changes applies settings that differ.
    pub updated_at: i64,
    /// This version with these settings, unique in the process: reused instances are keyed
    /// by it.
    pub generation: u64,
    /// Whether its instances are kept between events.
    pub instances: InstanceMode,
    pub(crate) pre: PluginPre<HostState>,
    /// Where its core modules keep their stacks: how a trap is told to be a stack overflow.
    pub(crate) stack: Arc<StackMap>,
    /// What `config-get` returns.
    pub config: BTreeMap<String, String>,
    /// Hosts outgoing HTTP may reach.
    pub allowed_hosts: Arc<Vec<String>>,
    /// Limits in force.
    pub limits: Limits,
    /// Lines below this level are not kept.
    pub log_level: LogLevel,
    /// WASI contexts kept between its invocations.
    pub(crate) contexts: Pool,
}

impl LoadedPlugin {
    pub(crate) fn new(
        plugin: &Plugin,
        pre: PluginPre<HostState>,
        stack: Arc<StackMap>,
    ) -> LoadedPlugin {
        let limits = Limits::resolve(&plugin.limits);
        LoadedPlugin {
            id: plugin.id.clone(),
            account_id: plugin.account_id.clone(),
            version: plugin.version,
            updated_at: plugin.updated_at,
            generation: next_generation(),
            instances: plugin.instances,
            pre,
            stack,
            config: plugin.config.clone(),
            allowed_hosts: Arc::new(plugin.allowed_hosts.clone()),
            limits,
            log_level: plugin.log_level,
            contexts: Pool::new(limits.log_bytes),
        }
    }

    /// This version with `overrides` merged over its configuration: for one dry run, never
    /// registered.
    pub fn with_config(&self, overrides: BTreeMap<String, String>) -> LoadedPlugin {
        let mut config = self.config.clone();
        config.extend(overrides);
        LoadedPlugin {
            id: self.id.clone(),
            account_id: self.account_id.clone(),
            version: self.version,
            updated_at: self.updated_at,
            generation: next_generation(),
            instances: self.instances,
            pre: self.pre.clone(),
            stack: self.stack.clone(),
            config,
            allowed_hosts: self.allowed_hosts.clone(),
            limits: self.limits,
            log_level: self.log_level,
            contexts: Pool::new(self.limits.log_bytes),
        }
    }
}

/// Why a plugin has no loaded version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unloaded {
    /// Its version is compiling: what runs it should wait ([`Registry::compiled`]).
    Compiling(u32),
    /// Its only versions failed to compile; the newest one's reason.
    Failed(u32, String),
}

/// The loaded plugins, the idle instances of those in `reuse` mode, and the plugins waiting
/// for a first version that runs.
pub struct Registry {
    plugins: RwLock<HashMap<String, Arc<LoadedPlugin>>>,
    pub(crate) idle: Arc<IdleInstances>,
    unloaded: RwLock<HashMap<String, Unloaded>>,
    /// Plugins whose newer current version (made current through another node) this node is
    /// loading: their events wait for it rather than run the version it replaces.
    loading: RwLock<std::collections::HashSet<String>>,
    /// Bumped on every change, for [`Registry::compiled`].
    changes: tokio::sync::watch::Sender<u64>,
}

impl Registry {
    /// An empty registry whose plugins keep their idle instances in `idle`.
    pub fn new(idle: Arc<IdleInstances>) -> Registry {
        Registry {
            plugins: Default::default(),
            idle,
            unloaded: Default::default(),
            loading: Default::default(),
            changes: tokio::sync::watch::channel(0).0,
        }
    }

    fn changed(&self) {
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Why `id` has no loaded version, if it is known to be compiling or failed.
    pub fn unloaded(&self, id: &str) -> Option<Unloaded> {
        self.unloaded
            .read()
            .expect("registry lock")
            .get(id)
            .cloned()
    }

    /// Whether events for `id` must wait for a compilation: of its first version, or of a
    /// newer current version this node is loading.
    pub fn is_compiling(&self, id: &str) -> bool {
        matches!(self.unloaded(id), Some(Unloaded::Compiling(_)))
            || self.loading.read().expect("registry lock").contains(id)
    }

    /// Records that this node is loading a newer current version of `id` (see
    /// [`Registry::is_compiling`]); [`Registry::put`] or [`Registry::loaded_none`] ends it.
    pub fn set_loading(&self, id: &str) {
        self.loading
            .write()
            .expect("registry lock")
            .insert(id.to_string());
        self.changed();
    }

    /// Ends [`Registry::set_loading`] without a new version (it could not be loaded here).
    pub fn loaded_none(&self, id: &str) {
        self.loading.write().expect("registry lock").remove(id);
        self.changed();
    }

    /// Whether this node knows `id` at all: loaded, compiling, failed or being loaded.
    pub fn knows(&self, id: &str) -> bool {
        self.get(id).is_some() || self.unloaded(id).is_some() || self.is_compiling(id)
    }

    /// Every plugin known here (loaded or not).
    pub fn ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self
            .plugins
            .read()
            .expect("registry lock")
            .keys()
            .cloned()
            .collect();
        ids.extend(self.unloaded.read().expect("registry lock").keys().cloned());
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    /// Records why a plugin has no loaded version; ignored when it has one (that version keeps
    /// running while a newer one compiles, or after a newer one failed).
    pub fn set_unloaded(&self, id: &str, why: Unloaded) {
        if self.get(id).is_some() {
            return;
        }
        self.unloaded
            .write()
            .expect("registry lock")
            .insert(id.to_string(), why);
        self.changed();
    }

    /// Why an invocation of `id` found no loaded version, and whether a later attempt may
    /// find one: one that compiles, or a fixed version uploaded after a failed one.
    pub fn not_loaded_reason(&self, id: &str) -> (String, bool) {
        match self.unloaded(id) {
            Some(Unloaded::Compiling(v)) => (
                format!("plugin {id} has no version that runs yet: version {v} is still compiling"),
                true,
            ),
            Some(Unloaded::Failed(v, why)) => (
                format!(
                    "plugin {id} has no version that runs: version {v} failed to compile: {why}"
                ),
                true,
            ),
            None => (format!("plugin {id} is not loaded (deleted?)"), false),
        }
    }

    /// Puts back what [`Registry::unloaded`] said before an upload that was not stored.
    pub fn restore_unloaded(&self, id: &str, before: Option<Unloaded>) {
        {
            let mut unloaded = self.unloaded.write().expect("registry lock");
            match before {
                Some(why) => unloaded.insert(id.to_string(), why),
                None => unloaded.remove(id),
            };
        }
        self.changed();
    }

    /// Resolves once `id` is no longer compiling (loaded, failed or deleted).
    pub async fn compiled(&self, id: &str) {
        let mut changes = self.changes.subscribe();
        while self.is_compiling(id) {
            if changes.changed().await.is_err() {
                return;
            }
        }
    }

    /// The current version of a plugin.
    pub fn get(&self, id: &str) -> Option<Arc<LoadedPlugin>> {
        self.plugins.read().expect("registry lock").get(id).cloned()
    }

    /// Installs (or replaces) a plugin; instances of the version it replaces are not reused.
    pub fn put(&self, loaded: LoadedPlugin) {
        self.install(loaded, false);
    }

    /// [`Self::put`], unless a newer version is loaded, or the same version with settings at
    /// least as new: a copy loaded from a listing read earlier must not undo what this node
    /// installed meanwhile (a version it compiled, settings changed through it). True when
    /// installed.
    pub fn put_forward(&self, loaded: LoadedPlugin) -> bool {
        self.install(loaded, true)
    }

    fn install(&self, loaded: LoadedPlugin, forward_only: bool) -> bool {
        let (id, generation) = (loaded.id.clone(), loaded.generation);
        let mut map = self.plugins.write().expect("registry lock");
        let newer_here = map.get(&id).is_some_and(|old| {
            old.version > loaded.version
                || (old.version == loaded.version && old.updated_at >= loaded.updated_at)
        });
        if forward_only && newer_here {
            drop(map);
            self.loading.write().expect("registry lock").remove(&id);
            return false;
        }
        map.insert(id.clone(), Arc::new(loaded));
        // Under the registry's lock, so that the idle set learns generations in the order
        // they were installed.
        self.idle.retire(&id, Some(generation), Discard::Version);
        drop(map);
        self.unloaded.write().expect("registry lock").remove(&id);
        self.loading.write().expect("registry lock").remove(&id);
        self.changed();
        true
    }

    /// Applies new settings (config, hosts, limits, log level, instance mode) to the loaded
    /// version; instances that ran under the old settings are not reused.
    pub fn update_settings(&self, plugin: &Plugin) {
        let mut map = self.plugins.write().expect("registry lock");
        let Some(old) = map.get(&plugin.id) else {
            return;
        };
        let mut next = LoadedPlugin::new(plugin, old.pre.clone(), old.stack.clone());
        next.version = old.version;
        let generation = next.generation;
        map.insert(plugin.id.clone(), Arc::new(next));
        let reason = match plugin.instances {
            InstanceMode::PerEvent => Discard::PerEvent,
            InstanceMode::Reuse => Discard::Settings,
        };
        self.idle.retire(&plugin.id, Some(generation), reason);
    }

    /// Forgets a deleted plugin and throws away its idle instances.
    pub fn remove(&self, id: &str) {
        let mut map = self.plugins.write().expect("registry lock");
        map.remove(id);
        self.idle.retire(id, None, Discard::Deleted);
        drop(map);
        self.unloaded.write().expect("registry lock").remove(id);
        self.loading.write().expect("registry lock").remove(id);
        self.changed();
    }

    /// How many plugins are loaded.
    pub fn len(&self) -> usize {
        self.plugins.read().expect("registry lock").len()
    }

    /// True when none is loaded.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn waiters_wake_when_the_compile_settles() {
        let idle = IdleInstances::new(Default::default(), Default::default());
        let registry = Arc::new(Registry::new(idle));
        // Not known: nothing to wait for.
        registry.compiled("plg_a").await;
        registry.set_unloaded("plg_a", Unloaded::Compiling(1));
        assert!(registry.is_compiling("plg_a"));
        let waiter = tokio::spawn({
            let registry = registry.clone();
            async move { registry.compiled("plg_a").await }
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        registry.set_unloaded("plg_a", Unloaded::Failed(1, "bad".into()));
        waiter.await.unwrap();
        assert_eq!(
            registry.unloaded("plg_a"),
            Some(Unloaded::Failed(1, "bad".into()))
        );
        registry.remove("plg_a");
        assert_eq!(registry.unloaded("plg_a"), None);
    }
}
