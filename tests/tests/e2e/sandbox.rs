//! The sandbox: each limit has a hostile plugin that hits it, and each test checks that the
//! failure is recorded with a clear reason while the server keeps serving and an innocent
//! plugin's events keep flowing.

use std::time::Duration;

use crate::common::{Receiver, TestServer, eventually};
use serde_json::{Value, json};
use wasmhook_plugin_artifacts as wasm;

const WAIT: Duration = Duration::from_secs(30);

async fn upload(s: &TestServer, key: &str, path: &str, patch: Value) -> String {
    s.plugin(key, "fixture", path, patch).await["id"]
        .as_str()
        .unwrap()
        .to_string()
}

/// The first attempt of the delivery of `event_id`, once one is recorded.
async fn first_attempt(s: &TestServer, key: &str, event_id: &str) -> (Value, Value) {
    eventually(&format!("an attempt at {event_id}"), WAIT, || async {
        let (_, list) = s
            .get(&format!("/v1/events/{event_id}/deliveries"), key)
            .await;
        let id = list["data"][0]["id"].as_str()?.to_string();
        let (_, d) = s.get(&format!("/v1/deliveries/{id}"), key).await;
        let attempt = d["attempt_log"][0].clone();
        (!attempt.is_null()).then_some((d, attempt))
    })
    .await
}

/// A hostile plugin subscribed to `hostile.<mode>`, an innocent echo plugin on `innocent`.
async fn hostile(s: &TestServer, key: &str, mode: &str, limits: Value) -> String {
    let id = upload(
        s,
        key,
        wasm::HOSTILE,
        json!({"config": {"mode": mode}, "limits": limits}),
    )
    .await;
    s.subscribe(
        key,
        json!({"plugin_id": id, "event_types": [format!("hostile.{mode}")]}),
    )
    .await;
    id
}

async fn innocent_still_flows(s: &TestServer, key: &str, r: &Receiver) {
    let before = r.received().len();
    s.event(key, json!({"type": "innocent", "payload": {"ok": true}}))
        .await;
    eventually("the innocent event is delivered", WAIT, || async {
        (r.received().len() > before).then_some(())
    })
    .await;
    assert_eq!(
        s.call(reqwest::Method::GET, "/healthz", None, None).await.0,
        200
    );
}

async fn setup() -> (TestServer, String, Receiver) {
    let s = TestServer::start().await;
    let (_, key) = s.account("A").await;
    let r = Receiver::start().await;
    let echo = upload(
        &s,
        &key,
        wasm::HOSTILE,
        json!({"config": {"mode": "echo-config", "value": "v"}}),
    )
    .await;
    s.subscribe(
        &key,
        json!({"url": r.url.clone(), "transform_plugin_id": echo, "event_types": ["innocent"]}),
    )
    .await;
    (s, key, r)
}

// Two worker threads, as in the server binary (tests default to a single-threaded runtime).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endless_loops_hit_the_deadline_and_do_not_block_the_server() {
    let (s, key, r) = setup().await;
    hostile(&s, &key, "loop", json!({"deadline_ms": 1500})).await;
    let e = s
        .event(&key, json!({"type": "hostile.loop", "payload": {}}))
        .await;
    let path = format!("/v1/events/{}/deliveries", e["id"].as_str().unwrap());
    // A claim moves `next_attempt_at` to the end of its lease: the plugin is being run.
    eventually("the looping plugin's delivery is claimed", WAIT, || async {
        let (_, list) = s.get(&path, &key).await;
        let d = &list["data"][0];
        (d["next_attempt_at"].as_str() > d["created_at"].as_str()).then_some(())
    })
    .await;
    // While the plugin spins, the API answers and other deliveries flow.
    innocent_still_flows(&s, &key, &r).await;
    let (_, list) = s.get(&path, &key).await;
    assert_eq!(
        list["data"][0]["attempts"], 0,
        "the loop was still running while requests were served"
    );
    let (_, attempt) = first_attempt(&s, &key, e["id"].as_str().unwrap()).await;
    assert_eq!(attempt["error_kind"], "plugin");
    assert!(
        attempt["error_message"]
            .as_str()
            .unwrap()
            .contains("deadline exceeded after 1s 500ms"),
        "{attempt}"
    );
}

#[tokio::test]
async fn a_plugin_blocked_in_a_host_call_still_meets_its_deadline() {
    let (s, key, r) = setup().await;
    let id = upload(
        &s,
        &key,
        wasm::HOSTILE,
        json!({"config": {"mode": "sleep", "ms": "20000"}, "limits": {"deadline_ms": 300}}),
    )
    .await;
    s.subscribe(
        &key,
        json!({"plugin_id": id, "event_types": ["hostile.sleep"]}),
    )
    .await;
    let e = s
        .event(&key, json!({"type": "hostile.sleep", "payload": {}}))
        .await;
    let (_, attempt) = first_attempt(&s, &key, e["id"].as_str().unwrap()).await;
    assert!(
        attempt["error_message"]
            .as_str()
            .unwrap()
            .contains("deadline exceeded after 300ms"),
        "{attempt}"
    );
    // What it logged before the deadline is kept, next to why it stopped.
    let logs = eventually("log lines", WAIT, || async {
        let (_, logs) = s.get(&format!("/v1/plugins/{id}/logs"), &key).await;
        let lines = logs["data"].as_array().unwrap().clone();
        (lines.len() >= 2).then_some(lines)
    })
    .await;
    let messages: Vec<&str> = logs.iter().filter_map(|l| l["message"].as_str()).collect();
    assert!(
        messages.contains(&"hostile: going to sleep"),
        "{messages:?}"
    );
    assert!(
        messages.iter().any(|m| m.contains("deadline exceeded")),
        "{messages:?}"
    );
    innocent_still_flows(&s, &key, &r).await;
}

#[tokio::test]
async fn a_flood_of_output_is_cut_at_the_log_budget_and_the_plugin_goes_on() {
    let (s, key, r) = setup().await;
    // 400 KiB of stdout against a 16 KiB log budget.
    let id = upload(
        &s,
        &key,
        wasm::HOSTILE,
        json!({"config": {"mode": "print-flood"}, "limits": {"log_bytes": 16384}}),
    )
    .await;
    s.subscribe(
        &key,
        json!({"url": format!("{}/flood", r.url), "transform_plugin_id": id, "event_types": ["hostile.flood"]}),
    )
    .await;
    let ids: Vec<String> = send_events(&s, &key, "hostile.flood", 2).await;
    for id in &ids {
        let (d, attempt) = first_attempt(&s, &key, id).await;
        assert_eq!(d["status"], "succeeded", "{attempt}");
    }
    assert_eq!(r.at("/flood").len(), 2);
    // Log lines are written in batches shortly after each invocation.
    let lines = eventually("both events' log lines", WAIT, || async {
        let (_, logs) = s
            .get(&format!("/v1/plugins/{id}/logs?limit=1000"), &key)
            .await;
        let lines = logs["data"].as_array().unwrap().clone();
        let dropped = lines
            .iter()
            .filter(|l| {
                l["message"]
                    .as_str()
                    .unwrap()
                    .contains("more bytes of output dropped")
            })
            .count();
        (dropped == 2).then_some(lines)
    })
    .await;
    let bytes: usize = lines
        .iter()
        .map(|l| l["message"].as_str().unwrap().len())
        .sum();
    assert!(
        bytes <= 2 * (16384 + 100),
        "{bytes} bytes of log lines kept"
    );
    for event_id in &ids {
        let of_event: Vec<&Value> = lines
            .iter()
            .filter(|l| l["event_id"] == *event_id)
            .collect();
        // Each event's own output, cut at the budget: a context reused between events
        // carries nothing over.
        let printed = of_event
            .iter()
            .filter(|l| l["message"].as_str().unwrap().starts_with("xxx"))
            .count();
        assert!(
            (100..=170).contains(&printed),
            "{printed} lines for {event_id}"
        );
        assert!(
            of_event.iter().any(|l| l["message"]
                .as_str()
                .unwrap()
                .contains("more bytes of output dropped")),
            "{of_event:?}"
        );
    }
    innocent_still_flows(&s, &key, &r).await;
}

async fn send_events(s: &TestServer, key: &str, event_type: &str, n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for _ in 0..n {
        let e = s
            .event(key, json!({"type": event_type, "payload": {}}))
            .await;
        ids.push(e["id"].as_str().unwrap().to_string());
    }
    ids
}

#[tokio::test]
async fn unbounded_memory_growth_hits_the_memory_limit() {
    let (s, key, r) = setup().await;
    hostile(&s, &key, "memory", json!({"memory_mb": 16})).await;
    let e = s
        .event(&key, json!({"type": "hostile.memory", "payload": {}}))
        .await;
    let (_, attempt) = first_attempt(&s, &key, e["id"].as_str().unwrap()).await;
    assert!(
        attempt["error_message"]
            .as_str()
            .unwrap()
            .contains("memory limit 16 MiB exceeded"),
        "{attempt}"
    );
    innocent_still_flows(&s, &key, &r).await;
}

#[tokio::test]
async fn traps_and_stack_overflows_are_recorded() {
    let (s, key, r) = setup().await;
    hostile(&s, &key, "trap", json!({})).await;
    hostile(&s, &key, "stack-overflow", json!({})).await;
    let trap = s
        .event(&key, json!({"type": "hostile.trap", "payload": {}}))
        .await;
    let overflow = s
        .event(
            &key,
            json!({"type": "hostile.stack-overflow", "payload": {}}),
        )
        .await;
    let (d, attempt) = first_attempt(&s, &key, trap["id"].as_str().unwrap()).await;
    assert!(
        attempt["error_message"]
            .as_str()
            .unwrap()
            .contains("plugin trapped"),
        "{attempt}"
    );
    assert_eq!(d["status"], "failed", "a trap is not retried");
    let (_, attempt) = first_attempt(&s, &key, overflow["id"].as_str().unwrap()).await;
    let reason = attempt["error_message"].as_str().unwrap();
    assert!(reason.contains("stack overflow"), "{attempt}");
    innocent_still_flows(&s, &key, &r).await;
}

#[tokio::test]
async fn send_message_floods_are_capped() {
    let (s, key, r) = setup().await;
    let id = hostile(&s, &key, "send-flood", json!({})).await;
    let e = s
        .event(&key, json!({"type": "hostile.send-flood", "payload": {"conversation_id": "flood", "text": "hi"}}))
        .await;
    first_attempt(&s, &key, e["id"].as_str().unwrap()).await;
    let (_, events) = s
        .get("/v1/events?type=message:created&limit=250", &key)
        .await;
    let sent = events["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["causation"]["plugin_id"] == id.as_str())
        .count();
    assert_eq!(sent, 5, "the default send-message limit is 5 per event");
    s.logs_with(&key, &id, |l| {
        l["message"].as_str().unwrap().contains("limit of 5")
    })
    .await;
    innocent_still_flows(&s, &key, &r).await;
}

#[tokio::test]
async fn oversized_replacements_fail_the_attempt_and_send_nothing() {
    let (s, key, r) = setup().await;
    let id = upload(
        &s,
        &key,
        wasm::HOSTILE,
        json!({"config": {"mode": "oversized-replace"}}),
    )
    .await;
    let out = Receiver::start().await;
    s.subscribe(
        &key,
        json!({"url": out.url.clone(), "transform_plugin_id": id, "event_types": ["big"]}),
    )
    .await;
    let e = s.event(&key, json!({"type": "big", "payload": {}})).await;
    let (_, attempt) = first_attempt(&s, &key, e["id"].as_str().unwrap()).await;
    assert!(
        attempt["error_message"]
            .as_str()
            .unwrap()
            .contains("exceeds the limit of 262144 bytes"),
        "{attempt}"
    );
    assert!(out.received().is_empty());
    innocent_still_flows(&s, &key, &r).await;
}

#[tokio::test]
async fn outgoing_http_reaches_only_allowed_hosts() {
    let (s, key, r) = setup().await;
    let target = Receiver::start().await;
    let out = Receiver::start().await;
    let url = format!("{}/ping", target.url);
    let id = upload(
        &s,
        &key,
        wasm::HOSTILE,
        json!({"config": {"mode": "http", "url": url}}),
    )
    .await;
    s.subscribe(
        &key,
        json!({"url": out.url.clone(), "transform_plugin_id": id, "event_types": ["call"]}),
    )
    .await;
    let denied = s.event(&key, json!({"type": "call", "payload": {}})).await;
    let (_, attempt) = first_attempt(&s, &key, denied["id"].as_str().unwrap()).await;
    assert_eq!(attempt["error_kind"], "plugin", "{attempt}");
    assert!(target.received().is_empty(), "deny by default");
    s.logs_with(&key, &id, |l| {
        l["message"]
            .as_str()
            .unwrap()
            .contains("not in the plugin's allowed_hosts")
    })
    .await;

    let (status, _) = s
        .patch(
            &format!("/v1/plugins/{id}"),
            &key,
            json!({"allowed_hosts": ["127.0.0.1"]}),
        )
        .await;
    assert_eq!(status, 200);
    let allowed = s.event(&key, json!({"type": "call", "payload": {}})).await;
    let got = eventually("the transformed delivery", WAIT, || async {
        out.received().pop()
    })
    .await;
    assert_eq!(got.json()["data"], json!({"status": 200}));
    assert_eq!(target.at("/ping").len(), 1);
    let _ = allowed;
    innocent_still_flows(&s, &key, &r).await;
}

#[tokio::test]
async fn logs_carry_the_event_id_and_capture_stdout_and_stderr() {
    let (s, key, _r) = setup().await;
    let id = hostile(&s, &key, "log", json!({})).await;
    let (status, _) = s
        .patch(
            &format!("/v1/plugins/{id}"),
            &key,
            json!({"log_level": "trace"}),
        )
        .await;
    assert_eq!(status, 200);
    let e = s
        .event(&key, json!({"type": "hostile.log", "payload": {}}))
        .await;
    first_attempt(&s, &key, e["id"].as_str().unwrap()).await;
    let logs = eventually("log lines", WAIT, || async {
        let (_, logs) = s.get(&format!("/v1/plugins/{id}/logs"), &key).await;
        let lines = logs["data"].as_array().unwrap().clone();
        (lines.len() >= 8).then_some(lines)
    })
    .await;
    let find = |text: &str| {
        logs.iter()
            .find(|l| l["message"] == text)
            .unwrap_or_else(|| panic!("{text} in {logs:?}"))
            .clone()
    };
    assert_eq!(find("hostile: info")["level"], "info");
    assert_eq!(find("hostile: error")["level"], "error");
    assert_eq!(find("hostile: stdout")["level"], "info");
    assert_eq!(find("hostile: stderr")["level"], "warn");
    find("hostile: debug enabled: true");
    assert!(logs.iter().all(|l| l["event_id"] == e["id"]));
}

#[tokio::test]
async fn an_allowed_host_that_resolves_to_an_internal_address_is_refused() {
    // The default network policy (the test server otherwise allows loopback).
    let s = TestServer::start_with(&["--allow-network", "192.0.2.0/24"]).await;
    let (_, key) = s.account("A").await;
    let target = Receiver::start().await;
    let port = target.url.rsplit(':').next().unwrap().trim_end_matches('/');
    let url = format!("http://localhost:{port}/ping");
    let id = upload(
        &s,
        &key,
        wasm::HOSTILE,
        json!({"config": {"mode": "http", "url": url}, "allowed_hosts": ["localhost"]}),
    )
    .await;
    // A subscriber plugin: a URL subscription to loopback would itself be refused here.
    s.subscribe(&key, json!({"plugin_id": id, "event_types": ["call"]}))
        .await;
    let e = s.event(&key, json!({"type": "call", "payload": {}})).await;
    let (_, attempt) = first_attempt(&s, &key, e["id"].as_str().unwrap()).await;
    assert_eq!(attempt["error_kind"], "plugin", "{attempt}");
    s.logs_with(&key, &id, |l| {
        l["message"]
            .as_str()
            .unwrap()
            .contains("refused by network policy")
    })
    .await;
    assert!(target.received().is_empty(), "nothing reached loopback");
}

#[tokio::test]
async fn kv_limits_are_enforced() {
    let (s, key, _r) = setup().await;
    let id = upload(
        &s,
        &key,
        wasm::HOSTILE,
        json!({"config": {"mode": "kv-flood"}, "limits": {"kv_keys": 10}}),
    )
    .await;
    let out = Receiver::start().await;
    s.subscribe(
        &key,
        json!({"url": out.url.clone(), "transform_plugin_id": id, "event_types": ["kv"]}),
    )
    .await;
    s.event(&key, json!({"type": "kv", "payload": {}})).await;
    let got = eventually("the flood result", WAIT, || async { out.received().pop() }).await;
    let data = got.json()["data"].clone();
    assert_eq!(data["written"], 10, "{data}");
    assert!(
        data["error"]
            .as_str()
            .unwrap()
            .contains("maximum of 10 keys"),
        "{data}"
    );
}

#[tokio::test]
async fn a_new_version_swaps_in_while_calls_in_flight_finish_on_the_old_one() {
    let (s, key, _r) = setup().await;
    let id = upload(
        &s,
        &key,
        wasm::HOSTILE,
        json!({"config": {"mode": "sleep", "ms": "1500"}, "limits": {"deadline_ms": 10000}}),
    )
    .await;
    let out = Receiver::start().await;
    s.subscribe(
        &key,
        json!({"url": out.url.clone(), "transform_plugin_id": id, "event_types": ["swap"]}),
    )
    .await;
    let text = "write to a@example.com";
    s.event(&key, json!({"type": "swap", "payload": {"text": text}}))
        .await;
    // Wait until the old version is running (it logs before it sleeps), then swap in the
    // redactor.
    s.logs_with(&key, &id, |l| l["message"] == "hostile: going to sleep")
        .await;
    let resp = s
        .http
        .put(s.url(&format!("/v1/plugins/{id}")))
        .bearer_auth(&key)
        .body(std::fs::read(wasm::PII_REDACTOR).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    // It replaces v1 once compiled (while v1's call is still in flight).
    s.compiled(&key, &id, "ready").await;
    s.event(&key, json!({"type": "swap", "payload": {"text": text}}))
        .await;
    let got = eventually("both delivered", WAIT, || async {
        let got = out.received();
        (got.len() == 2).then_some(got)
    })
    .await;
    let texts: Vec<String> = got
        .iter()
        .map(|g| g.json()["data"]["text"].as_str().unwrap().to_string())
        .collect();
    assert!(
        texts.contains(&text.to_string()),
        "the call in flight finished on v1 (keep): {texts:?}"
    );
    assert!(
        texts.iter().any(|t| t.contains("[email]")),
        "the new event ran on v2 (redact): {texts:?}"
    );
}

#[tokio::test]
async fn plugin_errors_are_failed_attempts_retried_only_when_retryable() {
    let (s, key, _r) = setup().await;
    let out = Receiver::start().await;
    for mode in ["retryable-error", "fatal-error"] {
        let id = upload(&s, &key, wasm::HOSTILE, json!({"config": {"mode": mode}})).await;
        s.subscribe(&key, json!({"url": out.url.clone(), "transform_plugin_id": id, "event_types": [format!("t.{mode}")]}))
            .await;
    }
    let retryable = s
        .event(&key, json!({"type": "t.retryable-error", "payload": {}}))
        .await;
    let fatal = s
        .event(&key, json!({"type": "t.fatal-error", "payload": {}}))
        .await;
    for (event, attempts) in [(&retryable, 4), (&fatal, 1)] {
        let d = eventually("the delivery fails", WAIT, || async {
            let (_, list) = s
                .get(
                    &format!("/v1/events/{}/deliveries", event["id"].as_str().unwrap()),
                    &key,
                )
                .await;
            (list["data"][0]["status"] == "failed").then(|| list["data"][0].clone())
        })
        .await;
        assert_eq!(d["attempts"], attempts, "{d}");
        assert!(
            d["last_error"].as_str().unwrap().contains("hostile:"),
            "{d}"
        );
    }
    assert!(out.received().is_empty(), "nothing was sent");
}

#[tokio::test]
async fn lines_below_the_plugin_log_level_are_not_kept() {
    let (s, key, _r) = setup().await;
    let id = hostile(&s, &key, "log", json!({})).await;
    s.event(&key, json!({"type": "hostile.log", "payload": {}}))
        .await;
    let lines = s
        .logs_with(&key, &id, |l| l["message"] == "hostile: error")
        .await;
    let kept: Vec<&str> = lines
        .iter()
        .map(|l| l["message"].as_str().unwrap())
        .collect();
    assert!(
        kept.contains(&"hostile: info") && kept.contains(&"hostile: warn"),
        "{kept:?}"
    );
    assert!(
        !kept.contains(&"hostile: debug") && !kept.contains(&"hostile: trace"),
        "info is the default level: {kept:?}"
    );
    assert!(
        kept.contains(&"hostile: debug enabled: false"),
        "the plugin learns the level, so its macros skip formatting: {kept:?}"
    );
}
