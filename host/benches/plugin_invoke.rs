//! Per-event cost of a plugin through the host's real invocation path, next to two baselines
//! measured in the same run: the same logic compiled natively, and the bare floor (the same
//! component instantiated and called by a minimal wasmtime loop with nothing of wasmhook).
//!
//! Run with `cargo bench -p wasmhook --bench plugin_invoke` (or `scripts/bench`).

use std::collections::BTreeMap;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::json;
use serde_json::value::RawValue;
use wasmtime::Store;
use wasmtime::component::{Component, HasSelf, Linker, ResourceTable};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use wasmhook::clock::{new_id, now_ms, rfc3339};
use wasmhook::model::{Plugin, PluginLimits};
use wasmhook::plugins::bindings::{self, PluginPre, host, kv, types};
use wasmhook::plugins::invoke::{Input, to_wit};
use wasmhook::store::events::NewEvent;
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

/// The minimal host of the floor: WASI and no-op host functions.
struct Floor {
    wasi: WasiCtx,
    table: ResourceTable,
    config: BTreeMap<String, String>,
}

impl WasiView for Floor {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}
impl types::Host for Floor {}
impl host::Host for Floor {
    fn send_message(&mut self, _: String, _: String) -> Result<String, types::SendError> {
        Ok("m".into())
    }
    fn log(&mut self, _: types::LogLevel, _: String) {}
    fn config_get(&mut self, key: String) -> Option<String> {
        self.config.get(&key).cloned()
    }
}
impl kv::Host for Floor {
    fn get(&mut self, _: String) -> Result<Option<Vec<u8>>, types::KvError> {
        Ok(None)
    }
    fn set(&mut self, _: String, _: Vec<u8>) -> Result<(), types::KvError> {
        Ok(())
    }
    fn delete(&mut self, _: String) -> Result<(), types::KvError> {
        Ok(())
    }
}

fn floor_pre(engine: &wasmtime::Engine, path: &str) -> PluginPre<Floor> {
    let mut linker = Linker::<Floor>::new(engine);
    wasmtime_wasi::p2::add_to_linker_sync(&mut linker).unwrap();
    bindings::Plugin::add_to_linker::<Floor, HasSelf<Floor>>(&mut linker, |s| s).unwrap();
    let component = Component::from_file(engine, path).unwrap();
    PluginPre::new(linker.instantiate_pre(&component).unwrap()).unwrap()
}

fn bench_plugin(
    c: &mut Criterion,
    name: &str,
    path: &str,
    config: &[(&str, &str)],
    native: fn(wasmhook_plugin_sdk::Event),
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
    let (event, plugin_id) = rt.block_on(async {
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
            allowed_hosts: vec![],
            limits: PluginLimits::default(),
            version: 1,
            created_at: now_ms(),
            updated_at: now_ms(),
        };
        let plugin = state
            .plugins
            .create(&state.store, plugin, std::fs::read(path).unwrap())
            .await
            .unwrap();
        (event, plugin.id)
    });

    let mut group = c.benchmark_group(format!("plugin/{name}"));
    group
        .measurement_time(Duration::from_secs(5))
        .sample_size(50);

    group.bench_function("host_path", |b| {
        b.to_async(&rt).iter(|| {
            let input = Input {
                event: event.clone(),
                subscription_id: "sub".into(),
                attempt: 1,
            };
            let (state, plugin_id) = (&state, &plugin_id);
            async move { state.plugins.invoke(state, plugin_id, input).await.unwrap() }
        })
    });

    let engine = wasmhook::plugins::engine::new(16).unwrap();
    let pre = floor_pre(&engine, path);
    let wit = to_wit(
        &Input {
            event: event.clone(),
            subscription_id: "sub".into(),
            attempt: 1,
        },
        "acc",
    );
    group.bench_function("bare_wasmtime", |b| {
        b.iter(|| {
            let floor = Floor {
                wasi: WasiCtxBuilder::new().build(),
                table: ResourceTable::new(),
                config: config.clone(),
            };
            let mut store = Store::new(&engine, floor);
            store.set_epoch_deadline(1_000_000);
            let instance = pre.instantiate(&mut store).unwrap();
            instance
                .wasmhook_plugin_handler()
                .call_handle(&mut store, &wit)
                .unwrap()
                .unwrap()
        })
    });

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
    group.finish();
    rt.block_on(state.store.close());
}

fn plugins(c: &mut Criterion) {
    bench_plugin(c, "noop", artifacts::NOOP, &[], |e| {
        noop::Noop::handle(e).unwrap();
    });
    bench_plugin(c, "pii-redactor", artifacts::PII_REDACTOR, &[], |e| {
        pii_redactor::PiiRedactor::handle(e).unwrap();
    });
    bench_plugin(
        c,
        "auto-reply",
        artifacts::AUTO_REPLY,
        &[("reply_text", "Thanks!")],
        |e| {
            auto_reply::AutoReply::handle(e).unwrap();
            wasmhook_plugin_sdk::testing::reset();
            wasmhook_plugin_sdk::testing::set_config("reply_text", "Thanks!");
        },
    );
}

criterion_group!(benches, plugins);
criterion_main!(benches);
