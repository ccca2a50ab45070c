//! Issue 16, line 7, "Fast uploads": an upload is validated in its request and compiled after
//! it (`202`, `status: "compiling"`, then `ready` or `failed` with the reason, on the plugin and
//! its versions); events for a plugin still compiling wait for it without a failed attempt; a
//! failed version never replaces the one that runs; a restart resumes a compilation.
//!
//! To act while a version is compiling without racing the compiler, the servers here are
//! started with the harness's `HOLD_COMPILES` knob (not a server option): nothing compiles
//! until the test creates the file it names.

use crate::common;

use std::path::Path;
use std::time::Duration;

use crate::common::{Receiver, TestServer, eventually};
use serde_json::{Value, json};
use wasmhook_plugin_artifacts as wasm;

const WAIT: Duration = Duration::from_secs(60);

/// A component that passes the upload's checks (valid, exports the handler, imports only from
/// `wasi:`) but cannot be linked: the host provides no `wasi:keyvalue`. Only its compilation
/// and linking can tell.
fn unlinkable() -> Vec<u8> {
    wat::parse_str(
        r#"(component
            (import "wasi:keyvalue/store@0.2.0-draft" (instance (export "get" (func))))
            (instance $handler)
            (export "wasmhook:plugin/handler@0.1.0" (instance $handler)))"#,
    )
    .unwrap()
}

/// A server whose compiler waits for `gate` to exist.
async fn held_server(gate: &Path) -> TestServer {
    TestServer::start_with(&[common::HOLD_COMPILES, gate.to_str().unwrap()]).await
}

fn open_gate(gate: &Path) {
    std::fs::write(gate, b"go").unwrap();
}

async fn upload(s: &TestServer, key: &str, name: &str, bytes: Vec<u8>) -> (u16, Value) {
    let resp = s
        .http
        .post(s.url(&format!("/v1/plugins?name={name}")))
        .bearer_auth(key)
        .header("content-type", "application/wasm")
        .body(bytes)
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap())
}

async fn versions(s: &TestServer, key: &str, id: &str) -> Vec<Value> {
    let (status, list) = s.get(&format!("/v1/plugins/{id}/versions"), key).await;
    assert_eq!(status, 200, "{list}");
    list["data"].as_array().unwrap().clone()
}

async fn only_delivery(s: &TestServer, key: &str, event_id: &str) -> Value {
    eventually(&format!("the delivery of {event_id}"), WAIT, || async {
        let (_, list) = s
            .get(&format!("/v1/events/{event_id}/deliveries"), key)
            .await;
        let id = list["data"].get(0)?["id"].as_str()?.to_string();
        Some(s.get(&format!("/v1/deliveries/{id}"), key).await.1)
    })
    .await
}

async fn delivery_settled(s: &TestServer, key: &str, event_id: &str) -> Value {
    eventually(
        &format!("the delivery of {event_id} settled"),
        WAIT,
        || async {
            let d = only_delivery(s, key, event_id).await;
            (d["status"] != "pending").then_some(d)
        },
    )
    .await
}

#[tokio::test]
async fn an_upload_answers_202_compiling_and_the_version_becomes_ready() {
    let tmp = tempfile::tempdir().unwrap();
    let gate = tmp.path().join("gate");
    let s = held_server(&gate).await;
    let (_, key) = s.account("A").await;

    let (status, plugin) =
        upload(&s, &key, "pii", std::fs::read(wasm::PII_REDACTOR).unwrap()).await;
    assert_eq!(status, 202, "{plugin}");
    assert_eq!(plugin["status"], "compiling", "{plugin}");
    assert_eq!(plugin["failure"], Value::Null);
    assert_eq!(
        (&plugin["version"], &plugin["latest_version"]),
        (&json!(1), &json!(1))
    );
    assert_eq!(
        plugin["name"], "pii",
        "every earlier field is still there: {plugin}"
    );
    let id = plugin["id"].as_str().unwrap();
    let listed = versions(&s, &key, id).await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["status"], "compiling", "{listed:?}");
    let (_, list) = s.get("/v1/plugins", &key).await;
    assert_eq!(list["data"][0]["status"], "compiling", "{list}");

    // A test run needs a version that runs: a clear 409 until then.
    let (status, body) = s
        .post(
            &format!("/v1/plugins/{id}/test"),
            &key,
            json!({"event": {"type": "message:created", "payload": {"text": "hi"}}}),
        )
        .await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("still compiling"),
        "{body}"
    );

    open_gate(&gate);
    let ready = s.compiled(&key, id, "ready").await;
    assert_eq!(ready["version"], 1);
    assert_eq!(versions(&s, &key, id).await[0]["status"], "ready");
    let (status, run) = s
        .post(
            &format!("/v1/plugins/{id}/test"),
            &key,
            json!({"event": {"type": "message:created", "payload": {"text": "mail jane@example.com"}}}),
        )
        .await;
    assert_eq!(
        (status, &run["decision"]),
        (200, &json!("replace")),
        "{run}"
    );
}

#[tokio::test]
async fn bad_bytes_are_refused_in_the_request() {
    let tmp = tempfile::tempdir().unwrap();
    let s = held_server(&tmp.path().join("gate")).await;
    let (_, key) = s.account("A").await;
    // A component header, then bytes that are not a component: found without compiling.
    let mut truncated = b"\0asm\x0d\0\x01\0".to_vec();
    truncated.extend_from_slice(&[0x01, 0xff, 0x01, 0x02]);
    for (bytes, code) in [
        (b"garbage, not wasm".to_vec(), "invalid_component"),
        (truncated, "invalid_component"),
        (wat::parse_str("(module)").unwrap(), "not_a_component"),
        (
            wat::parse_str("(component)").unwrap(),
            "incompatible_component",
        ),
    ] {
        let (status, body) = upload(&s, &key, "bad", bytes).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (400, Some(code)),
            "{body}"
        );
    }
    let (_, list) = s.get("/v1/plugins", &key).await;
    assert_eq!(list["data"], json!([]), "nothing stored");
}

#[tokio::test]
async fn events_wait_for_the_compile_and_no_attempt_fails() {
    let tmp = tempfile::tempdir().unwrap();
    let gate = tmp.path().join("gate");
    let s = held_server(&gate).await;
    let r = Receiver::start().await;
    let (_, key) = s.account("A").await;
    let (status, plugin) =
        upload(&s, &key, "pii", std::fs::read(wasm::PII_REDACTOR).unwrap()).await;
    assert_eq!(status, 202, "{plugin}");
    let id = plugin["id"].as_str().unwrap();
    let sub = s
        .subscribe(
            &key,
            json!({"url": r.url.clone(), "transform_plugin_id": id, "event_types": ["message:created"]}),
        )
        .await;
    let e = s
        .event(
            &key,
            json!({"type": "message:created", "payload": {"text": "mail jane.doe@example.com"}}),
        )
        .await;
    let event_id = e["id"].as_str().unwrap();
    let waiting = only_delivery(&s, &key, event_id).await;
    assert_eq!(
        (&waiting["status"], &waiting["attempts"]),
        (&json!("pending"), &json!(0)),
        "{waiting}"
    );
    assert_eq!(
        s.get(&format!("/v1/plugins/{id}"), &key).await.1["status"],
        "compiling",
        "the compiler is held, so the event was posted before the version was ready"
    );

    open_gate(&gate);
    s.compiled(&key, id, "ready").await;
    let d = delivery_settled(&s, &key, event_id).await;
    assert_eq!(d["status"], "succeeded", "{d}");
    assert_eq!(d["attempts"], 1, "one attempt, after the compile: {d}");
    let log = d["attempt_log"].as_array().unwrap();
    assert_eq!(log.len(), 1, "{d}");
    assert_eq!(log[0]["error_kind"], Value::Null, "{d}");
    let body = r.received()[0].json();
    let text = body["data"]["text"].as_str().unwrap();
    assert!(
        text.contains("[email]") && !text.contains("jane.doe"),
        "{body}"
    );
    let (_, sub) = s
        .get(
            &format!("/v1/subscriptions/{}", sub["id"].as_str().unwrap()),
            &key,
        )
        .await;
    assert_eq!(sub["circuit"]["state"], "closed", "{sub}");
    assert_eq!(sub["circuit"]["consecutive_failures"], 0, "{sub}");
}

#[tokio::test]
async fn a_failed_compile_shows_why_and_the_working_version_keeps_serving() {
    let s = TestServer::start().await;
    let r = Receiver::start().await;
    let (_, key) = s.account("A").await;
    let plugin = s.plugin(&key, "router", wasm::ROUTER, Value::Null).await;
    let id = plugin["id"].as_str().unwrap();
    s.subscribe(
        &key,
        json!({"url": r.url.clone(), "transform_plugin_id": id}),
    )
    .await;

    let answered = s.upload_version(&key, id, unlinkable()).await;
    assert_eq!(
        (
            &answered["status"],
            &answered["latest_version"],
            &answered["version"]
        ),
        (&json!("compiling"), &json!(2), &json!(1)),
        "{answered}"
    );
    let failed = s.compiled(&key, id, "failed").await;
    let reason = failed["failure"].as_str().unwrap();
    assert!(
        reason.contains("wasi:keyvalue/store"),
        "names the import: {reason}"
    );
    assert_eq!(
        failed["version"], 1,
        "the working version stays active: {failed}"
    );
    let listed = versions(&s, &key, id).await;
    assert_eq!(
        (
            &listed[0]["version"],
            &listed[0]["status"],
            &listed[0]["failure"]
        ),
        (&json!(2), &json!("failed"), &json!(reason)),
        "{listed:?}"
    );
    assert_eq!(listed[1]["status"], "ready");

    let e = s
        .event(&key, json!({"type": "a", "payload": {"x": 1}}))
        .await;
    let d = delivery_settled(&s, &key, e["id"].as_str().unwrap()).await;
    assert_eq!(d["status"], "succeeded", "version 1 still transforms: {d}");
    assert_eq!(r.received()[0].json()["data"], json!({"x": 1}));

    // A plugin whose only version failed: test runs and deliveries say why.
    let (status, broken) = upload(&s, &key, "broken", unlinkable()).await;
    assert_eq!(status, 202, "{broken}");
    let broken_id = broken["id"].as_str().unwrap();
    s.compiled(&key, broken_id, "failed").await;
    let (status, body) = s
        .post(
            &format!("/v1/plugins/{broken_id}/test"),
            &key,
            json!({"event": {"type": "a", "payload": {}}}),
        )
        .await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("failed to compile"),
        "{body}"
    );
    let sub = s
        .subscribe(&key, json!({"plugin_id": broken_id, "event_types": ["b"]}))
        .await;
    let e = s.event(&key, json!({"type": "b", "payload": {}})).await;
    let d = delivery_settled(&s, &key, e["id"].as_str().unwrap()).await;
    assert_eq!(d["status"], "failed", "{d}");
    assert!(
        d["last_error"]
            .as_str()
            .unwrap()
            .contains("failed to compile"),
        "{d}"
    );
    assert_eq!(sub["plugin_id"], broken_id);
}

#[tokio::test]
async fn a_restart_during_a_compile_resumes_it() {
    let tmp = tempfile::tempdir().unwrap();
    let gate = tmp.path().join("gate");
    let mut s = held_server(&gate).await;
    let (_, key) = s.account("A").await;
    let (status, plugin) = upload(&s, &key, "noop", std::fs::read(wasm::NOOP).unwrap()).await;
    assert_eq!(status, 202, "{plugin}");
    let id = plugin["id"].as_str().unwrap().to_string();
    s.subscribe(&key, json!({"plugin_id": id, "event_types": ["a"]}))
        .await;
    let e = s.event(&key, json!({"type": "a", "payload": {}})).await;

    // Stopped while held: the version is still compiling. The next start compiles it.
    s.restart_with(&[]).await;
    let ready = s.compiled(&key, &id, "ready").await;
    assert_eq!(ready["version"], 1);
    let d = delivery_settled(&s, &key, e["id"].as_str().unwrap()).await;
    assert_eq!(
        (&d["status"], &d["attempts"]),
        (&json!("succeeded"), &json!(1)),
        "{d}"
    );
}
