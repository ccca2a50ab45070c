//! Hostile and malformed requests: every one gets a 4xx with the JSON error shape, never a 5xx,
//! and nothing half-written is left behind.

use crate::common::{ADMIN, TestServer};
use serde_json::{Value, json};
use wasmhook_plugin_artifacts as wasm;

struct Case {
    method: &'static str,
    path: String,
    token: Option<String>,
    content_type: Option<&'static str>,
    body: Vec<u8>,
    expect: u16,
}

fn case(method: &'static str, path: &str, token: Option<&str>, body: &[u8], expect: u16) -> Case {
    Case {
        method,
        path: path.to_string(),
        token: token.map(str::to_string),
        content_type: Some("application/json"),
        body: body.to_vec(),
        expect,
    }
}

/// True when `path` (query aside) is an instance of the document's `template`.
fn matches_template(template: &str, path: &str) -> bool {
    let path = path.split('?').next().unwrap();
    let (t, p): (Vec<_>, Vec<_>) = (template.split('/').collect(), path.split('/').collect());
    t.len() == p.len()
        && t.iter()
            .zip(&p)
            .all(|(t, p)| t == p || (t.starts_with('{') && !p.is_empty()))
}

#[tokio::test]
async fn bad_requests_get_clear_json_errors_and_never_a_5xx() {
    let s = TestServer::start_with(&["--max-event-bytes", "4096"]).await;
    let (acc, key) = s.account("A").await;
    let k = Some(key.as_str());
    let sub = s
        .subscribe(&key, json!({"url": "https://example.com/h"}))
        .await;
    let sub_path = format!("/v1/subscriptions/{}", sub["id"].as_str().unwrap());
    let plugin = s.plugin(&key, "p", wasm::HOSTILE, Value::Null).await;
    let plugin_path = format!("/v1/plugins/{}", plugin["id"].as_str().unwrap());
    let big_payload = format!(r#"{{"type":"a","payload":{{"x":"{}"}}}}"#, "y".repeat(5000));
    let deep = format!("{}{}", "[".repeat(1_500), "]".repeat(1_500));
    let deep_payload = format!(r#"{{"type":"a","payload":{{"x":{deep}}}}}"#);

    let typed =
        |method: &'static str, path: &str, content_type: &'static str, body: &[u8], expect: u16| {
            Case {
                content_type: Some(content_type),
                ..case(method, path, k, body, expect)
            }
        };
    let cases = vec![
        // A body that says it is something else than the endpoint reads.
        typed(
            "POST",
            "/v1/events",
            "multipart/form-data; boundary=x",
            br#"{"type":"a","payload":{}}"#,
            415,
        ),
        typed(
            "POST",
            "/v1/plugins?name=p",
            "application/json",
            b"\0asm\x0d\0\x01\0",
            415,
        ),
        typed(
            "POST",
            "/v1/plugins?name=p",
            "application/wasm",
            b"not wasm",
            400,
        ),
        typed(
            "PUT",
            "/v1/plugins/plg_nope",
            "multipart/form-data; boundary=x",
            b"x",
            415,
        ),
        typed("PUT", &plugin_path, "application/wasm", b"not wasm", 400),
        case("PATCH", &plugin_path, k, br#"{"name":""}"#, 400),
        case(
            "PATCH",
            &plugin_path,
            k,
            br#"{"limits":{"memory_mb":0}}"#,
            400,
        ),
        case(
            "POST",
            &format!("{plugin_path}/test"),
            k,
            br#"{"event":{"type":"a"}}"#,
            400,
        ),
        case("POST", "/v1/listeners", k, br#"{"event_types":[]}"#, 400),
        case("POST", "/v1/listeners/sub_x/results", k, b"{", 400),
        case(
            "POST",
            "/v1/webhook-checks",
            k,
            br#"{"url":"ftp://x"}"#,
            400,
        ),
        // Authentication.
        case("GET", "/v1/subscriptions", None, b"", 401),
        case("GET", "/v1/subscriptions", Some("whk_wrong"), b"", 401),
        case("POST", "/v1/accounts", Some(&key), br#"{"name":"x"}"#, 401),
        case("POST", "/v1/accounts", None, br#"{"name":"x"}"#, 401),
        // Routing.
        case("GET", "/v1/events/%FF%FE", k, b"", 400),
        case("GET", "/v1/nothing-here", k, b"", 404),
        case("GET", "/no-such-page", None, b"", 404),
        case("DELETE", "/v1/events", k, b"", 405),
        case("PUT", "/v1/subscriptions", k, b"{}", 405),
        case("GET", "/webhooks.subscribe", k, b"", 405),
        // Malformed JSON and wrong types.
        case("POST", "/v1/events", k, b"", 400),
        case("POST", "/v1/events", k, b"{", 400),
        case("POST", "/v1/events", k, b"not json", 400),
        case("POST", "/v1/events", k, b"[]", 400),
        case("POST", "/v1/events", k, br#"{"type":1,"payload":{}}"#, 400),
        case("POST", "/v1/events", k, br#"{"type":"a"}"#, 400),
        case(
            "POST",
            "/v1/events",
            k,
            br#"{"type":"a","payload":[1]}"#,
            400,
        ),
        case(
            "POST",
            "/v1/events",
            k,
            br#"{"type":"a","payload":"text"}"#,
            400,
        ),
        case(
            "POST",
            "/v1/events",
            k,
            br#"{"type":"a","payload":null}"#,
            400,
        ),
        case(
            "POST",
            "/v1/events",
            k,
            br#"{"type":"A","payload":{}}"#,
            400,
        ),
        case("POST", "/v1/events", k, br#"{"type":"","payload":{}}"#, 400),
        case(
            "POST",
            "/v1/events",
            k,
            br#"{"type":"a","payload":{},"occurred_at":"yesterday"}"#,
            400,
        ),
        case(
            "POST",
            "/v1/events",
            k,
            br#"{"type":"a","payload":{},"id":"has spaces"}"#,
            400,
        ),
        case(
            "POST",
            "/v1/events",
            k,
            br#"{"type":"a","payload":{},"extra":1}"#,
            400,
        ),
        case("POST", "/v1/events", k, b"\xff\xfe\x00", 400),
        case("POST", "/v1/events", k, deep_payload.as_bytes(), 400),
        case("POST", "/v1/events/batch", k, br#"{"events":{}}"#, 400),
        case(
            "POST",
            "/v1/events/batch",
            k,
            br#"{"events":[{"type":"a"}]}"#,
            400,
        ),
        // Size limits.
        case("POST", "/v1/events", k, big_payload.as_bytes(), 413),
        // Subscriptions and messages.
        case("POST", "/v1/subscriptions", k, br#"{"url":42}"#, 400),
        case(
            "POST",
            "/v1/subscriptions",
            k,
            br#"{"url":"javascript:alert(1)"}"#,
            400,
        ),
        case(
            "POST",
            "/v1/subscriptions",
            k,
            br#"{"url":"http://169.254.169.254/latest/meta-data"}"#,
            400,
        ),
        case(
            "POST",
            "/v1/subscriptions",
            k,
            br#"{"url":"https://x.example","rate_limit_per_second":0}"#,
            400,
        ),
        case(
            "POST",
            "/v1/subscriptions",
            k,
            br#"{"url":"https://x.example","rate_limit_per_second":-1}"#,
            400,
        ),
        case(
            "POST",
            "/v1/subscriptions",
            k,
            br#"{"url":"https://x.example","plugin_id":"plg_x"}"#,
            400,
        ),
        case(
            "PATCH",
            &sub_path,
            k,
            br#"{"status":"pending_verification"}"#,
            400,
        ),
        case("PATCH", &sub_path, k, br#"{"status":"bogus"}"#, 400),
        case(
            "PATCH",
            &sub_path,
            k,
            br#"{"headers":{"Webhook-Id":"x"}}"#,
            400,
        ),
        case("GET", "/v1/subscriptions?limit=0", k, b"", 400),
        case("GET", "/v1/subscriptions?limit=abc", k, b"", 400),
        case("GET", "/v1/subscriptions?cursor=xyz", k, b"", 400),
        case("GET", "/v1/subscriptions/sub_missing", k, b"", 404),
        case(
            "POST",
            "/v1/messages",
            k,
            br#"{"conversation_id":"c"}"#,
            400,
        ),
        case(
            "POST",
            "/messages.send",
            k,
            br#"{"conversation_id":"c","message":"hi"}"#,
            400,
        ),
        case("POST", "/webhooks.subscribe", k, br#"{"headers":{}}"#, 400),
        case(
            "POST",
            "/webhooks.subscribe",
            k,
            br#"{"url":"http://10.0.0.1/"}"#,
            400,
        ),
        case(
            "POST",
            &format!("/v1/accounts/{acc}/api-keys"),
            Some("whk_nope"),
            b"",
            401,
        ),
        case("POST", "/v1/accounts", Some(ADMIN), br#"{"name":""}"#, 400),
        case(
            "POST",
            "/v1/subscriptions/sub_x/recover",
            k,
            br#"{"since":"not a time"}"#,
            400,
        ),
    ];
    // Every operation that reads a body has a malformed-body case above: a new endpoint
    // without one fails here.
    let (_, doc) = s
        .call(reqwest::Method::GET, "/openapi.json", None, None)
        .await;
    for (template, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            if op.get("requestBody").is_none() {
                continue;
            }
            let method = method.to_uppercase();
            assert!(
                cases.iter().any(|c| c.method == method
                    && c.expect == 400
                    && matches_template(template, &c.path)),
                "no 400 case for {method} {template}"
            );
        }
    }
    for c in &cases {
        let method = reqwest::Method::from_bytes(c.method.as_bytes()).unwrap();
        let mut req = s.http.request(method, s.url(&c.path)).body(c.body.clone());
        if let Some(t) = &c.token {
            req = req.bearer_auth(t);
        }
        if let Some(ct) = c.content_type {
            req = req.header("content-type", ct);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        let what = format!(
            "{} {} {:?}",
            c.method,
            c.path,
            String::from_utf8_lossy(&c.body[..c.body.len().min(80)])
        );
        assert!(status < 500, "{what} → {status} {text}");
        assert_eq!(status, c.expect, "{what} → {text}");
        let body: Value =
            serde_json::from_str(&text).unwrap_or_else(|_| panic!("{what}: not JSON: {text}"));
        assert!(body["error"]["code"].is_string(), "{what}: {body}");
        assert!(
            !body["error"]["message"].as_str().unwrap().is_empty(),
            "{what}: {body}"
        );
    }
    // Nothing was half-written: no event got stored by any of the bad requests.
    let (_, events) = s.get("/v1/events", &key).await;
    assert_eq!(events["data"], json!([]));
    let (_, subs) = s.get("/v1/subscriptions", &key).await;
    assert_eq!(subs["data"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn error_messages_name_the_problem() {
    let s = TestServer::start().await;
    let (_, key) = s.account("A").await;
    let (_, body) = s
        .post(
            "/v1/events",
            &key,
            json!({"type": "message:created", "payload": [1]}),
        )
        .await;
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("payload"),
        "{body}"
    );
    let (_, body) = s
        .post("/v1/events", &key, json!({"type": 5, "payload": {}}))
        .await;
    assert!(
        body["error"]["message"].as_str().unwrap().contains("type"),
        "{body}"
    );
    let (_, body) = s
        .post(
            "/v1/subscriptions",
            &key,
            json!({"url": "https://x.example", "headers": {"Host": "h"}}),
        )
        .await;
    assert!(
        body["error"]["message"].as_str().unwrap().contains("Host"),
        "{body}"
    );
}

/// The JSON escape `\u0000` inside a payload (found by schemathesis): SQLite stores it, and
/// PostgreSQL, whose `jsonb` cannot hold it, refuses the request with a 400 naming it; either
/// way never a 5xx, and a refused batch leaves none of its events behind.
#[tokio::test]
async fn a_nul_escape_in_a_payload_is_stored_or_refused_never_a_5xx() {
    let s = TestServer::start().await;
    let (_, key) = s.account("A").await;
    let events = json!({"events": [
        {"id": "fine", "type": "a", "payload": {"text": "hello"}},
        {"id": "nul", "type": "a", "payload": {"k\u{0}": ["x\u{0}y"]}},
    ]});
    let (status, body) = s.post("/v1/events/batch", &key, events).await;
    let (fine, _) = s.get("/v1/events/fine", &key).await;
    if crate::common::postgres_cluster().is_some() {
        assert_eq!(status, 400, "{body}");
        assert_eq!(body["error"]["code"], "invalid_request", "{body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains("\\u0000"), "{body}");
        assert_eq!(fine, 404, "all or none");
    } else {
        assert_eq!(status, 202, "{body}");
        assert_eq!(fine, 200);
        let (status, nul) = s.get("/v1/events/nul", &key).await;
        assert_eq!(status, 200);
        assert_eq!(nul["payload"], json!({"k\u{0}": ["x\u{0}y"]}));
    }
}
