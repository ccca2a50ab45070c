//! `sub` and `verify`.

use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde_json::{Value, json};

use super::terminal::*;
use crate::common::{Receiver, TestServer};

#[tokio::test(flavor = "multi_thread")]
async fn subscriptions_are_managed_from_the_command_line() {
    let s = TestServer::start().await;
    let r = Receiver::start().await;
    echo_challenges(&r);
    let (_, key) = s.account("A").await;
    let term = Term::new();
    term.login(&s, &key).await;
    let url = format!("{}/hooks", r.url);

    let created = term
        .json(&[
            "sub",
            "create",
            &url,
            "-e",
            "message:created,conversation:created",
            "-H",
            "X-Team=support",
            "-H",
            "X-Env=dev",
            "--format",
            "papercups",
        ])
        .await;
    let id = created["id"].as_str().unwrap().to_string();
    assert_eq!(
        created["event_types"],
        json!(["message:created", "conversation:created"])
    );
    assert_eq!(
        created["headers"],
        json!({"X-Env": "dev", "X-Team": "support"})
    );
    assert_eq!(created["format"], "papercups");
    assert!(created["secret"].as_str().unwrap().starts_with("whsec_"));
    // The command waited for the handshake papercups requires.
    assert_eq!(created["status"], "active", "{created}");

    // --verify on a receiver that does not echo: the reason is shown.
    let r2 = Receiver::start().await;
    let failing = term
        .json(&[
            "sub",
            "create",
            &r2.url,
            "-e",
            "message:created",
            "--verify",
        ])
        .await;
    assert_eq!(failing["status"], "pending_verification");
    assert!(
        failing["status_reason"]
            .as_str()
            .unwrap()
            .contains("challenge"),
        "{failing}"
    );

    let list = term.json(&["sub", "list"]).await;
    let ids: Vec<&str> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 2);
    assert!(ids.contains(&id.as_str()));
    let table = term.ok(&["sub", "list"]).await.stdout;
    assert!(table.starts_with("ID"), "{table}");
    assert!(table.contains(&id) && table.contains(&url), "{table}");

    let got = term.json(&["sub", "get", &id]).await;
    assert_eq!(got["id"], id.as_str());
    assert!(got.get("secret").is_none(), "get does not show the secret");
    assert!(
        term.ok(&["sub", "get", &id])
            .await
            .stdout
            .contains("X-Team=support")
    );

    assert_eq!(
        term.json(&["sub", "disable", &id]).await["status"],
        "disabled"
    );
    // Enabling a papercups subscription runs the handshake again; it passes.
    assert_eq!(term.json(&["sub", "enable", &id]).await["status"], "active");

    let secret = term.json(&["sub", "secret", &id]).await;
    assert_eq!(secret["secret"], created["secret"]);
    assert_eq!(secret["previous_secret_expires_at"], Value::Null);
    assert_eq!(
        term.ok(&["sub", "secret", &id]).await.stdout.trim(),
        created["secret"].as_str().unwrap()
    );
    let rotated = term.json(&["sub", "secret", &id, "--rotate"]).await;
    assert_ne!(rotated["secret"], created["secret"]);
    assert!(rotated["previous_secret_expires_at"].is_string());

    term.ok(&["sub", "delete", &id]).await;
    let out = term.fails(&["sub", "get", &id]).await;
    assert!(out.stderr.contains("subscription not found"));
}

#[tokio::test(flavor = "multi_thread")]
async fn verify_shows_what_was_sent_what_came_back_and_why_it_failed() {
    let s = TestServer::start().await;
    let r = Receiver::start().await;
    echo_challenges(&r);
    let (_, key) = s.account("A").await;
    let term = Term::new();
    term.login(&s, &key).await;
    let url = format!("{}/papercups", r.url);

    let out = term.ok(&["verify", &url, "--format", "papercups"]).await;
    assert!(
        out.stdout.contains("Sent the webhook:verify handshake:"),
        "{out:?}"
    );
    assert!(out.stdout.contains(&format!("POST {url}")), "{out:?}");
    assert!(
        out.stdout.contains("\"event\":\"webhook:verify\""),
        "{out:?}"
    );
    assert!(out.stdout.contains("Received HTTP 200"), "{out:?}");
    assert!(
        out.stdout
            .contains("OK: subscribing this URL would succeed."),
        "{out:?}"
    );

    let report = term.json(&["verify", &url, "-H", "X-Team=support"]).await;
    assert_eq!(report["ok"], true);
    assert_eq!(report["mode"], "test_delivery");
    assert_eq!(report["request"]["headers"]["X-Team"], "support");
    let got = r.at("/papercups").pop().unwrap();
    assert_eq!(got.header("x-team"), Some("support"));

    // A failing endpoint: its answer, and the reason, and exit 1.
    r.respond(|_, _| (StatusCode::NOT_FOUND, "no such hook").into_response());
    let out = term.fails(&["verify", &url]).await;
    assert!(out.stdout.contains("Received HTTP 404"), "{out:?}");
    assert!(out.stdout.contains("no such hook"), "{out:?}");
    assert!(out.stdout.contains("FAILED (http_status)"), "{out:?}");
    assert!(out.stderr.starts_with("check failed: "), "{out:?}");
    // The handshake against an endpoint that answers without the challenge.
    let out = term.run(&["verify", &url, "--verify", "-o", "json"]).await;
    assert_eq!(out.code, 1);
    let report = out.json();
    assert_eq!(report["mode"], "verification");
    assert_eq!(report["ok"], false);
    assert!(report["reason"].is_string(), "{report}");
}
