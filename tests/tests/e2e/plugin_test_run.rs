//! `POST /v1/plugins/{id}/test`: a plugin runs on an event exactly as in a delivery, and
//! nothing it does leaves the run. Messages and key-value writes come back in the answer
//! instead of happening; the plugin's log, the events and the real key-value store stay as
//! they were.

use std::time::Duration;

use crate::common::{Receiver, TestServer, eventually};
use serde_json::{Value, json};
use wasmhook_plugin_artifacts as wasm;

const WAIT: Duration = Duration::from_secs(30);

fn customer_message(conversation: &str, text: &str) -> Value {
    json!({"type": "message:created", "payload": {
        "conversation_id": conversation, "id": format!("m-{text}"), "text": text,
        "source": "facebook", "sender": {"id": "contact-1", "type": "source_contact"}}})
}

async fn test_run(s: &TestServer, key: &str, plugin: &Value, body: Value) -> Value {
    let path = format!("/v1/plugins/{}/test", plugin["id"].as_str().unwrap());
    let (status, run) = s.post(&path, key, body).await;
    assert_eq!(status, 200, "{run}");
    run
}

async fn events(s: &TestServer, key: &str) -> Vec<Value> {
    let (status, list) = s.get("/v1/events?limit=100", key).await;
    assert_eq!(status, 200, "{list}");
    list["data"].as_array().unwrap().clone()
}

fn messages_of(logs: &Value) -> Vec<String> {
    logs.as_array()
        .unwrap()
        .iter()
        .map(|l| l["message"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn pii_redactor_shows_the_redacted_replacement_and_stores_nothing() {
    let s = TestServer::start().await;
    let (_, key) = s.account("A").await;
    let redactor = s.plugin(&key, "pii", wasm::PII_REDACTOR, Value::Null).await;
    let run = test_run(
        &s,
        &key,
        &redactor,
        json!({"event": customer_message("c1", "mail jane.doe@example.com, card 4111 1111 1111 1111")}),
    )
    .await;
    assert_eq!(run["decision"], "replace", "{run}");
    let text = run["payload"]["text"].as_str().unwrap();
    assert!(
        text.contains("[email]") && text.contains("[card]") && !text.contains("jane.doe"),
        "{text}"
    );
    assert_eq!(run["payload"]["conversation_id"], "c1", "the rest is kept");
    assert!(run["error"].is_null(), "{run}");
    assert!(run["duration_us"].as_u64().unwrap() > 0, "{run}");
    assert_eq!(run["sent_messages"], json!([]));
    assert_eq!(run["kv_writes"], json!([]));
    assert!(
        events(&s, &key).await.is_empty(),
        "the test event is not stored"
    );
}

#[tokio::test]
async fn drops_and_config_overrides_apply_to_the_run_only() {
    let s = TestServer::start().await;
    let (_, key) = s.account("A").await;
    let rules =
        r#"[{"type": "message:*", "field": "/source", "equals": "facebook", "action": "drop"}]"#;
    let router = s
        .plugin(
            &key,
            "router",
            wasm::ROUTER,
            json!({"config": {"rules": rules}}),
        )
        .await;
    let event = customer_message("c1", "hello");
    let run = test_run(&s, &key, &router, json!({"event": event})).await;
    assert_eq!(run["decision"], "drop", "{run}");
    assert!(run["payload"].is_null());
    let run = test_run(
        &s,
        &key,
        &router,
        json!({"event": event, "config": {"rules": "[]"}}),
    )
    .await;
    assert_eq!(
        run["decision"], "keep",
        "an override replaces the stored value"
    );
    let (_, stored) = s
        .get(
            &format!("/v1/plugins/{}", router["id"].as_str().unwrap()),
            &key,
        )
        .await;
    assert_eq!(
        stored["config"]["rules"], rules,
        "the stored config is unchanged"
    );
    let run = test_run(&s, &key, &router, json!({"event": event})).await;
    assert_eq!(
        run["decision"], "drop",
        "the next run has the stored config again"
    );

    let hostile = s.plugin(&key, "hostile", wasm::HOSTILE, Value::Null).await;
    let run = test_run(
        &s,
        &key,
        &hostile,
        json!({"event": event, "config": {"mode": "drop"}}),
    )
    .await;
    assert_eq!(run["decision"], "drop", "{run}");
}

#[tokio::test]
async fn messages_and_kv_writes_are_captured_and_a_real_delivery_still_greets() {
    let s = TestServer::start().await;
    let (_, key) = s.account("A").await;
    let greeter = s
        .plugin(
            &key,
            "greeter",
            wasm::FIRST_CONTACT_GREETER,
            json!({"config": {"greeting": "Welcome!"}}),
        )
        .await;
    let event = customer_message("conv-t", "first words");
    for _ in 0..2 {
        let run = test_run(&s, &key, &greeter, json!({"event": event})).await;
        assert_eq!(run["decision"], "keep", "{run}");
        let sent = run["sent_messages"].as_array().unwrap();
        assert_eq!(sent.len(), 1, "{run}");
        assert_eq!(sent[0]["conversation_id"], "conv-t");
        assert_eq!(sent[0]["text"], "Welcome!");
        let message_id = sent[0]["message_id"].as_str().unwrap();
        assert!(message_id.starts_with("dry-run-"), "{message_id}");
        // The claim (a set-if on an absent key), then the record naming the made-up message.
        let writes = run["kv_writes"].as_array().unwrap();
        assert_eq!(writes.len(), 2, "{run}");
        assert_eq!(writes[0]["op"], "set_if");
        assert_eq!(writes[0]["key"], "greeted/conv-t");
        assert_eq!(writes[0]["expected"], Value::Null);
        assert_eq!(writes[0]["written"], true);
        assert_eq!(writes[1]["op"], "set");
        let record: Value = serde_json::from_str(writes[1]["value"].as_str().unwrap()).unwrap();
        assert_eq!(record["message_id"], message_id);
        assert!(
            messages_of(&run["logs"]).contains(&"greeted conversation conv-t".to_string()),
            "{run}"
        );
    }
    // Nothing was sent or stored: no event at all (a real send is stored before the call
    // returns); the plugin's log is checked below, once a real delivery has written to it.
    assert!(events(&s, &key).await.is_empty());

    // The real store was not touched: a real delivery greets.
    s.subscribe(
        &key,
        json!({"plugin_id": greeter["id"], "event_types": ["message:created"]}),
    )
    .await;
    s.event(&key, event.clone()).await;
    let greeting = eventually("the real greeting", WAIT, || async {
        events(&s, &key)
            .await
            .into_iter()
            .find(|e| e["payload"]["text"] == "Welcome!")
    })
    .await;
    assert!(
        !greeting["payload"]["id"]
            .as_str()
            .unwrap()
            .starts_with("dry-run-")
    );
    // Log lines are written in order: the real delivery's line being there means the two
    // test runs' lines would be too, had they been written.
    let greeted = "greeted conversation conv-t";
    let log = s
        .logs_with(&key, greeter["id"].as_str().unwrap(), |l| {
            l["message"] == greeted
        })
        .await;
    let count = log.iter().filter(|l| l["message"] == greeted).count();
    assert_eq!(count, 1, "only the real delivery wrote to the log: {log:?}");

    // Now a test run reads the real claim and greets no more.
    let run = test_run(&s, &key, &greeter, json!({"event": event})).await;
    assert_eq!(run["sent_messages"], json!([]), "{run}");
    let writes = run["kv_writes"].as_array().unwrap();
    assert_eq!(writes.len(), 1, "{run}");
    assert_eq!(writes[0]["written"], false);
}

#[tokio::test]
async fn kv_limits_apply_to_the_overlay_and_counters_start_from_the_real_store() {
    let s = TestServer::start().await;
    let (_, key) = s.account("A").await;
    let hostile = s
        .plugin(
            &key,
            "hostile",
            wasm::HOSTILE,
            json!({"limits": {"kv_keys": 3}}),
        )
        .await;
    let event = json!({"type": "tick", "payload": {}});
    let run = test_run(
        &s,
        &key,
        &hostile,
        json!({"event": event, "config": {"mode": "kv-flood"}}),
    )
    .await;
    assert_eq!(run["decision"], "replace", "{run}");
    assert_eq!(run["payload"]["written"], 3, "{run}");
    assert_eq!(
        run["payload"]["error"],
        "kv: already storing the maximum of 3 keys"
    );
    let writes = run["kv_writes"].as_array().unwrap();
    assert_eq!(writes.len(), 4, "{run}");
    assert_eq!(writes[3]["error"], "already storing the maximum of 3 keys");

    // Each run starts from the real store again: the counter is 1 every time...
    for _ in 0..2 {
        let run = test_run(
            &s,
            &key,
            &hostile,
            json!({"event": event, "config": {"mode": "kv-count"}}),
        )
        .await;
        assert_eq!(run["payload"], json!({"count": 1}), "{run}");
        assert_eq!(run["kv_writes"][0]["op"], "increment");
        assert_eq!(run["kv_writes"][0]["value"], "1");
    }
    // ...until a real delivery stores it; a test run then reads it.
    let (status, _) = s
        .patch(
            &format!("/v1/plugins/{}", hostile["id"].as_str().unwrap()),
            &key,
            json!({"config": {"mode": "kv-count"}}),
        )
        .await;
    assert_eq!(status, 200);
    let r = Receiver::start().await;
    s.subscribe(
        &key,
        json!({"url": r.url.clone(), "transform_plugin_id": hostile["id"], "event_types": ["tick"]}),
    )
    .await;
    s.event(&key, event.clone()).await;
    eventually("the real delivery", WAIT, || async { r.received().pop() }).await;
    let run = test_run(&s, &key, &hostile, json!({"event": event})).await;
    assert_eq!(run["payload"], json!({"count": 2}), "{run}");
}

#[tokio::test]
async fn failures_come_back_with_their_reason_and_the_server_is_fine() {
    let s = TestServer::start().await;
    let (_, key) = s.account("A").await;
    let hostile = s
        .plugin(
            &key,
            "hostile",
            wasm::HOSTILE,
            json!({"limits": {"deadline_ms": 300}}),
        )
        .await;
    let event = json!({"type": "tick", "payload": {}});
    let run_mode = |mode: &str| json!({"event": event, "config": {"mode": mode}});

    let run = test_run(&s, &key, &hostile, run_mode("trap")).await;
    assert_eq!(run["decision"], "error", "{run}");
    assert_eq!(run["error"]["kind"], "trap");
    assert!(
        run["error"]["message"]
            .as_str()
            .unwrap()
            .contains("unreachable"),
        "{run}"
    );
    assert_eq!(run["error"]["retryable"], false);
    assert!(
        messages_of(&run["logs"])
            .iter()
            .any(|m| m.contains("hostile: trap mode")),
        "the panic message reaches the logs: {run}"
    );

    let run = test_run(&s, &key, &hostile, run_mode("loop")).await;
    assert_eq!(run["decision"], "error", "{run}");
    assert_eq!(run["error"]["kind"], "deadline");
    assert_eq!(run["error"]["message"], "deadline exceeded after 300ms");
    assert_eq!(run["error"]["retryable"], true);
    let took = run["duration_us"].as_u64().unwrap();
    assert!((300_000..5_000_000).contains(&took), "{took} µs");

    let run = test_run(&s, &key, &hostile, run_mode("retryable-error")).await;
    assert_eq!(
        run["error"],
        json!({"kind": "handler", "message": "hostile: retryable-error", "retryable": true})
    );
    let run = test_run(&s, &key, &hostile, run_mode("oversized-replace")).await;
    assert_eq!(run["error"]["kind"], "limit", "{run}");

    // Logs come back at the plugin's level, stdout and stderr included, and are not stored.
    let run = test_run(&s, &key, &hostile, run_mode("log")).await;
    let lines = messages_of(&run["logs"]);
    for wanted in [
        "hostile: info",
        "hostile: error",
        "hostile: stdout",
        "hostile: stderr",
    ] {
        assert!(lines.iter().any(|l| l == wanted), "{wanted} in {lines:?}");
    }
    assert!(!lines.iter().any(|l| l == "hostile: debug"), "{lines:?}");
    // A real invocation in the same mode: once its lines are in the log, the test run's would
    // be too (lines are written in order), had they been written.
    s.subscribe(
        &key,
        json!({"plugin_id": hostile["id"], "event_types": ["log.probe"]}),
    )
    .await;
    let (status, patched) = s
        .patch(
            &format!("/v1/plugins/{}", hostile["id"].as_str().unwrap()),
            &key,
            json!({"config": {"mode": "log"}}),
        )
        .await;
    assert_eq!(status, 200, "{patched}");
    s.event(&key, json!({"type": "log.probe", "payload": {}}))
        .await;
    let log = s
        .logs_with(&key, hostile["id"].as_str().unwrap(), |l| {
            l["message"] == "hostile: info"
        })
        .await;
    let count = log
        .iter()
        .filter(|l| l["message"] == "hostile: info")
        .count();
    assert_eq!(
        count, 1,
        "only the real invocation wrote to the log: {log:?}"
    );

    let run = test_run(&s, &key, &hostile, run_mode("keep")).await;
    assert_eq!(run["decision"], "keep", "the server runs plugins as before");
    let (status, _) = s.call(reqwest::Method::GET, "/healthz", None, None).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn outgoing_http_is_recorded_and_still_limited_to_allowed_hosts() {
    let s = TestServer::start().await;
    let (_, key) = s.account("A").await;
    let target = Receiver::start().await;
    let url = format!("{}/ping", target.url);
    let hostile = s
        .plugin(
            &key,
            "hostile",
            wasm::HOSTILE,
            json!({"config": {"mode": "http", "url": url}}),
        )
        .await;
    let body = json!({"event": {"type": "tick", "payload": {}}});
    let run = test_run(&s, &key, &hostile, body.clone()).await;
    assert_eq!(run["decision"], "error", "{run}");
    assert_eq!(run["http_requests"][0]["method"], "GET");
    assert_eq!(run["http_requests"][0]["url"], url);
    assert!(
        run["http_requests"][0]["error"]
            .as_str()
            .unwrap()
            .contains("not in the plugin's allowed_hosts"),
        "{run}"
    );
    assert!(target.received().is_empty());

    let (status, _) = s
        .patch(
            &format!("/v1/plugins/{}", hostile["id"].as_str().unwrap()),
            &key,
            json!({"allowed_hosts": ["127.0.0.1"]}),
        )
        .await;
    assert_eq!(status, 200);
    let run = test_run(&s, &key, &hostile, body).await;
    assert_eq!(run["payload"], json!({"status": 200}), "{run}");
    assert_eq!(
        run["http_requests"],
        json!([{"method": "GET", "url": url, "status": 200}])
    );
    assert_eq!(target.at("/ping").len(), 1);
}

#[tokio::test]
async fn only_the_owner_may_run_it_and_bad_bodies_are_400s() {
    let s = TestServer::start().await;
    let (_, key) = s.account("A").await;
    let (_, other) = s.account("B").await;
    let noop = s.plugin(&key, "noop", wasm::NOOP, Value::Null).await;
    let path = format!("/v1/plugins/{}/test", noop["id"].as_str().unwrap());
    let good = json!({"event": {"type": "tick", "payload": {}}});

    let (status, body) = s.post(&path, &other, good.clone()).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("not_found"))
    );
    let (status, _) = s
        .post("/v1/plugins/plg_missing/test", &key, good.clone())
        .await;
    assert_eq!(status, 404);
    let (status, _) = s
        .call(reqwest::Method::POST, &path, None, Some(good.clone()))
        .await;
    assert_eq!(status, 401);

    for bad in [
        json!({}),
        json!({"event": {"type": "tick"}}),
        json!({"event": {"type": "tick", "payload": [1]}}),
        json!({"event": {"type": "Not A Type", "payload": {}}}),
        json!({"event": {"type": "tick", "payload": {}}, "config": {"k": 1}}),
        json!({"event": {"type": "tick", "payload": {}}, "extra": true}),
    ] {
        let (status, body) = s.post(&path, &key, bad.clone()).await;
        assert_eq!(status, 400, "{bad} → {body}");
        assert!(body["error"]["code"].is_string(), "{body}");
    }
    let resp = s
        .http
        .post(s.url(&path))
        .bearer_auth(&key)
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "invalid_json");

    let (status, run) = s.post(&path, &key, good).await;
    assert_eq!((status, run["decision"].as_str()), (200, Some("keep")));

    let (_, openapi) = s
        .call(reqwest::Method::GET, "/openapi.json", None, None)
        .await;
    let op = &openapi["paths"]["/v1/plugins/{id}/test"]["post"];
    assert!(op["responses"]["200"].is_object(), "{op}");
}
