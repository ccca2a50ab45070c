//! The test harness: a real wasmhook server on 127.0.0.1:0 with a temporary data dir, a
//! recording receiver on loopback, and small HTTP helpers.
//!
//! The backend is the harness's choice: SQLite in the data dir by default; with
//! `WASMHOOK_TEST_BACKEND=postgres`, every server gets a fresh database of its own
//! (`wasmhook_test_<random>`, dropped with the server) on the cluster named by
//! `WASMHOOK_TEST_DATABASE_URL` (`scripts/pg-test-cluster start` sets it), kept across restarts.

#![allow(dead_code)]

pub mod receiver;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

#[allow(unused_imports)]
pub use receiver::{Received, Receiver};

/// The admin token every test server uses.
pub const ADMIN: &str = "test-admin-token-0123456789";

/// Options for every test server: fast retries and circuit-breaker pauses, loopback allowed.
pub fn default_args() -> Vec<String> {
    [
        "--circuit-breaker-cooldown",
        "20ms",
        "--circuit-breaker-max-cooldown",
        "100ms",
        "--admin-token",
        ADMIN,
        "--allow-network",
        "127.0.0.0/8",
        "--retry-schedule",
        "10ms,20ms,40ms",
        "--delivery-timeout",
        "2s",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// The default options with `extra` (flag, value pairs) replacing defaults of the same flag.
pub fn args_with(extra: &[String]) -> Vec<String> {
    let defaults = default_args();
    let mut args = Vec::new();
    for pair in defaults.chunks(2) {
        if !extra.contains(&pair[0]) {
            args.extend(pair.iter().cloned());
        }
    }
    args.extend(extra.iter().cloned());
    args
}

/// A test-only knob `start_with` takes like an option: uploads are not compiled until the file
/// given after it exists (see `Config::test_hold_compiles_until`).
pub const HOLD_COMPILES: &str = "--test-hold-compiles-until";

/// A running server.
pub struct TestServer {
    pub base: String,
    pub http: reqwest::Client,
    pub dir: PathBuf,
    _tmp: Option<TempDir>,
    extra: Vec<String>,
    /// The server's own PostgreSQL database, when the tests run on PostgreSQL.
    pub database_url: Option<String>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

impl TestServer {
    /// Starts a server with the default options.
    pub async fn start() -> TestServer {
        TestServer::start_with(&[]).await
    }

    /// Starts a server with extra options (later ones override earlier ones).
    pub async fn start_with(extra: &[&str]) -> TestServer {
        let tmp = tempfile::tempdir().expect("temp dir");
        let dir = tmp.path().join("data");
        let database_url = match postgres_cluster() {
            Some(base) => Some(fresh_database(&base).await),
            None => None,
        };
        let mut server = TestServer::launch(
            dir,
            extra.iter().map(|s| s.to_string()).collect(),
            database_url,
        )
        .await;
        server._tmp = Some(tmp);
        server
    }

    /// Starts a server on a data dir (and database) filled beforehand, e.g. by `wasmhook
    /// import`; the caller keeps the dir, the database is dropped with the server.
    pub async fn start_on(
        dir: PathBuf,
        database_url: Option<String>,
        extra: &[&str],
    ) -> TestServer {
        let extra = extra.iter().map(|s| s.to_string()).collect();
        TestServer::launch(dir, extra, database_url).await
    }

    async fn launch(dir: PathBuf, extra: Vec<String>, database_url: Option<String>) -> TestServer {
        let mut args = args_with(&extra);
        args.extend(["--data-dir".to_string(), dir.display().to_string()]);
        if let Some(url) = &database_url {
            args.extend(["--database-url".to_string(), url.clone()]);
        }
        // `HOLD_COMPILES` is not an option of the server: taken out of the arguments and set on
        // the parsed configuration.
        let mut hold = None;
        if let Some(at) = args.iter().position(|a| a == HOLD_COMPILES) {
            hold = args.drain(at..at + 2).nth(1).map(PathBuf::from);
        }
        let mut config = wasmhook::config::Config::from_args(args).expect("valid test options");
        config.test_hold_compiles_until = hold;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(wasmhook::run(config, listener, async move {
            let _ = stopped.await;
        }));
        TestServer {
            base,
            http: reqwest::Client::new(),
            dir,
            _tmp: None,
            extra,
            database_url,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Stops the server gracefully and waits for it.
    pub async fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await
                .expect("server task")
                .expect("server exits cleanly");
        }
    }

    /// Stops the server and starts a new one on the same data dir (and a new port).
    pub async fn restart(&mut self) {
        self.stop().await;
        let tmp = self._tmp.take();
        let database_url = self.database_url.take();
        let mut next = TestServer::launch(self.dir.clone(), self.extra.clone(), database_url).await;
        next._tmp = tmp;
        *self = next;
    }

    /// Like [`TestServer::restart`], with `extra` options from now on instead of the first ones.
    pub async fn restart_with(&mut self, extra: &[&str]) {
        self.extra = extra.iter().map(|s| s.to_string()).collect();
        self.restart().await;
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// Sends a request with an optional bearer token and JSON body; returns status and JSON.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = self.http.request(method, self.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("request reaches the server");
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        let json = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, json)
    }

    pub async fn get(&self, path: &str, token: &str) -> (u16, Value) {
        self.call(Method::GET, path, Some(token), None).await
    }

    pub async fn post(&self, path: &str, token: &str, body: Value) -> (u16, Value) {
        self.call(Method::POST, path, Some(token), Some(body)).await
    }

    pub async fn patch(&self, path: &str, token: &str, body: Value) -> (u16, Value) {
        self.call(Method::PATCH, path, Some(token), Some(body))
            .await
    }

    pub async fn delete(&self, path: &str, token: &str) -> (u16, Value) {
        self.call(Method::DELETE, path, Some(token), None).await
    }

    /// Creates an account; returns (account id, API key).
    pub async fn account(&self, name: &str) -> (String, String) {
        let (status, body) = self
            .post("/v1/accounts", ADMIN, json!({ "name": name }))
            .await;
        assert_eq!(status, 201, "{body}");
        (
            body["id"].as_str().unwrap().to_string(),
            body["api_key"].as_str().unwrap().to_string(),
        )
    }

    /// Creates a subscription; returns its JSON (with `secret`).
    pub async fn subscribe(&self, key: &str, body: Value) -> Value {
        let (status, sub) = self.post("/v1/subscriptions", key, body).await;
        assert_eq!(status, 201, "{sub}");
        sub
    }

    /// Uploads the component at `path`, then applies `patch` (config, limits, ...) unless it is
    /// null; returns the plugin's JSON.
    pub async fn plugin(&self, key: &str, name: &str, path: &str, patch: Value) -> Value {
        let resp = self
            .http
            .post(self.url(&format!("/v1/plugins?name={name}")))
            .bearer_auth(key)
            .header("content-type", "application/wasm")
            .body(std::fs::read(path).unwrap_or_else(|e| panic!("{path}: {e}")))
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let plugin: Value = resp.json().await.unwrap();
        assert_eq!(status, 202, "{plugin}");
        let plugin = self
            .compiled(key, plugin["id"].as_str().unwrap(), "ready")
            .await;
        if patch.is_null() {
            return plugin;
        }
        let (status, patched) = self
            .patch(
                &format!("/v1/plugins/{}", plugin["id"].as_str().unwrap()),
                key,
                patch,
            )
            .await;
        assert_eq!(status, 200, "{patched}");
        patched
    }

    /// The plugin's JSON once its newest version has compiled (`status` no longer
    /// `compiling`); asserts it ended `expected` (`ready` or `failed`).
    pub async fn compiled(&self, key: &str, plugin_id: &str, expected: &str) -> Value {
        let path = format!("/v1/plugins/{plugin_id}");
        let plugin = eventually(
            &format!("plugin {plugin_id} compiled"),
            Duration::from_secs(120),
            || async {
                let (status, p) = self.get(&path, key).await;
                assert_eq!(status, 200, "{p}");
                (p["status"] != "compiling").then_some(p)
            },
        )
        .await;
        assert_eq!(plugin["status"], expected, "{plugin}");
        plugin
    }

    /// Uploads `bytes` as a new version of a plugin (`PUT`), expecting `202`; returns the
    /// plugin's JSON as answered (its `latest_version` is the upload).
    pub async fn upload_version(&self, key: &str, plugin_id: &str, bytes: Vec<u8>) -> Value {
        let resp = self
            .http
            .put(self.url(&format!("/v1/plugins/{plugin_id}")))
            .bearer_auth(key)
            .header("content-type", "application/wasm")
            .body(bytes)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let plugin: Value = resp.json().await.unwrap();
        assert_eq!(status, 202, "{plugin}");
        plugin
    }

    /// A plugin's log lines, once one of them satisfies `wanted` (logs are written in batches).
    pub async fn logs_with(
        &self,
        key: &str,
        plugin_id: &str,
        wanted: impl Fn(&Value) -> bool,
    ) -> Vec<Value> {
        let path = format!("/v1/plugins/{plugin_id}/logs?limit=1000");
        eventually(
            &format!("a matching log line of {plugin_id}"),
            Duration::from_secs(15),
            || async {
                let (_, logs) = self.get(&path, key).await;
                let lines = logs["data"].as_array().cloned().unwrap_or_default();
                lines.iter().any(&wanted).then_some(lines)
            },
        )
        .await
    }

    /// The Prometheus text of `/metrics`.
    pub async fn metrics(&self) -> String {
        self.http
            .get(self.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// Posts one event; returns its JSON.
    pub async fn event(&self, key: &str, body: Value) -> Value {
        let (status, e) = self.post("/v1/events", key, body).await;
        assert_eq!(status, 202, "{e}");
        e
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(url) = self.database_url.take() {
            drop_database(&url);
        }
    }
}

/// The PostgreSQL cluster to run servers on, when the tests run on PostgreSQL
/// (`WASMHOOK_TEST_BACKEND=postgres`, with the cluster's URL in `WASMHOOK_TEST_DATABASE_URL`).
pub fn postgres_cluster() -> Option<String> {
    match std::env::var("WASMHOOK_TEST_BACKEND").as_deref() {
        Ok("postgres") => Some(std::env::var("WASMHOOK_TEST_DATABASE_URL").expect(
            "WASMHOOK_TEST_BACKEND=postgres needs WASMHOOK_TEST_DATABASE_URL \
             (eval \"$(scripts/pg-test-cluster start)\")",
        )),
        Ok("sqlite") | Ok("") | Err(_) => None,
        Ok(other) => panic!("WASMHOOK_TEST_BACKEND={other}: expected sqlite or postgres"),
    }
}

/// True (with a note) when the tests run on PostgreSQL: for the few tests about SQLite's own
/// files (what a copy of the database file reveals, the data dir's database after a key
/// rotation), which have no PostgreSQL counterpart.
pub fn sqlite_only(test: &str) -> bool {
    let skip = postgres_cluster().is_some();
    if skip {
        eprintln!("{test}: about the SQLite database file; skipped on PostgreSQL");
    }
    skip
}

/// The backend of the `wasmhook serve` processes a test starts itself (the process and
/// compile-memory tests), chosen like [`TestServer`]'s: SQLite in the data dir by default; on
/// PostgreSQL a fresh database of its own, which every process of the test shares (a restart
/// keeps the data, as the data dir does) and which is dropped with this value.
pub struct ProcessDatabase {
    url: Option<String>,
}

impl ProcessDatabase {
    pub async fn new() -> ProcessDatabase {
        let url = match postgres_cluster() {
            Some(base) => Some(fresh_database(&base).await),
            None => None,
        };
        ProcessDatabase { url }
    }

    /// The options that point a `wasmhook serve` at it: `--database-url URL` on PostgreSQL,
    /// none on SQLite.
    pub fn args(&self) -> Vec<String> {
        match &self.url {
            Some(url) => vec!["--database-url".into(), url.clone()],
            None => Vec::new(),
        }
    }

    /// True when the processes run on SQLite (their database is a file in the data dir).
    pub fn is_sqlite(&self) -> bool {
        self.url.is_none()
    }
}

impl Drop for ProcessDatabase {
    fn drop(&mut self) {
        if let Some(url) = self.url.take() {
            drop_database(&url);
        }
    }
}

/// Creates an empty database on the cluster at `base` and returns its URL.
pub async fn fresh_database(base: &str) -> String {
    let (client, connection) = tokio_postgres::connect(base, tokio_postgres::NoTls)
        .await
        .expect("the test cluster answers");
    let driver = tokio::spawn(connection);
    let name = format!("wasmhook_test_{:016x}", rand_u64());
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .expect("CREATE DATABASE");
    drop(client);
    let _ = driver.await;
    let mut url = url::Url::parse(base).expect("a URL");
    url.set_path(&name);
    url.to_string()
}

/// Drops the database at `url` (ending its sessions), best effort: the cluster's own start and
/// stop drop whatever is left.
fn drop_database(url: &str) {
    let Ok(parsed) = url::Url::parse(url) else {
        return;
    };
    let name = parsed.path().trim_start_matches('/').to_string();
    let mut admin = parsed.clone();
    admin.set_path("postgres");
    // Drop runs inside the tests' runtime: a thread of its own may block on another.
    let _ = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        rt.block_on(async move {
            if let Ok((client, connection)) =
                tokio_postgres::connect(admin.as_str(), tokio_postgres::NoTls).await
            {
                let driver = tokio::spawn(connection);
                let _ = client
                    .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .await;
                drop(client);
                let _ = driver.await;
            }
        });
    })
    .join();
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    h.finish()
}

/// Polls `check` until it returns `Some`, or panics after `timeout` naming `what`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until `url` answers 200 (a process that was just started), or panics naming `what`.
pub async fn answers_ok(http: &reqwest::Client, url: &str, what: &str) {
    eventually(what, Duration::from_secs(30), || {
        let request = http.get(url).send();
        async move { request.await.ok().filter(|r| r.status() == 200).map(|_| ()) }
    })
    .await
}

/// Sends one request to a server started apart from [`TestServer`] (a process under test) and
/// returns its JSON body.
pub async fn json_call(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    token: &str,
    body: Option<Value>,
) -> Value {
    let mut req = http.request(method, url).bearer_auth(token);
    if let Some(b) = body {
        req = req.json(&b);
    }
    req.send().await.unwrap().json().await.unwrap()
}

/// Sends `sig` (e.g. `-STOP`) to a child process with kill(1).
pub fn signal(child: &std::process::Child, sig: &str) {
    let ok = std::process::Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill {sig}");
}

/// The compiled `wasmhook` binary, built first if missing.
pub fn wasmhook_bin() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let bin = target.join("debug").join("wasmhook");
    if !bin.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let ok = std::process::Command::new(cargo)
            .args(["build", "-p", "wasmhook", "--bin", "wasmhook"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .expect("running cargo build")
            .success();
        assert!(ok, "building the wasmhook binary failed");
    }
    bin
}
