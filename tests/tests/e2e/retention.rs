//! Retention end to end (`--retention`): a real server with a retention of half a second
//! deletes a delivered event and its delivery, keeps one still retrying, and counts what it
//! deleted in `/metrics`.

use std::time::Duration;

use crate::common::{Receiver, TestServer, eventually};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(15);

/// The number in a `/metrics` line starting with `series`, or 0 when it is absent.
fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn settled_history_goes_after_the_retention_and_pending_work_stays() {
    // A retry an hour away: the failing delivery stays pending for the whole test.
    let s = TestServer::start_with(&["--retention", "500ms", "--retry-schedule", "1h"]).await;
    let ok = Receiver::start().await;
    let failing = Receiver::start().await;
    failing.status(500);
    let (_, key) = s.account("A").await;
    s.subscribe(
        &key,
        json!({"url": format!("{}/hook", ok.url), "event_types": ["order:paid"]}),
    )
    .await;
    s.subscribe(
        &key,
        json!({"url": format!("{}/hook", failing.url), "event_types": ["order:failed"]}),
    )
    .await;
    let delivered = s
        .event(&key, json!({"type": "order:paid", "payload": {"n": 1}}))
        .await;
    let retrying = s
        .event(&key, json!({"type": "order:failed", "payload": {"n": 2}}))
        .await;
    let delivered_id = delivered["id"].as_str().unwrap().to_string();
    let retrying_id = retrying["id"].as_str().unwrap().to_string();
    eventually("the failing receiver is tried once", WAIT, || async {
        (!failing.at("/hook").is_empty()).then_some(())
    })
    .await;

    // The delivered event is deleted with its delivery once older than the retention.
    eventually("the delivered event is deleted", WAIT, || async {
        let (status, _) = s.get(&format!("/v1/events/{delivered_id}"), &key).await;
        (status == 404).then_some(())
    })
    .await;
    let m = s.metrics().await;
    let deleted = |table: &str| {
        metric(
            &m,
            &format!("wasmhook_retention_deleted_rows_total{{table=\"{table}\"}}"),
        )
    };
    assert!(deleted("deliveries") >= 1.0, "{m}");
    assert!(deleted("attempts") >= 1.0, "{m}");
    assert!(deleted("events") >= 1.0, "{m}");

    // The retrying one, older than the retention too, is still there and still pending.
    let (status, _) = s.get(&format!("/v1/events/{retrying_id}"), &key).await;
    assert_eq!(status, 200);
    let (_, list) = s
        .get(&format!("/v1/events/{retrying_id}/deliveries"), &key)
        .await;
    assert_eq!(list["data"][0]["status"], "pending", "{list}");
    assert_eq!(list["data"][0]["attempts"], 1, "{list}");
}
