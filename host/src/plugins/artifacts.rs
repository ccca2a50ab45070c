//! Turning uploaded bytes into a runnable plugin: the upload (validated, stored `compiling`),
//! compilation (see `compiler`, after the request) into a stored compiled artifact, and loading
//! at start, which skips compilation when the artifact fits the engine.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};
use wasmtime::component::Component;

use super::bindings::PluginPre;
use super::host::HostState;
use super::registry::{LoadedPlugin, Unloaded};
use super::stack::StackMap;
use super::validate::{HANDLER_EXPORT, check_header, no_handler, unknown_import, validate};
use super::{PluginRuntime, engine, heap};
use crate::clock::now_ms;
use crate::model::{Plugin, PluginVersion, VersionStatus};
use crate::store::{Store, StoreError};

/// Why an upload was refused, or a version failed to compile.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// Nothing was uploaded.
    #[error(
        "the body is empty: send the component as the raw request body (curl --data-binary @plugin.wasm)"
    )]
    Empty,
    /// Not WebAssembly at all.
    #[error("not a WebAssembly binary: it does not start with \\0asm")]
    NotWasm,
    /// A core module, not a component.
    #[error(
        "this is a core WebAssembly module, not a component: build it with `cargo build --target wasm32-wasip2` \
         (or wrap a wasip1 module with `wasm-tools component new --adapt`)"
    )]
    CoreModule,
    /// The component is not valid, or does not compile.
    #[error("invalid component: {0}")]
    Invalid(String),
    /// The component does not fit the host: a missing export or an import the host lacks.
    #[error("{0}")]
    Incompatible(String),
    /// Storing it failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Writing its files failed.
    #[error("storing the plugin failed: {0}")]
    Io(String),
}

/// A version ready to run: what [`LoadedPlugin::new`] takes besides the plugin's record.
pub(super) type Ready = (PluginPre<HostState>, Arc<StackMap>);

/// Describes a link failure in terms of what the author must change.
fn incompatible(e: wasmtime::Error) -> PluginError {
    let text = format!("{e:#}");
    if text.contains("matching implementation was not found") || text.contains("import") {
        unknown_import(&text)
    } else {
        PluginError::Incompatible(text)
    }
}

/// Where a version's uploaded component and its compiled artifact live under a runtime's
/// plugin dir (`<data dir>/plugins`): `wasmhook import` writes components there too.
pub fn version_files(plugins_dir: &Path, plugin_id: &str, version: u32) -> (PathBuf, PathBuf) {
    let dir = plugins_dir.join(plugin_id);
    (
        dir.join(format!("v{version}.wasm")),
        dir.join(format!("v{version}.cwasm")),
    )
}

pub(super) fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, path)
}

impl PluginRuntime {
    pub(super) fn pre(&self, component: &Component) -> Result<PluginPre<HostState>, PluginError> {
        // Imports first: an unknown import is the more fundamental mismatch to report.
        let instance_pre = self
            .linker
            .instantiate_pre(component)
            .map_err(incompatible)?;
        if component.get_export_index(None, HANDLER_EXPORT).is_none() {
            return Err(no_handler());
        }
        PluginPre::new(instance_pre).map_err(|e| PluginError::Incompatible(format!("{e:#}")))
    }

    /// Compiles a component with a throwaway engine (see [`engine::for_compiling`]) into an
    /// artifact the server's engine loads.
    pub(super) fn precompile(&self, wasm: &[u8]) -> Result<Vec<u8>, PluginError> {
        let engine =
            engine::for_compiling().map_err(|e| PluginError::Io(format!("compiler: {e:#}")))?;
        let compiled = engine
            .precompile_component(wasm)
            .map_err(|e| PluginError::Invalid(format!("{e:#}")))?;
        self.metrics.plugin_compilations.inc();
        Ok(compiled)
    }

    pub(super) fn compile(&self, wasm: &[u8]) -> Result<Component, PluginError> {
        let component = Component::new(&self.engine, wasm)
            .map_err(|e| PluginError::Invalid(format!("{e:#}")))?;
        self.metrics.plugin_compilations.inc();
        Ok(component)
    }

    pub(super) fn paths(&self, plugin_id: &str, version: u32) -> (PathBuf, PathBuf) {
        version_files(&self.dir, plugin_id, version)
    }

    /// Validates and compiles a component to run here only: nothing is stored or registered
    /// (a run without a server, benchmarks). Blocking: compiling takes a while.
    pub fn load_local(&self, plugin: &Plugin, wasm: &[u8]) -> Result<LoadedPlugin, PluginError> {
        check_header(wasm)?;
        let component = self.compile(wasm)?;
        let stack = Arc::new(StackMap::of_component(wasm));
        Ok(LoadedPlugin::new(plugin, self.pre(&component)?, stack))
    }

    /// Validates `wasm` and stores it as `version` of `plugin_id`, `compiling` (on a blocking
    /// thread: validating a large component takes a while). Its compilation comes after.
    async fn store_upload(
        self: &Arc<Self>,
        plugin_id: &str,
        version: u32,
        wasm: Vec<u8>,
    ) -> Result<PluginVersion, PluginError> {
        let (wasm_path, cwasm_path) = self.paths(plugin_id, version);
        let task = tokio::task::spawn_blocking(move || {
            validate(&wasm)?;
            let io = |e: std::io::Error| PluginError::Io(e.to_string());
            std::fs::create_dir_all(wasm_path.parent().expect("a plugin dir")).map_err(io)?;
            write_atomic(&wasm_path, &wasm).map_err(io)?;
            Ok(PluginVersion {
                version,
                sha256: hex::encode(Sha256::digest(&wasm)),
                size_bytes: wasm.len() as u64,
                wasm_path: wasm_path.display().to_string(),
                cwasm_path: cwasm_path.display().to_string(),
                engine_hash: String::new(),
                created_at: now_ms(),
                status: VersionStatus::Compiling,
                failure: None,
            })
        });
        task.await
            .map_err(|e| PluginError::Io(format!("validation task failed: {e}")))?
    }

    /// Uploads a new plugin: validated and stored now, compiled after (`compiling`, then
    /// `ready` or `failed`); its deliveries wait until then.
    pub async fn create(
        self: &Arc<Self>,
        store: &Store,
        mut plugin: Plugin,
        wasm: Vec<u8>,
    ) -> Result<Plugin, PluginError> {
        plugin.version = 1;
        store
            .plugin_quota_allows(plugin.account_id.clone(), true, wasm.len() as u64)
            .await?;
        let id = plugin.id.clone();
        let version = self.store_upload(&id, 1, wasm).await?;
        // Known as compiling before the compiler can see it, so its outcome is never
        // overwritten by this.
        self.registry.set_unloaded(&id, Unloaded::Compiling(1));
        let plugin = match store.create_plugin(plugin, version).await {
            Ok(plugin) => plugin,
            Err(e) => {
                // Refused (a quota another upload reached meanwhile) or not stored: its files go.
                self.registry.remove(&id);
                let _ = std::fs::remove_dir_all(self.dir.join(&id));
                return Err(e.into());
            }
        };
        self.compiler_wake.notify_one();
        Ok(plugin)
    }

    /// Uploads a new version of a plugin: validated and stored now, compiled after; it replaces
    /// the current version once it is `ready` (a version that fails never does).
    pub async fn new_version(
        self: &Arc<Self>,
        store: &Store,
        account_id: String,
        id: String,
        wasm: Vec<u8>,
    ) -> Result<Plugin, PluginError> {
        let next = store
            .next_plugin_version(account_id.clone(), id.clone())
            .await?;
        store
            .plugin_quota_allows(account_id.clone(), false, wasm.len() as u64)
            .await?;
        let version = self.store_upload(&id, next, wasm).await?;
        // Only a plugin with no version that runs waits for this one (ignored otherwise); set
        // before the compiler can see it, as in `create`.
        let before = self.registry.unloaded(&id);
        self.registry.set_unloaded(&id, Unloaded::Compiling(next));
        let plugin = match store
            .add_plugin_version(account_id, id.clone(), version)
            .await
        {
            Ok(plugin) => plugin,
            Err(e) => {
                self.registry.restore_unloaded(&id, before);
                let (wasm_path, _) = self.paths(&id, next);
                let _ = std::fs::remove_file(wasm_path);
                return Err(e.into());
            }
        };
        self.compiler_wake.notify_one();
        Ok(plugin)
    }

    /// Deletes a plugin's record, files and loaded version.
    pub async fn delete(
        &self,
        store: &Store,
        account_id: String,
        id: String,
    ) -> Result<(), PluginError> {
        store.delete_plugin(account_id, id.clone()).await?;
        self.registry.remove(&id);
        let _ = std::fs::remove_dir_all(self.dir.join(&id));
        Ok(())
    }

    /// Loads every plugin's current version at start-up, from the stored compiled artifact
    /// when it was made by a compatible engine, else by compiling (and storing) it again. A
    /// plugin whose current version never compiled is registered as waiting for it, or as
    /// failed; versions left `compiling` are the compiler's (see `compiler`).
    pub async fn load_all(self: &Arc<Self>, store: &Store) -> anyhow::Result<usize> {
        let mut plugins = store.all_current_plugins().await?;
        plugins.retain(|(plugin, version)| match version.status {
            VersionStatus::Ready => true,
            VersionStatus::Compiling => {
                self.registry
                    .set_unloaded(&plugin.id, Unloaded::Compiling(version.version));
                false
            }
            VersionStatus::Failed => {
                let why = version.failure.clone().unwrap_or_default();
                self.registry
                    .set_unloaded(&plugin.id, Unloaded::Failed(version.version, why));
                false
            }
        });
        let rt = self.clone();
        let loaded = tokio::task::spawn_blocking(move || {
            let mut out = Vec::new();
            for (plugin, version) in plugins {
                match rt.load_version(&plugin, &version) {
                    Ok((ready, rebuilt)) => out.push((plugin, ready, rebuilt.then_some(version))),
                    Err(e) => tracing::error!(plugin = %plugin.id, error = %e, "plugin could not be loaded"),
                }
            }
            heap::give_back_free_memory();
            out
        })
        .await?;
        let count = loaded.len();
        for (plugin, (pre, stack), rebuilt) in loaded {
            if let Some(v) = rebuilt {
                store
                    .set_plugin_engine_hash(plugin.id.clone(), v.version, self.engine_hash.clone())
                    .await?;
            }
            self.registry.put(LoadedPlugin::new(&plugin, pre, stack));
        }
        Ok(count)
    }

    /// Returns the version ready to run and whether it had to be compiled again.
    fn load_version(
        &self,
        plugin: &Plugin,
        v: &PluginVersion,
    ) -> Result<(Ready, bool), PluginError> {
        if v.engine_hash == self.engine_hash {
            match self.deserialize(Path::new(&v.cwasm_path)) {
                Ok(component) => {
                    // The stack layout is read from the uploaded bytes, kept beside the
                    // artifact; without them the plugin still runs, its overflows with large
                    // frames reported as out-of-bounds accesses.
                    let stack = match std::fs::read(&v.wasm_path) {
                        Ok(wasm) => StackMap::of_component(&wasm),
                        Err(e) => {
                            tracing::warn!(plugin = %plugin.id, error = %e, path = %v.wasm_path, "uploaded component unreadable; stack overflows with large frames will not be recognized");
                            StackMap::default()
                        }
                    };
                    return Ok(((self.pre(&component)?, Arc::new(stack)), false));
                }
                Err(e) => {
                    tracing::warn!(plugin = %plugin.id, error = %e, "stored artifact unusable; compiling again")
                }
            }
        }
        let wasm = std::fs::read(&v.wasm_path)
            .map_err(|e| PluginError::Io(format!("{}: {e}", v.wasm_path)))?;
        let compiled = self.precompile(&wasm)?;
        let stack = Arc::new(StackMap::of_component(&wasm));
        drop(wasm);
        write_atomic(Path::new(&v.cwasm_path), &compiled)
            .map_err(|e| PluginError::Io(e.to_string()))?;
        drop(compiled);
        // Mapped from the file, as a compiled upload is.
        let component = self
            .deserialize(Path::new(&v.cwasm_path))
            .map_err(|e| PluginError::Io(format!("{}: {e:#}", v.cwasm_path)))?;
        Ok(((self.pre(&component)?, stack), true))
    }

    #[allow(unsafe_code)]
    pub(super) fn deserialize(&self, path: &Path) -> wasmtime::Result<Component> {
        // SAFETY: the file is an artifact this server wrote with `Component::serialize` into its
        // own data dir (never user input), for an engine with the same compatibility hash;
        // wasmtime still checks the header and version before using it.
        unsafe { Component::deserialize_file(&self.engine, path) }
    }
}
