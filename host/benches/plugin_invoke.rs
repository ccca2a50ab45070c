//! Per-event cost of a plugin through the host's real invocation path, next to two baselines
//! measured in the same run: the same logic compiled natively, and the bare floor (the same
//! component instantiated and called by a minimal wasmtime loop with nothing of wasmhook).
//! `host_path` runs with the server's own `PluginServices` (store, messages, log writer);
//! `host_path_stub_services` runs the same runtime without any server, its host calls answered
//! by a stub `PluginServices`: the runtime's own cost. `host_path_reuse` is `host_path` with
//! the plugin in `reuse` mode (`"instances": "reuse"`): every event after the first runs in the
//! instance the previous one left idle.
//!
//! Run with `cargo bench -p wasmhook --bench plugin_invoke` (or `scripts/bench`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::json;
use serde_json::value::RawValue;
use wasmtime::Store;
use wasmtime::component::{Component, HasSelf, Linker, ResourceTable};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use wasmhook::clock::{new_id, now_ms, rfc3339};
use wasmhook::delivery::netpolicy::NetPolicy;
use wasmhook::model::{InstanceMode, Plugin, PluginLimits, PluginLogLine};
use wasmhook::plugins::PluginRuntime;
use wasmhook::plugins::bindings::{self, PluginPre};
use wasmhook::plugins::invoke::{Input, to_wit};
use wasmhook::plugins::services::{
    KvLimits, KvResult, Outgoing, PluginServices, SendRefusal, Unavailable,
};
use wasmhook::store::NewEvent;
use wasmhook_plugin_artifacts as artifacts;
use wasmhook_plugin_sdk::Plugin as _;

const TEXT: &str =
    "Hi, I am jane.doe@example.com, call me at +1 415 555 0100. Card 4111 1111 1111 1111.";

fn payload() -> serde_json::Value {
    json!({
        "conversation_id": "conv-1", "id": "m-1", "text": TEXT, "source": "facebook",
        "sender": {"id": "contact-1", "type": "source_contact"}, "sent_at": "2020-07-20T14:18:08.584Z"
    })
}

/// The floor's own bindings: the same WIT, generated for plain synchronous calls, the fastest
/// way wasmtime can call a component (the floor BENCHMARKS.md compares the host path with).
mod sync_floor {
    wasmtime::component::bindgen!({ path: "../wit", world: "plugin" });
}

/// The minimal host of the floors: WASI (with `wasi:http`, which ComponentizeJS imports for
/// `fetch`) and no-op host functions.
struct Floor {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    table: ResourceTable,
    config: BTreeMap<String, String>,
}

impl Floor {
    fn new(config: &BTreeMap<String, String>) -> Floor {
        Floor {
            wasi: WasiCtxBuilder::new().build(),
            http: WasiHttpCtx::new(),
            table: ResourceTable::new(),
            config: config.clone(),
        }
    }
}

impl WasiHttpView for Floor {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: wasmtime_wasi_http::default_hooks(),
        }
    }
}

impl WasiView for Floor {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// `$db` marks the functions that are async in the host's bindings (those that touch the
/// database); `$plain` the others.
macro_rules! floor_host {
    ($m:path, $($db:ident)?; $($plain:ident)?) => {
        use $m as b;
        impl b::wasmhook::plugin::types::Host for Floor {}
        impl b::wasmhook::plugin::host::Host for Floor {
            $($db)? fn send_message(&mut self, _: String, _: String) -> Result<String, b::wasmhook::plugin::types::SendError> {
                Ok("m".into())
            }
            $($plain)? fn log(&mut self, _: b::wasmhook::plugin::types::LogLevel, _: String) {}
            $($plain)? fn min_log_level(&mut self) -> b::wasmhook::plugin::types::LogLevel {
                b::wasmhook::plugin::types::LogLevel::Info
            }
            $($plain)? fn config_get(&mut self, key: String) -> Option<String> {
                self.config.get(&key).cloned()
            }
        }
        impl b::wasmhook::plugin::kv::Host for Floor {
            $($db)? fn get(&mut self, _: String) -> Result<Option<Vec<u8>>, b::wasmhook::plugin::types::KvError> {
                Ok(None)
            }
            $($db)? fn set(&mut self, _: String, _: Vec<u8>) -> Result<(), b::wasmhook::plugin::types::KvError> {
                Ok(())
            }
            $($db)? fn delete(&mut self, _: String) -> Result<(), b::wasmhook::plugin::types::KvError> {
                Ok(())
            }
            $($db)? fn increment(&mut self, _: String, delta: i64) -> Result<i64, b::wasmhook::plugin::types::IncrementError> {
                Ok(delta)
            }
            $($db)? fn set_if(&mut self, _: String, _: Option<Vec<u8>>, _: Vec<u8>) -> Result<bool, b::wasmhook::plugin::types::KvError> {
                Ok(true)
            }
        }
    };
}

mod floor_sync_impl {
    use super::Floor;
    floor_host!(super::sync_floor, ;);
}

mod floor_async_impl {
    use super::Floor;
    floor_host!(wasmhook::plugins::bindings, async;);
}

/// The stub services of `host_path_stub_services`: the floors' no-op answers, through the trait.
struct StubServices;

#[async_trait]
impl PluginServices for StubServices {
    async fn send_message(&self, _: Outgoing) -> Result<String, SendRefusal> {
        Ok("m".into())
    }
    async fn kv_get(&self, _: &str, _: &str) -> Result<Option<Vec<u8>>, Unavailable> {
        Ok(None)
    }
    async fn kv_set(&self, _: &str, _: &str, _: Vec<u8>, _: KvLimits) -> KvResult<()> {
        Ok(Ok(()))
    }
    async fn kv_delete(&self, _: &str, _: &str) -> Result<(), Unavailable> {
        Ok(())
    }
    async fn kv_increment(&self, _: &str, _: &str, delta: i64, _: KvLimits) -> KvResult<i64> {
        Ok(Ok(delta))
    }
    async fn kv_set_if(
        &self,
        _: &str,
        _: &str,
        _: Option<Vec<u8>>,
        _: Vec<u8>,
        _: KvLimits,
    ) -> KvResult<bool> {
        Ok(Ok(true))
    }
    fn plugin_logs(&self, _: &str, _: &str, _: Vec<PluginLogLine>) {}
}

fn floor_pre_sync(engine: &wasmtime::Engine, path: &str) -> sync_floor::PluginPre<Floor> {
    let mut linker = Linker::<Floor>::new(engine);
    wasmtime_wasi::p2::add_to_linker_sync(&mut linker).unwrap();
    wasmtime_wasi_http::p2::add_only_http_to_linker_sync(&mut linker).unwrap();
    sync_floor::Plugin::add_to_linker::<Floor, HasSelf<Floor>>(&mut linker, |s| s).unwrap();
    let component = Component::from_file(engine, path).unwrap();
    sync_floor::PluginPre::new(linker.instantiate_pre(&component).unwrap()).unwrap()
}

fn floor_pre_async(engine: &wasmtime::Engine, path: &str) -> PluginPre<Floor> {
    let mut linker = Linker::<Floor>::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker).unwrap();
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker).unwrap();
    bindings::Plugin::add_to_linker::<Floor, HasSelf<Floor>>(&mut linker, |s| s).unwrap();
    let component = Component::from_file(engine, path).unwrap();
    PluginPre::new(linker.instantiate_pre(&component).unwrap()).unwrap()
}

fn bench_plugin(
    c: &mut Criterion,
    name: &str,
    path: &str,
    config: &[(&str, &str)],
    native: Option<fn(wasmhook_plugin_sdk::Event)>,
) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let cfg = wasmhook::config::Config::from_args([
        "--data-dir",
        tmp.path().to_str().unwrap(),
        "--admin-token",
        "bench-admin-token-0123456789",
    ])
    .unwrap();
    let state = rt.block_on(wasmhook::open(cfg)).unwrap();
    let config: BTreeMap<String, String> = config
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();

    // An account, the conversation (for send-message), the plugin, and one stored event.
    let (event, plugin) = rt.block_on(async {
        let (_, key) = wasmhook::auth::new_api_key();
        let account = wasmhook::model::Account {
            id: new_id("acc"),
            name: "bench".into(),
            created_at: now_ms(),
        };
        let account = state.store.create_account(account, key).await.unwrap();
        let payload = RawValue::from_string(payload().to_string()).unwrap();
        let ev = NewEvent {
            id: new_id("evt"),
            account_id: account.id.clone(),
            event_type: "message:created".into(),
            conversation: wasmhook::events::conversation_facts(&payload),
            payload,
            occurred_at: rfc3339(now_ms()),
            received_at: now_ms(),
            idempotency_key: None,
            body_hash: [0; 32],
            causation: None,
        };
        let event = state
            .store
            .ingest(vec![ev])
            .await
            .unwrap()
            .pop()
            .unwrap()
            .event;
        let plugin = Plugin {
            id: new_id("plg"),
            account_id: account.id.clone(),
            name: name.into(),
            config: config.clone(),
            secret_keys: Default::default(),
            allowed_hosts: vec![],
            limits: PluginLimits::default(),
            log_level: Default::default(),
            instances: Default::default(),
            version: 1,
            latest_version: 1,
            status: wasmhook::model::VersionStatus::Ready,
            failure: None,
            created_at: now_ms(),
            updated_at: now_ms(),
        };
        // Uploads compile in the background, as on a server.
        let _compiler = state
            .plugins
            .start_compiler(state.store.clone(), Default::default(), None);
        let plugin = state
            .plugins
            .create(&state.store, plugin, std::fs::read(path).unwrap())
            .await
            .unwrap();
        state.plugins.until_compiled(&plugin.id).await.unwrap();
        (event, plugin)
    });
    let (plugin_id, account_id) = (plugin.id, plugin.account_id);

    let mut group = c.benchmark_group(format!("plugin/{name}"));
    group
        .measurement_time(Duration::from_secs(5))
        .sample_size(50);

    // One event of subscription "sub" through the host's invocation path, as deliveries call it.
    let host_path = |b: &mut criterion::Bencher<'_>| {
        b.to_async(&rt).iter(|| {
            let input = Input {
                event: &event,
                subscription_id: "sub",
                attempt: 1,
            };
            let (state, plugin_id) = (&state, &plugin_id);
            async move {
                state
                    .plugins
                    .invoke(state.plugin_services(), plugin_id, input)
                    .await
                    .unwrap()
            }
        })
    };
    group.bench_function("host_path", host_path);

    // The same plugin, now keeping its instance between events (of subscription "sub").
    let reuse = rt
        .block_on(
            state
                .store
                .update_plugin(account_id, plugin_id.clone(), |p| {
                    p.instances = InstanceMode::Reuse
                }),
        )
        .unwrap();
    state.plugins.registry.update_settings(&reuse);
    group.bench_function("host_path_reuse", host_path);

    // The same runtime with no server: a plugin compiled apart, a stub behind the trait.
    let runtime = PluginRuntime::new(
        &tmp.path().join("no-server"),
        16,
        wasmhook::plugins::budget::default_budget(),
        Default::default(),
        Arc::new(NetPolicy::new(vec![])),
    )
    .unwrap();
    let alone = Plugin {
        id: new_id("plg"),
        account_id: "acc".into(),
        name: name.into(),
        config: config.clone(),
        secret_keys: Default::default(),
        allowed_hosts: vec![],
        limits: PluginLimits::default(),
        log_level: Default::default(),
        instances: Default::default(),
        version: 1,
        latest_version: 1,
        status: wasmhook::model::VersionStatus::Ready,
        failure: None,
        created_at: now_ms(),
        updated_at: now_ms(),
    };
    let alone = Arc::new(
        runtime
            .load_local(&alone, &std::fs::read(path).unwrap())
            .unwrap(),
    );
    let stub: Arc<dyn PluginServices> = Arc::new(StubServices);
    group.bench_function("host_path_stub_services", |b| {
        b.to_async(&rt).iter(|| {
            let input = Input {
                event: &event,
                subscription_id: "sub",
                attempt: 1,
            };
            let (runtime, alone, stub) = (&runtime, &alone, &stub);
            async move {
                runtime
                    .invoke_loaded(stub.clone(), alone.clone(), input)
                    .await
                    .unwrap()
            }
        })
    });

    let engine = wasmhook::plugins::engine::new(16).unwrap();
    let wit = to_wit(
        Input {
            event: &event,
            subscription_id: "sub",
            attempt: 1,
        },
        "acc",
    );
    let pre = floor_pre_sync(&engine, path);
    let sync_event: sync_floor::wasmhook::plugin::types::Event =
        sync_floor::wasmhook::plugin::types::Event {
            id: wit.id.clone(),
            event_type: wit.event_type.clone(),
            occurred_at: wit.occurred_at.clone(),
            received_at: wit.received_at.clone(),
            payload: wit.payload.clone(),
            account_id: wit.account_id.clone(),
            subscription_id: wit.subscription_id.clone(),
            attempt: wit.attempt,
            causation: None,
        };
    group.bench_function("bare_wasmtime", |b| {
        b.iter(|| {
            let mut store = Store::new(&engine, Floor::new(&config));
            store.set_epoch_deadline(1_000_000);
            let instance = pre.instantiate(&mut store).unwrap();
            instance
                .wasmhook_plugin_handler()
                .call_handle(&mut store, &sync_event)
                .unwrap()
                .unwrap()
        })
    });
    let pre_async = floor_pre_async(&engine, path);
    group.bench_function("bare_wasmtime_async", |b| {
        b.to_async(&rt).iter(|| {
            let (engine, pre, wit, config) = (&engine, &pre_async, &wit, &config);
            async move {
                let mut store = Store::new(engine, Floor::new(config));
                store.epoch_deadline_async_yield_and_update(1);
                let instance = pre.instantiate_async(&mut store).await.unwrap();
                instance
                    .wasmhook_plugin_handler()
                    .call_handle(&mut store, wit)
                    .await
                    .unwrap()
                    .unwrap()
            }
        })
    });

    if let Some(native) = native {
        for (k, v) in &config {
            wasmhook_plugin_sdk::testing::set_config(k, v);
        }
        group.bench_function("native", |b| {
            b.iter(|| {
                native(wasmhook_plugin_sdk::Event::new(
                    "message:created",
                    payload(),
                ))
            })
        });
    }
    group.finish();
    rt.block_on(state.store.close());
}

fn plugins(c: &mut Criterion) {
    bench_plugin(
        c,
        "noop",
        artifacts::NOOP,
        &[],
        Some(|e| {
            noop::Noop::handle(e).unwrap();
        }),
    );
    bench_plugin(
        c,
        "pii-redactor",
        artifacts::PII_REDACTOR,
        &[],
        Some(|e| {
            pii_redactor::PiiRedactor::handle(e).unwrap();
        }),
    );
    bench_plugin(
        c,
        "auto-reply",
        artifacts::AUTO_REPLY,
        &[("reply_text", "Thanks!")],
        Some(|e| {
            auto_reply::AutoReply::handle(e).unwrap();
            wasmhook_plugin_sdk::testing::reset();
            wasmhook_plugin_sdk::testing::set_config("reply_text", "Thanks!");
        }),
    );
    // The Python and JavaScript examples, built by their own toolchains (`scripts/bench` runs
    // their build.sh first). They have no native counterpart.
    let dir = std::env::var_os("WASMHOOK_OTHER_LANGUAGES_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/other-languages")
        });
    for (name, file) in [
        ("python-hello", "python_hello.wasm"),
        ("js-hello", "js_hello.wasm"),
    ] {
        let path = dir.join(file);
        match path.to_str() {
            Some(p) if path.exists() => bench_plugin(c, name, p, &[("greeting", "hi")], None),
            _ => eprintln!(
                "skipping plugin/{name}: {} not built (run its build.sh)",
                path.display()
            ),
        }
    }
}

criterion_group!(benches, plugins);
criterion_main!(benches);
