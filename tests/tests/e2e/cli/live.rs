//! Long-running commands: `tail` and `listen`.

use std::time::Duration;

use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde_json::{Value, json};

use super::terminal::*;
use crate::common::{Receiver, TestServer, eventually};

#[tokio::test(flavor = "multi_thread")]
async fn tail_streams_events_attempts_and_logs_and_reconnects() {
    let s = TestServer::start().await;
    let r = Receiver::start().await;
    let (_, key) = s.account("A").await;
    let proxy = Proxy::start(&s.base).await;
    let mut term = Term::new();
    term.set("WASMHOOK_URL", &proxy.url);
    term.set("WASMHOOK_API_KEY", &key);
    let sub = term
        .json(&["sub", "create", &r.url, "-e", "message:created"])
        .await;
    let sub_id = sub["id"].as_str().unwrap().to_string();

    let mut tail = Tail::start(&term, &[]).await;
    let event = s
        .event(
            &key,
            json!({"type": "message:created", "payload": {"text": "hi"}}),
        )
        .await;
    let id = event["id"].as_str().unwrap();
    let line = tail.next().await;
    assert!(
        line.contains(&format!("event    message:created {id}")),
        "{line}"
    );
    assert!(line.contains(r#"{"text":"hi"}"#), "{line}");
    let line = tail.next().await;
    assert!(line.contains("attempt  message:created msg_"), "{line}");
    assert!(
        line.contains(&format!("-> {sub_id}  #1 succeeded HTTP 200")),
        "{line}"
    );

    // The connection drops: tail says so, reconnects, and goes on.
    proxy.cut();
    tail.stderr_until("reconnecting").await;
    tail.stderr_until("connected to").await;
    s.event(
        &key,
        json!({"type": "conversation:created", "payload": {"c": 1}}),
    )
    .await;
    let line = tail.next().await;
    assert!(line.contains("event    conversation:created"), "{line}");
    tail.child.kill().await.unwrap();

    // Filters, and JSON lines: only this type's events and attempts.
    let mut tail = Tail::start(&term, &["--type", "conversation:created", "-o", "json"]).await;
    s.event(&key, json!({"type": "message:created", "payload": {}}))
        .await;
    s.event(
        &key,
        json!({"type": "conversation:created", "payload": {"n": 2}}),
    )
    .await;
    let first: Value = serde_json::from_str(&tail.next().await).unwrap();
    assert_eq!(first["kind"], "event");
    assert_eq!(first["data"]["type"], "conversation:created");
    assert_eq!(first["data"]["payload"], json!({"n": 2}));
    tail.child.kill().await.unwrap();

    // A refusal that retrying cannot fix ends it with the API's message.
    let out = term.fails(&["tail", "--sub", "sub_nope"]).await;
    assert!(
        out.stderr.contains("error: subscription not found"),
        "{out:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn listen_forwards_deliveries_to_a_local_receiver_without_a_tunnel() {
    // The server may not reach loopback at all: nothing it sends can get to the receiver itself.
    let s = TestServer::start_with(&["--allow-network", "192.0.2.0/24", "--listen-grace", "300ms"])
        .await;
    let r = Receiver::start().await;
    r.respond(|_, _| (StatusCode::OK, "got it").into_response());
    let (_, key) = s.account("A").await;
    let mut term = Term::new();
    term.set("WASMHOOK_URL", &s.base);
    term.set("WASMHOOK_API_KEY", &key);
    let local = format!("{}/hook", r.url);
    let out = term.fails(&["sub", "create", &local]).await;
    assert!(
        out.stderr.contains("refused by the network policy"),
        "{out:?}"
    );

    let mut listen = Tail::spawn(
        &term,
        &["listen", &local, "-e", "message:created"],
        "Listening as",
    )
    .await;
    let secret = listen.stderr_until("Signing secret: ").await;
    let secret = secret
        .trim_start_matches("Signing secret: ")
        .trim()
        .to_string();
    listen.stderr_until("Connected to").await;
    let subs = term.json(&["sub", "list"]).await;
    let sub = subs["data"][0].clone();
    let sub_id = sub["id"].as_str().unwrap().to_string();
    assert!(sub["listen_expires_at"].is_string(), "{sub}");
    assert_eq!(sub["url"], Value::Null);

    // A delivery reaches the local receiver with the body and signed headers a URL gets.
    let event = s
        .event(
            &key,
            json!({"type": "message:created", "payload": {"text": "hi"}}),
        )
        .await;
    let line = listen.next().await;
    assert!(
        line.contains(&format!(
            "message:created {}",
            event["id"].as_str().unwrap()
        )),
        "{line}"
    );
    assert!(line.contains("#1 -> 200"), "{line}");
    let got = r
        .at("/hook")
        .pop()
        .expect("the local receiver got the delivery");
    assert_eq!(got.json()["type"], "message:created");
    assert_eq!(got.json()["data"], json!({"text": "hi"}));
    assert!(got.header("webhook-id").unwrap().starts_with("msg_"));
    assert!(got.header("user-agent").unwrap().starts_with("wasmhook/"));
    assert!(
        signature_ok(&secret, &got),
        "the signature verifies with the secret shown"
    );
    // The answer is the attempt: status and body excerpt in the attempt log.
    let delivery_id = got.header("webhook-id").unwrap().to_string();
    let detail = eventually(
        "the delivery is recorded",
        Duration::from_secs(10),
        || async {
            let d = term.json(&["deliveries", "get", &delivery_id]).await;
            (d["status"] == "succeeded").then_some(d)
        },
    )
    .await;
    assert_eq!(detail["attempt_log"][0]["status_code"], 200);
    assert_eq!(detail["attempt_log"][0]["response_body"], "got it");

    // A failing local receiver: recorded and retried as usual, until a dead letter.
    r.respond(|_, _| (StatusCode::INTERNAL_SERVER_ERROR, "boom").into_response());
    s.event(
        &key,
        json!({"type": "message:created", "payload": {"n": 2}}),
    )
    .await;
    let failed = eventually(
        "the failing delivery is dead-lettered",
        Duration::from_secs(15),
        || async {
            let d = term
                .json(&["deliveries", "list", "--sub", &sub_id, "--status", "failed"])
                .await;
            d["data"].as_array().unwrap().first().cloned()
        },
    )
    .await;
    assert_eq!(failed["attempts"], 4);
    let detail = term
        .json(&["deliveries", "get", failed["id"].as_str().unwrap()])
        .await;
    assert!(
        detail["attempt_log"]
            .as_array()
            .unwrap()
            .iter()
            .all(|a| a["status_code"] == 500
                && a["error_kind"] == "http_status"
                && a["response_body"] == "boom")
    );

    // Ctrl-C deletes the temporary subscription.
    signal(&listen.child, "-INT").await;
    let status = tokio::time::timeout(Duration::from_secs(10), listen.child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success());
    let out = term.fails(&["sub", "get", &sub_id]).await;
    assert!(out.stderr.contains("subscription not found"));

    // A listener that dies goes away after the grace period; meanwhile nothing is lost:
    // deliveries wait as failed attempts ("listener_offline").
    let mut listen = Tail::spawn(&term, &["listen", &local], "Listening as").await;
    listen.stderr_until("Connected to").await;
    let sub_id = term.json(&["sub", "list"]).await["data"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    signal(&listen.child, "-KILL").await;
    let _ = listen.child.wait().await;
    eventually(
        "the dead listener's subscription is deleted",
        Duration::from_secs(10),
        || async { (term.run(&["sub", "get", &sub_id]).await.code == 1).then_some(()) },
    )
    .await;
}
