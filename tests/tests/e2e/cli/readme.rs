//! The README's "Command line" examples, run in order.

use std::path::Path;

use serde_json::Value;

use super::terminal::*;
use crate::common::{Receiver, TestServer};

/// The `wasmhook` lines of the README's "Command line" section, without comments.
fn readme_examples() -> Vec<String> {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md"))
            .unwrap();
    let section = readme
        .split("<!-- cli-examples:")
        .nth(1)
        .expect("the README's command-line examples");
    let block = section
        .split("```sh\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .unwrap();
    block
        .lines()
        .filter(|l| l.starts_with("wasmhook "))
        .map(|l| l.to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_readme_command_line_examples_run() {
    let s = TestServer::start().await;
    let r = Receiver::start().await;
    echo_challenges(&r);
    let (_, key) = s.account("A").await;
    let term = Term::new();
    let cwd = tempfile::tempdir().unwrap();
    std::fs::write(
        cwd.path().join("event.json"),
        r#"{"conversation_id": "c1", "status": "closed"}"#,
    )
    .unwrap();
    let hook = format!("{}/hook", r.url);
    let mut ids: Vec<(&str, String)> = Vec::new();
    let examples = readme_examples();
    assert!(examples.len() > 30, "{examples:?}");
    for example in examples {
        if example.contains("until Ctrl-C") {
            continue; // tail and logs --follow: shown by their own tests
        }
        let line = example.split(" #").next().unwrap().trim();
        let (line, redirected) = match line.split_once(" > ") {
            Some((cmd, _)) => (cmd, true),
            None => (line, false),
        };
        let mut text = line
            .replace("http://127.0.0.1:8080", &s.base)
            .replace("whk_...", &key)
            .replace("https://example.com/hook", &hook)
            .replace(
                "target/wasm32-wasip2/release/reply_bot.wasm",
                wasmhook_plugin_artifacts::AUTO_REPLY,
            );
        for (placeholder, id) in &ids {
            text = text.replace(placeholder, id);
        }
        assert!(!text.contains("_..."), "no id yet for {example}");
        let args: Vec<&str> = text.split_whitespace().skip(1).collect();
        let out = term.run_in(cwd.path(), &args).await;
        assert_eq!(out.code, 0, "README example failed: {example}\n{out:?}");
        if redirected {
            assert!(!out.stdout.is_empty());
        }
        // Ids later lines refer to.
        let newest = |v: &Value| v["data"][0]["id"].as_str().map(str::to_string);
        if example.contains(" sub create ") {
            let subs = term.json(&["sub", "list"]).await;
            ids.push(("sub_...", newest(&subs).unwrap()));
        }
        if example.contains(" send ") && !ids.iter().any(|(p, _)| *p == "evt_...") {
            ids.push(("evt_...", out.stdout.lines().next().unwrap().to_string()));
            let deliveries = term.json(&["deliveries", "list"]).await;
            ids.push(("msg_...", newest(&deliveries).unwrap()));
        }
        if example.contains(" plugin push ") {
            ids.push((
                "plg_...",
                newest(&term.json(&["plugin", "list"]).await).unwrap(),
            ));
        }
    }
    assert!(cwd.path().join("reply-bot/Cargo.toml").exists());
}
