//! Several `wasmhook` processes on one PostgreSQL database, as an operator runs them: the
//! behaviours that need real processes. Each test gets a fresh database on the test cluster
//! (`WASMHOOK_TEST_DATABASE_URL`, which the test command sets; without it these tests say so
//! and pass nothing off as checked).

use crate::common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::common::{ADMIN, Receiver, answers_ok, eventually, json_call, signal, wasmhook_bin};
use serde_json::json;

/// A node; killed when dropped.
struct Node {
    child: Child,
    base: String,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts a node on `database_url` with its own data dir, and the first node's key file
/// (`None`: this is the first node, which makes one in its data dir).
async fn node(dir: &Path, database_url: &str, key_file: Option<&Path>, extra: &[&str]) -> Node {
    let port = free_port();
    let mut command = Command::new(wasmhook_bin());
    command
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
        ])
        .arg(dir)
        .args(["--database-url", database_url]);
    if let Some(key_file) = key_file {
        command.arg("--encryption-key-file").arg(key_file);
    }
    let child = command
        .args(["--admin-token", ADMIN, "--allow-network", "127.0.0.0/8"])
        .args(extra)
        .env("WASMHOOK_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting wasmhook");
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    answers_ok(&http, &format!("{base}/readyz"), "the node is ready").await;
    Node { child, base }
}

async fn metric(http: &reqwest::Client, n: &Node, line: &str) -> bool {
    let text = http
        .get(format!("{}/metrics", n.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines().any(|l| l == line)
}

/// A node paused (SIGSTOP) past its lease while its attempt is out, then resumed (SIGCONT),
/// cannot record its outcome over that of the node that claimed the delivery after the lease:
/// the claim token fences it off.
#[tokio::test]
async fn a_node_paused_past_its_lease_cannot_overwrite_the_new_owners_result() {
    let Ok(cluster) = std::env::var("WASMHOOK_TEST_DATABASE_URL") else {
        eprintln!("WASMHOOK_TEST_DATABASE_URL is not set: no PostgreSQL to run several nodes on");
        return;
    };
    let database_url = common::fresh_database(&cluster).await;
    let tmp = tempfile::tempdir().unwrap();
    let http = reqwest::Client::new();
    let receiver = Receiver::start().await;
    // Node 1's attempt is answered (with a failure) only after node 1 has been paused; the
    // second request (node 2's) succeeds at once.
    receiver.set_delay(Duration::from_secs(3));
    receiver.respond(|_, n| {
        let status = if n == 1 { 500 } else { 200 };
        axum::response::IntoResponse::into_response(
            axum::http::StatusCode::from_u16(status).unwrap(),
        )
    });
    // The lease is the delivery timeout plus 5 s.
    let opts = ["--delivery-timeout", "2s", "--retry-schedule", "10ms"];
    let node1 = node(&tmp.path().join("node1"), &database_url, None, &opts).await;
    let key_file = tmp.path().join("node1").join("encryption-keys");
    let acc = json_call(
        &http,
        reqwest::Method::POST,
        format!("{}/v1/accounts", node1.base),
        ADMIN,
        Some(json!({"name": "a"})),
    )
    .await;
    let key = acc["api_key"].as_str().unwrap().to_string();
    json_call(
        &http,
        reqwest::Method::POST,
        format!("{}/v1/subscriptions", node1.base),
        &key,
        Some(json!({"url": receiver.url})),
    )
    .await;
    let event = json_call(
        &http,
        reqwest::Method::POST,
        format!("{}/v1/events", node1.base),
        &key,
        Some(json!({"type": "a", "payload": {"x": 1}})),
    )
    .await;
    let event_id = event["id"].as_str().unwrap().to_string();
    eventually(
        "node 1's attempt reaches the receiver",
        Duration::from_secs(30),
        || {
            let n = receiver.max_in_flight();
            async move { (n >= 1).then_some(()) }
        },
    )
    .await;
    signal(&node1.child, "-STOP");
    receiver.set_delay(Duration::ZERO);
    // Node 2 starts while node 1 is paused; it claims the delivery once node 1's lease ends.
    let node2 = node(
        &tmp.path().join("node2"),
        &database_url,
        Some(&key_file),
        &opts,
    )
    .await;
    let deliveries = format!("{}/v1/events/{event_id}/deliveries", node2.base);
    let delivered = eventually("node 2 delivers it", Duration::from_secs(60), || {
        let (http, url, key) = (http.clone(), deliveries.clone(), key.clone());
        async move {
            let page = json_call(&http, reqwest::Method::GET, url, &key, None).await;
            let d = page["data"][0].clone();
            (d["status"] == "succeeded").then_some(d)
        }
    })
    .await;
    signal(&node1.child, "-CONT");
    // Node 1 wakes up, reads its 500 (or its timeout) and tries to record it: refused.
    eventually(
        "node 1 finds its lease lost",
        Duration::from_secs(30),
        || {
            let http = http.clone();
            let node1 = &node1;
            async move {
                metric(
                    &http,
                    node1,
                    r#"wasmhook_deliveries_total{outcome="lease_lost"} 1"#,
                )
                .await
                .then_some(())
            }
        },
    )
    .await;
    let id = delivered["id"].as_str().unwrap();
    let d = json_call(
        &http,
        reqwest::Method::GET,
        format!("{}/v1/deliveries/{id}", node1.base),
        &key,
        None,
    )
    .await;
    assert_eq!(d["status"], "succeeded", "{d}");
    let attempts = d["attempt_log"].as_array().expect("the attempt log");
    assert_eq!(
        attempts.len(),
        1,
        "only the new owner's attempt is recorded: {d}"
    );
    assert_eq!(attempts[0]["status_code"], 200, "{d}");
    assert_eq!(receiver.received().len(), 2, "both nodes sent it");
}
