//! The terminal the tests type into: a HOME of its own, the real binary as a process, and
//! helpers to read long-running commands line by line.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde_json::Value;
use tokio::io::AsyncWriteExt;

use crate::common::{self, Receiver, TestServer, wasmhook_bin};

/// What a command did.
#[derive(Debug)]
pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Out {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self:?}"))
    }
}

/// A terminal: a HOME of its own, the binary, and a server to talk to.
pub struct Term {
    pub home: tempfile::TempDir,
    pub env: Vec<(String, String)>,
}

impl Term {
    pub fn new() -> Term {
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
    pub fn config_file(&self) -> PathBuf {
        self.home.path().join("xdg/wasmhook/config.toml")
    }

    pub fn set(&mut self, name: &str, value: &str) {
        self.env.retain(|(k, _)| k != name);
        self.env.push((name.into(), value.into()));
    }

    pub fn unset(&mut self, name: &str) {
        self.env.retain(|(k, _)| k != name);
    }

    pub async fn run_with(&self, args: &[&str], stdin: Option<&str>) -> Out {
        self.run_full(None, args, stdin).await
    }

    /// Runs `wasmhook args...` in `dir`.
    pub async fn run_in(&self, dir: &Path, args: &[&str]) -> Out {
        self.run_full(Some(dir), args, None).await
    }

    pub async fn run_full(&self, dir: Option<&Path>, args: &[&str], stdin: Option<&str>) -> Out {
        self.spawn_and_wait(&wasmhook_bin(), dir, args, stdin).await
    }

    /// Runs another program (e.g. `script`, for a terminal) in this terminal's environment.
    pub async fn run_program(&self, program: &str, args: &[&str], stdin: Option<&str>) -> Out {
        self.spawn_and_wait(Path::new(program), None, args, stdin)
            .await
    }

    async fn spawn_and_wait(
        &self,
        program: &Path,
        dir: Option<&Path>,
        args: &[&str],
        stdin: Option<&str>,
    ) -> Out {
        let mut cmd = tokio::process::Command::new(program);
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
        // A guard against a hang, not a time limit: `plugin run` compiles a 12 MB JavaScript
        // component first, which takes over a minute on a loaded two-core machine.
        let out = tokio::time::timeout(Duration::from_secs(300), child.wait_with_output())
            .await
            .unwrap_or_else(|_| panic!("wasmhook {args:?} did not finish within 300 s"))
            .unwrap();
        Out {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Runs `wasmhook args...`.
    pub async fn run(&self, args: &[&str]) -> Out {
        self.run_with(args, None).await
    }

    /// Runs a command that must succeed.
    pub async fn ok(&self, args: &[&str]) -> Out {
        let out = self.run(args).await;
        assert_eq!(out.code, 0, "wasmhook {args:?} failed: {out:?}");
        out
    }

    /// Runs a command with `-o json` that must succeed; returns its JSON.
    pub async fn json(&self, args: &[&str]) -> Value {
        let mut args = args.to_vec();
        args.extend(["-o", "json"]);
        self.ok(&args).await.json()
    }

    /// Runs a command that must fail; returns what it printed.
    pub async fn fails(&self, args: &[&str]) -> Out {
        let out = self.run(args).await;
        assert_eq!(out.code, 1, "wasmhook {args:?} should fail with 1: {out:?}");
        out
    }

    /// `wasmhook login` against `s` with `key`.
    pub async fn login(&self, s: &TestServer, key: &str) {
        self.ok(&["login", "--url", &s.base, "--api-key", key])
            .await;
    }
}

pub fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A receiver that passes the `webhook:verify` handshake and answers 200 otherwise.
pub fn echo_challenges(r: &Receiver) {
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

/// A TCP proxy in front of the server whose open connections can be cut, to see a client
/// reconnect.
pub struct Proxy {
    pub url: String,
    conns: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl Proxy {
    pub async fn start(upstream: &str) -> Proxy {
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
    pub fn cut(&self) {
        for task in self.conns.lock().unwrap().drain(..) {
            task.abort();
        }
    }
}

/// A running `wasmhook tail` whose output lines are read as they come.
pub struct Tail {
    pub child: tokio::process::Child,
    pub lines: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
    pub errors: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStderr>>,
}

impl Tail {
    pub async fn start(term: &Term, args: &[&str]) -> Tail {
        let mut all = vec!["tail"];
        all.extend(args);
        Tail::spawn(term, &all, "connected to").await
    }

    /// Starts `wasmhook args...` and waits for a stderr line containing `ready`.
    pub async fn spawn(term: &Term, args: &[&str], ready: &str) -> Tail {
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

    pub async fn stderr_until(&mut self, text: &str) -> String {
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

    pub async fn next(&mut self) -> String {
        tokio::time::timeout(Duration::from_secs(20), self.lines.next_line())
            .await
            .expect("a line within 20 s")
            .unwrap()
            .expect("tail still running")
    }
}

/// Sends a signal to a child process.
pub async fn signal(child: &tokio::process::Child, sig: &str) {
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
pub fn signature_ok(secret: &str, got: &common::Received) -> bool {
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
