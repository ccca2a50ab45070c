//! The `wasmhook` command line, run as the real binary against a real server: profiles and
//! keys, subscriptions, sending and following events, deliveries and their recovery, plugins,
//! output modes, errors, help and completions. Each test is a person's terminal: its own HOME
//! and config directory, the binary started as a process.

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use axum::http::StatusCode;
use axum::response::IntoResponse;
use common::{Receiver, TestServer, eventually, wasmhook_bin};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

/// What a command did.
#[derive(Debug)]
struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Out {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self:?}"))
    }
}

/// A terminal: a HOME of its own, the binary, and a server to talk to.
struct Term {
    home: tempfile::TempDir,
    env: Vec<(String, String)>,
}

impl Term {
    fn new() -> Term {
        let home = tempfile::tempdir().unwrap();
        let env = vec![
            ("HOME".into(), home.path().display().to_string()),
            (
                "XDG_CONFIG_HOME".into(),
                home.path().join("xdg").display().to_string(),
            ),
        ];
        Term { home, env }
    }

    /// The profiles file `login` writes.
    fn config_file(&self) -> PathBuf {
        self.home.path().join("xdg/wasmhook/config.toml")
    }

    fn set(&mut self, name: &str, value: &str) {
        self.env.retain(|(k, _)| k != name);
        self.env.push((name.into(), value.into()));
    }

    fn unset(&mut self, name: &str) {
        self.env.retain(|(k, _)| k != name);
    }

    async fn run_with(&self, args: &[&str], stdin: Option<&str>) -> Out {
        self.run_full(None, args, stdin).await
    }

    /// Runs `wasmhook args...` in `dir`.
    async fn run_in(&self, dir: &Path, args: &[&str]) -> Out {
        self.run_full(Some(dir), args, None).await
    }

    async fn run_full(&self, dir: Option<&Path>, args: &[&str], stdin: Option<&str>) -> Out {
        let mut cmd = tokio::process::Command::new(wasmhook_bin());
        if let Some(dir) = dir {
            cmd.current_dir(dir);
        }
        cmd.args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().expect("the wasmhook binary starts");
        if let Some(input) = stdin {
            let mut pipe = child.stdin.take().unwrap();
            pipe.write_all(input.as_bytes()).await.unwrap();
            drop(pipe);
        }
        let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
            .await
            .unwrap_or_else(|_| panic!("wasmhook {args:?} did not finish within 60 s"))
            .unwrap();
        Out {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Runs `wasmhook args...`.
    async fn run(&self, args: &[&str]) -> Out {
        self.run_with(args, None).await
    }

    /// Runs a command that must succeed.
    async fn ok(&self, args: &[&str]) -> Out {
        let out = self.run(args).await;
        assert_eq!(out.code, 0, "wasmhook {args:?} failed: {out:?}");
        out
    }

    /// Runs a command with `-o json` that must succeed; returns its JSON.
    async fn json(&self, args: &[&str]) -> Value {
        let mut args = args.to_vec();
        args.extend(["-o", "json"]);
        self.ok(&args).await.json()
    }

    /// Runs a command that must fail; returns what it printed.
    async fn fails(&self, args: &[&str]) -> Out {
        let out = self.run(args).await;
        assert_eq!(out.code, 1, "wasmhook {args:?} should fail with 1: {out:?}");
        out
    }

    /// `wasmhook login` against `s` with `key`.
    async fn login(&self, s: &TestServer, key: &str) {
        self.ok(&["login", "--url", &s.base, "--api-key", key])
            .await;
    }
}

fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn login_stores_a_private_profile_and_whoami_checks_the_key() {
    let s = TestServer::start().await;
    let (acc_a, key_a) = s.account("Acme support").await;
    let (acc_b, key_b) = s.account("Beta").await;
    let mut term = Term::new();

    // Not logged in yet.
    let out = term.fails(&["whoami"]).await;
    assert!(out.stderr.contains("not logged in"), "{out:?}");

    // A wrong key is refused with the API's message, and nothing is stored.
    let out = term
        .fails(&["login", "--url", &s.base, "--api-key", "whk_wrong"])
        .await;
    assert_eq!(out.stderr.trim(), "error: invalid or revoked API key");
    assert!(!term.config_file().exists());

    let out = term
        .ok(&["login", "--url", &s.base, "--api-key", &key_a])
        .await;
    assert!(out.stdout.contains("Acme support"), "{out:?}");
    let text = std::fs::read_to_string(term.config_file()).unwrap();
    assert!(text.contains(&key_a) && text.contains(&s.base), "{text}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(term.config_file())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "the profile file is private");
    }

    let me = term.json(&["whoami"]).await;
    assert_eq!(me["id"], acc_a.as_str());
    assert_eq!(me["name"], "Acme support");
    let table = term.ok(&["whoami"]).await.stdout;
    assert!(table.starts_with("ACCOUNT"), "{table}");
    assert!(table.contains(&acc_a) && table.contains(&s.base), "{table}");

    // A second profile; --profile and WASMHOOK_PROFILE choose it.
    term.ok(&[
        "login",
        "--profile",
        "beta",
        "--url",
        &s.base,
        "--api-key",
        &key_b,
    ])
    .await;
    assert_eq!(
        term.json(&["whoami", "--profile", "beta"]).await["id"],
        acc_b.as_str()
    );
    assert_eq!(term.json(&["whoami"]).await["id"], acc_a.as_str());
    term.set("WASMHOOK_PROFILE", "beta");
    assert_eq!(term.json(&["whoami"]).await["id"], acc_b.as_str());
    term.unset("WASMHOOK_PROFILE");
    let out = term.fails(&["whoami", "--profile", "nope"]).await;
    assert!(out.stderr.contains("no profile \"nope\""), "{out:?}");

    // The environment overrides the stored profile's key, and its URL.
    term.set("WASMHOOK_API_KEY", &key_b);
    assert_eq!(term.json(&["whoami"]).await["id"], acc_b.as_str());
    term.set("WASMHOOK_URL", "http://127.0.0.1:1");
    let out = term.fails(&["whoami"]).await;
    assert!(
        out.stderr.contains("cannot reach http://127.0.0.1:1"),
        "{out:?}"
    );

    // Without any profile file, the environment alone is enough; without XDG_CONFIG_HOME the
    // profile goes to ~/.config/wasmhook.
    let mut bare = Term::new();
    bare.unset("XDG_CONFIG_HOME");
    bare.set("WASMHOOK_URL", &s.base);
    bare.set("WASMHOOK_API_KEY", &key_a);
    assert_eq!(bare.json(&["whoami"]).await["id"], acc_a.as_str());
    bare.unset("WASMHOOK_URL");
    bare.unset("WASMHOOK_API_KEY");
    bare.login(&s, &key_b).await;
    assert!(
        bare.home
            .path()
            .join(".config/wasmhook/config.toml")
            .exists()
    );
    assert_eq!(bare.json(&["whoami"]).await["id"], acc_b.as_str());
}

#[tokio::test(flavor = "multi_thread")]
async fn errors_print_the_api_message_and_exit_non_zero() {
    let s = TestServer::start().await;
    let (_, key) = s.account("A").await;
    let term = Term::new();
    term.login(&s, &key).await;

    let out = term.fails(&["sub", "get", "sub_missing"]).await;
    assert_eq!(out.stderr.trim(), "error: subscription not found");
    assert_eq!(out.stdout, "");
    let out = term
        .fails(&["sub", "get", "sub_missing", "-o", "json"])
        .await;
    let body: Value = serde_json::from_str(out.stderr.trim()).unwrap();
    assert_eq!(
        body,
        json!({"error": {"code": "not_found", "message": "subscription not found"}})
    );
    // Validation errors are the server's own.
    let out = term
        .fails(&["sub", "create", "https://example.com/h", "-e", "Not A Type"])
        .await;
    assert!(out.stderr.contains("event_types[0]"), "{out:?}");
    // Usage errors are clap's, with exit code 2.
    let out = term.run(&["sub", "create"]).await;
    assert_eq!(out.code, 2, "{out:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn every_command_has_help_with_an_example_and_completions_exist() {
    let term = Term::new();
    for path in [
        &["login"][..],
        &["whoami"],
        &["sub"],
        &["sub", "create"],
        &["sub", "list"],
        &["sub", "get"],
        &["sub", "enable"],
        &["sub", "disable"],
        &["sub", "delete"],
        &["sub", "secret"],
        &["send"],
        &["events", "list"],
        &["events", "get"],
        &["deliveries", "list"],
        &["deliveries", "get"],
        &["retry"],
        &["recover"],
        &["plugin", "push"],
        &["plugin", "list"],
        &["plugin", "config"],
        &["plugin", "logs"],
        &["plugin", "attach"],
        &["completion"],
    ] {
        let mut args = path.to_vec();
        args.push("--help");
        let out = term.ok(&args).await;
        assert!(
            out.stdout.contains("Example") && out.stdout.contains("wasmhook "),
            "{path:?} --help has no example: {}",
            out.stdout
        );
    }
    for (shell, marker) in [
        ("bash", "complete"),
        ("zsh", "#compdef"),
        ("fish", "complete -c wasmhook"),
    ] {
        let out = term.ok(&["completion", shell]).await;
        assert!(out.stdout.contains(marker), "{shell}: {}", out.stdout);
        assert!(out.stdout.contains("deliveries"), "{shell}");
    }
}

/// A receiver that passes the `webhook:verify` handshake and answers 200 otherwise.
fn echo_challenges(r: &Receiver) {
    r.respond(|req, _| {
        let body: Value = serde_json::from_slice(&req.body).unwrap_or_default();
        if body["event"] == "webhook:verify" {
            body["payload"]
                .as_str()
                .unwrap()
                .to_string()
                .into_response()
        } else {
            StatusCode::OK.into_response()
        }
    });
}

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
    // Not a component: the upload's own reason.
    let not_wasm = term.home.path().join("x.wasm");
    std::fs::write(&not_wasm, "hello").unwrap();
    let out = term
        .fails(&["plugin", "push", path_str(&not_wasm), "--name", "bad"])
        .await;
    assert!(out.stderr.contains("not a WebAssembly binary"), "{out:?}");

    let list = term.json(&["plugin", "list"]).await;
    assert_eq!(list["data"].as_array().unwrap().len(), 1);
    assert!(
        term.ok(&["plugin", "list"])
            .await
            .stdout
            .contains("auto-reply")
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

/// A TCP proxy in front of the server whose open connections can be cut, to see a client
/// reconnect.
struct Proxy {
    url: String,
    conns: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl Proxy {
    async fn start(upstream: &str) -> Proxy {
        let upstream = upstream.trim_start_matches("http://").to_string();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let conns = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let c = conns.clone();
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let upstream = upstream.clone();
                let task = tokio::spawn(async move {
                    if let Ok(mut out) = tokio::net::TcpStream::connect(&upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                    }
                });
                c.lock().unwrap().push(task);
            }
        });
        Proxy { url, conns }
    }

    /// Drops every open connection.
    fn cut(&self) {
        for task in self.conns.lock().unwrap().drain(..) {
            task.abort();
        }
    }
}

/// A running `wasmhook tail` whose output lines are read as they come.
struct Tail {
    child: tokio::process::Child,
    lines: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
    errors: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStderr>>,
}

impl Tail {
    async fn start(term: &Term, args: &[&str]) -> Tail {
        let mut all = vec!["tail"];
        all.extend(args);
        Tail::spawn(term, &all, "connected to").await
    }

    /// Starts `wasmhook args...` and waits for a stderr line containing `ready`.
    async fn spawn(term: &Term, args: &[&str], ready: &str) -> Tail {
        use tokio::io::AsyncBufReadExt;
        let mut child = tokio::process::Command::new(wasmhook_bin())
            .args(args)
            .env_clear()
            .envs(term.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let errors = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
        let mut tail = Tail {
            child,
            lines,
            errors,
        };
        tail.stderr_until(ready).await;
        tail
    }

    async fn stderr_until(&mut self, text: &str) -> String {
        loop {
            let line = tokio::time::timeout(Duration::from_secs(20), self.errors.next_line())
                .await
                .unwrap_or_else(|_| panic!("no stderr line with {text:?} within 20 s"))
                .unwrap()
                .unwrap_or_else(|| panic!("tail exited before printing {text:?}"));
            if line.contains(text) {
                return line;
            }
        }
    }

    async fn next(&mut self) -> String {
        tokio::time::timeout(Duration::from_secs(20), self.lines.next_line())
            .await
            .expect("a line within 20 s")
            .unwrap()
            .expect("tail still running")
    }
}

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

/// Sends a signal to a child process.
async fn signal(child: &tokio::process::Child, sig: &str) {
    let pid = child.id().expect("still running").to_string();
    let ok = tokio::process::Command::new("kill")
        .args([sig, &pid])
        .status()
        .await
        .unwrap()
        .success();
    assert!(ok, "kill {sig} {pid}");
}

/// Verifies a Standard Webhooks signature as a receiver would.
fn signature_ok(secret: &str, got: &common::Received) -> bool {
    use base64::Engine as _;
    use hmac::Mac as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let key = b64.decode(secret.strip_prefix("whsec_").unwrap()).unwrap();
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
    let (id, ts) = (
        got.header("webhook-id").unwrap(),
        got.header("webhook-timestamp").unwrap(),
    );
    mac.update(format!("{id}.{ts}.").as_bytes());
    mac.update(&got.body);
    let expected = format!("v1,{}", b64.encode(mac.finalize().into_bytes()));
    got.header("webhook-signature")
        .unwrap()
        .split(' ')
        .any(|s| s == expected)
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
