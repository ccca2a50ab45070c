//! Issue 15, lines 6 and 7: configuration changed through one node is in force on every node of
//! a shared PostgreSQL database. Two real `wasmhook` processes on one fresh database (on the test
//! cluster named by `WASMHOOK_TEST_DATABASE_URL`; without it these tests say so and check
//! nothing).
//!
//! Which node delivers is forced by pausing the other one (SIGSTOP): a paused node claims
//! nothing, and it is resumed only to make a change through its API. To show that a node follows
//! a change it did not make, the node that delivers holds what the change replaces before the
//! change: the plugin version it has loaded, or a delivery it claimed (with the subscription as
//! it was) and keeps queued behind a slow one (`--delivery-concurrency 1`).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use reqwest::Method;
use serde_json::{Value, json};
use sha2::Sha256;
use wasmhook_plugin_artifacts as wasm;

use crate::common::{self, ADMIN, Receiver, answers_ok, eventually, signal, wasmhook_bin};

const WAIT: Duration = Duration::from_secs(60);
/// How long the slow receiver holds the delivery that keeps node 2's only slot busy: longer
/// than the test needs to make its change through node 1 (a few requests).
const SLOW: Duration = Duration::from_secs(5);

/// A node; killed when dropped.
struct Node {
    child: Child,
    base: String,
    dir: PathBuf,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Node {
    /// Starts a node on `database_url` with its own data dir (its log in `<dir>.log`), and the
    /// first node's key file (`None`: this is the first node, which makes one).
    async fn start(dir: PathBuf, database_url: &str, key_file: Option<&Path>) -> Node {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let log = std::fs::File::create(dir.with_extension("log")).unwrap();
        let mut command = Command::new(wasmhook_bin());
        command
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .arg("--data-dir")
            .arg(&dir)
            .args(["--database-url", database_url]);
        if let Some(key_file) = key_file {
            command.arg("--encryption-key-file").arg(key_file);
        }
        let child = command
            .args(["--admin-token", ADMIN, "--allow-network", "127.0.0.0/8"])
            .args(["--delivery-concurrency", "1", "--delivery-timeout", "10s"])
            .args(["--retry-schedule", "10ms"])
            .env("WASMHOOK_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting wasmhook");
        let base = format!("http://127.0.0.1:{port}");
        answers_ok(
            &reqwest::Client::new(),
            &format!("{base}/readyz"),
            "the node is ready",
        )
        .await;
        Node { child, base, dir }
    }

    fn pause(&self) {
        signal(&self.child, "-STOP");
    }

    fn resume(&self) {
        signal(&self.child, "-CONT");
    }
}

/// Two nodes on one fresh database, an account, and the receiver.
struct Pair {
    node1: Node,
    node2: Node,
    key: String,
    http: reqwest::Client,
    _tmp: tempfile::TempDir,
}

impl Pair {
    async fn start(test: &str) -> Option<Pair> {
        let Ok(cluster) = std::env::var("WASMHOOK_TEST_DATABASE_URL") else {
            eprintln!(
                "{test}: WASMHOOK_TEST_DATABASE_URL is not set: no PostgreSQL to run two nodes on"
            );
            return None;
        };
        let database_url = common::fresh_database(&cluster).await;
        let tmp = tempfile::tempdir().unwrap();
        let node1 = Node::start(tmp.path().join("node1"), &database_url, None).await;
        let key_file = tmp.path().join("node1").join("encryption-keys");
        let node2 = Node::start(tmp.path().join("node2"), &database_url, Some(&key_file)).await;
        let http = reqwest::Client::new();
        let (status, account) = call(
            &http,
            Method::POST,
            format!("{}/v1/accounts", node1.base),
            ADMIN,
            Some(json!({"name": "a"})),
        )
        .await;
        assert_eq!(status, 201, "{account}");
        Some(Pair {
            key: account["api_key"].as_str().unwrap().to_string(),
            node1,
            node2,
            http,
            _tmp: tmp,
        })
    }

    async fn call(&self, node: &Node, method: Method, path: &str, body: Option<Value>) -> Value {
        let (status, value) = call(
            &self.http,
            method,
            format!("{}{path}", node.base),
            &self.key,
            body,
        )
        .await;
        assert!((200..300).contains(&status), "{path}: {status} {value}");
        value
    }

    async fn event(&self, node: &Node, event_type: &str, payload: Value) -> String {
        let e = self
            .call(
                node,
                Method::POST,
                "/v1/events",
                Some(json!({"type": event_type, "payload": payload})),
            )
            .await;
        e["id"].as_str().unwrap().to_string()
    }

    /// The only delivery of an event.
    async fn delivery(&self, node: &Node, event_id: &str) -> Value {
        eventually(&format!("the delivery of {event_id}"), WAIT, || async {
            let list = self
                .call(
                    node,
                    Method::GET,
                    &format!("/v1/events/{event_id}/deliveries"),
                    None,
                )
                .await;
            let id = list["data"].get(0)?["id"].as_str()?.to_string();
            Some(
                self.call(node, Method::GET, &format!("/v1/deliveries/{id}"), None)
                    .await,
            )
        })
        .await
    }

    /// Uploads `bytes` through `node` (a new plugin, or a new version of `id`) and waits until
    /// that node says the upload is current and ready.
    async fn upload(&self, node: &Node, id: Option<&str>, bytes: Vec<u8>) -> Value {
        let request = match id {
            None => self.http.post(format!("{}/v1/plugins?name=p", node.base)),
            Some(id) => self.http.put(format!("{}/v1/plugins/{id}", node.base)),
        };
        let resp = request
            .bearer_auth(&self.key)
            .header("content-type", "application/wasm")
            .body(bytes)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 202);
        let uploaded: Value = resp.json().await.unwrap();
        let id = uploaded["id"].as_str().unwrap().to_string();
        let version = uploaded["latest_version"].clone();
        eventually("the upload is ready", WAIT, || async {
            let p = self
                .call(node, Method::GET, &format!("/v1/plugins/{id}"), None)
                .await;
            assert_ne!(p["status"], "failed", "{p}");
            (p["status"] == "ready" && p["version"] == version).then_some(p)
        })
        .await
    }
}

async fn call(
    http: &reqwest::Client,
    method: Method,
    url: String,
    token: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = http.request(method, url).bearer_auth(token);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

fn signature_ok(secret: &str, got: &common::Received) -> bool {
    let (id, ts) = (
        got.header("webhook-id").unwrap(),
        got.header("webhook-timestamp").unwrap(),
    );
    let key = STANDARD
        .decode(secret.strip_prefix("whsec_").unwrap())
        .unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{id}.{ts}.").as_bytes());
    mac.update(&got.body);
    let expected = format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()));
    got.header("webhook-signature")
        .unwrap()
        .split(' ')
        .any(|s| s == expected)
}

/// Milliseconds from now until a delivery's `next_attempt_at` (negative: past).
fn due_in_ms(delivery: &Value) -> i64 {
    let at = delivery["next_attempt_at"].as_str().unwrap_or_else(|| {
        panic!("a pending delivery has next_attempt_at: {delivery}");
    });
    let at =
        time::OffsetDateTime::parse(at, &time::format_description::well_known::Rfc3339).unwrap();
    (at - time::OffsetDateTime::now_utc()).whole_milliseconds() as i64
}

/// With node 1 paused, node 2 delivers an event to the slow receiver (its only slot busy for
/// [`SLOW`]) and claims the delivery of an event for `fast_sub`, which waits in its memory
/// behind it. Returns the fast event's id; node 1 is resumed.
async fn queue_on_node2(pair: &Pair, slow: &Receiver) -> String {
    pair.node1.pause();
    pair.event(&pair.node2, "slow", json!({})).await;
    eventually(
        "node 2 is delivering to the slow receiver",
        WAIT,
        || async { (slow.max_in_flight() >= 1).then_some(()) },
    )
    .await;
    let fast = pair.event(&pair.node2, "fast", json!({"n": 1})).await;
    // Claimed: due only when its lease (the delivery timeout plus 5 s) ends.
    eventually("node 2 claims the fast delivery", WAIT, || async {
        let d = pair.delivery(&pair.node2, &fast).await;
        (d["status"] == "pending" && due_in_ms(&d) > 5_000).then_some(())
    })
    .await;
    pair.node1.resume();
    fast
}

/// A plugin uploaded and attached through node 1 runs on node 2, compiled by node 2 from the
/// bytes in the database into its own data dir; a new version uploaded through node 2 is what
/// node 1 runs for an event posted a second after it was ready.
#[tokio::test]
async fn plugin_versions_uploaded_through_one_node_run_on_the_other() {
    let Some(pair) =
        Pair::start("plugin_versions_uploaded_through_one_node_run_on_the_other").await
    else {
        return;
    };
    let r = Receiver::start().await;
    // Version 1 redacts e-mail addresses; version 2 keeps events as they are.
    let plugin = pair
        .upload(
            &pair.node1,
            None,
            std::fs::read(wasm::PII_REDACTOR).unwrap(),
        )
        .await;
    let id = plugin["id"].as_str().unwrap().to_string();
    pair.call(
        &pair.node1,
        Method::POST,
        "/v1/subscriptions",
        Some(json!({"url": format!("{}/hook", r.url), "transform_plugin_id": id, "event_types": ["message:created"]})),
    )
    .await;

    pair.node1.pause();
    pair.event(
        &pair.node2,
        "message:created",
        json!({"text": "one: jane@example.com"}),
    )
    .await;
    let got = eventually("node 2 delivers the first message", WAIT, || async {
        r.at("/hook").pop()
    })
    .await;
    assert_eq!(
        got.json()["data"]["text"],
        "one: [email]",
        "node 2 ran version 1"
    );
    // Node 2 compiled it into its own data dir, keyed by the component's hash, from the
    // database's bytes: it never had the uploaded file.
    let versions = pair
        .call(
            &pair.node2,
            Method::GET,
            &format!("/v1/plugins/{id}/versions"),
            None,
        )
        .await;
    let sha = versions["data"][0]["sha256"].as_str().unwrap().to_string();
    let compiled: Vec<String> = std::fs::read_dir(pair.node2.dir.join("plugins/compiled"))
        .expect("node 2 keeps compiled plugins in its data dir")
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        compiled
            .iter()
            .any(|n| n.starts_with(&format!("{sha}-")) && n.ends_with(".cwasm")),
        "{compiled:?}"
    );
    assert!(!pair.node2.dir.join("plugins").join(&id).exists());
    pair.node1.resume();

    // Version 2 through node 2, while node 1 runs version 1.
    pair.upload(&pair.node2, Some(&id), std::fs::read(wasm::NOOP).unwrap())
        .await;
    let ready = tokio::time::Instant::now();
    pair.node2.pause();
    // The rule is "within a second of being ready": the first event posted a second after the
    // node that compiled it said so (not a wait for something to happen).
    tokio::time::sleep_until(ready + Duration::from_secs(1)).await;
    pair.event(
        &pair.node1,
        "message:created",
        json!({"text": "two: jane@example.com"}),
    )
    .await;
    let got = eventually("node 1 delivers the second message", WAIT, || async {
        r.at("/hook").into_iter().nth(1)
    })
    .await;
    assert_eq!(
        got.json()["data"]["text"],
        "two: jane@example.com",
        "node 1 ran version 2"
    );
    pair.node2.resume();
}

/// A secret rotated through node 1 while node 2 holds a claimed delivery (claimed with the old
/// secret) is what node 2 signs that delivery with.
#[tokio::test]
async fn a_secret_rotated_through_one_node_signs_the_others_deliveries() {
    let Some(pair) =
        Pair::start("a_secret_rotated_through_one_node_signs_the_others_deliveries").await
    else {
        return;
    };
    let (slow, r) = (Receiver::start().await, Receiver::start().await);
    slow.set_delay(SLOW);
    pair.call(
        &pair.node1,
        Method::POST,
        "/v1/subscriptions",
        Some(json!({"url": slow.url, "event_types": ["slow"]})),
    )
    .await;
    let sub = pair
        .call(
            &pair.node1,
            Method::POST,
            "/v1/subscriptions",
            Some(json!({"url": r.url, "event_types": ["fast"]})),
        )
        .await;
    let sub_id = sub["id"].as_str().unwrap();
    let old = sub["secret"].as_str().unwrap().to_string();

    queue_on_node2(&pair, &slow).await;
    let rotated = pair
        .call(
            &pair.node1,
            Method::POST,
            &format!("/v1/subscriptions/{sub_id}/secret/rotate"),
            Some(json!({})),
        )
        .await;
    let new = rotated["secret"].as_str().unwrap().to_string();
    assert_ne!(new, old);
    assert!(
        r.received().is_empty(),
        "the delivery was sent before the rotation: the slow receiver answered too early"
    );
    let got = eventually("node 2 sends the queued delivery", WAIT, || async {
        r.received().pop()
    })
    .await;
    assert!(
        signature_ok(&new, &got),
        "signed with the new secret: {:?}",
        got.header("webhook-signature")
    );
    assert!(
        signature_ok(&old, &got),
        "and the old one during the rotation"
    );
}

/// A subscription disabled through node 1 while node 2 holds a claimed delivery for it: node 2
/// gives the delivery back unsent.
#[tokio::test]
async fn a_subscription_disabled_through_one_node_stops_the_others_deliveries() {
    let Some(pair) =
        Pair::start("a_subscription_disabled_through_one_node_stops_the_others_deliveries").await
    else {
        return;
    };
    let (slow, r) = (Receiver::start().await, Receiver::start().await);
    slow.set_delay(SLOW);
    pair.call(
        &pair.node1,
        Method::POST,
        "/v1/subscriptions",
        Some(json!({"url": slow.url, "event_types": ["slow"]})),
    )
    .await;
    let sub = pair
        .call(
            &pair.node1,
            Method::POST,
            "/v1/subscriptions",
            Some(json!({"url": r.url, "event_types": ["fast"]})),
        )
        .await;
    let sub_id = sub["id"].as_str().unwrap();

    let fast = queue_on_node2(&pair, &slow).await;
    pair.call(
        &pair.node1,
        Method::PATCH,
        &format!("/v1/subscriptions/{sub_id}"),
        Some(json!({"status": "disabled"})),
    )
    .await;
    assert!(
        slow.received().is_empty(),
        "the slow receiver answered before the subscription was disabled"
    );
    // Once the slow delivery is done, node 2's slot is free: it either sends the queued one
    // (wrong) or gives it back, due now but not claimed while the subscription is disabled.
    let d = eventually(
        "node 2 settles or gives back the fast delivery",
        WAIT,
        || async {
            let d = pair.delivery(&pair.node1, &fast).await;
            let settled = d["status"] != "pending";
            let released = !settled && due_in_ms(&d) < 1_000;
            (settled || released || !r.received().is_empty()).then_some(d)
        },
    )
    .await;
    assert!(r.received().is_empty(), "sent after it was disabled: {d}");
    assert_eq!(d["status"], "pending", "{d}");
    assert_eq!(d["attempts"], 0, "{d}");
}

/// A plugin's settings changed through node 2 are what node 1 runs it with for an event posted
/// a second after the change was answered.
#[tokio::test]
async fn plugin_settings_changed_through_one_node_apply_on_the_other() {
    let Some(pair) =
        Pair::start("plugin_settings_changed_through_one_node_apply_on_the_other").await
    else {
        return;
    };
    let r = Receiver::start().await;
    let rules = |source: &str| {
        json!({"config": {"rules": format!(
            r#"[{{"type": "message:*", "field": "/source", "equals": "{source}", "action": "drop"}}]"#
        )}})
    };
    let router = pair
        .upload(&pair.node1, None, std::fs::read(wasm::ROUTER).unwrap())
        .await;
    let id = router["id"].as_str().unwrap().to_string();
    pair.call(
        &pair.node1,
        Method::PATCH,
        &format!("/v1/plugins/{id}"),
        Some(rules("instagram")),
    )
    .await;
    pair.call(
        &pair.node1,
        Method::POST,
        "/v1/subscriptions",
        Some(json!({"url": format!("{}/hook", r.url), "transform_plugin_id": id, "event_types": ["message:created"]})),
    )
    .await;
    let message = |n: u32| json!({"text": format!("m{n}"), "source": "facebook"});

    // Node 1 runs it with the rules it was given: facebook passes.
    pair.node2.pause();
    pair.event(&pair.node1, "message:created", message(1)).await;
    eventually("node 1 delivers the first message", WAIT, || async {
        r.at("/hook").pop()
    })
    .await;
    pair.node2.resume();

    // Facebook dropped from now on, through node 2.
    pair.call(
        &pair.node2,
        Method::PATCH,
        &format!("/v1/plugins/{id}"),
        Some(rules("facebook")),
    )
    .await;
    let changed = tokio::time::Instant::now();
    pair.node2.pause();
    // As for versions: the first event posted a second after the change was answered.
    tokio::time::sleep_until(changed + Duration::from_secs(1)).await;
    let second = pair.event(&pair.node1, "message:created", message(2)).await;
    let d = eventually("node 1 settles the second message", WAIT, || async {
        let d = pair.delivery(&pair.node1, &second).await;
        (d["status"] != "pending").then_some(d)
    })
    .await;
    assert_eq!(d["status"], "filtered", "node 1 ran the new rules: {d}");
    assert_eq!(r.at("/hook").len(), 1);
    pair.node2.resume();
}
