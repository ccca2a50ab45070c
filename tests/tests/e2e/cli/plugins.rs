//! Plugins on a server: `plugin push|list|config|attach|logs|test`.

use std::time::Duration;

use serde_json::json;

use super::terminal::*;
use crate::common::{Receiver, TestServer, eventually};

#[tokio::test(flavor = "multi_thread")]
async fn plugins_are_pushed_configured_attached_and_their_logs_read() {
    let s = TestServer::start().await;
    let r = Receiver::start().await;
    let (_, key) = s.account("A").await;
    let term = Term::new();
    term.login(&s, &key).await;
    let wasm = wasmhook_plugin_artifacts::AUTO_REPLY;

    let created = term
        .json(&["plugin", "push", wasm, "--name", "auto-reply"])
        .await;
    let id = created["id"].as_str().unwrap().to_string();
    assert_eq!(created["version"], 1);
    // The same name again: a new version of the same plugin.
    let again = term
        .json(&["plugin", "push", wasm, "--name", "auto-reply"])
        .await;
    assert_eq!(again["id"], id.as_str());
    assert_eq!(again["version"], 2);
    let out = term
        .ok(&["plugin", "push", wasm, "--name", "auto-reply"])
        .await;
    assert!(
        out.stdout.contains("Uploaded version 3 of auto-reply"),
        "{out:?}"
    );
    // Without waiting: the upload's answer, the version still compiling.
    let queued = term
        .json(&["plugin", "push", wasm, "--name", "auto-reply", "--no-wait"])
        .await;
    assert_eq!(
        (&queued["status"], &queued["latest_version"]),
        (&json!("compiling"), &json!(4)),
        "{queued}"
    );
    // Valid, but it cannot be linked: push waits for the compilation and exits 1 with why.
    let unlinkable = term.home.path().join("unlinkable.wasm");
    let component = wat::parse_str(
        r#"(component
            (import "wasi:keyvalue/store@0.2.0-draft" (instance (export "get" (func))))
            (instance $h)
            (export "wasmhook:plugin/handler@0.1.0" (instance $h)))"#,
    )
    .unwrap();
    std::fs::write(&unlinkable, component).unwrap();
    let out = term
        .fails(&[
            "plugin",
            "push",
            path_str(&unlinkable),
            "--name",
            "unlinkable",
        ])
        .await;
    assert!(
        out.stderr.contains("failed to compile") && out.stderr.contains("wasi:keyvalue"),
        "{out:?}"
    );
    // Not a component: the upload's own reason.
    let not_wasm = term.home.path().join("x.wasm");
    std::fs::write(&not_wasm, "hello").unwrap();
    let out = term
        .fails(&["plugin", "push", path_str(&not_wasm), "--name", "bad"])
        .await;
    assert!(out.stderr.contains("not a WebAssembly binary"), "{out:?}");

    let list = term.json(&["plugin", "list"]).await;
    assert_eq!(
        list["data"].as_array().unwrap().len(),
        2,
        "auto-reply and unlinkable"
    );
    let listed = term.ok(&["plugin", "list"]).await.stdout;
    assert!(
        listed.contains("auto-reply") && listed.contains("failed"),
        "{listed}"
    );

    let configured = term
        .json(&[
            "plugin",
            "config",
            &id,
            "reply_text=Thanks, we are on it",
            "keywords=help",
        ])
        .await;
    assert_eq!(
        configured["config"],
        json!({"reply_text": "Thanks, we are on it", "keywords": "help"})
    );
    let configured = term
        .json(&["plugin", "config", &id, "--unset", "keywords"])
        .await;
    assert_eq!(
        configured["config"],
        json!({"reply_text": "Thanks, we are on it"})
    );

    // As a subscriber of message:created.
    let sub = term
        .json(&["plugin", "attach", &id, "--events", "message:created"])
        .await;
    assert_eq!(sub["plugin_id"], id.as_str());
    assert_eq!(sub["event_types"], json!(["message:created"]));
    // As the transform of a URL subscription.
    let url_sub = term
        .json(&["sub", "create", &r.url, "-e", "message:created"])
        .await;
    let url_sub_id = url_sub["id"].as_str().unwrap();
    let attached = term
        .json(&["plugin", "attach", &id, "--sub", url_sub_id])
        .await;
    assert_eq!(attached["transform_plugin_id"], id.as_str());
    let with_transform = term
        .json(&[
            "sub",
            "create",
            &r.url,
            "-e",
            "message:created",
            "--transform",
            &id,
        ])
        .await;
    assert_eq!(with_transform["transform_plugin_id"], id.as_str());
    term.ok(&["sub", "delete", with_transform["id"].as_str().unwrap()])
        .await;
    let sub_on_plugin = term
        .json(&[
            "sub",
            "create",
            "--plugin",
            &id,
            "-e",
            "conversation:created",
        ])
        .await;
    assert_eq!(sub_on_plugin["plugin_id"], id.as_str());
    let out = term.run(&["plugin", "attach", &id]).await;
    assert_eq!(out.code, 2, "attach needs --sub or --events: {out:?}");

    // The server's dry run: the reply is captured, not sent.
    let run = term
        .json(&[
            "plugin",
            "test",
            &id,
            "--example",
            "message:created",
            "--config",
            "reply_text=Hey",
        ])
        .await;
    assert_eq!(run["decision"], "keep");
    assert_eq!(run["sent_messages"][0]["text"], "Hey");
    let out = term
        .ok(&["plugin", "test", &id, "--example", "message:created"])
        .await;
    assert!(
        out.stdout.contains("send-message (captured, not sent)"),
        "{out:?}"
    );
    assert_eq!(
        term.json(&["events", "list"]).await["data"],
        json!([]),
        "nothing was sent"
    );

    // A customer message: the plugin replies (and logs it).
    term.ok(&[
        "send",
        "message:created",
        "--data",
        r#"{"conversation_id": "c1", "text": "help please", "sender": {"id": "u1", "type": "source_contact"}}"#,
    ])
    .await;
    let logs = eventually("a plugin log line", Duration::from_secs(15), || async {
        let logs = term.json(&["plugin", "logs", &id]).await;
        (!logs["data"].as_array().unwrap().is_empty()).then_some(logs)
    })
    .await;
    assert!(logs["data"][0]["message"].is_string(), "{logs}");
    let text = term.ok(&["plugin", "logs", &id]).await.stdout;
    assert!(
        text.contains(logs["data"][0]["message"].as_str().unwrap()),
        "{text}"
    );

    // --follow prints what is there, then new lines as they are written.
    let mut follow = Tail::spawn(&term, &["plugin", "logs", &id, "--follow"], "Following").await;
    let first = follow.next().await;
    assert!(first.contains("replied in conversation c1"), "{first}");
    term.ok(&[
        "send",
        "message:created",
        "--data",
        r#"{"conversation_id": "c2", "text": "help", "sender": {"id": "u2", "type": "source_contact"}}"#,
    ])
    .await;
    let mut seen = Vec::new();
    while !seen
        .iter()
        .any(|l: &String| l.contains("replied in conversation c2"))
    {
        assert!(seen.len() < 10, "no new line for c2: {seen:?}");
        seen.push(follow.next().await);
    }
    follow.child.kill().await.unwrap();
}
