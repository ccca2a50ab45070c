//! Compiling an upload does not leave its working memory behind: after four uploads of a large
//! component, the real `wasmhook` process is within 100 MB of a fresh start with the same
//! plugins.
//!
//! The component is the Python example plugin (18 MB, componentize-py) when
//! `WASMHOOK_OTHER_LANGUAGES_DIR` holds it, as under `scripts/test`; elsewhere a component
//! generated here with thousands of functions, which compiles just as hard and then fails to
//! link (its handler export has no function), so only the compilation's memory is measured.
//! Uploads compile after their request: each is awaited before the next. The processes run on
//! the backend the harness chose ([`ProcessDatabase`]).

use std::fmt::Write as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::common::{ADMIN, ProcessDatabase, eventually, wasmhook_bin};
use serde_json::{Value, json};

/// How much larger than a fresh start the server may be after the uploads.
const MARGIN_BYTES: u64 = 100 * 1000 * 1000;

struct Server {
    child: Child,
    base: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    async fn start(dir: &Path, db: &ProcessDatabase) -> Server {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(wasmhook_bin())
            .args([
                "serve",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--data-dir",
            ])
            .arg(dir)
            .args(db.args())
            .args(["--admin-token", ADMIN, "--log-format", "json"])
            .env("WASMHOOK_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting wasmhook");
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        eventually("the server answers", Duration::from_secs(60), || {
            let req = http.get(format!("{base}/healthz")).send();
            async move { req.await.ok().filter(|r| r.status() == 200).map(|_| ()) }
        })
        .await;
        Server { child, base }
    }

    /// Resident memory, from `/proc/PID/status`.
    fn rss_bytes(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .expect("VmRSS in /proc/PID/status");
        kib * 1024
    }

    async fn stop(mut self) {
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        let child = &mut self.child;
        eventually("the server exits", Duration::from_secs(30), || {
            let exited = child.try_wait().unwrap().is_some();
            async move { exited.then_some(()) }
        })
        .await;
    }
}

/// The Python example plugin if it was built, else a generated component that passes the
/// upload's checks and compiles but cannot be linked; with the status its versions end in.
fn component() -> (Vec<u8>, &'static str) {
    if let Some(dir) = std::env::var_os("WASMHOOK_OTHER_LANGUAGES_DIR") {
        let path = Path::new(&dir).join("python_hello.wasm");
        let bytes = std::fs::read(&path)
            .unwrap_or_else(|e| panic!("{}: {e} (scripts/test builds it)", path.display()));
        return (bytes, "ready");
    }
    (generated_component(), "failed")
}

/// A component whose core module has thousands of functions of arithmetic over many locals:
/// work for the register allocator, like a language runtime's interpreter loop.
fn generated_component() -> Vec<u8> {
    let mut wat = String::from("(component (core module\n");
    for f in 0..3000 {
        write!(
            wat,
            "(func (export \"f{f}\") (param i64) (result i64) (local i64 i64 i64 i64 i64 i64)"
        )
        .unwrap();
        for i in 0..60 {
            let (a, b) = (1 + i % 6, 1 + (i * 5 + 3) % 6);
            write!(
                wat,
                " local.get {a} local.get 0 i64.const {} i64.mul i64.add local.get {b} i64.xor local.set {a}",
                f * 61 + i
            )
            .unwrap();
        }
        wat.push_str(" local.get 1 local.get 2 i64.add local.get 3 i64.add local.get 4 i64.add local.get 5 i64.add local.get 6 i64.add)\n");
    }
    // It exports the handler's name (so the upload's checks pass), but not its function.
    wat.push_str(")(instance $h) (export \"wasmhook:plugin/handler@0.1.0\" (instance $h)))");
    wat::parse_str(&wat).expect("valid component text")
}

async fn account(http: &reqwest::Client, base: &str) -> String {
    let acc: Value = http
        .post(format!("{base}/v1/accounts"))
        .bearer_auth(ADMIN)
        .json(&json!({"name": "uploads"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    acc["api_key"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn four_uploads_of_a_large_component_leave_no_compiler_memory_behind() {
    let (bytes, expected) = component();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let http = reqwest::Client::new();

    let db = ProcessDatabase::new().await;
    let server = Server::start(&dir, &db).await;
    let key = account(&http, &server.base).await;
    let before = server.rss_bytes();
    for i in 0..4 {
        let resp = http
            .post(format!("{}/v1/plugins?name=big-{i}", server.base))
            .bearer_auth(&key)
            .header("content-type", "application/wasm")
            .body(bytes.clone())
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let body: Value = resp.json().await.unwrap();
        assert_eq!(status, 202, "{body}");
        // Compiled after the request: wait for it.
        let url = format!(
            "{}/v1/plugins/{}",
            server.base,
            body["id"].as_str().unwrap()
        );
        let done: Value = eventually("the upload compiled", Duration::from_secs(300), || {
            let req = http.get(&url).bearer_auth(&key).send();
            async move {
                let p: Value = req.await.ok()?.json().await.ok()?;
                (p["status"] != "compiling").then_some(p)
            }
        })
        .await;
        assert_eq!(done["status"], expected, "{done}");
    }
    let after_uploads = server.rss_bytes();
    server.stop().await;

    // The same plugins, loaded from their stored artifacts by a fresh start.
    let fresh = Server::start(&dir, &db).await;
    let (_, list): (u16, Value) = {
        let resp = http
            .get(format!("{}/v1/plugins", fresh.base))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap();
        (resp.status().as_u16(), resp.json().await.unwrap())
    };
    assert_eq!(list["data"].as_array().unwrap().len(), 4, "{list}");
    let fresh_rss = fresh.rss_bytes();
    let mb = |b: u64| b / 1_000_000;
    eprintln!(
        "RSS: {} MB before the uploads, {} MB after four, {} MB after a fresh start ({} bytes uploaded each)",
        mb(before),
        mb(after_uploads),
        mb(fresh_rss),
        bytes.len()
    );
    assert!(
        after_uploads <= fresh_rss + MARGIN_BYTES,
        "after four uploads the server holds {} MB, a fresh start with the same plugins {} MB",
        mb(after_uploads),
        mb(fresh_rss)
    );
}
