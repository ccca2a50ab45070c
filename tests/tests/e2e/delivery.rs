//! Delivery to URL webhooks end to end: a real server, a real receiver on loopback, and a
//! retry schedule in milliseconds.

use std::time::{Duration, Instant};

use crate::common::{Receiver, TestServer, eventually};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

const WAIT: Duration = Duration::from_secs(15);

/// Verifies a Standard Webhooks signature the way a receiver would, independently of the server.
fn signature_ok(secret: &str, id: &str, ts: &str, body: &[u8], header: &str) -> bool {
    let key = STANDARD
        .decode(secret.strip_prefix("whsec_").unwrap())
        .unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{id}.{ts}.").as_bytes());
    mac.update(body);
    let expected = format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()));
    header.split(' ').any(|s| s == expected)
}

async fn delivery_of(s: &TestServer, key: &str, event_id: &str) -> Value {
    let (_, list) = s
        .get(&format!("/v1/events/{event_id}/deliveries"), key)
        .await;
    let id = list["data"][0]["id"]
        .as_str()
        .expect("a delivery")
        .to_string();
    s.get(&format!("/v1/deliveries/{id}"), key).await.1
}

async fn settled(s: &TestServer, key: &str, event_id: &str, status: &str) -> Value {
    eventually(
        &format!("delivery of {event_id} is {status}"),
        WAIT,
        || async {
            let d = delivery_of(s, key, event_id).await;
            (d["status"] == status).then_some(d)
        },
    )
    .await
}

#[tokio::test]
async fn a_delivery_is_a_signed_standard_webhooks_post() {
    let s = TestServer::start().await;
    let r = Receiver::start().await;
    let (_, key) = s.account("A").await;
    let sub = s
        .subscribe(
            &key,
            json!({"url": format!("{}/hook", r.url), "event_types": ["message:created"], "headers": {"X-Team": "support"}}),
        )
        .await;
    let secret = sub["secret"].as_str().unwrap();
    let ignored = s
        .event(
            &key,
            json!({"type": "conversation:created", "payload": {"ignored": true}}),
        )
        .await;
    let e = s
        .event(
            &key,
            json!({"type": "message:created", "payload": {"body": "Hello world!"}}),
        )
        .await;

    let got = eventually("the receiver gets the event", WAIT, || async {
        r.at("/hook").pop()
    })
    .await;
    assert_eq!(got.header("content-type"), Some("application/json"));
    assert!(got.header("user-agent").unwrap().starts_with("wasmhook/"));
    assert_eq!(got.header("x-team"), Some("support"));
    let id = got.header("webhook-id").unwrap();
    let ts = got.header("webhook-timestamp").unwrap();
    assert!(signature_ok(
        secret,
        id,
        ts,
        &got.body,
        got.header("webhook-signature").unwrap()
    ));
    let body = got.json();
    assert_eq!(body["type"], "message:created");
    assert_eq!(body["data"], json!({"body": "Hello world!"}));
    assert_eq!(body["timestamp"], e["occurred_at"]);

    let d = settled(&s, &key, e["id"].as_str().unwrap(), "succeeded").await;
    assert_eq!(d["id"], id, "webhook-id is the delivery id");
    assert_eq!(d["attempt_log"][0]["status_code"], 200);
    // The filtered-out type produced no delivery at all (deliveries are written with their
    // event), so nothing else can reach the receiver.
    let (_, ignored) = s
        .get(
            &format!("/v1/events/{}/deliveries", ignored["id"].as_str().unwrap()),
            &key,
        )
        .await;
    assert_eq!(ignored["data"], json!([]));
    assert_eq!(r.at("/hook").len(), 1);
}

#[tokio::test]
async fn only_subscriptions_existing_at_ingest_get_the_event() {
    let s = TestServer::start().await;
    let r = Receiver::start().await;
    let (_, key) = s.account("A").await;
    s.subscribe(&key, json!({"url": format!("{}/early", r.url)}))
        .await;
    let e = s.event(&key, json!({"type": "a", "payload": {}})).await;
    let late = s
        .subscribe(&key, json!({"url": format!("{}/late", r.url)}))
        .await;
    settled(&s, &key, e["id"].as_str().unwrap(), "succeeded").await;
    let (_, list) = s
        .get(
            &format!("/v1/events/{}/deliveries", e["id"].as_str().unwrap()),
            &key,
        )
        .await;
    assert_eq!(list["data"].as_array().unwrap().len(), 1);
    let (_, late) = s
        .get(
            &format!(
                "/v1/subscriptions/{}/deliveries",
                late["id"].as_str().unwrap()
            ),
            &key,
        )
        .await;
    assert_eq!(
        late["data"],
        json!([]),
        "nothing is owed to the late subscription"
    );
    assert!(r.at("/late").is_empty());
}

#[tokio::test]
async fn failures_are_retried_with_the_same_webhook_id_and_logged() {
    let s = TestServer::start().await;
    let r = Receiver::start().await;
    r.respond(|_, n| {
        if n <= 2 {
            (StatusCode::INTERNAL_SERVER_ERROR, "boom").into_response()
        } else {
            StatusCode::OK.into_response()
        }
    });
    let (_, key) = s.account("A").await;
    s.subscribe(&key, json!({"url": r.url.clone()})).await;
    let e = s.event(&key, json!({"type": "a", "payload": {}})).await;
    let d = settled(&s, &key, e["id"].as_str().unwrap(), "succeeded").await;
    let log = d["attempt_log"].as_array().unwrap();
    assert_eq!(log.len(), 3, "{d}");
    assert_eq!(log[0]["status_code"], 500);
    assert_eq!(log[0]["error_kind"], "http_status");
    assert_eq!(log[0]["response_body"], "boom");
    assert_eq!(log[2]["status_code"], 200);
    assert_eq!(d["attempts"], 3);
    let ids: Vec<_> = r
        .received()
        .iter()
        .map(|x| x.header("webhook-id").unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 3);
    assert!(
        ids.iter().all(|i| *i == ids[0]),
        "the same webhook-id on every retry: {ids:?}"
    );
}

#[tokio::test]
async fn exhausted_retries_dead_letter_and_can_be_retried_or_recovered() {
    let s = TestServer::start().await;
    let r = Receiver::start().await;
    r.status(500);
    let (_, key) = s.account("A").await;
    let sub = s.subscribe(&key, json!({"url": r.url.clone()})).await;
    let sub_id = sub["id"].as_str().unwrap();
    let e1 = s
        .event(&key, json!({"type": "a", "payload": {"n": 1}}))
        .await;
    let e2 = s
        .event(&key, json!({"type": "a", "payload": {"n": 2}}))
        .await;
    let d1 = settled(&s, &key, e1["id"].as_str().unwrap(), "failed").await;
    settled(&s, &key, e2["id"].as_str().unwrap(), "failed").await;
    assert_eq!(d1["attempts"], 4, "one attempt and three retries: {d1}");
    let (_, failed) = s
        .get(
            &format!("/v1/subscriptions/{sub_id}/deliveries?status=failed"),
            &key,
        )
        .await;
    assert_eq!(
        failed["data"].as_array().unwrap().len(),
        2,
        "dead letters stay listed"
    );
    let (_, page) = s
        .get(
            &format!("/v1/subscriptions/{sub_id}/deliveries?limit=1"),
            &key,
        )
        .await;
    assert!(page["next_cursor"].is_string());

    r.status(200);
    let (status, _) = s
        .post(
            &format!("/v1/deliveries/{}/retry", d1["id"].as_str().unwrap()),
            &key,
            json!({}),
        )
        .await;
    assert_eq!(status, 202);
    settled(&s, &key, e1["id"].as_str().unwrap(), "succeeded").await;

    let (status, rec) = s
        .post(
            &format!("/v1/subscriptions/{sub_id}/recover"),
            &key,
            json!({"since": "2000-01-01T00:00:00Z"}),
        )
        .await;
    assert_eq!(status, 202);
    assert_eq!(rec["recovered"], 1);
    settled(&s, &key, e2["id"].as_str().unwrap(), "succeeded").await;
}

#[tokio::test]
async fn retry_after_is_honoured_and_gone_disables() {
    let s = TestServer::start_with(&["--retry-schedule", "10ms,3s"]).await;
    let r = Receiver::start().await;
    r.respond(|_, n| {
        if n == 1 {
            (
                StatusCode::TOO_MANY_REQUESTS,
                [("retry-after", "1")],
                "slow down",
            )
                .into_response()
        } else {
            StatusCode::OK.into_response()
        }
    });
    let (_, key) = s.account("A").await;
    s.subscribe(&key, json!({"url": r.url.clone()})).await;
    let e = s.event(&key, json!({"type": "a", "payload": {}})).await;
    let d = settled(&s, &key, e["id"].as_str().unwrap(), "succeeded").await;
    let log = d["attempt_log"].as_array().unwrap();
    let t = |i: usize| log[i]["attempted_at"].as_str().unwrap().to_string();
    let gap = parse_ms(&t(1)) - parse_ms(&t(0));
    assert!(
        gap >= 950,
        "the retry waited for Retry-After (1 s), not the 10 ms step: {gap} ms"
    );

    let gone = Receiver::start().await;
    gone.status(410);
    let sub = s.subscribe(&key, json!({"url": gone.url.clone()})).await;
    s.event(&key, json!({"type": "a", "payload": {}})).await;
    let path = format!("/v1/subscriptions/{}", sub["id"].as_str().unwrap());
    let disabled = eventually("410 disables the subscription", WAIT, || async {
        let (_, sub) = s.get(&path, &key).await;
        (sub["status"] == "disabled").then_some(sub)
    })
    .await;
    assert!(
        disabled["status_reason"].as_str().unwrap().contains("410"),
        "{disabled}"
    );
    assert_eq!(gone.received().len(), 1, "no retry after 410");
}

fn parse_ms(t: &str) -> i64 {
    // "YYYY-MM-DDTHH:MM:SS.mmmZ" within one test run: seconds of the day are enough.
    let time = &t[11..23];
    let h: i64 = time[0..2].parse().unwrap();
    let m: i64 = time[3..5].parse().unwrap();
    let s: i64 = time[6..8].parse().unwrap();
    let ms: i64 = time[9..12].parse().unwrap();
    ((h * 60 + m) * 60 + s) * 1000 + ms
}

#[tokio::test]
async fn a_subscription_failing_for_the_window_is_disabled_and_announced() {
    let s = TestServer::start_with(&[
        "--disable-after",
        "100ms",
        "--retry-schedule",
        "60ms,60ms,60ms,60ms",
    ])
    .await;
    let bad = Receiver::start().await;
    bad.status(500);
    let watcher = Receiver::start().await;
    let (_, key) = s.account("A").await;
    let sub = s
        .subscribe(&key, json!({"url": bad.url.clone(), "event_types": ["a"]}))
        .await;
    s.subscribe(
        &key,
        json!({"url": watcher.url.clone(), "event_types": ["subscription:disabled"]}),
    )
    .await;
    s.event(&key, json!({"type": "a", "payload": {}})).await;
    let path = format!("/v1/subscriptions/{}", sub["id"].as_str().unwrap());
    eventually("auto-disable", WAIT, || async {
        (s.get(&path, &key).await.1["status"] == "disabled").then_some(())
    })
    .await;
    let note = eventually("subscription:disabled is delivered", WAIT, || async {
        watcher.received().pop()
    })
    .await;
    let note = note.json();
    assert_eq!(note["type"], "subscription:disabled");
    assert_eq!(note["data"]["subscription_id"], sub["id"]);
    let (_, events) = s.get("/v1/events?type=subscription:disabled", &key).await;
    assert_eq!(events["data"].as_array().unwrap().len(), 1);

    let (_, re) = s.patch(&path, &key, json!({"status": "active"})).await;
    assert_eq!(re["status"], "active");
    bad.status(200);
    let e = s.event(&key, json!({"type": "a", "payload": {}})).await;
    settled(&s, &key, e["id"].as_str().unwrap(), "succeeded").await;
}

#[tokio::test]
async fn every_failure_kind_is_recorded() {
    let s =
        TestServer::start_with(&["--delivery-timeout", "300ms", "--retry-schedule", "10ms"]).await;
    let (_, key) = s.account("A").await;
    let slow = Receiver::start().await;
    slow.set_delay(Duration::from_secs(2));
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        drop(l);
        port
    };
    let redirect = Receiver::start().await;
    redirect
        .respond(|_, _| (StatusCode::FOUND, [("location", "http://example.com/")]).into_response());
    let cases = [
        (slow.url.clone(), "timeout"),
        (format!("http://127.0.0.1:{closed}/"), "connect"),
        ("http://no-such-host.invalid/".to_string(), "dns"),
        // A TLS client hello answered by a plain HTTP server.
        (slow.url.replacen("http://", "https://", 1), "tls"),
        (redirect.url.clone(), "http_status"),
    ];
    for (url, kind) in cases {
        let sub = s
            .subscribe(
                &key,
                json!({"url": url, "event_types": [format!("t.{kind}")]}),
            )
            .await;
        let e = s
            .event(&key, json!({"type": format!("t.{kind}"), "payload": {}}))
            .await;
        let d = settled(&s, &key, e["id"].as_str().unwrap(), "failed").await;
        let first = &d["attempt_log"][0];
        assert_eq!(first["error_kind"], kind, "{url}: {d}");
        assert!(first["duration_ms"].is_number());
        assert!(first["error_message"].as_str().unwrap().len() > 3);
        s.delete(
            &format!("/v1/subscriptions/{}", sub["id"].as_str().unwrap()),
            &key,
        )
        .await;
    }
}

#[tokio::test]
async fn internal_addresses_are_refused_unless_allowed() {
    // No --allow-network for loopback here: the default policy.
    let s = TestServer::start_with(&["--allow-network", "192.0.2.0/24"]).await;
    let r = Receiver::start().await;
    let (_, key) = s.account("A").await;
    let port = r.url.rsplit(':').next().unwrap().to_string();
    for literal in [
        r.url.clone(),
        format!("http://[::1]:{port}/"),
        "http://169.254.169.254/".into(),
        "http://10.1.2.3/".into(),
    ] {
        let (status, body) = s
            .post("/v1/subscriptions", &key, json!({"url": literal}))
            .await;
        assert_eq!(status, 400, "{literal}: {body}");
        assert_eq!(body["error"]["code"], "url_not_allowed");
    }
    // A name is checked after resolution: localhost resolves to loopback and is refused at connect time.
    s.subscribe(&key, json!({"url": format!("http://localhost:{port}/")}))
        .await;
    let e = s.event(&key, json!({"type": "a", "payload": {}})).await;
    let d = settled(&s, &key, e["id"].as_str().unwrap(), "failed").await;
    assert_eq!(d["attempt_log"][0]["error_kind"], "network_policy", "{d}");
    assert!(
        d["attempt_log"][0]["error_message"]
            .as_str()
            .unwrap()
            .contains("refused by network policy")
    );
    assert!(r.received().is_empty(), "nothing reached the receiver");
}

#[tokio::test]
async fn papercups_format_and_handshake() {
    let s = TestServer::start().await;
    let r = Receiver::start().await;
    r.respond(|req, _| {
        let body = req.json();
        if body["event"] == "webhook:verify" {
            body["payload"]
                .as_str()
                .unwrap()
                .to_string()
                .into_response()
        } else {
            StatusCode::OK.into_response()
        }
    });
    let (_, key) = s.account("A").await;
    let sub = s
        .subscribe(&key, json!({"url": r.url.clone(), "format": "papercups"}))
        .await;
    assert_eq!(sub["status"], "pending_verification");
    let path = format!("/v1/subscriptions/{}", sub["id"].as_str().unwrap());
    eventually("verified", WAIT, || async {
        (s.get(&path, &key).await.1["status"] == "active").then_some(())
    })
    .await;
    let verify = r.received()[0].json();
    assert_eq!(verify["event"], "webhook:verify");
    assert!(verify["payload"].as_str().unwrap().len() >= 16);

    let payload = json!({"body": "Hello world!", "created_at": "2020-09-01T23:00:00", "conversation_id": "xxx", "customer_id": "yyy"});
    s.event(&key, json!({"type": "message:created", "payload": payload}))
        .await;
    let got = eventually("event delivered", WAIT, || async {
        r.received().get(1).cloned()
    })
    .await;
    assert_eq!(
        got.json(),
        json!({"event": "message:created", "payload": payload})
    );
}

#[tokio::test]
async fn a_failed_handshake_blocks_delivery_until_verified() {
    let s = TestServer::start().await;
    let r = Receiver::start().await;
    r.respond(|_, _| "wrong answer".into_response());
    let (_, key) = s.account("A").await;
    let sub = s
        .subscribe(&key, json!({"url": r.url.clone(), "verify": true}))
        .await;
    let path = format!("/v1/subscriptions/{}", sub["id"].as_str().unwrap());
    let failed = eventually("verification fails", WAIT, || async {
        let (_, sub) = s.get(&path, &key).await;
        sub["status_reason"]
            .as_str()
            .is_some_and(|r| r.contains("verification failed"))
            .then_some(sub)
    })
    .await;
    assert_eq!(failed["status"], "pending_verification");
    // An event posted while the subscription is pending is not owed to it: no delivery is
    // written for it, so nothing can be sent.
    s.event(&key, json!({"type": "a", "payload": {}})).await;
    let (_, list) = s.get(&format!("{path}/deliveries"), &key).await;
    assert_eq!(list["data"], json!([]), "{list}");
    assert_eq!(
        r.received().len(),
        1,
        "only the handshake; no event while pending"
    );

    // Now the receiver answers with the challenge as a JSON string.
    r.respond(|req, _| axum::Json(req.json()["payload"].clone()).into_response());
    let (status, _) = s.post(&format!("{path}/verify"), &key, json!({})).await;
    assert_eq!(status, 202);
    eventually("verified", WAIT, || async {
        (s.get(&path, &key).await.1["status"] == "active").then_some(())
    })
    .await;

    // Changing the URL requires verification again.
    let (_, changed) = s
        .patch(&path, &key, json!({"url": format!("{}/new", r.url)}))
        .await;
    assert_eq!(changed["status"], "pending_verification");
    eventually("re-verified", WAIT, || async {
        (s.get(&path, &key).await.1["status"] == "active").then_some(())
    })
    .await;
    assert_eq!(r.at("/new").len(), 1);
}

#[tokio::test]
async fn airy_webhooks_get_the_flat_message_and_its_signature() {
    let s = TestServer::start().await;
    let r = Receiver::start().await;
    let (_, key) = s.account("A").await;
    let (_, hook) = s
        .post(
            "/webhooks.subscribe",
            &key,
            json!({"url": r.url.clone(), "headers": {"X-Custom-Header": "c"}}),
        )
        .await;
    let api_secret = hook["api_secret"].as_str().unwrap();
    let payload = json!({"conversation_id": "4242424242", "id": "7560bf66-d9c4-48f8-b7f1-27ab6c40a40a",
        "sender": {"id": "adac9220-fe7b-40a8-98e5-2fcfaf4a53b5", "type": "source_contact"},
        "source": "FACEBOOK", "sent_at": "2020-07-20T14:18:08.584Z", "text": "Message to be sent"});
    s.event(&key, json!({"type": "message:created", "payload": payload}))
        .await;
    let got = eventually("airy delivery", WAIT, || async { r.received().pop() }).await;
    assert_eq!(got.json(), payload);
    assert_eq!(got.header("x-custom-header"), Some("c"));
    let mut mac = Hmac::<Sha256>::new_from_slice(api_secret.as_bytes()).unwrap();
    mac.update(&got.body);
    assert_eq!(
        got.header("x-airy-content-signature"),
        Some(hex::encode(mac.finalize().into_bytes()).as_str())
    );
}

#[tokio::test]
async fn during_a_rotation_both_secrets_sign() {
    let s = TestServer::start().await;
    let r = Receiver::start().await;
    let (_, key) = s.account("A").await;
    let sub = s.subscribe(&key, json!({"url": r.url.clone()})).await;
    let old = sub["secret"].as_str().unwrap().to_string();
    let (_, rotated) = s
        .post(
            &format!(
                "/v1/subscriptions/{}/secret/rotate",
                sub["id"].as_str().unwrap()
            ),
            &key,
            json!({}),
        )
        .await;
    let new = rotated["secret"].as_str().unwrap();
    s.event(&key, json!({"type": "a", "payload": {}})).await;
    let got = eventually("delivery", WAIT, || async { r.received().pop() }).await;
    let sig = got.header("webhook-signature").unwrap();
    assert_eq!(sig.split(' ').count(), 2, "{sig}");
    let (id, ts) = (
        got.header("webhook-id").unwrap(),
        got.header("webhook-timestamp").unwrap(),
    );
    assert!(signature_ok(new, id, ts, &got.body, sig));
    assert!(signature_ok(&old, id, ts, &got.body, sig));
}

#[tokio::test]
async fn concurrency_is_bounded_and_rate_limits_delay_without_dropping() {
    let s = TestServer::start_with(&["--delivery-concurrency", "3"]).await;
    let r = Receiver::start().await;
    r.set_delay(Duration::from_millis(50));
    let (_, key) = s.account("A").await;
    s.subscribe(
        &key,
        json!({"url": r.url.clone(), "event_types": ["burst"]}),
    )
    .await;
    let events: Vec<Value> = (0..30)
        .map(|i| json!({"type": "burst", "payload": {"i": i}}))
        .collect();
    assert_eq!(
        s.post("/v1/events/batch", &key, json!({"events": events}))
            .await
            .0,
        202
    );
    eventually("all 30 delivered", WAIT, || async {
        (r.received().len() >= 30).then_some(())
    })
    .await;
    assert!(
        r.max_in_flight() <= 3,
        "at most 3 in flight, saw {}",
        r.max_in_flight()
    );

    let limited = Receiver::start().await;
    s.subscribe(&key, json!({"url": limited.url.clone(), "event_types": ["limited"], "rate_limit_per_second": 20})).await;
    let events: Vec<Value> = (0..10)
        .map(|i| json!({"type": "limited", "payload": {"i": i}}))
        .collect();
    let started = Instant::now();
    s.post("/v1/events/batch", &key, json!({"events": events}))
        .await;
    eventually("all 10 rate-limited deliveries arrive", WAIT, || async {
        (limited.received().len() >= 10).then_some(())
    })
    .await;
    assert!(
        started.elapsed() >= Duration::from_millis(400),
        "20/s spreads 10 deliveries over ≥ 450 ms"
    );
    let mut seen: Vec<i64> = limited
        .received()
        .iter()
        .map(|x| x.json()["data"]["i"].as_i64().unwrap())
        .collect();
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 10, "none dropped");
}

#[tokio::test]
async fn delivery_metrics_are_exported() {
    let s = TestServer::start().await;
    let r = Receiver::start().await;
    let (_, key) = s.account("A").await;
    s.subscribe(&key, json!({"url": r.url.clone()})).await;
    let e = s.event(&key, json!({"type": "a", "payload": {}})).await;
    settled(&s, &key, e["id"].as_str().unwrap(), "succeeded").await;
    let m = s.metrics().await;
    assert!(
        m.contains("wasmhook_deliveries_total{outcome=\"succeeded\"} 1"),
        "{m}"
    );
    assert!(m.contains("wasmhook_delivery_queue_depth 0"), "{m}");
    assert!(
        m.contains("wasmhook_ingest_to_delivery_seconds_count 1"),
        "{m}"
    );
}

#[tokio::test]
async fn ingest_is_refused_past_the_queue_depth_limit_and_resumes_when_delivery_catches_up() {
    // Failed attempts wait an hour for their retry: a backlog that does not drain by itself.
    let s = TestServer::start_with(&["--max-queue-depth", "5", "--retry-schedule", "1h"]).await;
    let r = Receiver::start().await;
    r.status(503);
    let (_, key) = s.account("A").await;
    let sub = s.subscribe(&key, json!({"url": r.url})).await;
    let sub_id = sub["id"].as_str().unwrap().to_string();
    let events: Vec<Value> = (0..10)
        .map(|i| json!({"type": "a", "payload": {"i": i}}))
        .collect();
    let (status, _) = s
        .post("/v1/events/batch", &key, json!({"events": events}))
        .await;
    assert_eq!(status, 202, "the queue was empty when the batch came");
    // Once a sample sees the backlog, new events are refused with a reason and a retry time.
    let refused = eventually("ingest is refused", WAIT, || async {
        let resp = s
            .http
            .post(s.url("/v1/events"))
            .bearer_auth(&key)
            .json(&json!({"type": "a", "payload": {"late": true}}))
            .send()
            .await
            .unwrap();
        (resp.status() == 429).then_some(resp)
    })
    .await;
    assert_eq!(refused.headers()["retry-after"], "1");
    let body: Value = refused.json().await.unwrap();
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("--max-queue-depth"), "{body}");
    let metrics = s.metrics().await;
    let depth: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("wasmhook_delivery_queue_depth "))
        .expect("the depth is exported")
        .parse()
        .unwrap();
    assert!(depth >= 10.0, "{depth}");
    // Nothing refused is stored (the probes before the first refusal were accepted).
    let stored = || async {
        let (_, list) = s.get("/v1/events?limit=250", &key).await;
        list["data"].as_array().unwrap().len()
    };
    let before = stored().await;
    let (status, _) = s
        .post(
            "/v1/events",
            &key,
            json!({"type": "a", "payload": {"refused": true}}),
        )
        .await;
    assert_eq!(status, 429);
    // The API's messages are events too.
    let (status, _) = s
        .post(
            "/v1/messages",
            &key,
            json!({"conversation_id": "c1", "text": "hello"}),
        )
        .await;
    assert_eq!(status, 429);
    assert_eq!(stored().await, before);

    // The endpoint recovers and the backlog is retried: the queue drains, and events are
    // accepted again.
    r.status(200);
    let (_, pending) = s
        .get(
            &format!("/v1/subscriptions/{sub_id}/deliveries?status=pending&limit=250"),
            &key,
        )
        .await;
    let pending = pending["data"].as_array().unwrap().clone();
    assert!(pending.len() >= 10, "{}", pending.len());
    for d in &pending {
        let retry = format!("/v1/deliveries/{}/retry", d["id"].as_str().unwrap());
        let (status, _) = s.post(&retry, &key, json!({})).await;
        assert_eq!(status, 202);
    }
    eventually("ingest is accepted again", WAIT, || async {
        let (status, _) = s
            .post(
                "/v1/events",
                &key,
                json!({"type": "a", "payload": {"i": 10}}),
            )
            .await;
        (status == 202).then_some(())
    })
    .await;
}
