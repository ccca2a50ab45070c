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
use tokio_util::sync::CancellationToken;

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

/// Where a version's uploaded component lives under a runtime's plugin dir
/// (`<data dir>/plugins`), and where an earlier wasmhook kept its compiled artifact (now kept
/// by content and engine hash: see `PluginRuntime::prepare`): `wasmhook import` writes
/// components there too.
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

    /// Where this node keeps a component uploaded through it (the SQLite store's copy of
    /// the bytes; a shared database keeps its own).
    pub(super) fn upload_path(&self, plugin_id: &str, version: u32) -> PathBuf {
        version_files(&self.dir, plugin_id, version).0
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
        let wasm_path = self.upload_path(plugin_id, version);
        let rt = self.clone();
        let task = tokio::task::spawn_blocking(move || {
            validate(&wasm)?;
            let sha256 = hex::encode(Sha256::digest(&wasm));
            let cwasm_path = rt.artifact_path(&sha256);
            let io = |e: std::io::Error| PluginError::Io(e.to_string());
            std::fs::create_dir_all(wasm_path.parent().expect("a plugin dir")).map_err(io)?;
            write_atomic(&wasm_path, &wasm).map_err(io)?;
            Ok(PluginVersion {
                version,
                sha256,
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
                let _ = std::fs::remove_file(self.upload_path(&id, next));
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

    /// Where this node keeps the compiled artifact of the component whose SHA-256 is
    /// `sha256`, for this engine: keyed by both, so an artifact is shared by every version
    /// (and plugin) with the same bytes, and one made by another engine (an upgrade, other
    /// CPU features) is never looked at.
    pub(super) fn artifact_path(&self, sha256: &str) -> PathBuf {
        self.dir
            .join("compiled")
            .join(format!("{sha256}-{}.cwasm", self.engine_hash))
    }

    /// Fetches a version's uploaded component from the store (every node can: on a shared
    /// database it is stored there) and makes it ready to run (see [`PluginRuntime::prepare`])
    /// on a blocking thread, one compilation at a time.
    pub(super) async fn load(
        self: &Arc<Self>,
        store: &Store,
        id: &str,
        v: &PluginVersion,
    ) -> Result<Ready, PluginError> {
        let wasm = store
            .plugin_component(id.to_string(), v.version)
            .await?
            .ok_or_else(|| {
                PluginError::Io(format!(
                    "the uploaded component of version {} is not stored",
                    v.version
                ))
            })?;
        let _turn = self
            .compiles
            .acquire()
            .await
            .expect("the compile semaphore is never closed");
        let (rt, v, id) = (self.clone(), v.clone(), id.to_string());
        tokio::task::spawn_blocking(move || {
            let ready = rt.prepare(&id, &v, &wasm, None);
            heap::give_back_free_memory();
            ready
        })
        .await
        .unwrap_or_else(|e| Err(PluginError::Io(format!("loading the plugin crashed: {e}"))))
    }

    /// Makes a version ready to run from its uploaded bytes: from this node's compiled artifact
    /// when it has one for this engine, else by compiling it (checking first that the bytes are
    /// the ones uploaded) and keeping the artifact in the data dir. Compiled code only ever
    /// comes from this node's own data dir, never from the database. Blocking.
    pub(super) fn prepare(
        &self,
        plugin_id: &str,
        v: &PluginVersion,
        wasm: &[u8],
        stop: Option<&CancellationToken>,
    ) -> Result<Ready, PluginError> {
        // The hash names a file: only a real SHA-256 (hex) from the database is one.
        if v.sha256.len() != 64 || !v.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(PluginError::Io(format!(
                "version {} has no valid SHA-256 in the store",
                v.version
            )));
        }
        let stack = Arc::new(StackMap::of_component(wasm));
        let cached = self.artifact_path(&v.sha256);
        self.adopt_legacy_artifact(plugin_id, v, &cached);
        if cached.exists() {
            match self.deserialize(&cached) {
                Ok(component) => return Ok((self.pre(&component)?, stack)),
                Err(e) => {
                    tracing::warn!(sha256 = %v.sha256, error = %e, "compiled artifact unusable; compiling again")
                }
            }
        }
        let sha256 = hex::encode(Sha256::digest(wasm));
        if sha256 != v.sha256 {
            return Err(PluginError::Io(format!(
                "the stored component of version {} does not match its SHA-256 ({sha256}, not {})",
                v.version, v.sha256
            )));
        }
        let compiled = self.precompile(wasm)?;
        if stop.is_some_and(|s| s.is_cancelled()) {
            // The server is stopping: the next start compiles it again (and writes the file).
            return Err(PluginError::Io("the server stopped".into()));
        }
        let io = |e: std::io::Error| PluginError::Io(format!("{}: {e}", cached.display()));
        std::fs::create_dir_all(cached.parent().expect("a compiled dir")).map_err(io)?;
        write_atomic(&cached, &compiled).map_err(io)?;
        drop(compiled);
        // Mapped from the file, not kept from the compilation: its pages are shared with the
        // page cache and read in as used (see `compiler`).
        let component = self
            .deserialize(&cached)
            .map_err(|e| PluginError::Io(format!("{}: {e:#}", cached.display())))?;
        Ok((self.pre(&component)?, stack))
    }

    /// Moves the artifact an earlier version of wasmhook kept beside this node's upload
    /// (`plugins/<id>/v<N>.cwasm`) to the cache, when the database says this engine made it:
    /// an upgrade does not compile every plugin again. The path is this node's own, never
    /// the one the database names (on a shared database that is another node's file).
    /// wasmtime still checks the artifact's header when it is loaded.
    fn adopt_legacy_artifact(&self, plugin_id: &str, v: &PluginVersion, cached: &Path) {
        let (_, legacy) = version_files(&self.dir, plugin_id, v.version);
        if v.engine_hash != self.engine_hash || cached.exists() || !legacy.exists() {
            return;
        }
        if let Some(dir) = cached.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        if let Err(e) = std::fs::rename(&legacy, cached) {
            tracing::warn!(error = %e, path = %legacy.display(), "keeping an earlier compiled artifact failed; compiling again");
        }
    }

    /// Removes the compiled artifacts no current version uses, and those of other engines
    /// (at start, before the compiler runs, so none is being written).
    pub(super) fn prune_artifacts(&self, current: &std::collections::HashSet<String>) {
        let Ok(entries) = std::fs::read_dir(self.dir.join("compiled")) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let keep = name
                .strip_suffix(".cwasm")
                .and_then(|n| n.split_once('-'))
                .is_some_and(|(sha, engine)| engine == self.engine_hash && current.contains(sha));
            if !keep {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }

    #[allow(unsafe_code)]
    pub(super) fn deserialize(&self, path: &Path) -> wasmtime::Result<Component> {
        // SAFETY: the file is an artifact this server wrote with `Component::serialize` into its
        // own data dir (never user input), for an engine with the same compatibility hash;
        // wasmtime still checks the header and version before using it.
        unsafe { Component::deserialize_file(&self.engine, path) }
    }
}
