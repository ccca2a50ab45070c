//! Plugins without a server: `plugin check`, `plugin run`, `plugin new`.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use super::terminal::*;

#[tokio::test(flavor = "multi_thread")]
async fn plugin_check_validates_a_component_without_a_server() {
    // No login, no server: a bare terminal.
    let term = Term::new();
    let out = term
        .ok(&["plugin", "check", wasmhook_plugin_artifacts::AUTO_REPLY])
        .await;
    assert!(
        out.stdout.contains("a valid wasmhook plugin component"),
        "{out:?}"
    );
    assert!(
        out.stdout.contains("wasmhook:plugin/handler@0.1.0  handle"),
        "{out:?}"
    );
    assert!(out.stdout.contains("send-message"), "{out:?}");

    let report = term
        .json(&["plugin", "check", wasmhook_plugin_artifacts::NOOP])
        .await;
    assert_eq!(report["ok"], true);
    let exports: Vec<&str> = report["exports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(exports, ["wasmhook:plugin/handler@0.1.0"]);
    assert!(
        report["imports"]
            .as_array()
            .unwrap()
            .iter()
            .all(
                |i| i["name"].as_str().unwrap().starts_with("wasmhook:plugin/")
                    || i["name"].as_str().unwrap().starts_with("wasi:")
            ),
        "{report}"
    );

    // What an upload refuses, check refuses with the same reason.
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("text.wasm");
    std::fs::write(&text, "hello world").unwrap();
    let out = term.fails(&["plugin", "check", path_str(&text)]).await;
    assert!(
        out.stderr
            .contains("an upload would be refused: not a WebAssembly binary"),
        "{out:?}"
    );
    let core = dir.path().join("core.wasm");
    std::fs::write(&core, wat::parse_str("(module)").unwrap()).unwrap();
    let out = term.fails(&["plugin", "check", path_str(&core)]).await;
    assert!(
        out.stderr
            .contains("core WebAssembly module, not a component"),
        "{out:?}"
    );
    // A component that exports nothing: its (empty) interface, and the missing export.
    let empty = dir.path().join("empty.wasm");
    std::fs::write(&empty, wat::parse_str("(component)").unwrap()).unwrap();
    let out = term
        .run(&["plugin", "check", path_str(&empty), "-o", "json"])
        .await;
    assert_eq!(out.code, 1);
    let report = out.json();
    assert_eq!(report["ok"], false);
    assert!(
        report["reason"]
            .as_str()
            .unwrap()
            .contains("does not export wasmhook:plugin/handler@0.1.0"),
        "{report}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn plugin_run_runs_a_component_locally_with_host_calls_captured() {
    let term = Term::new();
    let dir = tempfile::tempdir().unwrap();
    use wasmhook_plugin_artifacts::{AUTO_REPLY, HOSTILE, PII_REDACTOR};

    // send-message is captured (not sent), the log line kept, the decision printed.
    let out = term
        .ok(&[
            "plugin",
            "run",
            AUTO_REPLY,
            "--example",
            "message:created",
            "--config",
            "reply_text=Thanks!",
        ])
        .await;
    assert!(out.stdout.contains("decision    keep"), "{out:?}");
    assert!(
        out.stdout
            .contains("send-message (captured, not sent)\n  example-conversation-1: \"Thanks!\""),
        "{out:?}"
    );
    let report = term
        .json(&[
            "plugin",
            "run",
            AUTO_REPLY,
            "--example",
            "message:created",
            "--config",
            "reply_text=Thanks!",
        ])
        .await;
    assert_eq!(report["decision"], "keep");
    // The same report as the server's dry run (`POST /v1/plugins/{id}/test`).
    assert_eq!(
        report["sent_messages"][0]["conversation_id"],
        "example-conversation-1"
    );
    assert_eq!(report["sent_messages"][0]["text"], "Thanks!");
    assert!(
        report["logs"][0]["message"]
            .as_str()
            .unwrap()
            .contains("replied in conversation")
    );
    assert!(report["duration_us"].as_u64().unwrap() > 0);
    // At least the component's initial memory (a page or more), at most the limit.
    let peak = report["peak_memory_bytes"].as_u64().unwrap();
    assert!((64 * 1024..=64 << 20).contains(&peak), "{report}");

    // A transform: the replacement payload.
    let event = dir.path().join("event.json");
    std::fs::write(
        &event,
        r#"{"type": "message:created", "id": "m-1", "payload": {"conversation_id": "c1", "text": "mail me at jane@example.com"}}"#,
    )
    .unwrap();
    let at_event = format!("@{}", path_str(&event));
    let report = term
        .json(&["plugin", "run", PII_REDACTOR, "--event", &at_event])
        .await;
    assert_eq!(report["decision"], "replace");
    let text = report["payload"]["text"].as_str().unwrap();
    assert!(!text.contains("jane@example.com"), "{report}");

    // kv: reads see --kv, writes are reported and stay in the run.
    let state = dir.path().join("state.json");
    std::fs::write(&state, r#"{"count": "41"}"#).unwrap();
    let at_state = format!("@{}", path_str(&state));
    let report = term
        .json(&[
            "plugin",
            "run",
            HOSTILE,
            "--example",
            "message:created",
            "--config",
            "mode=kv-count",
            "--kv",
            &at_state,
        ])
        .await;
    assert_eq!(report["payload"], json!({"count": 42}));
    assert_eq!(report["kv_writes"][0]["op"], "increment");
    assert_eq!(report["kv_writes"][0]["value"], "42");
    assert_eq!(report["kv_reads"], json!([]), "increment is not a read");
    let report = term
        .json(&[
            "plugin",
            "run",
            HOSTILE,
            "--example",
            "message:created",
            "--config",
            "mode=echo-config",
        ])
        .await;
    assert_eq!(report["kv_reads"][0]["key"], "echo-counter", "{report}");

    // Limits as on the server: the deadline and the memory cap; exit 1 with the reason.
    let out = term
        .fails(&[
            "plugin",
            "run",
            HOSTILE,
            "--example",
            "message:created",
            "--config",
            "mode=loop",
            "--deadline-ms",
            "100",
        ])
        .await;
    assert!(out.stdout.contains("failed      deadline"), "{out:?}");
    assert!(out.stderr.contains("deadline exceeded"), "{out:?}");
    let out = term
        .fails(&[
            "plugin",
            "run",
            HOSTILE,
            "--example",
            "message:created",
            "--config",
            "mode=memory",
            "--memory-mb",
            "16",
        ])
        .await;
    assert!(
        out.stderr.contains("memory limit 16 MiB exceeded"),
        "{out:?}"
    );
    let out = term
        .fails(&[
            "plugin",
            "run",
            HOSTILE,
            "--example",
            "message:created",
            "--config",
            "mode=trap",
        ])
        .await;
    assert!(out.stderr.contains("the plugin failed (trap)"), "{out:?}");
    let out = term
        .fails(&[
            "plugin",
            "run",
            HOSTILE,
            "--example",
            "message:created",
            "--config",
            "mode=fatal-error",
        ])
        .await;
    assert!(out.stderr.contains("hostile: fatal-error"), "{out:?}");
    // Outgoing HTTP only to allowed hosts.
    let report = term
        .run(&[
            "plugin",
            "run",
            HOSTILE,
            "--example",
            "message:created",
            "--config",
            "mode=http",
            "--config",
            "url=http://blocked.example/x",
            "-o",
            "json",
        ])
        .await
        .json();
    assert!(
        report["http_requests"][0]["error"]
            .as_str()
            .unwrap()
            .contains("allowed"),
        "{report}"
    );

    // --loop: the time per call.
    let report = term
        .json(&[
            "plugin",
            "run",
            PII_REDACTOR,
            "--event",
            &at_event,
            "--loop",
            "20",
        ])
        .await;
    assert_eq!(report["timing"]["calls"], 20);
    assert!(report["timing"]["median_us"].as_u64().unwrap() > 0);
    let out = term
        .ok(&[
            "plugin",
            "run",
            PII_REDACTOR,
            "--event",
            &at_event,
            "--loop",
            "5",
        ])
        .await;
    assert!(out.stdout.contains("per call    5 calls: min"), "{out:?}");
}

/// Builds a scaffold and runs it on the example message; returns the run's report.
async fn build_and_run(
    term: &Term,
    dir: &Path,
    build: &[&str],
    env: &[(&str, String)],
    wasm: &str,
) -> Value {
    let out = tokio::process::Command::new(build[0])
        .args(&build[1..])
        .current_dir(dir)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{build:?} in {}: {}{}",
        dir.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let wasm = dir.join(wasm);
    term.json(&[
        "plugin",
        "run",
        path_str(&wasm),
        "--example",
        "message:created",
        "--config",
        "greeting=hi",
    ])
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn plugin_new_scaffolds_build_and_run() {
    let term = Term::new();
    let dir = tempfile::tempdir().unwrap();
    let at = path_str(dir.path());

    let created = term
        .json(&["plugin", "new", "tagger", "--lang", "rust", "--dir", at])
        .await;
    assert_eq!(
        created["files"],
        json!([
            "Cargo.toml",
            "build.rs",
            "src/lib.rs",
            "README.md",
            ".gitignore"
        ])
    );
    let out = term
        .fails(&["plugin", "new", "tagger", "--lang", "rust", "--dir", at])
        .await;
    assert!(out.stderr.contains("already exists"), "{out:?}");
    let out = term
        .fails(&["plugin", "new", "Bad_Name", "--lang", "js", "--dir", at])
        .await;
    assert!(out.stderr.contains("a plugin name is"), "{out:?}");

    // Rust: builds to a component, its unit test passes, and it runs. A target dir kept in
    // the workspace makes later runs incremental.
    let rust = dir.path().join("tagger");
    let readme = std::fs::read_to_string(rust.join("README.md")).unwrap();
    assert!(readme.contains("cargo build --release --target wasm32-wasip2"));
    assert!(readme.contains("wasmhook plugin run target/wasm32-wasip2/release/tagger.wasm"));
    assert!(
        readme.contains(
            "wasmhook plugin push target/wasm32-wasip2/release/tagger.wasm --name tagger"
        )
    );
    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/cli-scaffold");
    let cargo_env = [("CARGO_TARGET_DIR", target.display().to_string())];
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let report = build_and_run(
        &term,
        &rust,
        &[&cargo, "build", "--release", "--target", "wasm32-wasip2"],
        &cargo_env,
        &format!("{}/wasm32-wasip2/release/tagger.wasm", target.display()),
    )
    .await;
    assert_eq!(report["decision"], "replace", "{report}");
    assert_eq!(report["payload"]["tagged_by"], "tagger");
    assert_eq!(report["payload"]["greeting"], "hi");
    let out = tokio::process::Command::new(&cargo)
        .args(["test", "--quiet"])
        .current_dir(&rust)
        .envs(cargo_env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the scaffold's unit tests pass: {text}"
    );
    assert!(text.contains("2 passed"), "{text}");

    // Python and JavaScript, with the toolchains scripts/test installs (skipped without them).
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let venv = std::env::var_os("WASMHOOK_OTHER_LANGUAGES_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo.join("target/other-languages"))
        .join("python-venv");
    if venv.join("bin/componentize-py").exists() {
        term.ok(&[
            "plugin",
            "new",
            "py-tagger",
            "--lang",
            "python",
            "--dir",
            at,
        ])
        .await;
        let py = dir.path().join("py-tagger");
        assert!(py.join("wit/plugin.wit").exists());
        let report = build_and_run(
            &term,
            &py,
            &["./build.sh"],
            &[("COMPONENTIZE_PY_VENV", venv.display().to_string())],
            "py_tagger.wasm",
        )
        .await;
        assert_eq!(report["payload"]["tagged_by"], "py-tagger", "{report}");
        assert_eq!(report["payload"]["greeting"], "hi");
    } else {
        eprintln!(
            "skipping the Python scaffold: no componentize-py at {}",
            venv.display()
        );
    }
    let js_bin =
        repo.join("example-plugins/other-languages/js-hello/node_modules/.bin/componentize-js");
    if js_bin.exists() {
        term.ok(&["plugin", "new", "js-tagger", "--lang", "js", "--dir", at])
            .await;
        let js = dir.path().join("js-tagger");
        let report = build_and_run(
            &term,
            &js,
            &["./build.sh"],
            &[("COMPONENTIZE_JS", js_bin.display().to_string())],
            "js_tagger.wasm",
        )
        .await;
        assert_eq!(report["payload"]["tagged_by"], "js-tagger", "{report}");
        assert_eq!(report["payload"]["greeting"], "hi");
    } else {
        eprintln!(
            "skipping the JavaScript scaffold: no componentize-js at {}",
            js_bin.display()
        );
    }
}
