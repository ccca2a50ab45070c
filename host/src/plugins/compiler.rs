//! The background compiler: turns uploaded versions left `compiling` into `ready` (compiled from
//! the bytes in the store, the artifact kept in this node's data dir and loaded from there, as a
//! restart loads it: mapped, so its pages are shared with the page cache; made current when it is
//! the newest) or `failed` (with the reason, its upload removed). One at a time, oldest upload first, under the runtime's compile
//! semaphore, on a blocking thread: compiling a large component takes seconds of one core and
//! hundreds of megabytes, and deliveries must keep their threads and memory meanwhile. The
//! database is its queue, so a restart resumes whatever was left compiling.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::artifacts::PluginError;
use super::registry::{LoadedPlugin, Unloaded};
use super::{PluginRuntime, heap};
use crate::model::PluginVersion;
use crate::store::{Store, StoreError};

/// How long the compiler waits after its store failed it, before looking again.
const STORE_RETRY: Duration = Duration::from_secs(1);

impl PluginRuntime {
    /// Starts the compiler; it stops when `stop` is cancelled (a compilation under way is
    /// abandoned: its version stays `compiling` and the next start compiles it again).
    /// `hold_until` is a test hook: nothing is compiled until that file exists.
    pub fn start_compiler(
        self: &Arc<Self>,
        store: Store,
        stop: CancellationToken,
        hold_until: Option<PathBuf>,
    ) -> JoinHandle<()> {
        let rt = self.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = rt.compile_queued(&store, &stop, hold_until.as_deref()) => {}
            }
        })
    }

    /// Waits until `id` has no compilation pending that it waits for: `Ok` once a version of
    /// it runs, else why none does. For callers that drive the runtime without the API
    /// (benchmarks).
    pub async fn until_compiled(&self, id: &str) -> Result<(), String> {
        self.registry.compiled(id).await;
        match self.registry.get(id) {
            Some(_) => Ok(()),
            None => Err(self.registry.not_loaded_reason(id).0),
        }
    }

    async fn compile_queued(
        self: &Arc<Self>,
        store: &Store,
        stop: &CancellationToken,
        hold_until: Option<&Path>,
    ) {
        loop {
            match store.next_compiling_version().await {
                Ok(Some((id, version))) => {
                    if let Some(path) = hold_until {
                        while !path.exists() {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    }
                    if let Err(e) = self.compile_one(store, &id, version, stop).await {
                        tracing::error!(plugin = %id, error = %e, "recording a compilation failed");
                        tokio::time::sleep(STORE_RETRY).await;
                    }
                }
                // Uploads store a permit when nobody waits, so one stored meanwhile is not missed.
                Ok(None) => self.compiler_wake.notified().await,
                Err(e) => {
                    tracing::error!(error = %e, "looking for versions to compile failed");
                    tokio::time::sleep(STORE_RETRY).await;
                }
            }
        }
    }

    /// Compiles one version and records how it went.
    async fn compile_one(
        self: &Arc<Self>,
        store: &Store,
        id: &str,
        version: PluginVersion,
        stop: &CancellationToken,
    ) -> Result<(), StoreError> {
        let started = std::time::Instant::now();
        // From the store, so that any node compiles any upload (on a shared database the
        // uploading node's files are not here).
        let compiled = match store
            .plugin_component(id.to_string(), version.version)
            .await
        {
            Err(StoreError::NotFound) => return Ok(()), // deleted meanwhile
            Err(e) => return Err(e),
            Ok(None) => Err(PluginError::Io(
                "the uploaded component is not stored".to_string(),
            )),
            Ok(Some(wasm)) => {
                let _turn = self
                    .compiles
                    .acquire()
                    .await
                    .expect("the compile semaphore is never closed");
                let (rt, v, stop) = (self.clone(), version.clone(), stop.clone());
                let id = id.to_string();
                tokio::task::spawn_blocking(move || {
                    let compiled = rt.prepare(&id, &v, &wasm, Some(&stop));
                    heap::give_back_free_memory();
                    compiled
                })
                .await
                .unwrap_or_else(|e| Err(PluginError::Io(format!("the compilation crashed: {e}"))))
            }
        };
        let n = version.version;
        let recorded = match compiled {
            Ok((pre, stack)) => {
                let activated = store
                    .plugin_version_ready(id.to_string(), n, self.engine_hash.clone())
                    .await;
                match activated {
                    Ok(Some(plugin)) => {
                        self.registry.put(LoadedPlugin::new(&plugin, pre, stack));
                        // A settings change committed before `put` but applied to the version
                        // it replaced would be lost: read the settings once more.
                        let (account, changed_at) = (plugin.account_id.clone(), plugin.updated_at);
                        if let Ok(now) = store.get_plugin(account, id.to_string()).await
                            && now.updated_at != changed_at
                        {
                            self.registry.update_settings(&now);
                        }
                        tracing::info!(plugin = %id, version = n, elapsed_ms = started.elapsed().as_millis() as u64, "plugin version ready");
                        Ok(())
                    }
                    Ok(None) => Ok(()),
                    Err(e) => Err(e),
                }
            }
            Err(e) => {
                let reason = e.to_string();
                tracing::warn!(plugin = %id, version = n, %reason, "plugin version failed to compile");
                let _ = std::fs::remove_file(&version.wasm_path);
                let failed = store
                    .plugin_version_failed(id.to_string(), n, reason.clone())
                    .await;
                if failed.is_ok() {
                    self.registry.set_unloaded(id, Unloaded::Failed(n, reason));
                }
                failed
            }
        };
        match recorded {
            // Deleted while it compiled: nothing of it is kept.
            Err(StoreError::NotFound) => {
                let _ = std::fs::remove_file(&version.wasm_path);
                Ok(())
            }
            other => other,
        }
    }
}
