//! The plugin memory budget (`--plugin-memory-budget`): every instance reserves its memory
//! ceiling before it starts; instances that do not fit wait instead of starting, without
//! failing their event and without holding the delivery slots other accounts' webhooks need.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::common::{Receiver, TestServer, eventually};
use serde_json::{Value, json};
use tokio::sync::watch;
use wasmhook_plugin_artifacts as wasm;

const WAIT: Duration = Duration::from_secs(60);
const MIB: u64 = 1 << 20;

/// An HTTP endpoint that holds every request until it is opened: plugins that GET it stay
/// running (holding their memory) for as long as the test wants, with no timing involved.
struct Gate {
    url: String,
    arrived: Arc<AtomicUsize>,
    open: watch::Sender<bool>,
}

impl Gate {
    async fn start() -> Gate {
        let (open, opened) = watch::channel(false);
        let arrived = Arc::new(AtomicUsize::new(0));
        let counter = arrived.clone();
        let app = axum::Router::new().fallback(move || {
            let mut opened = opened.clone();
            let counter = counter.clone();
            async move {
                counter.fetch_add(1, Ordering::SeqCst);
                let _ = opened.wait_for(|open| *open).await;
                "open"
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/gate", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Gate { url, arrived, open }
    }
}

/// The value of an unlabelled metric in the Prometheus text.
fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("{name} is not in /metrics:\n{text}"))
        .trim()
        .parse::<f64>()
        .unwrap() as u64
}

async fn statuses(s: &TestServer, key: &str, events: &[Value]) -> Vec<String> {
    let mut out = Vec::new();
    for e in events {
        let path = format!("/v1/events/{}/deliveries", e["id"].as_str().unwrap());
        let (_, list) = s.get(&path, key).await;
        for d in list["data"].as_array().cloned().unwrap_or_default() {
            out.push(d["status"].as_str().unwrap().to_string());
        }
    }
    out
}

#[tokio::test]
async fn instances_wait_for_room_in_the_budget_while_other_webhooks_flow() {
    // Room for two 512 MiB instances; four delivery slots, so that waiting instances holding
    // slots would leave none for the other account's webhook.
    let s = TestServer::start_with(&[
        "--plugin-memory-budget",
        "1GiB",
        "--delivery-concurrency",
        "4",
    ])
    .await;
    let (_, heavy) = s.account("heavy").await;
    let (_, light) = s.account("light").await;
    let gate = Gate::start().await;
    let r = Receiver::start().await;

    let plugin = s
        .plugin(
            &heavy,
            "hungry",
            wasm::HOSTILE,
            json!({
                "config": {"mode": "hold-memory", "mb": "32", "url": gate.url},
                "allowed_hosts": ["127.0.0.1"],
                "limits": {"memory_mb": 512, "deadline_ms": 30000},
            }),
        )
        .await;
    s.subscribe(
        &heavy,
        json!({"plugin_id": plugin["id"], "event_types": ["heavy"], "ordering": "none"}),
    )
    .await;
    s.subscribe(
        &light,
        json!({"url": r.url.clone(), "event_types": ["light"]}),
    )
    .await;

    let mut events = Vec::new();
    for i in 0..6 {
        events.push(
            s.event(&heavy, json!({"type": "heavy", "payload": {"i": i}}))
                .await,
        );
    }
    // Two instances run (each reserved 512 MiB) and hold at the gate; four wait for room.
    eventually("two instances running, four waiting", WAIT, || async {
        let m = s.metrics().await;
        let running = gate.arrived.load(Ordering::SeqCst);
        (running == 2
            && metric(&m, "wasmhook_plugin_memory_reserved_bytes") == 1024 * MIB
            && metric(&m, "wasmhook_plugin_memory_waiting") == 4)
            .then_some(())
    })
    .await;

    // Meanwhile another account's webhook is delivered.
    let e = s
        .event(&light, json!({"type": "light", "payload": {"ok": true}}))
        .await;
    eventually("the other account's webhook is delivered", WAIT, || async {
        (!r.received().is_empty()).then_some(())
    })
    .await;
    assert_eq!(r.received()[0].json()["data"]["ok"], true);
    let m = s.metrics().await;
    assert_eq!(metric(&m, "wasmhook_plugin_memory_waiting"), 4, "{m}");
    assert_eq!(
        gate.arrived.load(Ordering::SeqCst),
        2,
        "no third instance started"
    );
    // Its outcome is recorded after the receiver answered, so it may still be on its way.
    eventually("the other account's delivery is recorded", WAIT, || async {
        (statuses(&s, &light, std::slice::from_ref(&e)).await == ["succeeded"]).then_some(())
    })
    .await;

    // Opened, the gate lets the running ones finish and the waiting ones start in turn.
    gate.open.send(true).unwrap();
    let done = eventually("every heavy event is delivered", WAIT, || async {
        let st = statuses(&s, &heavy, &events).await;
        (st.len() == 6 && st.iter().all(|s| s != "pending")).then_some(st)
    })
    .await;
    assert!(done.iter().all(|s| s == "succeeded"), "{done:?}");
    assert_eq!(gate.arrived.load(Ordering::SeqCst), 6);

    let m = s.metrics().await;
    assert_eq!(
        metric(&m, "wasmhook_plugin_memory_budget_bytes"),
        1024 * MIB,
        "{m}"
    );
    assert_eq!(
        metric(&m, "wasmhook_plugin_memory_reserved_peak_bytes"),
        1024 * MIB,
        "the reservations at once never passed the budget: {m}"
    );
    assert!(metric(&m, "wasmhook_plugin_memory_waits_total") >= 4, "{m}");
    eventually("every reservation given back", WAIT, || async {
        let m = s.metrics().await;
        (metric(&m, "wasmhook_plugin_memory_reserved_bytes") == 0
            && metric(&m, "wasmhook_plugin_memory_waiting") == 0)
            .then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_plugin_above_the_budget_runs_alone() {
    let s = TestServer::start_with(&["--plugin-memory-budget", "128MiB"]).await;
    let (_, key) = s.account("A").await;
    let r = Receiver::start().await;
    let plugin = s
        .plugin(
            &key,
            "big",
            wasm::HOSTILE,
            json!({"config": {"mode": "hold-memory", "mb": "16"}, "limits": {"memory_mb": 512}}),
        )
        .await;
    s.subscribe(
        &key,
        json!({"url": r.url.clone(), "transform_plugin_id": plugin["id"], "event_types": ["x"]}),
    )
    .await;
    s.event(&key, json!({"type": "x", "payload": {}})).await;
    eventually("delivered through the plugin", WAIT, || async {
        (!r.received().is_empty()).then_some(())
    })
    .await;
    let m = s.metrics().await;
    assert_eq!(
        metric(&m, "wasmhook_plugin_memory_reserved_peak_bytes"),
        128 * MIB,
        "{m}"
    );
}
