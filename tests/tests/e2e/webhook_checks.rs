//! `POST /v1/webhook-checks` end to end: the handshake or a signed test delivery against a real
//! receiver, every failure with its exact reason, the network policy, validation and the
//! per-account rate limit.

use std::time::Duration;

use crate::common::{Receiver, TestServer};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

async fn check(s: &TestServer, key: &str, body: Value) -> Value {
    let (status, report) = s.post("/v1/webhook-checks", key, body).await;
    assert_eq!(status, 200, "{report}");
    report
}

/// Verifies a Standard Webhooks signature the way a receiver would.
fn signature_ok(secret: &str, headers: &Value, body: &str) -> bool {
    let key = STANDARD
        .decode(secret.strip_prefix("whsec_").unwrap())
        .unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    let (id, ts) = (&headers["webhook-id"], &headers["webhook-timestamp"]);
    mac.update(format!("{}.{}.", id.as_str().unwrap(), ts.as_str().unwrap()).as_bytes());
    mac.update(body.as_bytes());
    let expected = format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()));
    headers["webhook-signature"] == expected.as_str()
}

#[tokio::test]
async fn a_test_delivery_is_signed_and_reports_what_was_sent_and_what_came_back() {
    let s = TestServer::start().await;
    let r = Receiver::start().await;
    r.respond(|_, _| (StatusCode::ACCEPTED, "thanks").into_response());
    let (_, key) = s.account("A").await;
    let url = format!("{}/hooks", r.url);
    let report = check(
        &s,
        &key,
        json!({"url": url, "headers": {"X-Team": "support"}}),
    )
    .await;
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(report["mode"], "test_delivery");
    assert_eq!(report["status_code"], 202);
    assert_eq!(report["response_excerpt"], "thanks");
    assert_eq!(report["reason"], Value::Null);
    assert!(report["duration_ms"].is_u64());

    // What the report says was sent is what arrived, and it verifies with the throwaway secret.
    let sent = &report["request"];
    let got = r.at("/hooks").pop().expect("the test delivery arrived");
    assert_eq!(sent["method"], "POST");
    assert_eq!(sent["url"], url);
    assert_eq!(sent["body"].as_str().unwrap().as_bytes(), &got.body[..]);
    for name in [
        "content-type",
        "user-agent",
        "x-team",
        "webhook-id",
        "webhook-timestamp",
        "webhook-signature",
    ] {
        let sent_value = sent["headers"]
            .as_object()
            .unwrap()
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str().unwrap());
        assert_eq!(sent_value, got.header(name), "{name}");
    }
    let secret = sent["signing_secret"].as_str().unwrap();
    assert!(secret.starts_with("whsec_"));
    assert!(signature_ok(
        secret,
        &sent["headers"],
        sent["body"].as_str().unwrap()
    ));
    assert_eq!(sent["headers"]["webhook-id"], report["id"]);
    let body = got.json();
    assert_eq!(body["type"], "webhook:test");
    assert_eq!(body["data"]["check_id"], report["id"]);

    // In the subscription's format.
    check(&s, &key, json!({"url": url, "format": "airy"})).await;
    let airy = r.at("/hooks").pop().unwrap().json();
    assert_eq!(
        airy["type"], "webhook:test",
        "non-message events use the standard envelope"
    );

    // Nothing was stored: no subscription, no event.
    assert_eq!(s.get("/v1/subscriptions", &key).await.1["data"], json!([]));
    assert_eq!(s.get("/v1/events", &key).await.1["data"], json!([]));
}

#[tokio::test]
async fn papercups_urls_get_the_handshake_and_a_wrong_answer_is_shown() {
    let s = TestServer::start().await;
    let r = Receiver::start().await;
    r.respond(|req, _| {
        let body = req.json();
        if req.path == "/echo" {
            Value::String(body["payload"].as_str().unwrap().into())
                .to_string()
                .into_response()
        } else {
            "nope".into_response()
        }
    });
    let (_, key) = s.account("A").await;

    let ok = check(
        &s,
        &key,
        json!({"url": format!("{}/echo", r.url), "format": "papercups"}),
    )
    .await;
    assert_eq!(ok["ok"], true, "{ok}");
    assert_eq!(ok["mode"], "verification");
    let sent: Value = serde_json::from_str(ok["request"]["body"].as_str().unwrap()).unwrap();
    assert_eq!(sent["event"], "webhook:verify");
    let challenge = sent["payload"].as_str().unwrap();
    assert_eq!(ok["response_excerpt"], format!("\"{challenge}\""));

    let wrong = check(
        &s,
        &key,
        json!({"url": format!("{}/other", r.url), "format": "standard", "verify": true}),
    )
    .await;
    assert_eq!(wrong["ok"], false);
    assert_eq!(wrong["mode"], "verification");
    assert_eq!(wrong["status_code"], 200);
    assert_eq!(wrong["error_kind"], "challenge_mismatch");
    assert_eq!(wrong["response_excerpt"], "nope");
    let sent: Value = serde_json::from_str(wrong["request"]["body"].as_str().unwrap()).unwrap();
    let reason = wrong["reason"].as_str().unwrap();
    assert!(
        reason.contains(sent["payload"].as_str().unwrap()) && reason.ends_with("got \"nope\""),
        "{reason}"
    );
}

#[tokio::test]
async fn failures_carry_their_exact_reason() {
    let s = TestServer::start_with(&["--delivery-timeout", "300ms"]).await;
    let r = Receiver::start().await;
    r.respond(|req, _| match req.path.as_str() {
        "/broken" => (StatusCode::INTERNAL_SERVER_ERROR, "database down").into_response(),
        "/moved" => (
            StatusCode::FOUND,
            [(header::LOCATION, "https://elsewhere.example/hook")],
        )
            .into_response(),
        _ => StatusCode::OK.into_response(),
    });
    let (_, key) = s.account("A").await;
    let run = |path: &str| {
        let url = if path.contains("://") {
            path.to_string()
        } else {
            format!("{}{path}", r.url)
        };
        let (s, key) = (&s, &key);
        async move { check(s, key, json!({ "url": url })).await }
    };

    let broken = run("/broken").await;
    assert_eq!(
        (&broken["ok"], &broken["status_code"], &broken["error_kind"]),
        (&json!(false), &json!(500), &json!("http_status"))
    );
    assert_eq!(broken["reason"], "HTTP 500 Internal Server Error");
    assert_eq!(broken["response_excerpt"], "database down");

    let moved = run("/moved").await;
    assert_eq!(moved["status_code"], 302);
    assert!(
        moved["reason"]
            .as_str()
            .unwrap()
            .contains("redirects are not followed (Location: https://elsewhere.example/hook)"),
        "{moved}"
    );

    r.set_delay(Duration::from_secs(2));
    let slow = run("/slow").await;
    r.set_delay(Duration::ZERO);
    assert_eq!(slow["error_kind"], "timeout", "{slow}");
    assert_eq!(slow["reason"], "no response within 300ms");
    assert_eq!(slow["status_code"], Value::Null);
    assert!(slow["duration_ms"].as_u64().unwrap() < 1500, "{slow}");

    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        drop(l);
        run(&format!("http://127.0.0.1:{port}/")).await
    };
    assert_eq!(closed["error_kind"], "connect", "{closed}");
    assert!(
        closed["reason"]
            .as_str()
            .unwrap()
            .to_lowercase()
            .contains("connection refused"),
        "{closed}"
    );

    let tls = run(&r.url.replace("http://", "https://")).await;
    assert_eq!(tls["error_kind"], "tls", "{tls}");

    let dns = run("http://no-such-host.invalid/hook").await;
    assert_eq!(dns["error_kind"], "dns", "{dns}");
    assert!(
        dns["reason"]
            .as_str()
            .unwrap()
            .contains("failed to resolve no-such-host.invalid"),
        "{dns}"
    );
}

#[tokio::test]
async fn internal_addresses_are_refused_with_the_reason_not_an_error() {
    // The default policy: loopback is not opened for this server.
    let s = TestServer::start_with(&["--allow-network", "192.0.2.0/24"]).await;
    let r = Receiver::start().await;
    let (_, key) = s.account("A").await;

    let literal = check(&s, &key, json!({"url": r.url.clone()})).await;
    assert_eq!(literal["ok"], false);
    assert_eq!(literal["error_kind"], "network_policy");
    assert!(
        literal["reason"]
            .as_str()
            .unwrap()
            .contains("127.0.0.1 is an internal address"),
        "{literal}"
    );
    let named = check(
        &s,
        &key,
        json!({"url": r.url.replace("127.0.0.1", "localhost")}),
    )
    .await;
    assert_eq!(named["error_kind"], "network_policy", "{named}");
    assert!(
        named["reason"]
            .as_str()
            .unwrap()
            .contains("resolves only to internal addresses"),
        "{named}"
    );
    let metadata = check(
        &s,
        &key,
        json!({"url": "http://169.254.169.254/latest/meta-data/"}),
    )
    .await;
    assert_eq!(metadata["error_kind"], "network_policy");
    assert!(r.received().is_empty(), "nothing reached the receiver");
}

#[tokio::test]
async fn requests_are_validated_like_subscriptions_and_authenticated() {
    let s = TestServer::start().await;
    let (_, key) = s.account("A").await;
    for (body, wanted) in [
        (
            json!({"url": "ftp://example.com/"}),
            "url: the scheme must be http or https",
        ),
        (json!({"url": "not a url"}), "url:"),
        (json!({"url": "https://u:p@example.com/"}), "credentials"),
        (
            json!({"url": "https://example.com/", "headers": {"Webhook-Id": "x"}}),
            "reserved",
        ),
        (
            json!({"url": "https://example.com/", "format": "soap"}),
            "format",
        ),
        (
            json!({"url": "https://example.com/", "secret": "x"}),
            "secret",
        ),
        (json!({"format": "standard"}), "url"),
    ] {
        let (status, err) = s.post("/v1/webhook-checks", &key, body.clone()).await;
        assert_eq!(status, 400, "{body} → {err}");
        let message = err["error"]["message"].as_str().unwrap();
        assert!(message.contains(wanted), "{body} → {message}");
    }
    let (status, err) = s
        .call(
            reqwest::Method::POST,
            "/v1/webhook-checks",
            None,
            Some(json!({"url": "https://example.com/"})),
        )
        .await;
    assert_eq!(status, 401);
    assert_eq!(err["error"]["code"], "unauthorized");
}

#[tokio::test]
async fn checks_are_rate_limited_per_account() {
    let s = TestServer::start_with(&["--webhook-checks-per-minute", "2"]).await;
    let r = Receiver::start().await;
    let (_, a) = s.account("A").await;
    let (_, b) = s.account("B").await;
    let body = json!({ "url": r.url.clone() });
    for _ in 0..2 {
        assert_eq!(check(&s, &a, body.clone()).await["ok"], true);
    }
    let resp = s
        .http
        .post(s.url("/v1/webhook-checks"))
        .bearer_auth(&a)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 429);
    let retry_after: u64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=30).contains(&retry_after), "{retry_after}");
    let err: Value = resp.json().await.unwrap();
    assert_eq!(err["error"]["code"], "rate_limited");
    assert_eq!(r.received().len(), 2, "the refused check sent nothing");
    // Another account has its own allowance.
    assert_eq!(check(&s, &b, body).await["ok"], true);
}

#[tokio::test]
async fn the_endpoint_is_described_in_openapi() {
    let s = TestServer::start().await;
    let doc: Value = s
        .http
        .get(s.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let op = &doc["paths"]["/v1/webhook-checks"]["post"];
    assert!(op["responses"]["429"].is_object(), "{op}");
    let report = &doc["components"]["schemas"]["CheckReport"]["properties"];
    for field in [
        "ok",
        "status_code",
        "response_excerpt",
        "duration_ms",
        "reason",
        "request",
    ] {
        assert!(report[field].is_object(), "CheckReport.{field}");
    }
}
