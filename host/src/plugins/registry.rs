//! Plugin id → the loaded current version. Swapping an entry is atomic: an invocation holds
//! the `Arc` it started with, so calls in flight finish on the old version while new events
//! see the new one.
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

/// The loaded plugins, and the idle instances of those in `reuse` mode.
pub struct Registry {
    plugins: RwLock<HashMap<String, Arc<LoadedPlugin>>>,
    pub(crate) idle: Arc<IdleInstances>,
}

impl Registry {
    /// An empty registry whose plugins keep their idle instances in `idle`.
    pub fn new(idle: Arc<IdleInstances>) -> Registry {
        Registry {
            plugins: Default::default(),
            idle,
        }
    }

    /// The current version of a plugin.
    pub fn get(&self, id: &str) -> Option<Arc<LoadedPlugin>> {
        self.plugins.read().expect("registry lock").get(id).cloned()
    }

    /// Installs (or replaces) a plugin; instances of the version it replaces are not reused.
    pub fn put(&self, loaded: LoadedPlugin) {
        let (id, generation) = (loaded.id.clone(), loaded.generation);
        let mut map = self.plugins.write().expect("registry lock");
        map.insert(id.clone(), Arc::new(loaded));
        // Under the registry's lock, so that the idle set learns generations in the order
        // they were installed.
        self.idle.retire(&id, Some(generation), Discard::Version);
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
