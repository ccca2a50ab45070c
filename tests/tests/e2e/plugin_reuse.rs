//! Instance reuse (`"instances": "reuse"`): what persists between events (the plugin's
//! globals), every rule that throws an instance away, and what never crosses from one
//! account or subscription to another.
//!
//! The fixture is the hostile plugin in `counter` mode: it counts the events its instance
//! handled in a static and writes the count into the payload it delivers, so a count past 1
//! shows an instance that served an earlier event, and a count of 1 a fresh one.

use std::time::Duration;

use crate::common::{Receiver, TestServer, eventually};
use serde_json::{Value, json};
use wasmhook_plugin_artifacts as wasm;

const WAIT: Duration = Duration::from_secs(30);

/// A server, an account, a receiver.
async fn setup(flags: &[&str]) -> (TestServer, String, Receiver) {
    let s = TestServer::start_with(flags).await;
    let (_, key) = s.account("A").await;
    (s, key, Receiver::start().await)
}

/// Uploads the hostile plugin in `counter` mode with `patch` applied (`instances`, limits,
/// ...); returns its id.
async fn counter_plugin(s: &TestServer, key: &str, patch: Value) -> String {
    let plugin = s
        .plugin(
            key,
            "counter",
            wasm::HOSTILE,
            json!({"config": {"mode": "counter"}}),
        )
        .await;
    let id = plugin["id"].as_str().unwrap().to_string();
    if !patch.is_null() {
        let (status, body) = s.patch(&format!("/v1/plugins/{id}"), key, patch).await;
        assert_eq!(status, 200, "{body}");
    }
    id
}

/// A subscription to events of `event_type` sent to the receiver's `/path` through the
/// `plugin` transform; returns its id.
async fn through(s: &TestServer, key: &str, r: &Receiver, plugin: &str, path: &str) -> String {
    let sub = s
        .subscribe(
            key,
            json!({"url": format!("{}/{path}", r.url), "transform_plugin_id": plugin,
                   "event_types": [path]}),
        )
        .await;
    sub["id"].as_str().unwrap().to_string()
}

/// The settled statuses of an event's deliveries, once none is pending.
async fn settled(s: &TestServer, key: &str, event_id: &str) -> Vec<String> {
    let path = format!("/v1/events/{event_id}/deliveries");
    eventually(
        &format!("the deliveries of {event_id} settle"),
        WAIT,
        || async {
            let (_, list) = s.get(&path, key).await;
            let statuses: Vec<String> = list["data"]
                .as_array()?
                .iter()
                .map(|d| d["status"].as_str().unwrap_or_default().to_string())
                .collect();
            (!statuses.is_empty() && statuses.iter().all(|st| st != "pending")).then_some(statuses)
        },
    )
    .await
}

/// What the plugin delivered for `event_id` at `/path`.
fn delivered(r: &Receiver, path: &str, event_id: &str) -> Option<Value> {
    r.at(&format!("/{path}"))
        .iter()
        .map(|got| got.json()["data"].clone())
        .find(|data| data["event_id"] == event_id)
}

/// Posts an event of type `path` with `payload` and waits until its deliveries settle;
/// returns the count the plugin delivered (`None` when the delivery failed).
async fn post(s: &TestServer, key: &str, r: &Receiver, path: &str, payload: Value) -> Option<u64> {
    let event = s
        .event(key, json!({"type": path, "payload": payload}))
        .await;
    let id = event["id"].as_str().unwrap();
    let statuses = settled(s, key, id).await;
    if statuses.iter().any(|st| st != "succeeded") {
        return None;
    }
    let data = delivered(r, path, id).unwrap_or_else(|| panic!("nothing delivered for {id}"));
    Some(data["count"].as_u64().unwrap())
}

/// `n` counting events in a row; returns their counts.
async fn counts(s: &TestServer, key: &str, r: &Receiver, path: &str, n: usize) -> Vec<u64> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(post(s, key, r, path, json!({})).await.expect("delivered"));
    }
    out
}

/// The value of the metric line starting with `name` (labels included), 0 when absent.
fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .map_or(0, |v| v.trim().parse::<f64>().unwrap() as u64)
}

fn discards(text: &str, reason: &str) -> u64 {
    metric(
        text,
        &format!("wasmhook_plugin_instance_discards_total{{reason=\"{reason}\"}}"),
    )
}

#[tokio::test]
async fn globals_persist_between_events_in_reuse_mode_and_never_in_per_event_mode() {
    let (s, key, r) = setup(&[]).await;
    let plugin = counter_plugin(&s, &key, Value::Null).await;
    let (status, body) = s.get(&format!("/v1/plugins/{plugin}"), &key).await;
    assert_eq!(
        (status, &body["instances"]),
        (200, &json!("per_event")),
        "{body}"
    );
    through(&s, &key, &r, &plugin, "x").await;
    assert_eq!(counts(&s, &key, &r, "x", 3).await, [1, 1, 1], "per_event");

    let path = format!("/v1/plugins/{plugin}");
    let (status, body) = s.patch(&path, &key, json!({"instances": "reuse"})).await;
    assert_eq!(
        (status, &body["instances"]),
        (200, &json!("reuse")),
        "{body}"
    );
    let (_, body) = s.get(&path, &key).await;
    assert_eq!(body["instances"], "reuse", "persisted: {body}");
    assert_eq!(counts(&s, &key, &r, "x", 3).await, [1, 2, 3], "reuse");
    let m = s.metrics().await;
    assert_eq!(
        metric(&m, "wasmhook_plugin_instances_total{source=\"reused\"}"),
        2,
        "{m}"
    );
    assert_eq!(
        metric(&m, "wasmhook_plugin_instances_total{source=\"fresh\"}"),
        4,
        "{m}"
    );
    assert_eq!(metric(&m, "wasmhook_plugin_instances_idle"), 1, "{m}");

    // Back to one instance per event: the idle one is thrown away.
    let (status, _) = s
        .patch(&path, &key, json!({"instances": "per_event"}))
        .await;
    assert_eq!(status, 200);
    let m = s.metrics().await;
    assert_eq!(discards(&m, "per_event"), 1, "{m}");
    assert_eq!(metric(&m, "wasmhook_plugin_instances_idle"), 0, "{m}");
    assert_eq!(counts(&s, &key, &r, "x", 2).await, [1, 1]);

    // Anything else is refused, naming the field.
    let (status, body) = s.patch(&path, &key, json!({"instances": "pooled"})).await;
    assert_eq!(status, 400, "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("instances"), "{message}");

    // The API document has the field, on the plugin and in its PATCH body.
    let doc: Value = s
        .http
        .get(s.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let schemas = &doc["components"]["schemas"];
    for schema in ["Plugin", "UpdatePlugin"] {
        let field = &schemas[schema]["properties"]["instances"];
        assert!(!field.is_null(), "{schema}: {}", schemas[schema]);
    }
    assert_eq!(
        schemas["InstanceMode"]["enum"],
        json!(["per_event", "reuse"]),
        "{}",
        schemas["InstanceMode"]
    );
}

#[tokio::test]
async fn no_state_crosses_accounts_or_subscriptions() {
    let (s, key_a, r) = setup(&[]).await;
    let (account_b, key_b) = s.account("B").await;
    // The same component bytes in both accounts, both in reuse mode.
    let reuse = json!({"instances": "reuse"});
    let plugin_a = counter_plugin(&s, &key_a, reuse.clone()).await;
    let plugin_b = counter_plugin(&s, &key_b, reuse).await;
    let a1 = through(&s, &key_a, &r, &plugin_a, "a1").await;
    let a2 = through(&s, &key_a, &r, &plugin_a, "a2").await;
    let b1 = through(&s, &key_b, &r, &plugin_b, "b1").await;

    let mut seen: Vec<(&str, u64)> = Vec::new();
    for _ in 0..3 {
        for (key, path) in [(&key_a, "a1"), (&key_a, "a2"), (&key_b, "b1")] {
            seen.push((path, post(&s, key, &r, path, json!({})).await.unwrap()));
        }
    }
    // Each subscription has an instance of its own: three counts of 1, 2, 3, not one of 1 to 9.
    assert_eq!(
        seen,
        [
            ("a1", 1),
            ("a2", 1),
            ("b1", 1),
            ("a1", 2),
            ("a2", 2),
            ("b1", 2),
            ("a1", 3),
            ("a2", 3),
            ("b1", 3)
        ]
    );
    for (path, sub) in [("a1", &a1), ("a2", &a2), ("b1", &b1)] {
        for got in r.at(&format!("/{path}")) {
            let data = got.json()["data"].clone();
            assert_eq!(data["subscription_id"], *sub, "{data}");
            if path == "b1" {
                assert_eq!(data["account_id"], account_b, "{data}");
            } else {
                assert_ne!(data["account_id"], account_b, "{data}");
            }
        }
    }
}

#[tokio::test]
async fn a_failed_event_throws_its_instance_away_but_a_handler_error_does_not() {
    let (s, key, r) = setup(&[]).await;
    let plugin = counter_plugin(
        &s,
        &key,
        json!({"instances": "reuse", "limits": {"deadline_ms": 500, "memory_mb": 32}}),
    )
    .await;
    through(&s, &key, &r, &plugin, "x").await;
    let then = |what: &str| json!({"then": what});

    assert_eq!(counts(&s, &key, &r, "x", 2).await, [1, 2]);
    // The handler's own error leaves the instance as it was: it counts on.
    assert_eq!(post(&s, &key, &r, "x", then("error")).await, None);
    assert_eq!(counts(&s, &key, &r, "x", 1).await, [4]);

    // A trap: the next event starts fresh.
    assert_eq!(post(&s, &key, &r, "x", then("trap")).await, None);
    assert_eq!(counts(&s, &key, &r, "x", 2).await, [1, 2]);

    // A limit breached (a replacement payload over `replace_bytes`).
    assert_eq!(post(&s, &key, &r, "x", then("oversized")).await, None);
    assert_eq!(counts(&s, &key, &r, "x", 2).await, [1, 2]);

    // The memory limit.
    assert_eq!(post(&s, &key, &r, "x", then("memory")).await, None);
    assert_eq!(counts(&s, &key, &r, "x", 2).await, [1, 2]);

    // A replacement that is not a JSON object.
    assert_eq!(post(&s, &key, &r, "x", then("invalid")).await, None);
    assert_eq!(counts(&s, &key, &r, "x", 2).await, [1, 2]);

    // The deadline (retried on the schedule, each attempt in a fresh instance it throws away).
    assert_eq!(post(&s, &key, &r, "x", then("loop")).await, None);
    assert_eq!(counts(&s, &key, &r, "x", 1).await, [1]);

    let m = s.metrics().await;
    assert_eq!(discards(&m, "trap"), 1, "{m}");
    assert_eq!(discards(&m, "limit"), 2, "oversized, memory: {m}");
    assert!(discards(&m, "deadline") >= 1, "{m}");
    assert_eq!(discards(&m, "invalid_output"), 1, "{m}");
}

#[tokio::test]
async fn past_max_idle_the_least_recently_used_idle_instance_goes() {
    let (s, key, r) = setup(&["--reuse-max-idle", "1"]).await;
    let plugin = counter_plugin(&s, &key, json!({"instances": "reuse"})).await;
    through(&s, &key, &r, &plugin, "a").await;
    through(&s, &key, &r, &plugin, "b").await;
    assert_eq!(counts(&s, &key, &r, "a", 2).await, [1, 2]);
    // b's instance takes the one idle place: a's goes.
    assert_eq!(counts(&s, &key, &r, "b", 2).await, [1, 2]);
    assert_eq!(discards(&s.metrics().await, "full"), 1);
    assert_eq!(counts(&s, &key, &r, "a", 1).await, [1]);
}

#[tokio::test]
async fn an_instance_serves_at_most_max_events() {
    let (s, key, r) = setup(&["--reuse-max-events", "3"]).await;
    let plugin = counter_plugin(&s, &key, json!({"instances": "reuse"})).await;
    through(&s, &key, &r, &plugin, "x").await;
    assert_eq!(counts(&s, &key, &r, "x", 7).await, [1, 2, 3, 1, 2, 3, 1]);
    assert_eq!(discards(&s.metrics().await, "max_events"), 2);
}

#[tokio::test]
async fn an_instance_is_thrown_away_past_its_max_age() {
    let (s, key, r) = setup(&["--reuse-max-age", "300ms"]).await;
    let plugin = counter_plugin(&s, &key, json!({"instances": "reuse"})).await;
    through(&s, &key, &r, &plugin, "x").await;
    assert_eq!(counts(&s, &key, &r, "x", 1).await, [1]);
    eventually("the instance ages out", WAIT, || async {
        (discards(&s.metrics().await, "max_age") >= 1).then_some(())
    })
    .await;
    assert_eq!(counts(&s, &key, &r, "x", 1).await, [1]);
}

#[tokio::test]
async fn an_idle_instance_is_thrown_away_after_the_idle_timeout() {
    let (s, key, r) = setup(&["--reuse-idle-timeout", "200ms"]).await;
    let plugin = counter_plugin(&s, &key, json!({"instances": "reuse"})).await;
    through(&s, &key, &r, &plugin, "x").await;
    assert_eq!(counts(&s, &key, &r, "x", 1).await, [1]);
    eventually("the idle instance times out", WAIT, || async {
        let m = s.metrics().await;
        (discards(&m, "idle_timeout") == 1 && metric(&m, "wasmhook_plugin_instances_idle") == 0)
            .then_some(())
    })
    .await;
    assert_eq!(counts(&s, &key, &r, "x", 1).await, [1]);
}

#[tokio::test]
async fn memory_grown_past_the_threshold_throws_the_instance_away() {
    let (s, key, r) = setup(&[]).await;
    let plugin = counter_plugin(&s, &key, json!({"instances": "reuse"})).await;
    through(&s, &key, &r, &plugin, "x").await;
    assert_eq!(counts(&s, &key, &r, "x", 2).await, [1, 2]);
    // Keeps 8 MiB: more than twice what the instance had after its first event.
    let grown = post(&s, &key, &r, "x", json!({"then": "grow", "mb": 8})).await;
    assert_eq!(grown, Some(3), "the event itself succeeds");
    assert_eq!(counts(&s, &key, &r, "x", 1).await, [1]);
    assert_eq!(discards(&s.metrics().await, "memory_growth"), 1);
}

#[tokio::test]
async fn a_config_change_a_new_version_or_deletion_throws_instances_away() {
    let (s, key, r) = setup(&[]).await;
    let plugin = counter_plugin(&s, &key, json!({"instances": "reuse"})).await;
    let sub = through(&s, &key, &r, &plugin, "x").await;
    let path = format!("/v1/plugins/{plugin}");
    assert_eq!(counts(&s, &key, &r, "x", 2).await, [1, 2]);

    let change = json!({"config": {"mode": "counter", "other": "value"}});
    let (status, body) = s.patch(&path, &key, change).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(discards(&s.metrics().await, "settings"), 1);
    assert_eq!(counts(&s, &key, &r, "x", 2).await, [1, 2]);

    let resp = s
        .http
        .put(s.url(&path))
        .bearer_auth(&key)
        .header("content-type", "application/wasm")
        .body(std::fs::read(wasm::HOSTILE).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 202);
    // Swapped in (and the old version's instances thrown away) once it is compiled.
    s.compiled(&key, &plugin, "ready").await;
    assert_eq!(discards(&s.metrics().await, "version"), 1);
    assert_eq!(counts(&s, &key, &r, "x", 2).await, [1, 2]);

    let (status, _) = s.delete(&format!("/v1/subscriptions/{sub}"), &key).await;
    assert_eq!(status, 204);
    let (status, _) = s.delete(&path, &key).await;
    assert_eq!(status, 204);
    let m = s.metrics().await;
    assert_eq!(discards(&m, "deleted"), 1, "{m}");
    assert_eq!(metric(&m, "wasmhook_plugin_instances_idle"), 0, "{m}");
}

#[tokio::test]
async fn host_calls_and_output_belong_to_the_event_being_handled() {
    let (s, key, r) = setup(&[]).await;
    let plugin = counter_plugin(&s, &key, json!({"instances": "reuse"})).await;
    through(&s, &key, &r, &plugin, "x").await;
    let mut events = Vec::new();
    for n in 1..=2 {
        let payload = json!({"then": "send", "conversation_id": "conv-reuse",
            "sender": {"id": "contact-1", "type": "source_contact"}});
        let event = s
            .event(&key, json!({"type": "x", "payload": payload}))
            .await;
        let id = event["id"].as_str().unwrap().to_string();
        assert_eq!(settled(&s, &key, &id).await, ["succeeded"]);
        assert_eq!(delivered(&r, "x", &id).unwrap()["count"], n);
        events.push(id);
    }

    // Each message names the event whose handling sent it.
    let (_, list) = s.get("/v1/events?type=message:created", &key).await;
    let mut sent: Vec<(String, String)> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["payload"]["text"].as_str().unwrap().to_string(),
                e["causation"]["event_id"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    sent.sort();
    assert_eq!(
        sent,
        [
            ("counter 1".to_string(), events[0].clone()),
            ("counter 2".to_string(), events[1].clone())
        ]
    );

    // Each event's log lines and output are its own, once.
    let lines = s
        .logs_with(&key, &plugin, |l| l["message"] == "counter stdout 2")
        .await;
    let mut of_event: Vec<(String, String)> = lines
        .iter()
        .filter(|l| l["message"].as_str().unwrap().starts_with("counter"))
        .map(|l| {
            (
                l["message"].as_str().unwrap().to_string(),
                l["event_id"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    of_event.sort();
    let (e1, e2) = (events[0].clone(), events[1].clone());
    assert_eq!(
        of_event,
        [
            ("counter 1".to_string(), e1.clone()),
            ("counter 2".to_string(), e2.clone()),
            ("counter stdout 1".to_string(), e1),
            ("counter stdout 2".to_string(), e2),
        ]
    );
}

#[tokio::test]
async fn an_idle_instance_gives_its_memory_up_to_another_accounts_event() {
    // Room for one instance at the default 64 MiB limit.
    let (s, key_a, r) = setup(&["--plugin-memory-budget", "64MiB"]).await;
    let (_, key_b) = s.account("B").await;
    let plugin_a = counter_plugin(&s, &key_a, json!({"instances": "reuse"})).await;
    let plugin_b = counter_plugin(&s, &key_b, Value::Null).await;
    through(&s, &key_a, &r, &plugin_a, "a").await;
    through(&s, &key_b, &r, &plugin_b, "b").await;
    assert_eq!(counts(&s, &key_a, &r, "a", 2).await, [1, 2]);
    let m = s.metrics().await;
    assert_eq!(
        metric(&m, "wasmhook_plugin_memory_reserved_bytes"),
        64 << 20,
        "the idle instance holds its reservation: {m}"
    );

    // B's event does not wait for A's idle instance: it takes its room.
    assert_eq!(counts(&s, &key_b, &r, "b", 1).await, [1]);
    assert_eq!(discards(&s.metrics().await, "budget"), 1);
    assert_eq!(counts(&s, &key_a, &r, "a", 1).await, [1]);
}
