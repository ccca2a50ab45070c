//! Plugins written in Python (componentize-py) and JavaScript (componentize-js, default
//! options) against `wit/`: they upload and run like Rust ones. `scripts/test` installs the
//! toolchains from PyPI and npm and builds them into `target/other-languages` first.

use std::path::PathBuf;
use std::time::Duration;

use crate::common::{Receiver, TestServer, eventually};
use serde_json::json;

fn built(file: &str) -> PathBuf {
    let dir = std::env::var_os("WASMHOOK_OTHER_LANGUAGES_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/other-languages")
        });
    let path = dir.join(file);
    assert!(
        path.exists(),
        "{} is missing: run ./scripts/test (or example-plugins/other-languages/*/build.sh) to build it",
        path.display()
    );
    path
}

async fn round_trip(file: &str, seen_by: &str) {
    let s = TestServer::start().await;
    let (_, key) = s.account("A").await;
    let r = Receiver::start().await;
    let path = built(file);
    let patch = json!({"config": {"greeting": "hi from the config"}});
    let plugin = s.plugin(&key, seen_by, path.to_str().unwrap(), patch).await;
    let id = plugin["id"].as_str().unwrap();
    s.subscribe(
        &key,
        json!({"url": r.url.clone(), "transform_plugin_id": id}),
    )
    .await;
    let e = s
        .event(
            &key,
            json!({"type": "message:created", "payload": {"text": "hello"}}),
        )
        .await;
    let got = eventually(
        &format!("{seen_by} transformed the event"),
        Duration::from_secs(60),
        || async { r.received().pop() },
    )
    .await;
    let data = got.json()["data"].clone();
    assert_eq!(data["text"], "hello", "{data}");
    assert_eq!(data["seen_by"], seen_by, "{data}");
    assert_eq!(data["greeting"], "hi from the config", "{data}");
    s.logs_with(&key, id, |l| {
        l["event_id"] == e["id"] && l["level"] == "info"
    })
    .await;
}

#[tokio::test]
async fn a_python_plugin_runs() {
    round_trip("python_hello.wasm", "python").await;
}

#[tokio::test]
async fn a_javascript_plugin_runs() {
    round_trip("js_hello.wasm", "javascript").await;
}
