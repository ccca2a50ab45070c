//! Plugin id → the loaded current version. Swapping an entry is atomic: an invocation holds
//! the `Arc` it started with, so calls in flight finish on the old version while new events
//! see the new one.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};

use super::bindings::PluginPre;
use super::context::Pool;
use super::host::HostState;
use super::limits::Limits;
use crate::model::{LogLevel, Plugin};

/// A plugin version ready to instantiate, with the settings it runs under.
pub struct LoadedPlugin {
    /// Plugin id.
    pub id: String,
    /// Owner.
    pub account_id: String,
    /// The version loaded.
    pub version: u32,
    pub(crate) pre: PluginPre<HostState>,
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
    pub(crate) fn new(plugin: &Plugin, pre: PluginPre<HostState>) -> LoadedPlugin {
        let limits = Limits::resolve(&plugin.limits);
        LoadedPlugin {
            id: plugin.id.clone(),
            account_id: plugin.account_id.clone(),
            version: plugin.version,
            pre,
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
            pre: self.pre.clone(),
            config,
            allowed_hosts: self.allowed_hosts.clone(),
            limits: self.limits,
            log_level: self.log_level,
            contexts: Pool::new(self.limits.log_bytes),
        }
    }
}

/// The loaded plugins.
#[derive(Default)]
pub struct Registry {
    plugins: RwLock<HashMap<String, Arc<LoadedPlugin>>>,
}

impl Registry {
    /// The current version of a plugin.
    pub fn get(&self, id: &str) -> Option<Arc<LoadedPlugin>> {
        self.plugins.read().expect("registry lock").get(id).cloned()
    }

    /// Installs (or replaces) a plugin.
    pub fn put(&self, loaded: LoadedPlugin) {
        self.plugins
            .write()
            .expect("registry lock")
            .insert(loaded.id.clone(), Arc::new(loaded));
    }

    /// Applies new settings (config, hosts, limits, log level) to the loaded version.
    pub fn update_settings(&self, plugin: &Plugin) {
        let mut map = self.plugins.write().expect("registry lock");
        if let Some(old) = map.get(&plugin.id) {
            let pre = old.pre.clone();
            let mut next = LoadedPlugin::new(plugin, pre);
            next.version = old.version;
            map.insert(plugin.id.clone(), Arc::new(next));
        }
    }

    /// Forgets a deleted plugin.
    pub fn remove(&self, id: &str) {
        self.plugins.write().expect("registry lock").remove(id);
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
