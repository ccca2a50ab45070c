//! `send`, `events`, `deliveries`, `retry` and `recover`.

use std::time::Duration;

use serde_json::json;

use super::terminal::*;
use crate::common::{self, Receiver, TestServer, eventually};

#[tokio::test(flavor = "multi_thread")]
async fn send_follows_deliveries_and_failed_ones_are_retried_and_recovered() {
    let s = TestServer::start().await;
    let r = Receiver::start().await;
    r.status(500);
    let (_, key) = s.account("A").await;
    let term = Term::new();
    term.login(&s, &key).await;
    let sub = term
        .json(&["sub", "create", &r.url, "-e", "message:created"])
        .await;
    let sub_id = sub["id"].as_str().unwrap().to_string();

    // Every attempt fails (10ms, 20ms, 40ms retries): send prints the event id first, each
    // change of the delivery, and fails.
    let out = term.fails(&["send", "message:created", "--example"]).await;
    let mut lines = out.stdout.lines();
    let event_id = lines.next().unwrap().to_string();
    assert!(event_id.starts_with("evt_"), "{out:?}");
    let rest: Vec<&str> = lines.collect();
    assert!(
        rest.last().unwrap().contains("failed after 4 attempts"),
        "{out:?}"
    );
    assert!(rest.iter().all(|l| l.contains(&sub_id)), "{out:?}");
    assert_eq!(out.stderr.trim(), "1 delivery failed");
    assert_eq!(r.received().len(), 4);
    // What was sent is the shared example payload.
    assert_eq!(
        r.received()[0].json()["data"],
        wasmhook::examples::payload("message:created")
    );

    let event = term.json(&["events", "get", &event_id]).await;
    assert_eq!(event["type"], "message:created");
    let listed = term
        .json(&["events", "list", "--type", "message:created"])
        .await;
    assert_eq!(listed["data"][0]["id"], event_id.as_str());

    let failed = term
        .json(&["deliveries", "list", "--status", "failed"])
        .await;
    assert_eq!(failed["data"].as_array().unwrap().len(), 1);
    let delivery_id = failed["data"][0]["id"].as_str().unwrap().to_string();
    let by_sub = term
        .json(&["deliveries", "list", "--sub", &sub_id, "--status", "failed"])
        .await;
    assert_eq!(by_sub["data"][0]["id"], delivery_id.as_str());
    assert_eq!(
        term.json(&[
            "deliveries",
            "list",
            "--sub",
            &sub_id,
            "--status",
            "succeeded"
        ])
        .await["data"],
        json!([])
    );
    let detail = term.json(&["deliveries", "get", &delivery_id]).await;
    let log = detail["attempt_log"].as_array().unwrap();
    assert_eq!(log.len(), 4);
    assert!(log.iter().all(|a| a["status_code"] == 500));
    let table = term.ok(&["deliveries", "get", &delivery_id]).await.stdout;
    assert!(table.contains("status        failed"), "{table}");
    assert_eq!(table.matches("http_status").count(), 4, "{table}");

    // The endpoint recovers; a retry by hand succeeds.
    r.status(200);
    let retried = term.json(&["retry", &delivery_id]).await;
    assert_eq!(retried["id"], delivery_id.as_str());
    eventually(
        "the retried delivery succeeds",
        Duration::from_secs(10),
        || async {
            let d = term.json(&["deliveries", "get", &delivery_id]).await;
            (d["status"] == "succeeded").then_some(())
        },
    )
    .await;

    // Two more that fail, then recover: the count first, nothing without --yes.
    r.status(500);
    for _ in 0..2 {
        term.fails(&["send", "message:created", "--example"]).await;
    }
    r.status(200);
    let count = term
        .json(&["recover", &sub_id, "--since", "1h", "--dry-run"])
        .await;
    assert_eq!(count, json!({"recovered": 2, "dry_run": true}));
    let out = term.fails(&["recover", &sub_id, "--since", "1h"]).await;
    assert!(out.stdout.contains("2 failed deliveries"), "{out:?}");
    assert!(out.stderr.contains("pass --yes"), "{out:?}");
    // On a terminal it asks; "n" requeues nothing.
    let bin = common::wasmhook_bin();
    let command = format!("{} recover {sub_id} --since 1h", bin.display());
    let out = term
        .run_program("script", &["-qec", &command, "/dev/null"], Some("n\n"))
        .await;
    assert!(
        out.stdout.contains("Requeue 2 deliveries? [y/N]"),
        "{out:?}"
    );
    assert!(
        out.stdout.contains("not confirmed: nothing requeued"),
        "{out:?}"
    );
    assert_eq!(
        term.json(&["recover", &sub_id, "--since", "1h", "--dry-run"])
            .await["recovered"],
        2
    );
    let done = term
        .json(&["recover", &sub_id, "--since", "1h", "--yes"])
        .await;
    assert_eq!(done, json!({"recovered": 2, "dry_run": false}));
    eventually(
        "recovered deliveries succeed",
        Duration::from_secs(10),
        || async {
            let d = term
                .json(&[
                    "deliveries",
                    "list",
                    "--sub",
                    &sub_id,
                    "--status",
                    "succeeded",
                ])
                .await;
            (d["data"].as_array().unwrap().len() == 3).then_some(())
        },
    )
    .await;

    // --data @file, --data - and --no-wait; the follow ends once delivered.
    let file = term.home.path().join("event.json");
    std::fs::write(&file, r#"{"conversation_id": "c1", "body": "from a file"}"#).unwrap();
    let at_file = format!("@{}", path_str(&file));
    let sent = term
        .json(&["send", "message:created", "--data", &at_file])
        .await;
    assert_eq!(sent["event"]["payload"]["body"], "from a file");
    assert_eq!(sent["deliveries"][0]["status"], "succeeded");
    let out = term
        .run_with(
            &["send", "message:created", "--data", "-", "--no-wait"],
            Some(r#"{"body": "from stdin"}"#),
        )
        .await;
    assert_eq!(out.code, 0, "{out:?}");
    let id = out.stdout.trim();
    assert!(id.starts_with("evt_") && !id.contains('\n'), "{out:?}");
    assert_eq!(
        term.json(&["events", "get", id]).await["payload"]["body"],
        "from stdin"
    );
    let out = term
        .fails(&["send", "message:created", "--data", "[1]"])
        .await;
    assert!(
        out.stderr.contains("payload: must be a JSON object"),
        "{out:?}"
    );
    let out = term.fails(&["send", "thing:done", "--example"]).await;
    assert!(out.stderr.contains("no example"), "{out:?}");
}
