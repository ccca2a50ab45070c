//! Turning uploaded bytes into a runnable plugin: validation with errors a plugin author can
//! act on, compilation once at upload, and the stored compiled artifact that lets a restart
//! skip compilation.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};
use wasmtime::component::Component;

use super::bindings::PluginPre;
use super::host::HostState;
use super::registry::LoadedPlugin;
use super::stack::StackMap;
use super::{PluginRuntime, engine, heap};
use crate::clock::now_ms;
use crate::model::{Plugin, PluginVersion};
use crate::store::{Store, StoreError};

/// Why an upload was refused.
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
    /// The component does not compile.
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

const HANDLER_EXPORT: &str = "wasmhook:plugin/handler@0.1.0";

/// A version ready to run: what [`LoadedPlugin::new`] takes besides the plugin's record.
type Ready = (PluginPre<HostState>, Arc<StackMap>);

/// Checks the header: `\0asm`, then a component's version/layer (`0d 00 01 00`).
pub fn check_header(bytes: &[u8]) -> Result<(), PluginError> {
    if bytes.is_empty() {
        return Err(PluginError::Empty);
    }
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        return Err(PluginError::NotWasm);
    }
    match &bytes[4..8] {
        [0x0d, 0x00, 0x01, 0x00] => Ok(()),
        [0x01, 0x00, 0x00, 0x00] => Err(PluginError::CoreModule),
        other => Err(PluginError::Invalid(format!(
            "unknown WebAssembly version/layer {other:02x?}"
        ))),
    }
}

/// Describes a link failure in terms of what the author must change.
fn incompatible(e: wasmtime::Error) -> PluginError {
    let text = format!("{e:#}");
    if text.contains("matching implementation was not found") || text.contains("import") {
        PluginError::Incompatible(format!(
            "the component imports something wasmhook does not provide: {text}. \
             wasmhook provides wasmhook:plugin/host, wasmhook:plugin/kv, WASI 0.2 and wasi:http/outgoing-handler"
        ))
    } else {
        PluginError::Incompatible(text)
    }
}

fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
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
            return Err(PluginError::Incompatible(format!(
                "the component does not export {HANDLER_EXPORT}: build it against the `plugin` world in wit/ \
                 (with the wasmhook-plugin-sdk crate: implement Plugin and call export_plugin!)"
            )));
        }
        PluginPre::new(instance_pre).map_err(|e| PluginError::Incompatible(format!("{e:#}")))
    }

    /// Compiles a component with a throwaway engine (see [`engine::for_compiling`]) into an
    /// artifact the server's engine loads.
    fn precompile(&self, wasm: &[u8]) -> Result<Vec<u8>, PluginError> {
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

    fn paths(&self, plugin_id: &str, version: u32) -> (PathBuf, PathBuf) {
        let dir = self.dir.join(plugin_id);
        (
            dir.join(format!("v{version}.wasm")),
            dir.join(format!("v{version}.cwasm")),
        )
    }

    /// Validates, compiles and stores a component as `version` of `plugin_id` (blocking).
    ///
    /// It is compiled by a throwaway engine, and the version is loaded from the stored
    /// artifact, as a restart loads it: the artifact is mapped from its file, so its pages are
    /// shared with the page cache and read in as used, where compiled code kept from the
    /// compilation would be private memory, all of it resident.
    fn prepare(
        &self,
        plugin_id: &str,
        version: u32,
        wasm: &[u8],
    ) -> Result<(Ready, PluginVersion), PluginError> {
        check_header(wasm)?;
        let compiled = self.precompile(wasm)?;
        let stack = Arc::new(StackMap::of_component(wasm));
        let (wasm_path, cwasm_path) = self.paths(plugin_id, version);
        let io = |e: std::io::Error| PluginError::Io(e.to_string());
        std::fs::create_dir_all(wasm_path.parent().expect("a plugin dir")).map_err(io)?;
        write_atomic(&wasm_path, wasm).map_err(io)?;
        write_atomic(&cwasm_path, &compiled).map_err(io)?;
        drop(compiled);
        let loaded = self
            .deserialize(&cwasm_path)
            .map_err(|e| PluginError::Io(format!("{}: {e:#}", cwasm_path.display())))
            .and_then(|component| self.pre(&component));
        let pre = match loaded {
            Ok(pre) => pre,
            Err(e) => {
                // Refused (an import the host lacks, no handler): nothing of it is kept.
                let _ = std::fs::remove_file(&wasm_path);
                let _ = std::fs::remove_file(&cwasm_path);
                return Err(e);
            }
        };
        let v = PluginVersion {
            version,
            sha256: hex::encode(Sha256::digest(wasm)),
            size_bytes: wasm.len() as u64,
            wasm_path: wasm_path.display().to_string(),
            cwasm_path: cwasm_path.display().to_string(),
            engine_hash: self.engine_hash.clone(),
            created_at: now_ms(),
        };
        Ok(((pre, stack), v))
    }

    /// Validates and compiles a component to run here only: nothing is stored or registered
    /// (a run without a server, benchmarks). Blocking: compiling takes a while.
    pub fn load_local(&self, plugin: &Plugin, wasm: &[u8]) -> Result<LoadedPlugin, PluginError> {
        check_header(wasm)?;
        let component = self.compile(wasm)?;
        let stack = Arc::new(StackMap::of_component(wasm));
        Ok(LoadedPlugin::new(plugin, self.pre(&component)?, stack))
    }

    /// Uploads a new plugin.
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
        let ((pre, stack), version) = self.prepare_blocking(id.clone(), 1, wasm).await?;
        let plugin = match store.create_plugin(plugin, version).await {
            Ok(plugin) => plugin,
            Err(e) => {
                // Refused (a quota another upload reached meanwhile) or not stored: its files go.
                let _ = std::fs::remove_dir_all(self.dir.join(&id));
                return Err(e.into());
            }
        };
        self.registry.put(LoadedPlugin::new(&plugin, pre, stack));
        Ok(plugin)
    }

    /// Uploads a new version of a plugin and swaps it in.
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
        let ((pre, stack), version) = self.prepare_blocking(id.clone(), next, wasm).await?;
        let plugin = match store
            .add_plugin_version(account_id, id.clone(), version)
            .await
        {
            Ok(plugin) => plugin,
            Err(e) => {
                let (wasm_path, cwasm_path) = self.paths(&id, next);
                let _ = std::fs::remove_file(wasm_path);
                let _ = std::fs::remove_file(cwasm_path);
                return Err(e.into());
            }
        };
        self.registry.put(LoadedPlugin::new(&plugin, pre, stack));
        Ok(plugin)
    }

    /// [`Self::prepare`] on a blocking thread, one upload at a time: compiling a large
    /// component takes hundreds of megabytes for a while, and uploads side by side would take
    /// that many times over. What the compilation freed is given back to the system after it.
    async fn prepare_blocking(
        self: &Arc<Self>,
        id: String,
        version: u32,
        wasm: Vec<u8>,
    ) -> Result<(Ready, PluginVersion), PluginError> {
        let _turn = self
            .compiles
            .acquire()
            .await
            .expect("the compile semaphore is never closed");
        let rt = self.clone();
        tokio::task::spawn_blocking(move || {
            let prepared = rt.prepare(&id, version, &wasm);
            drop(wasm);
            heap::give_back_free_memory();
            prepared
        })
        .await
        .map_err(|e| PluginError::Io(format!("compilation task failed: {e}")))?
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
    /// when it was made by a compatible engine, else by compiling (and storing) it again.
    pub async fn load_all(self: &Arc<Self>, store: &Store) -> anyhow::Result<usize> {
        let plugins = store.all_current_plugins().await?;
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
        // Mapped from the file, as `prepare` does.
        let component = self
            .deserialize(Path::new(&v.cwasm_path))
            .map_err(|e| PluginError::Io(format!("{}: {e:#}", v.cwasm_path)))?;
        Ok(((self.pre(&component)?, stack), true))
    }

    #[allow(unsafe_code)]
    fn deserialize(&self, path: &Path) -> wasmtime::Result<Component> {
        // SAFETY: the file is an artifact this server wrote with `Component::serialize` into its
        // own data dir (never user input), for an engine with the same compatibility hash;
        // wasmtime still checks the header and version before using it.
        unsafe { Component::deserialize_file(&self.engine, path) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_tell_modules_from_components() {
        assert!(matches!(check_header(b""), Err(PluginError::Empty)));
        assert!(matches!(
            check_header(b"hello world"),
            Err(PluginError::NotWasm)
        ));
        assert!(matches!(
            check_header(b"\0asm\x01\0\0\0"),
            Err(PluginError::CoreModule)
        ));
        assert!(check_header(b"\0asm\x0d\0\x01\0").is_ok());
    }
}
