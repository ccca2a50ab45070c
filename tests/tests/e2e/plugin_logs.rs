//! Plugin logs and failure reasons: each plugin keeps its own newest 1000 log lines however
//! busy the others are; the drop marker is written whole for the log, stdout and stderr; a
//! stack overflow is reported as one whatever the size of the plugin's stack frames.

use std::time::Duration;

use crate::common::{Receiver, TestServer, eventually};
use serde_json::{Value, json};
use wasmhook_plugin_artifacts as wasm;

const WAIT: Duration = Duration::from_secs(120);
/// Lines each plugin keeps, as documented.
const KEPT: usize = 1000;

async fn settled(s: &TestServer, key: &str, event: &Value, expected: usize) {
    let path = format!(
        "/v1/events/{}/deliveries?limit=100",
        event["id"].as_str().unwrap()
    );
    eventually("every delivery of the event succeeded", WAIT, || async {
        let (_, list) = s.get(&path, key).await;
        let list = list["data"].as_array().cloned().unwrap_or_default();
        let ok = list.iter().filter(|d| d["status"] == "succeeded").count();
        (ok == expected).then_some(())
    })
    .await;
}

#[tokio::test]
async fn fifty_busy_plugins_each_keep_their_own_last_lines() {
    let s = TestServer::start().await;
    let (_, key) = s.account("A").await;
    let mut ids = Vec::new();
    for i in 0..50 {
        let p = s
            .plugin(
                &key,
                &format!("busy-{i}"),
                wasm::HOSTILE,
                json!({"config": {"mode": "log-lines", "count": "600"}}),
            )
            .await;
        let id = p["id"].as_str().unwrap().to_string();
        s.subscribe(
            &key,
            json!({"plugin_id": id, "event_types": ["busy"], "ordering": "none"}),
        )
        .await;
        ids.push(id);
    }
    // Two rounds of 600 lines per plugin: 60,000 lines in all, 1,200 per plugin.
    for batch in 0..2 {
        let e = s
            .event(&key, json!({"type": "busy", "payload": {"batch": batch}}))
            .await;
        settled(&s, &key, &e, ids.len()).await;
    }
    for id in &ids {
        // Lines are written in batches shortly after each invocation.
        let lines = eventually(&format!("{id} keeps its newest lines"), WAIT, || async {
            let (_, logs) = s
                .get(&format!("/v1/plugins/{id}/logs?limit=1000"), &key)
                .await;
            let lines = logs["data"].as_array().cloned().unwrap_or_default();
            (lines.first().and_then(|l| l["message"].as_str()) == Some("batch 1 line 599"))
                .then_some(lines)
        })
        .await;
        let messages: Vec<&str> = lines
            .iter()
            .map(|l| l["message"].as_str().unwrap())
            .collect();
        assert_eq!(messages.len(), KEPT, "{id}");
        // Newest first: all of the second round, then the end of the first.
        let expected: Vec<String> = (0..600)
            .rev()
            .map(|i| format!("batch 1 line {i}"))
            .chain((200..600).rev().map(|i| format!("batch 0 line {i}")))
            .collect();
        assert_eq!(messages, expected, "{id}");
    }
}

fn is_marker(message: &str) -> bool {
    message
        .strip_prefix('[')
        .and_then(|m| m.strip_suffix(" more bytes of output dropped]"))
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// Checks one invocation's lines: a whole marker for each of the three streams, at the
/// stream's level, and no more bytes than the budget.
fn check_markers(lines: &[Value], budget: usize) {
    let messages: Vec<&str> = lines
        .iter()
        .map(|l| l["message"].as_str().unwrap())
        .collect();
    let markers: Vec<(&str, &str)> = lines
        .iter()
        .filter(|l| l["message"].as_str().unwrap().contains("more bytes"))
        .map(|l| (l["level"].as_str().unwrap(), l["message"].as_str().unwrap()))
        .collect();
    assert_eq!(markers.len(), 3, "one per stream: {markers:?}");
    for (_, m) in &markers {
        assert!(is_marker(m), "a whole marker: {m:?}");
    }
    let mut levels: Vec<&str> = markers.iter().map(|(l, _)| *l).collect();
    levels.sort();
    assert_eq!(
        levels,
        ["info", "warn", "warn"],
        "stdout info; log and stderr warn"
    );
    let bytes: usize = messages.iter().map(|m| m.len()).sum();
    assert!(
        bytes <= budget,
        "{bytes} bytes kept of a {budget}-byte budget"
    );
    assert!(bytes > budget / 2, "the budget is used: {bytes}");
}

#[tokio::test]
async fn the_drop_marker_is_whole_for_the_log_stdout_and_stderr() {
    let s = TestServer::start().await;
    let (_, key) = s.account("A").await;
    let r = Receiver::start().await;
    for budget in [1000usize, 4096, 65_536] {
        let p = s
            .plugin(
                &key,
                "flood",
                wasm::HOSTILE,
                json!({"config": {"mode": "flood-all", "lines": "2000"}, "limits": {"log_bytes": budget}}),
            )
            .await;
        let id = p["id"].as_str().unwrap();
        // A test run reports the lines a delivery would log.
        let (status, run) = s
            .post(
                &format!("/v1/plugins/{id}/test"),
                &key,
                json!({"event": {"type": "flood", "payload": {}}}),
            )
            .await;
        assert_eq!(status, 200, "{run}");
        assert_eq!(run["decision"], "keep", "{run}");
        check_markers(run["logs"].as_array().unwrap(), budget);
        // And a delivery logs them.
        let event_type = format!("flood.{budget}");
        s.subscribe(
            &key,
            json!({"url": r.url.clone(), "transform_plugin_id": id, "event_types": [event_type]}),
        )
        .await;
        let e = s
            .event(&key, json!({"type": event_type, "payload": {}}))
            .await;
        let lines: Vec<Value> = eventually("all three markers stored", WAIT, || async {
            let (_, logs) = s
                .get(&format!("/v1/plugins/{id}/logs?limit=1000"), &key)
                .await;
            let of_event: Vec<Value> = logs["data"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|l| l["event_id"] == e["id"])
                .cloned()
                .collect();
            let markers = of_event
                .iter()
                .filter(|l| l["message"].as_str().is_some_and(is_marker))
                .count();
            (markers == 3).then_some(of_event)
        })
        .await;
        check_markers(&lines, budget);
    }
}

#[tokio::test]
async fn a_stack_overflow_is_reported_as_one() {
    stack_overflow_is_reported("stack-overflow").await;
}

/// The 16 KiB frames of `big-frames` take the stack pointer below 0 and the overflow traps
/// inside a bulk memory operation (the frame's copy), which wasmtime reports without a
/// faulting address; the host tells it from other out-of-bounds accesses by the frames on the
/// trap's backtrace (see `plugins::stack`).
#[tokio::test]
async fn a_stack_overflow_with_big_frames_is_reported_as_one() {
    stack_overflow_is_reported("big-frames").await;
}

async fn stack_overflow_is_reported(mode: &str) {
    let s = TestServer::start().await;
    let (_, key) = s.account("A").await;
    {
        let p = s
            .plugin(&key, mode, wasm::HOSTILE, json!({"config": {"mode": mode}}))
            .await;
        let id = p["id"].as_str().unwrap();
        let (status, run) = s
            .post(
                &format!("/v1/plugins/{id}/test"),
                &key,
                json!({"event": {"type": "x", "payload": {}}}),
            )
            .await;
        assert_eq!(status, 200, "{run}");
        assert_eq!(run["decision"], "error", "{mode}: {run}");
        assert_eq!(run["error"]["kind"], "trap", "{mode}: {run}");
        assert_eq!(run["error"]["message"], "stack overflow", "{mode}: {run}");
        // A delivery records the same reason.
        let event_type = format!("overflow.{mode}");
        s.subscribe(&key, json!({"plugin_id": id, "event_types": [event_type]}))
            .await;
        let e = s
            .event(&key, json!({"type": event_type, "payload": {}}))
            .await;
        let path = format!("/v1/events/{}/deliveries", e["id"].as_str().unwrap());
        let reason = eventually(&format!("{mode}: an attempt"), WAIT, || async {
            let (_, list) = s.get(&path, &key).await;
            let delivery = list["data"][0]["id"].as_str()?.to_string();
            let (_, d) = s.get(&format!("/v1/deliveries/{delivery}"), &key).await;
            d["attempt_log"][0]["error_message"]
                .as_str()
                .map(str::to_string)
        })
        .await;
        assert!(reason.ends_with(": stack overflow"), "{mode}: {reason}");
    }
}
