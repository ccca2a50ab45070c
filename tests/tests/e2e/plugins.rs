//! WebAssembly plugins end to end: upload and validation, plugin subscribers, transforms,
//! the reaction path, loop safety, versions, logs and restart without recompiling.

use std::time::Duration;

use crate::common::{Receiver, TestServer, eventually};
use serde_json::{Value, json};
use wasmhook_plugin_artifacts as wasm;

const WAIT: Duration = Duration::from_secs(30);

async fn raw_upload(s: &TestServer, key: &str, bytes: Vec<u8>) -> (u16, Value) {
    let resp = s
        .http
        .post(s.url("/v1/plugins?name=x"))
        .bearer_auth(key)
        .body(bytes)
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap())
}

async fn message(s: &TestServer, key: &str, conversation: &str, text: &str) -> Value {
    s.event(
        key,
        json!({"type": "message:created", "payload": {
            "conversation_id": conversation, "id": format!("m-{text}"), "text": text, "source": "facebook",
            "sender": {"id": "contact-1", "type": "source_contact"}}}),
    )
    .await
}

async fn deliveries_of(s: &TestServer, key: &str, event_id: &str) -> Vec<Value> {
    let (_, list) = s
        .get(&format!("/v1/events/{event_id}/deliveries"), key)
        .await;
    list["data"].as_array().unwrap().clone()
}

async fn settled_delivery(s: &TestServer, key: &str, event_id: &str, status: &str) -> Value {
    eventually(
        &format!("a delivery of {event_id} is {status}"),
        WAIT,
        || async {
            for d in deliveries_of(s, key, event_id).await {
                if d["status"] == status {
                    return Some(
                        s.get(
                            &format!("/v1/deliveries/{}", d["id"].as_str().unwrap()),
                            key,
                        )
                        .await
                        .1,
                    );
                }
            }
            None
        },
    )
    .await
}

#[tokio::test]
async fn uploads_are_validated_with_actionable_errors() {
    let s = TestServer::start_with(&["--max-plugin-bytes", "4000000"]).await;
    let (_, key) = s.account("A").await;
    let (status, body) = raw_upload(&s, &key, b"hello, not wasm".to_vec()).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("invalid_component")),
        "{body}"
    );
    let (status, body) = raw_upload(&s, &key, wat::parse_str("(module)").unwrap()).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["code"], "not_a_component");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("wasm32-wasip2"),
        "{body}"
    );
    let (status, body) = raw_upload(&s, &key, wat::parse_str("(component)").unwrap()).await;
    assert_eq!(body["error"]["code"], "incompatible_component");
    assert_eq!(status, 400);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("does not export wasmhook:plugin/handler"),
        "{body}"
    );
    // A component that exports the handler but imports something the host lacks is named.
    let imports_unknown =
        wat::parse_str(r#"(component (import "acme:nope/thing" (instance (export "f" (func)))))"#)
            .unwrap();
    let (status, body) = raw_upload(&s, &key, imports_unknown).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("acme:nope/thing"),
        "{body}"
    );
    let (status, body) = raw_upload(&s, &key, vec![0u8; 5_000_000]).await;
    assert_eq!(status, 413, "{body}");
    let (status, _) = raw_upload(&s, &key, Vec::new()).await;
    assert_eq!(status, 400);
    let (_, list) = s.get("/v1/plugins", &key).await;
    assert_eq!(list["data"], json!([]), "nothing half-written");
}

#[tokio::test]
async fn plugins_are_managed_and_survive_a_restart_without_recompiling() {
    let mut s = TestServer::start().await;
    let (_, key) = s.account("A").await;
    let p = s.plugin(&key, "noop", wasm::NOOP, Value::Null).await;
    let id = p["id"].as_str().unwrap().to_string();
    assert_eq!(p["version"], 1);
    assert_eq!(p["allowed_hosts"], json!([]));
    let (_, got) = s.get(&format!("/v1/plugins/{id}"), &key).await;
    assert_eq!(got["name"], "noop");
    let (_, other) = s.account("B").await;
    assert_eq!(s.get(&format!("/v1/plugins/{id}"), &other).await.0, 404);

    // A new version replaces the current one; both are listed.
    let bytes = std::fs::read(wasm::ROUTER).unwrap();
    let resp = s
        .http
        .put(s.url(&format!("/v1/plugins/{id}")))
        .bearer_auth(&key)
        .body(bytes)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let ready = s.compiled(&key, &id, "ready").await;
    assert_eq!(ready["version"], 2);
    let (_, versions) = s.get(&format!("/v1/plugins/{id}/versions"), &key).await;
    assert_eq!(versions["data"].as_array().unwrap().len(), 2);
    assert_eq!(versions["data"][0]["version"], 2);
    assert_eq!(versions["data"][0]["sha256"].as_str().unwrap().len(), 64);

    s.restart().await;
    let metrics = s.metrics().await;
    assert!(
        metrics.contains("wasmhook_plugin_compilations_total 0"),
        "restart loaded stored artifacts:\n{metrics}"
    );
    let r = Receiver::start().await;
    let transform = s
        .subscribe(
            &key,
            json!({"url": r.url.clone(), "transform_plugin_id": id}),
        )
        .await;
    let e = s
        .event(&key, json!({"type": "a", "payload": {"x": 1}}))
        .await;
    settled_delivery(&s, &key, e["id"].as_str().unwrap(), "succeeded").await;
    assert_eq!(
        r.received()[0].json()["data"],
        json!({"x": 1}),
        "router with no rules keeps"
    );

    // In use: refused; detached: deleted.
    let (status, body) = s.delete(&format!("/v1/plugins/{id}"), &key).await;
    assert_eq!(status, 409, "{body}");
    s.delete(
        &format!("/v1/subscriptions/{}", transform["id"].as_str().unwrap()),
        &key,
    )
    .await;
    assert_eq!(s.delete(&format!("/v1/plugins/{id}"), &key).await.0, 204);
    assert_eq!(s.get(&format!("/v1/plugins/{id}"), &key).await.0, 404);
}

#[tokio::test]
async fn a_transform_replaces_what_is_sent_and_signed_or_drops_it() {
    let s = TestServer::start().await;
    let r = Receiver::start().await;
    let (_, key) = s.account("A").await;
    let redactor = s.plugin(&key, "pii", wasm::PII_REDACTOR, Value::Null).await;
    s.subscribe(
        &key,
        json!({"url": format!("{}/redacted", r.url), "transform_plugin_id": redactor["id"], "event_types": ["message:created"]}),
    )
    .await;
    message(
        &s,
        &key,
        "c1",
        "mail me at jane.doe@example.com or call +1 415 555 0100, card 4111 1111 1111 1111",
    )
    .await;
    let got = eventually("redacted delivery", WAIT, || async {
        r.at("/redacted").pop()
    })
    .await;
    let text = got.json()["data"]["text"].as_str().unwrap().to_string();
    assert!(
        !text.contains("jane.doe@example.com") && !text.contains("4111"),
        "{text}"
    );
    assert!(
        text.contains("[email]") && text.contains("[card]"),
        "{text}"
    );
    // Deeply nested payloads pass through the redactor (built with a small stack) intact.
    let mut deep = json!(7);
    for _ in 0..100 {
        deep = json!([deep]);
    }
    s.event(
        &key,
        json!({"type": "message:created", "payload": {"text": "x@y.io", "deep": deep.clone()}}),
    )
    .await;
    let got = eventually("deep redacted delivery", WAIT, || async {
        r.at("/redacted")
            .into_iter()
            .find(|g| g.json()["data"]["deep"].is_array())
    })
    .await;
    assert_eq!(got.json()["data"], json!({"text": "[email]", "deep": deep}));

    let router = s.plugin(&key, "router", wasm::ROUTER, json!({"config": {"rules": r#"[{"type": "message:*", "field": "/source", "equals": "facebook", "action": "drop"}]"#}})).await;
    s.subscribe(
        &key,
        json!({"url": format!("{}/routed", r.url), "transform_plugin_id": router["id"]}),
    )
    .await;
    let dropped = message(&s, &key, "c2", "from facebook").await;
    let kept = s
        .event(
            &key,
            json!({"type": "conversation:created", "payload": {"source": "facebook"}}),
        )
        .await;
    let d = settled_delivery(&s, &key, dropped["id"].as_str().unwrap(), "filtered").await;
    assert!(
        d["last_error"]
            .as_str()
            .unwrap()
            .contains("dropped by transform plugin"),
        "{d}"
    );
    settled_delivery(&s, &key, kept["id"].as_str().unwrap(), "succeeded").await;
    let routed: Vec<Value> = r.at("/routed").iter().map(|x| x.json()).collect();
    assert_eq!(routed.len(), 1);
    assert_eq!(routed[0]["type"], "conversation:created");
}

#[tokio::test]
async fn auto_reply_answers_customers_through_the_send_path_and_never_itself() {
    let s = TestServer::start().await;
    let r = Receiver::start().await;
    let (_, key) = s.account("A").await;
    let bot = s.plugin(&key, "auto-reply", wasm::AUTO_REPLY, json!({"config": {"reply_text": "Thanks, we will get back to you!", "keywords": "help"}})).await;
    s.subscribe(
        &key,
        json!({"plugin_id": bot["id"], "event_types": ["message:created"]}),
    )
    .await;
    s.post("/webhooks.subscribe", &key, json!({"url": r.url.clone()}))
        .await;

    let ignored = message(&s, &key, "conv-7", "just saying hi").await;
    let asked = message(&s, &key, "conv-7", "I need help").await;
    let reply = eventually("the reply reaches the Airy webhook", WAIT, || async {
        r.received()
            .into_iter()
            .map(|x| x.json())
            .find(|b| b["sender"]["type"] == "app_user")
    })
    .await;
    assert_eq!(reply["text"], "Thanks, we will get back to you!");
    assert_eq!(reply["conversation_id"], "conv-7");
    assert_eq!(reply["source"], "facebook");
    settled_delivery(&s, &key, ignored["id"].as_str().unwrap(), "succeeded").await;
    settled_delivery(&s, &key, asked["id"].as_str().unwrap(), "succeeded").await;

    // The reply event carries its causation, and the plugin was not given its own reply.
    let (_, events) = s.get("/v1/events?type=message:created&limit=1", &key).await;
    let reply_event = &events["data"][0];
    assert_eq!(reply_event["causation"]["plugin_id"], bot["id"]);
    assert_eq!(reply_event["causation"]["event_id"], asked["id"]);
    let d = settled_delivery(&s, &key, reply_event["id"].as_str().unwrap(), "filtered").await;
    assert!(
        d["last_error"]
            .as_str()
            .unwrap()
            .contains("it caused this event"),
        "{d}"
    );
    // Every invocation of the bot has settled (two succeeded, its own reply filtered), so the
    // events it caused are final: exactly one reply was sent.
    let (_, caused) = s.get("/v1/events?limit=250", &key).await;
    let replies: Vec<&Value> = caused["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["causation"]["plugin_id"] == bot["id"])
        .collect();
    assert_eq!(replies.len(), 1, "exactly one reply: {replies:?}");
    let airy = r
        .received()
        .iter()
        .filter(|x| x.json()["sender"]["type"] == "app_user")
        .count();
    assert_eq!(airy, 1, "the reply reached the Airy webhook once");
}

#[tokio::test]
async fn first_contact_greeter_greets_each_conversation_once() {
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
    s.subscribe(
        &key,
        json!({"plugin_id": greeter["id"], "event_types": ["message:created"]}),
    )
    .await;
    for text in ["one", "two", "three"] {
        let e = message(&s, &key, "conv-g", text).await;
        settled_delivery(&s, &key, e["id"].as_str().unwrap(), "succeeded").await;
    }
    let e = message(&s, &key, "conv-h", "other conversation").await;
    settled_delivery(&s, &key, e["id"].as_str().unwrap(), "succeeded").await;
    let (_, events) = s.get("/v1/events?type=message:created", &key).await;
    let greetings: Vec<&Value> = events["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["payload"]["text"] == "Welcome!")
        .collect();
    assert_eq!(greetings.len(), 2, "one greeting per conversation");
}

#[tokio::test]
async fn plugin_chains_stop_at_causation_depth_eight() {
    let s = TestServer::start().await;
    let (_, key) = s.account("A").await;
    // Two plugins that each answer every message once: they would ping-pong forever.
    for name in ["ping", "pong"] {
        let p = s
            .plugin(
                &key,
                name,
                wasm::HOSTILE,
                json!({"config": {"mode": "send-flood"}, "limits": {"send_messages": 1}}),
            )
            .await;
        s.subscribe(
            &key,
            json!({"plugin_id": p["id"], "event_types": ["message:created"]}),
        )
        .await;
    }
    message(&s, &key, "conv-loop", "start").await;
    let deep = eventually("a depth-9 event is not given to plugins", WAIT, || async {
        let (_, events) = s
            .get("/v1/events?type=message:created&limit=250", &key)
            .await;
        let deep = events["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["causation"]["depth"] == 9)
            .cloned()?;
        let ds = deliveries_of(&s, &key, deep["id"].as_str().unwrap()).await;
        ds.iter().all(|d| d["status"] == "filtered").then_some(deep)
    })
    .await;
    let ds = deliveries_of(&s, &key, deep["id"].as_str().unwrap()).await;
    assert!(
        ds.iter().any(|d| d["last_error"]
            .as_str()
            .unwrap()
            .contains("causation depth 9 exceeds 8")),
        "{ds:?}"
    );
    // Once nothing is pending, no plugin runs any more: the chain is final.
    eventually("every delivery settles", WAIT, || async {
        let (_, pending) = s.get("/v1/deliveries?status=pending", &key).await;
        (pending["data"] == json!([])).then_some(())
    })
    .await;
    let (_, events) = s
        .get("/v1/events?type=message:created&limit=250", &key)
        .await;
    let max_depth = events["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["causation"]["depth"].as_u64())
        .max();
    assert_eq!(
        max_depth,
        Some(9),
        "no event deeper than 9 was ever emitted"
    );
}
