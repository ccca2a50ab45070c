//! The HTTP API end to end: accounts, auth and isolation, subscriptions, Airy endpoints,
//! events, messages, operability, and bad input.

use crate::common::{ADMIN, TestServer};
use reqwest::Method;
use serde_json::{Value, json};

#[tokio::test]
async fn accounts_are_admin_only_and_keys_can_be_issued_and_revoked() {
    let s = TestServer::start().await;
    let (status, body) = s
        .post("/v1/accounts", "not-the-admin-token", json!({"name": "x"}))
        .await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"]["code"], "unauthorized");

    let (acc, key) = s.account("Acme").await;
    assert!(key.starts_with("whk_"));
    let (status, list) = s.get("/v1/accounts", ADMIN).await;
    assert_eq!(status, 200);
    assert_eq!(list["data"][0]["id"], acc);
    assert!(
        list["data"][0].get("api_key").is_none(),
        "keys are shown once"
    );
    // An account key is not an admin token.
    assert_eq!(s.get("/v1/accounts", &key).await.0, 401);

    let (status, second) = s
        .post(&format!("/v1/accounts/{acc}/api-keys"), ADMIN, json!({}))
        .await;
    assert_eq!(status, 201, "{second}");
    let key2 = second["api_key"].as_str().unwrap().to_string();
    assert_eq!(s.get("/v1/subscriptions", &key2).await.0, 200);
    // The account can manage its own keys too.
    let (status, keys) = s.get(&format!("/v1/accounts/{acc}/api-keys"), &key).await;
    assert_eq!(status, 200);
    assert_eq!(keys["data"].as_array().unwrap().len(), 2);

    let key2_id = second["id"].as_str().unwrap();
    let (status, _) = s
        .delete(&format!("/v1/accounts/{acc}/api-keys/{key2_id}"), &key)
        .await;
    assert_eq!(status, 204);
    let (status, body) = s.get("/v1/subscriptions", &key2).await;
    assert_eq!(status, 401, "a revoked key stops working at once: {body}");
    assert_eq!(s.get("/v1/subscriptions", &key).await.0, 200);
    assert_eq!(
        s.delete(&format!("/v1/accounts/{acc}/api-keys/key_nope"), ADMIN)
            .await
            .0,
        404
    );
}

#[tokio::test]
async fn every_endpoint_hides_other_accounts_data() {
    let s = TestServer::start().await;
    let (acc_a, a) = s.account("A").await;
    let (_, b) = s.account("B").await;
    let sub = s
        .subscribe(&a, json!({"url": "http://127.0.0.1:9/hook"}))
        .await;
    let sub_id = sub["id"].as_str().unwrap();
    let ev = s.event(&a, json!({"type": "message:created", "payload": {"conversation_id": "conv-a", "body": "hi"}})).await;
    let ev_id = ev["id"].as_str().unwrap();
    let (status, airy) = s
        .post(
            "/webhooks.subscribe",
            &a,
            json!({"url": "http://127.0.0.1:9/airy"}),
        )
        .await;
    assert_eq!(status, 200, "{airy}");
    // The delivery is written with the event, so it exists as soon as the event is accepted.
    let (status, deliveries) = s.get(&format!("/v1/events/{ev_id}/deliveries"), &a).await;
    assert_eq!(status, 200, "{deliveries}");
    let delivery_id = deliveries["data"][0]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("the event has a delivery: {deliveries}"))
        .to_string();

    let not_found: Vec<(Method, String, Option<Value>)> = vec![
        (Method::GET, format!("/v1/subscriptions/{sub_id}"), None),
        (
            Method::PATCH,
            format!("/v1/subscriptions/{sub_id}"),
            Some(json!({"description": "x"})),
        ),
        (
            Method::GET,
            format!("/v1/subscriptions/{sub_id}/secret"),
            None,
        ),
        (
            Method::POST,
            format!("/v1/subscriptions/{sub_id}/secret/rotate"),
            None,
        ),
        (
            Method::POST,
            format!("/v1/subscriptions/{sub_id}/verify"),
            None,
        ),
        (
            Method::GET,
            format!("/v1/subscriptions/{sub_id}/deliveries"),
            None,
        ),
        (
            Method::POST,
            format!("/v1/subscriptions/{sub_id}/recover"),
            Some(json!({"since": "2020-01-01T00:00:00Z"})),
        ),
        (Method::DELETE, format!("/v1/subscriptions/{sub_id}"), None),
        (Method::GET, format!("/v1/events/{ev_id}"), None),
        (Method::GET, format!("/v1/events/{ev_id}/deliveries"), None),
        (Method::GET, format!("/v1/deliveries/{delivery_id}"), None),
        (
            Method::POST,
            format!("/v1/deliveries/{delivery_id}/retry"),
            None,
        ),
        (Method::POST, format!("/v1/accounts/{acc_a}/api-keys"), None),
        (Method::GET, format!("/v1/accounts/{acc_a}/api-keys"), None),
        (
            Method::POST,
            "/v1/messages".into(),
            Some(json!({"conversation_id": "conv-a", "text": "x"})),
        ),
        (
            Method::POST,
            "/messages.send".into(),
            Some(json!({"conversation_id": "conv-a", "message": {"text": "x"}})),
        ),
        (Method::POST, "/webhooks.info".into(), None),
        (Method::POST, "/webhooks.unsubscribe".into(), None),
    ];
    // Every id above is real: A reads each of them (B's 404s below are about the account).
    for (method, path, _) in &not_found {
        if *method == Method::GET || path == "/webhooks.info" {
            let (status, resp) = s.call(method.clone(), path, Some(&a), None).await;
            assert_eq!(status, 200, "{method} {path} as its own account: {resp}");
        }
    }
    for (method, path, body) in not_found {
        let (status, resp) = s.call(method.clone(), &path, Some(&b), body.clone()).await;
        assert_eq!(status, 404, "{method} {path} as another account: {resp}");
        assert_eq!(resp["error"]["code"], "not_found");
        let (status, _) = s.call(method.clone(), &path, None, body).await;
        assert_eq!(status, 401, "{method} {path} without a key");
    }
    for path in ["/v1/subscriptions", "/v1/events"] {
        let (status, list) = s.get(path, &b).await;
        assert_eq!(status, 200);
        assert_eq!(
            list["data"],
            json!([]),
            "{path} lists only the caller's data"
        );
    }
    // And A still sees everything.
    assert_eq!(
        s.get(&format!("/v1/subscriptions/{sub_id}"), &a).await.0,
        200
    );
    assert_eq!(s.get(&format!("/v1/events/{ev_id}"), &a).await.0, 200);
    let (status, sent) = s
        .post(
            "/v1/messages",
            &a,
            json!({"conversation_id": "conv-a", "text": "x"}),
        )
        .await;
    assert_eq!(status, 201, "A's conversation exists: {sent}");
}

#[tokio::test]
async fn subscriptions_are_created_listed_changed_and_deleted() {
    let s = TestServer::start().await;
    let (_, key) = s.account("A").await;
    let sub = s
        .subscribe(
            &key,
            json!({
                "url": "https://example.com/hook",
                "description": "orders",
                "event_types": ["message:created", "conversation:created"],
                "headers": {"X-Team": "support"},
            }),
        )
        .await;
    assert_eq!(sub["format"], "standard");
    assert_eq!(sub["status"], "active");
    assert_eq!(sub["headers"]["X-Team"], "support");
    let secret = sub["secret"].as_str().unwrap();
    assert!(secret.starts_with("whsec_") && secret.len() >= 6 + 32);
    assert!(sub["created_at"].as_str().unwrap().ends_with('Z'));
    let id = sub["id"].as_str().unwrap();

    let (_, got) = s.get(&format!("/v1/subscriptions/{id}"), &key).await;
    assert!(
        got.get("secret").is_none(),
        "the secret has its own endpoint"
    );
    let (_, sec) = s.get(&format!("/v1/subscriptions/{id}/secret"), &key).await;
    assert_eq!(sec["secret"], secret);

    let (status, rotated) = s
        .post(
            &format!("/v1/subscriptions/{id}/secret/rotate"),
            &key,
            json!({}),
        )
        .await;
    assert_eq!(status, 200);
    assert_ne!(rotated["secret"], secret);
    assert!(
        rotated["previous_secret_expires_at"].is_string(),
        "{rotated}"
    );

    let (status, patched) = s
        .patch(
            &format!("/v1/subscriptions/{id}"),
            &key,
            json!({"status": "disabled", "event_types": ["*"]}),
        )
        .await;
    assert_eq!(status, 200, "{patched}");
    assert_eq!(patched["status"], "disabled");
    assert!(patched["status_reason"].is_string());
    assert_eq!(patched["event_types"], json!(["*"]));
    let (_, patched) = s
        .patch(
            &format!("/v1/subscriptions/{id}"),
            &key,
            json!({"status": "active"}),
        )
        .await;
    assert_eq!(patched["status"], "active");

    // Cursor pagination, newest first.
    for i in 0..4 {
        s.subscribe(&key, json!({"url": format!("https://example.com/{i}")}))
            .await;
    }
    let (_, page1) = s.get("/v1/subscriptions?limit=2", &key).await;
    assert_eq!(page1["data"].as_array().unwrap().len(), 2);
    assert_eq!(page1["data"][0]["url"], "https://example.com/3");
    let cursor = page1["next_cursor"].as_str().unwrap();
    let (_, page2) = s
        .get(&format!("/v1/subscriptions?limit=2&cursor={cursor}"), &key)
        .await;
    let (_, page3) = s
        .get(
            &format!(
                "/v1/subscriptions?limit=2&cursor={}",
                page2["next_cursor"].as_str().unwrap()
            ),
            &key,
        )
        .await;
    assert_eq!(page3["data"].as_array().unwrap().len(), 1);
    assert_eq!(page3["next_cursor"], Value::Null);
    assert_eq!(page3["data"][0]["id"], id);

    assert_eq!(
        s.delete(&format!("/v1/subscriptions/{id}"), &key).await.0,
        204
    );
    assert_eq!(s.get(&format!("/v1/subscriptions/{id}"), &key).await.0, 404);
}

#[tokio::test]
async fn subscription_fields_are_validated() {
    let s = TestServer::start().await;
    let (_, key) = s.account("A").await;
    let cases = [
        json!({"url": "ftp://example.com"}),
        json!({"url": format!("https://example.com/{}", "a".repeat(2100))}),
        json!({"url": "https://example.com", "event_types": []}),
        json!({"url": "https://example.com", "event_types": ["Not A Type"]}),
        json!({"url": "https://example.com", "headers": {"Host": "evil"}}),
        json!({"url": "https://example.com", "headers": {"content-length": "1"}}),
        json!({"url": "https://example.com", "headers": {"webhook-signature": "x"}}),
        json!({"url": "https://example.com", "headers": {"bad name": "x"}}),
        json!({"url": "https://example.com", "format": "xml"}),
        json!({"url": "https://example.com", "unknown_field": 1}),
        json!({"description": "no url"}),
    ];
    for body in cases {
        let (status, resp) = s.post("/v1/subscriptions", &key, body.clone()).await;
        assert_eq!(status, 400, "{body} → {resp}");
        assert!(resp["error"]["message"].as_str().unwrap().len() > 5);
    }
}

#[tokio::test]
async fn airy_webhook_endpoints_match_the_airy_documentation() {
    let s = TestServer::start().await;
    let (_, key) = s.account("A").await;
    let (status, info) = s.post("/webhooks.info", &key, json!({})).await;
    assert_eq!(
        (status, info["error"]["code"].clone()),
        (404, json!("not_found"))
    );

    let (status, sub) = s
        .post(
            "/webhooks.subscribe",
            &key,
            json!({"url": "https://my-url-to-be-hit.example", "headers": {"X-Custom-Header": "custom-code-for-header"}}),
        )
        .await;
    assert_eq!(status, 200, "{sub}");
    assert_eq!(sub["status"], "Subscribed");
    assert_eq!(sub["url"], "https://my-url-to-be-hit.example");
    assert_eq!(
        sub["headers"],
        json!({"X-Custom-Header": "custom-code-for-header"})
    );
    let secret = sub["api_secret"].as_str().unwrap().to_string();
    assert_eq!(secret.len(), 36, "a UUID");
    assert_eq!(sub.as_object().unwrap().len(), 4);

    let (_, again) = s
        .post(
            "/webhooks.subscribe",
            &key,
            json!({"url": "https://other.example/"}),
        )
        .await;
    assert_eq!(again["url"], "https://other.example/");
    assert_eq!(again["api_secret"], secret.as_str(), "the api_secret stays");

    let (status, info) = s.post("/webhooks.info", &key, json!({})).await;
    assert_eq!(status, 200);
    assert_eq!(
        info,
        json!({"status": "Subscribed", "url": "https://other.example/", "headers": {}})
    );

    let (_, list) = s.get("/v1/subscriptions", &key).await;
    assert_eq!(
        list["data"].as_array().unwrap().len(),
        1,
        "one webhook per account"
    );
    assert_eq!(list["data"][0]["format"], "airy");

    let (status, unsub) = s.post("/webhooks.unsubscribe", &key, json!({})).await;
    assert_eq!(status, 200);
    assert_eq!(unsub["status"], "Unsubscribed");
    assert_eq!(unsub["api_secret"], secret.as_str());
    let (_, info) = s.post("/webhooks.info", &key, json!({})).await;
    assert_eq!(info["status"], "Unsubscribed");
}

#[tokio::test]
async fn events_are_stored_idempotently_and_listed() {
    let s = TestServer::start().await;
    let (_, key) = s.account("A").await;
    let e = s
        .event(
            &key,
            json!({"type": "message:created", "payload": {"body": "Hello world!", "conversation_id": "c1"},
                   "occurred_at": "2020-09-01T23:00:00+02:00"}),
        )
        .await;
    assert!(e["id"].as_str().unwrap().starts_with("evt_"));
    assert_eq!(e["type"], "message:created");
    assert_eq!(e["payload"]["body"], "Hello world!");
    assert_eq!(e["occurred_at"], "2020-09-01T21:00:00Z");
    assert!(e["received_at"].is_string());

    // The client's id makes retries safe.
    let body = json!({"id": "ext-1", "type": "conversation:created", "payload": {"conversation_id": "c2"}});
    let first = s.event(&key, body.clone()).await;
    assert_eq!(first["id"], "ext-1");
    let again = s.event(&key, body).await;
    assert_eq!(again, first);
    let (status, conflict) = s
        .post(
            "/v1/events",
            &key,
            json!({"id": "ext-1", "type": "conversation:created", "payload": {"x": 1}}),
        )
        .await;
    assert_eq!(status, 409, "{conflict}");

    // So does the Idempotency-Key header.
    let send = |payload: Value| {
        s.http
            .post(s.url("/v1/events"))
            .bearer_auth(&key)
            .header("Idempotency-Key", "k-1")
            .json(&json!({"type": "conversation:updated", "payload": payload}))
            .send()
    };
    let r1: Value = send(json!({"a": 1})).await.unwrap().json().await.unwrap();
    let r2 = send(json!({"a": 1})).await.unwrap();
    assert_eq!(r2.headers().get("idempotent-replayed").unwrap(), "true");
    assert_eq!(r2.json::<Value>().await.unwrap()["id"], r1["id"]);
    assert_eq!(send(json!({"a": 2})).await.unwrap().status(), 409);

    let (_, all) = s.get("/v1/events", &key).await;
    assert_eq!(
        all["data"].as_array().unwrap().len(),
        3,
        "replays store nothing new"
    );
    assert_eq!(
        all["data"][0]["type"], "conversation:updated",
        "newest first"
    );
    let (_, created) = s.get("/v1/events?type=message:created", &key).await;
    assert_eq!(created["data"].as_array().unwrap().len(), 1);
    let (_, page) = s.get("/v1/events?limit=2", &key).await;
    let (_, rest) = s
        .get(
            &format!(
                "/v1/events?limit=2&cursor={}",
                page["next_cursor"].as_str().unwrap()
            ),
            &key,
        )
        .await;
    assert_eq!(rest["data"][0]["id"], e["id"]);
    let (status, got) = s
        .get(&format!("/v1/events/{}", e["id"].as_str().unwrap()), &key)
        .await;
    assert_eq!((status, &got), (200, &e));

    // Any type matching the pattern is accepted.
    s.event(&key, json!({"type": "order.shipped-v2", "payload": {}}))
        .await;
}

#[tokio::test]
async fn a_batch_is_stored_all_or_none() {
    let s = TestServer::start().await;
    let (_, key) = s.account("A").await;
    let events: Vec<Value> = (0..100)
        .map(|i| json!({"type": "message:created", "payload": {"n": i}}))
        .collect();
    let (status, stored) = s
        .post("/v1/events/batch", &key, json!({"events": events}))
        .await;
    assert_eq!(status, 202, "{stored}");
    assert_eq!(stored["data"].as_array().unwrap().len(), 100);

    s.event(&key, json!({"id": "taken", "type": "a", "payload": {}}))
        .await;
    let bad = json!({"events": [
        {"type": "a", "payload": {"fine": true}},
        {"id": "taken", "type": "a", "payload": {"different": true}},
    ]});
    let (status, resp) = s.post("/v1/events/batch", &key, bad).await;
    assert_eq!(status, 409, "{resp}");
    let bad = json!({"events": [{"type": "a", "payload": {}}, {"type": "BAD", "payload": {}}]});
    let (status, resp) = s.post("/v1/events/batch", &key, bad).await;
    assert_eq!(status, 400);
    assert!(
        resp["error"]["message"]
            .as_str()
            .unwrap()
            .contains("events[1]"),
        "{resp}"
    );
    let (_, all) = s.get("/v1/events?limit=250", &key).await;
    assert_eq!(
        all["data"].as_array().unwrap().len(),
        101,
        "failed batches stored nothing"
    );

    let too_many: Vec<Value> = (0..1001)
        .map(|_| json!({"type": "a", "payload": {}}))
        .collect();
    assert_eq!(
        s.post("/v1/events/batch", &key, json!({"events": too_many}))
            .await
            .0,
        400
    );
    assert_eq!(
        s.post("/v1/events/batch", &key, json!({"events": []}))
            .await
            .0,
        400
    );
}

#[tokio::test]
async fn sent_messages_become_complete_message_created_events() {
    let s = TestServer::start().await;
    let (acc, key) = s.account("A").await;
    let (status, resp) = s
        .post(
            "/v1/messages",
            &key,
            json!({"conversation_id": "nope", "text": "hi"}),
        )
        .await;
    assert_eq!(status, 404, "{resp}");
    assert!(
        resp["error"]["message"]
            .as_str()
            .unwrap()
            .contains("conversation")
    );

    s.event(
        &key,
        json!({"type": "message:created", "payload": {
            "conversation_id": "conv-1", "id": "m0", "text": "Hello?", "source": "facebook",
            "sender": {"id": "contact-9", "type": "source_contact"}, "sent_at": "2020-07-20T14:18:08.584Z"}}),
    )
    .await;
    let (status, msg) = s
        .post(
            "/v1/messages",
            &key,
            json!({"conversation_id": "conv-1", "text": "Hi there"}),
        )
        .await;
    assert_eq!(status, 201, "{msg}");
    assert_eq!(msg["sender"]["type"], "app_user");
    let (_, events) = s.get("/v1/events?type=message:created&limit=1", &key).await;
    let p = &events["data"][0]["payload"];
    assert_eq!(events["data"][0]["id"], msg["event_id"]);
    // Papercups fields...
    assert_eq!(p["body"], "Hi there");
    assert_eq!(p["conversation_id"], "conv-1");
    assert_eq!(p["customer_id"], "contact-9");
    assert!(p["created_at"].is_string());
    // ...and Airy fields.
    assert_eq!(p["text"], "Hi there");
    assert_eq!(p["id"], msg["id"]);
    assert_eq!(p["source"], "facebook");
    assert_eq!(p["sender"], json!({"id": acc, "type": "app_user"}));
    assert!(p["sent_at"].is_string());

    let (status, airy) = s
        .post(
            "/messages.send",
            &key,
            json!({"conversation_id": "conv-1", "message": {"text": "Airy style"}}),
        )
        .await;
    assert_eq!(status, 200, "{airy}");
    assert_eq!(airy["text"], "Airy style");
    let (status, _) = s
        .post(
            "/v1/messages",
            &key,
            json!({"conversation_id": "conv-1", "text": "  "}),
        )
        .await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn operability_endpoints_answer() {
    let s = TestServer::start().await;
    let (_, key) = s.account("A").await;
    s.event(&key, json!({"type": "a", "payload": {}})).await;
    assert_eq!(
        s.call(Method::GET, "/healthz", None, None).await,
        (200, json!({"status": "ok"}))
    );
    assert_eq!(
        s.call(Method::GET, "/readyz", None, None).await,
        (200, json!({"status": "ready"}))
    );
    let metrics = s.metrics().await;
    assert!(
        metrics.contains("wasmhook_events_ingested_total 1"),
        "{metrics}"
    );
    assert!(metrics.contains("route=\"/v1/events\""), "{metrics}");
    assert!(metrics.contains("status=\"202\""), "{metrics}");
    // The backend the harness chose, and on PostgreSQL the connection pool's state.
    let gauge = |series: &str| -> Option<i64> {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(series))
            .map(|v| v.trim().parse().unwrap())
    };
    let pool = |state: &str| {
        gauge(&format!(
            "wasmhook_database_pool_connections{{state=\"{state}\"}} "
        ))
    };
    if crate::common::postgres_cluster().is_some() {
        assert_eq!(
            gauge("wasmhook_database_backend{backend=\"postgres\"} "),
            Some(1),
            "{metrics}"
        );
        // The default --database-pool-size; the requests above opened one at least.
        assert_eq!(pool("max"), Some(16), "{metrics}");
        let open = pool("open").expect("open connections");
        assert!((1..=16).contains(&open), "{metrics}");
        assert!((0..=open).contains(&pool("idle").unwrap()), "{metrics}");
        assert_eq!(pool("waiting"), Some(0), "{metrics}");
    } else {
        assert_eq!(
            gauge("wasmhook_database_backend{backend=\"sqlite\"} "),
            Some(1),
            "{metrics}"
        );
        assert_eq!(pool("max"), None, "no pool on SQLite: {metrics}");
    }

    let (status, spec) = s.call(Method::GET, "/openapi.json", None, None).await;
    assert_eq!(status, 200);
    let paths = spec["paths"].as_object().unwrap();
    for (path, method) in [
        ("/v1/accounts", "post"),
        ("/v1/accounts", "get"),
        ("/v1/accounts/{id}/api-keys", "post"),
        ("/v1/accounts/{id}/api-keys/{key_id}", "delete"),
        ("/v1/subscriptions", "post"),
        ("/v1/subscriptions", "get"),
        ("/v1/subscriptions/{id}", "get"),
        ("/v1/subscriptions/{id}", "patch"),
        ("/v1/subscriptions/{id}", "delete"),
        ("/v1/subscriptions/{id}/secret", "get"),
        ("/v1/subscriptions/{id}/secret/rotate", "post"),
        ("/v1/subscriptions/{id}/verify", "post"),
        ("/v1/subscriptions/{id}/deliveries", "get"),
        ("/v1/subscriptions/{id}/recover", "post"),
        ("/v1/events", "post"),
        ("/v1/events", "get"),
        ("/v1/events/batch", "post"),
        ("/v1/events/{id}", "get"),
        ("/v1/events/{id}/deliveries", "get"),
        ("/v1/deliveries/{id}", "get"),
        ("/v1/deliveries/{id}/retry", "post"),
        ("/v1/messages", "post"),
        ("/messages.send", "post"),
        ("/webhooks.subscribe", "post"),
        ("/webhooks.unsubscribe", "post"),
        ("/webhooks.info", "post"),
        ("/healthz", "get"),
        ("/readyz", "get"),
        ("/metrics", "get"),
        ("/v1/plugins", "post"),
        ("/v1/plugins", "get"),
        ("/v1/plugins/{id}", "get"),
        ("/v1/plugins/{id}", "patch"),
        ("/v1/plugins/{id}", "put"),
        ("/v1/plugins/{id}", "delete"),
        ("/v1/plugins/{id}/versions", "get"),
        ("/v1/plugins/{id}/logs", "get"),
    ] {
        assert!(
            paths.get(path).and_then(|p| p.get(method)).is_some(),
            "openapi lacks {method} {path}"
        );
    }
    assert!(spec["components"]["schemas"]["ErrorBody"].is_object());
    assert!(spec["components"]["schemas"]["CreateSubscription"].is_object());
}

#[tokio::test]
async fn data_survives_a_restart() {
    let mut s = TestServer::start().await;
    let (_, key) = s.account("A").await;
    let sub = s
        .subscribe(&key, json!({"url": "https://example.com/h"}))
        .await;
    let e = s
        .event(
            &key,
            json!({"id": "keep-me", "type": "a", "payload": {"v": 1}}),
        )
        .await;
    s.restart().await;
    let (status, got) = s
        .get(
            &format!("/v1/subscriptions/{}", sub["id"].as_str().unwrap()),
            &key,
        )
        .await;
    assert_eq!(
        status, 200,
        "the API key and the subscription survive: {got}"
    );
    assert_eq!(s.get("/v1/events/keep-me", &key).await.1, e);
    s.stop().await;
}
