//! The README's "Write your first plugin", step by step: `cargo new`, the SDK, the code from
//! the README itself, a `wasm32-wasip2` build, upload, subscribe, and a reply to a customer.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::common::{TestServer, eventually};
use serde_json::{Value, json};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The `src/lib.rs` the README shows, so the README cannot drift from what works.
fn readme_lib_rs() -> String {
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let after = readme
        .split("<!-- first-plugin:lib.rs -->")
        .nth(1)
        .expect("the README marks the plugin code");
    let start = after
        .find("```rust\n")
        .expect("a rust block follows the marker")
        + "```rust\n".len();
    let end = after[start..].find("```").unwrap();
    after[start..start + end].to_string()
}

fn cargo(dir: &Path, args: &[&str]) {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args(args)
        .current_dir(dir)
        // A target dir of its own, kept between runs so rebuilding is incremental.
        .env("CARGO_TARGET_DIR", repo().join("target/first-plugin"))
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .status()
        .unwrap();
    assert!(status.success(), "cargo {args:?} failed");
}

#[tokio::test]
async fn the_readme_walkthrough_builds_a_plugin_that_replies() {
    let tmp = tempfile::tempdir().unwrap();
    cargo(tmp.path(), &["new", "--lib", "--vcs", "none", "reply-bot"]);
    let dir = tmp.path().join("reply-bot");
    let sdk = repo().join("plugin-sdk");
    cargo(
        &dir,
        &[
            "add",
            "wasmhook-plugin-sdk",
            "--path",
            sdk.to_str().unwrap(),
        ],
    );
    let mut manifest = std::fs::read_to_string(dir.join("Cargo.toml")).unwrap();
    manifest.push_str("\n[lib]\ncrate-type = [\"cdylib\"]\n");
    std::fs::write(dir.join("Cargo.toml"), manifest).unwrap();
    std::fs::write(dir.join("src/lib.rs"), readme_lib_rs()).unwrap();
    cargo(&dir, &["build", "--release", "--target", "wasm32-wasip2"]);
    let wasm = repo().join("target/first-plugin/wasm32-wasip2/release/reply_bot.wasm");

    let s = TestServer::start().await;
    let (_, key) = s.account("A").await;
    let plugin = s
        .plugin(&key, "reply-bot", wasm.to_str().unwrap(), Value::Null)
        .await;
    let id = plugin["id"].as_str().unwrap();
    s.subscribe(
        &key,
        json!({"plugin_id": id, "event_types": ["message:created"]}),
    )
    .await;
    s.event(
        &key,
        json!({"type": "message:created", "payload":
            {"conversation_id": "c1", "text": "Hello?", "sender": {"id": "u1", "type": "source_contact"}}}),
    )
    .await;
    let reply = eventually("the plugin replies", Duration::from_secs(30), || async {
        let (_, events) = s.get("/v1/events?type=message:created", &key).await;
        events["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["causation"]["plugin_id"] == id)
            .cloned()
    })
    .await;
    assert_eq!(
        reply["payload"]["text"],
        "Thanks for writing! A human will answer soon."
    );
    assert_eq!(reply["payload"]["conversation_id"], "c1");
    s.logs_with(&key, id, |l| l["message"] == "replied in c1")
        .await;
}
