//! The plugin runtime: the only module that imports wasmtime.
//!
//! One [`Engine`] for the process; a [`Linker`] built once with WASI 0.2, outgoing
//! `wasi:http` and our host interfaces; a pre-instantiated component per plugin version
//! (validated in its upload request, compiled once after it by the background compiler, its
//! artifact kept in this node's data dir by content and engine hash so a restart does not
//! compile again; other nodes' versions followed through the store, see `follow`); and
//! a fresh `Store` and instance per event (or, for a plugin in `reuse` mode, one kept from an
//! earlier event of the same subscription: see [`reuse`]), run on the async runtime under a
//! memory limit, yielding at every epoch tick so other tasks keep being served, and cancelled
//! at its deadline.
//!
//! The runtime reaches the rest of the server only through [`PluginServices`] (send-message,
//! the key-value store, where log lines go), which the caller of an invocation passes in: the
//! server's store-backed one for deliveries, a capturing [`dry_run::DryRun`] for test runs.

mod artifacts;
pub mod bindings;
pub mod budget;
mod capture;
mod compiler;
mod context;
mod dial;
pub mod dry_run;
pub mod engine;
mod follow;
pub mod heap;
pub mod host;
pub mod inspect;
mod instance;
pub mod invoke;
pub mod limits;
pub mod logsink;
pub mod outgoing;
pub mod registry;
pub mod reuse;
pub mod services;
mod stack;
pub mod validate;

use std::path::PathBuf;
use std::sync::Arc;

use wasmtime::Engine;
use wasmtime::component::Linker;

pub use artifacts::{PluginError, version_files};
pub use invoke::{Decision, FailureKind, InvokeError};
pub use services::PluginServices;

use crate::delivery::netpolicy::NetPolicy;
use crate::metrics::Metrics;
use bindings::Plugin as PluginWorld;
use budget::MemoryBudget;
use host::HostState;
use registry::Registry;
use reuse::{IdleInstances, ReuseSettings};

/// The plugin runtime shared by the API and the delivery engine.
pub struct PluginRuntime {
    engine: Engine,
    linker: Linker<HostState>,
    /// Loaded plugins.
    pub registry: Registry,
    dir: PathBuf,
    engine_hash: String,
    metrics: Arc<Metrics>,
    /// Which addresses outgoing `wasi:http` may reach.
    net_policy: Arc<NetPolicy>,
    /// Dry runs at once: they take instances from the same pool as deliveries.
    dry_runs: tokio::sync::Semaphore,
    /// Uploads compiled at once: one, so that compiling never holds more than one
    /// component's working memory (see `compiler`).
    compiles: tokio::sync::Semaphore,
    /// Wakes the compiler when an upload is stored.
    compiler_wake: tokio::sync::Notify,
    /// One sync with the store at a time (see `follow`), and how many started and finished.
    sync_turn: tokio::sync::Mutex<()>,
    syncs_started: std::sync::atomic::AtomicU64,
    syncs_done: std::sync::atomic::AtomicU64,
    /// The memory every running instance reserves its ceiling from.
    pub memory: MemoryBudget,
}

impl PluginRuntime {
    /// Builds the engine and linker; compiled artifacts live under `data_dir/plugins`.
    /// `instances` bounds the instances alive at once; [`dry_run::DRY_RUNS`] of them may be
    /// dry runs. Running instances reserve their memory limit from `memory_budget` bytes.
    pub fn new(
        data_dir: &std::path::Path,
        instances: u32,
        memory_budget: u64,
        metrics: Arc<Metrics>,
        net_policy: Arc<NetPolicy>,
    ) -> wasmtime::Result<PluginRuntime> {
        let engine = engine::new(instances)?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
        PluginWorld::add_to_linker::<HostState, wasmtime::component::HasSelf<HostState>>(
            &mut linker,
            |s| s,
        )?;
        let engine_hash = engine::compatibility_hash(&engine);
        let idle = IdleInstances::new(ReuseSettings::default(), metrics.plugin_instances.clone());
        let memory = MemoryBudget::new(memory_budget, metrics.plugin_memory.clone());
        memory.set_reclaim(idle.clone());
        Ok(PluginRuntime {
            engine,
            linker,
            registry: Registry::new(idle),
            dir: data_dir.join("plugins"),
            engine_hash,
            memory,
            metrics,
            net_policy,
            dry_runs: tokio::sync::Semaphore::new(dry_run::DRY_RUNS),
            compiles: tokio::sync::Semaphore::new(1),
            compiler_wake: tokio::sync::Notify::new(),
            sync_turn: Default::default(),
            syncs_started: Default::default(),
            syncs_done: Default::default(),
        })
    }

    /// When instances of plugins in `reuse` mode are thrown away (the server's flags).
    pub fn set_reuse(&self, settings: ReuseSettings) {
        self.registry.idle.set_settings(settings);
    }
}
