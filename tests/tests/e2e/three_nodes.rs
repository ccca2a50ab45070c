//! Three real `wasmhook` processes on one PostgreSQL database with a real receiver, as an
//! operator runs them behind a load balancer: events posted round-robin to the three, one node
//! killed with `kill -9` in the middle, the database restarted in the middle, a plugin and its
//! next version uploaded through different nodes.
//!
//! Sizes are small and the retry schedule fast so that each test runs in a minute or two on a
//! loaded two-core machine in a debug build; every wait polls recorded state with a generous
//! deadline, and no assertion is about time except the one rule that is: a plugin version is in
//! force on every node 1 s after it is ready.
//!
//! Which node delivered what: every node counts the outcomes it recorded in its own `/metrics`
//! (`wasmhook_deliveries_total{outcome="succeeded"}`, `filtered` for events a plugin dropped,
//! and `wasmhook_plugin_instances_total` for plugin runs), so the three counters split the work.
//! What the receiver got is compared with the attempt logs (the `attempts` of every delivery,
//! from the API): a request the receiver got that no attempt records was sent by a node that
//! died before it could record it.
//!
//! The tests run on the test cluster (`WASMHOOK_TEST_DATABASE_URL`, which the test command
//! sets), each on a fresh database; the database restart runs on a private cluster of its own
//! (initdb and pg_ctl from the same PostgreSQL binaries), since the test cluster serves other
//! tests at the same time. Without them the tests say so and check nothing.

use crate::common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::{ADMIN, Receiver, answers_ok, eventually, json_call};
use serde_json::{Value, json};

/// How long any one stage may take before the test fails (a loaded 2-core machine, a debug
/// build, three servers and PostgreSQL).
const DEADLINE: Duration = Duration::from_secs(120);

/// Each node's `--delivery-concurrency`: a node has at most this many attempts out at once, and
/// on PostgreSQL an attempt holds its slot until its outcome is committed, so a node that dies
/// leaves at most this many requests sent and not recorded.
const NODE_CONCURRENCY: usize = 8;

/// Options every node gets: a fast retry schedule and breaker, a lease of 15 s (the delivery
/// timeout plus 5 s), a small pool.
fn node_options() -> Vec<String> {
    [
        "--admin-token",
        ADMIN,
        "--allow-network",
        "127.0.0.0/8",
        "--retry-schedule",
        "10ms,20ms,40ms,80ms,160ms,320ms,640ms,1s,1s,1s",
        "--circuit-breaker-cooldown",
        "20ms",
        "--circuit-breaker-max-cooldown",
        "100ms",
        "--delivery-timeout",
        "10s",
        "--delivery-concurrency",
        &NODE_CONCURRENCY.to_string(),
        "--subscription-max-in-flight",
        "64",
        "--database-pool-size",
        "6",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

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

impl Node {
    /// Starts a node on `database_url` with its own data dir, and the first node's key file
    /// (`None`: this is the first node, which makes one in its data dir).
    async fn start(dir: &Path, database_url: &str, key_file: Option<&Path>) -> Node {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut command = Command::new(common::wasmhook_bin());
        command
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .arg("--data-dir")
            .arg(dir)
            .args(["--database-url", database_url]);
        if let Some(key_file) = key_file {
            command.arg("--encryption-key-file").arg(key_file);
        }
        let child = command
            .args(node_options())
            .env("WASMHOOK_LOG", "error")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting wasmhook");
        let node = Node {
            child,
            base: format!("http://127.0.0.1:{port}"),
        };
        let http = reqwest::Client::new();
        answers_ok(&http, &format!("{}/readyz", node.base), "the node is ready").await;
        node
    }

    /// Kills the process with SIGKILL (`kill -9`): no shutdown, no outcome recorded.
    fn kill9(&mut self) {
        self.child.kill().expect("kill -9");
        self.child.wait().expect("the killed node is reaped");
    }

    /// True while the process runs.
    fn alive(&mut self) -> bool {
        self.child.try_wait().expect("the node's status").is_none()
    }

    /// The value of one sample of its `/metrics` (0 when absent), or `None` when the node does
    /// not answer.
    async fn metric(&self, http: &reqwest::Client, sample: &str) -> Option<f64> {
        let text = http
            .get(format!("{}/metrics", self.base))
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        Some(
            text.lines()
                .find_map(|l| l.strip_prefix(sample)?.strip_prefix(' '))
                .map_or(0.0, |v| v.trim().parse().expect("a number")),
        )
    }

    /// Deliveries this node recorded as succeeded.
    async fn succeeded(&self, http: &reqwest::Client) -> Option<f64> {
        self.metric(http, r#"wasmhook_deliveries_total{outcome="succeeded"}"#)
            .await
    }

    /// The status `/readyz` answers (`None`: no answer at all).
    async fn readyz(&self, http: &reqwest::Client) -> Option<u16> {
        let r = http
            .get(format!("{}/readyz", self.base))
            .send()
            .await
            .ok()?;
        Some(r.status().as_u16())
    }
}

/// Three nodes on `database_url`, an account and one subscription to a receiver.
struct Three {
    nodes: Vec<Node>,
    key: String,
    /// The subscription to the receiver.
    sub: String,
    receiver: Receiver,
    http: reqwest::Client,
    _tmp: tempfile::TempDir,
}

impl Three {
    async fn start(database_url: &str, receiver_delay: Duration) -> Three {
        let tmp = tempfile::tempdir().unwrap();
        let http = reqwest::Client::new();
        let receiver = Receiver::start().await;
        receiver.set_delay(receiver_delay);
        // The first node migrates the database and makes the key file the others share.
        let first = Node::start(&tmp.path().join("node1"), database_url, None).await;
        let key_file = tmp.path().join("node1").join("encryption-keys");
        let mut nodes = vec![first];
        for i in 2..=3 {
            let dir = tmp.path().join(format!("node{i}"));
            nodes.push(Node::start(&dir, database_url, Some(&key_file)).await);
        }
        let account = json_call(
            &http,
            reqwest::Method::POST,
            format!("{}/v1/accounts", nodes[0].base),
            ADMIN,
            Some(json!({"name": "three nodes"})),
        )
        .await;
        let key = account["api_key"].as_str().expect("an API key").to_string();
        let sub = json_call(
            &http,
            reqwest::Method::POST,
            format!("{}/v1/subscriptions", nodes[1].base),
            &key,
            Some(json!({"url": format!("{}/hook", receiver.url)})),
        )
        .await;
        assert_eq!(sub["status"], "active", "{sub}");
        Three {
            nodes,
            key,
            sub: sub["id"].as_str().expect("a subscription id").to_string(),
            receiver,
            http,
            _tmp: tmp,
        }
    }

    fn bases(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.base.clone()).collect()
    }

    /// Every delivery of the account (through `node`), from the API's pages.
    async fn deliveries(&self, node: usize) -> Vec<Value> {
        let mut all = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut url = format!("{}/v1/deliveries?limit=250", self.nodes[node].base);
            if let Some(c) = &cursor {
                url.push_str(&format!("&cursor={c}"));
            }
            let page = json_call(&self.http, reqwest::Method::GET, url, &self.key, None).await;
            all.extend(page["data"].as_array().expect("a page").iter().cloned());
            match page["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_string()),
                None => return all,
            }
        }
    }

    /// Waits until the receiver has got every event in `acked` (by the `n` in its payload)
    /// and returns how many times it got each `n`.
    async fn all_received(&self, acked: &BTreeSet<u64>, what: &str) -> BTreeMap<u64, usize> {
        eventually(what, DEADLINE, || async {
            if self.receiver.count() < acked.len() {
                return None;
            }
            let counts = received_counts(&self.receiver);
            acked
                .iter()
                .all(|n| counts.contains_key(n))
                .then_some(counts)
        })
        .await
    }

    /// Waits until no delivery is pending any more (every one settled), then returns them
    /// (`expected` of them, when given).
    async fn all_settled(&self, node: usize, expected: Option<usize>) -> Vec<Value> {
        let path = format!(
            "{}/v1/deliveries?status=pending&limit=1",
            self.nodes[node].base
        );
        eventually("every delivery settled", DEADLINE, || {
            let path = path.clone();
            async move {
                let page = json_call(&self.http, reqwest::Method::GET, path, &self.key, None).await;
                page["data"].as_array()?.is_empty().then_some(())
            }
        })
        .await;
        let deliveries = self.deliveries(node).await;
        if let Some(expected) = expected {
            assert_eq!(deliveries.len(), expected, "one delivery per event");
        }
        deliveries
    }
}

/// How many times the receiver got each event, by the `n` in its payload.
fn received_counts(receiver: &Receiver) -> BTreeMap<u64, usize> {
    let mut counts = BTreeMap::new();
    for r in receiver.received() {
        let n = r.json()["data"]["n"].as_u64().expect("the event's n");
        *counts.entry(n).or_insert(0) += 1;
    }
    counts
}

/// How many deliveries are in each status.
fn by_status(deliveries: &[Value]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for d in deliveries {
        let status = d["status"].as_str().expect("a status").to_string();
        *counts.entry(status).or_insert(0) += 1;
    }
    counts
}

/// Asserts that every delivery succeeded.
fn all_succeeded(deliveries: &[Value]) {
    let counts = by_status(deliveries);
    assert_eq!(
        counts.keys().collect::<Vec<_>>(),
        ["succeeded"],
        "{counts:?}"
    );
}

/// The attempts recorded in the deliveries' attempt logs, all together.
fn recorded_attempts(deliveries: &[Value]) -> u64 {
    deliveries
        .iter()
        .map(|d| d["attempts"].as_u64().expect("attempts"))
        .sum()
}

/// What a load of posted events came to.
#[derive(Default)]
struct Posted {
    /// Events answered 202.
    acked: Mutex<BTreeSet<u64>>,
    /// Posts refused (any other answer, or none).
    refused: AtomicUsize,
    /// Events acknowledged by another node than their first, after their first failed.
    failed_over: AtomicUsize,
}

impl Posted {
    fn acked(&self) -> BTreeSet<u64> {
        self.acked.lock().unwrap().clone()
    }

    fn acked_count(&self) -> usize {
        self.acked.lock().unwrap().len()
    }
}

/// How a poster treats a post that was not acknowledged.
#[derive(Clone, Copy, PartialEq)]
enum OnRefusal {
    /// Counts it and moves on to the next event (as a client that drops it).
    Drop,
    /// Sends it to the next node with the same `Idempotency-Key` until one acknowledges it
    /// (as a client behind a load balancer that retries).
    FailOver,
}

/// Posts events `n` from `next` on (while below `until`, or until `stop`), `n` to node
/// `n % 3` first, with `workers` requests at once; returns when done.
#[allow(clippy::too_many_arguments)]
async fn post_events(
    http: reqwest::Client,
    bases: Vec<String>,
    key: String,
    next: Arc<AtomicU64>,
    until: u64,
    stop: Arc<AtomicBool>,
    workers: usize,
    on_refusal: OnRefusal,
    posted: Arc<Posted>,
) {
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..workers {
        let (http, bases, key, next, stop, posted) = (
            http.clone(),
            bases.clone(),
            key.clone(),
            next.clone(),
            stop.clone(),
            posted.clone(),
        );
        tasks.spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                let n = next.fetch_add(1, Ordering::SeqCst);
                if n >= until {
                    return;
                }
                let deadline = tokio::time::Instant::now() + DEADLINE;
                let mut node = n as usize % bases.len();
                loop {
                    let answer = http
                        .post(format!("{}/v1/events", bases[node]))
                        .bearer_auth(&key)
                        .header("idempotency-key", format!("three-nodes-{n}"))
                        .json(&json!({"type": "load", "payload": {"n": n}}))
                        .send()
                        .await;
                    if answer.is_ok_and(|r| r.status() == 202) {
                        posted.acked.lock().unwrap().insert(n);
                        if node != n as usize % bases.len() {
                            posted.failed_over.fetch_add(1, Ordering::SeqCst);
                        }
                        break;
                    }
                    posted.refused.fetch_add(1, Ordering::SeqCst);
                    if on_refusal == OnRefusal::Drop {
                        break;
                    }
                    assert!(
                        tokio::time::Instant::now() < deadline,
                        "event {n} was acknowledged by no node within {DEADLINE:?}"
                    );
                    node = (node + 1) % bases.len();
                }
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("a poster");
    }
}

/// 3,000 events posted round-robin to three nodes are all delivered, every node delivers some,
/// and every request the receiver got is recorded in an attempt log (the outcomes the nodes
/// recorded add up to one success per event).
#[tokio::test]
async fn three_nodes_deliver_every_event_posted_round_robin() {
    let Ok(cluster) = std::env::var("WASMHOOK_TEST_DATABASE_URL") else {
        eprintln!("WASMHOOK_TEST_DATABASE_URL is not set: no PostgreSQL to run three nodes on");
        return;
    };
    const EVENTS: u64 = 3_000;
    let database_url = common::fresh_database(&cluster).await;
    let three = Three::start(&database_url, Duration::ZERO).await;
    let posted = Arc::new(Posted::default());
    post_events(
        three.http.clone(),
        three.bases(),
        three.key.clone(),
        Arc::new(AtomicU64::new(0)),
        EVENTS,
        Arc::new(AtomicBool::new(false)),
        24,
        OnRefusal::Drop,
        posted.clone(),
    )
    .await;
    let acked = posted.acked();
    assert_eq!(
        acked.len() as u64,
        EVENTS,
        "every post is acknowledged ({} refused)",
        posted.refused.load(Ordering::SeqCst)
    );
    let counts = three
        .all_received(&acked, "the receiver gets all 3,000 events")
        .await;
    let deliveries = three.all_settled(2, Some(EVENTS as usize)).await;
    all_succeeded(&deliveries);
    let mut by_node = Vec::new();
    for node in &three.nodes {
        by_node.push(node.succeeded(&three.http).await.expect("the node answers"));
    }
    eprintln!("succeeded deliveries by node: {by_node:?}");
    for (i, n) in by_node.iter().enumerate() {
        assert!(*n > 0.0, "node {} delivered none: {by_node:?}", i + 1);
    }
    assert_eq!(
        by_node.iter().sum::<f64>(),
        EVENTS as f64,
        "the nodes recorded one success per event between them: {by_node:?}"
    );
    let sent = three.receiver.count() as u64;
    let recorded = recorded_attempts(&deliveries);
    assert_eq!(
        sent, recorded,
        "every request the receiver got is recorded as an attempt"
    );
    let duplicates: usize = counts.values().map(|c| c - 1).sum();
    eprintln!("{sent} requests for {EVENTS} events ({duplicates} retried and recorded)");
}

/// `kill -9` of one node in the middle of the load: every acknowledged event is still delivered
/// (the dead node's claims are taken over when their lease ends), and the only requests the
/// receiver got that no attempt log records (hence the only duplicates beyond recorded retries)
/// are the dead node's attempts in flight, at most its `--delivery-concurrency`.
#[tokio::test]
async fn a_node_killed_in_the_middle_loses_no_acknowledged_event() {
    let Ok(cluster) = std::env::var("WASMHOOK_TEST_DATABASE_URL") else {
        eprintln!("WASMHOOK_TEST_DATABASE_URL is not set: no PostgreSQL to run three nodes on");
        return;
    };
    const EVENTS: u64 = 3_000;
    let database_url = common::fresh_database(&cluster).await;
    // Each attempt lasts a little, so the killed node has some out when it dies.
    let mut three = Three::start(&database_url, Duration::from_millis(20)).await;
    let posted = Arc::new(Posted::default());
    let poster = tokio::spawn(post_events(
        three.http.clone(),
        three.bases(),
        three.key.clone(),
        Arc::new(AtomicU64::new(0)),
        EVENTS,
        Arc::new(AtomicBool::new(false)),
        24,
        OnRefusal::FailOver,
        posted.clone(),
    ));
    // In the middle: a third of the events acknowledged and node 2 busy delivering.
    eventually(
        "a thousand events acknowledged and node 2 delivering",
        DEADLINE,
        || async {
            if posted.acked_count() < 1_000 {
                return None;
            }
            let n = three.nodes[1].succeeded(&three.http).await?;
            (n > 0.0).then_some(())
        },
    )
    .await;
    three.nodes[1].kill9();
    let acked_at_kill = posted.acked_count();
    poster.await.expect("the poster");
    let acked = posted.acked();
    assert_eq!(acked.len() as u64, EVENTS, "every event is acknowledged");
    eprintln!(
        "node 2 killed after {acked_at_kill} acknowledgements; {} posts refused, {} events \
         acknowledged by another node",
        posted.refused.load(Ordering::SeqCst),
        posted.failed_over.load(Ordering::SeqCst)
    );
    let counts = three
        .all_received(&acked, "the receiver gets every acknowledged event")
        .await;
    let deliveries = three.all_settled(0, Some(EVENTS as usize)).await;
    all_succeeded(&deliveries);
    // The survivors recorded every attempt they made (none lost a lease).
    for i in [0, 2] {
        let lost = three.nodes[i]
            .metric(
                &three.http,
                r#"wasmhook_deliveries_total{outcome="lease_lost"}"#,
            )
            .await
            .expect("the node answers");
        assert_eq!(lost, 0.0, "node {} lost a lease", i + 1);
    }
    let sent = three.receiver.count() as u64;
    let recorded = recorded_attempts(&deliveries);
    assert!(
        recorded <= sent,
        "{recorded} attempts recorded, {sent} requests received"
    );
    let unrecorded = sent - recorded;
    let retried = recorded - EVENTS;
    let duplicates: usize = counts.values().map(|c| c - 1).sum();
    eprintln!(
        "{sent} requests, {recorded} attempts recorded ({retried} retries), {unrecorded} sent \
         by node 2 and never recorded, {duplicates} duplicates"
    );
    assert!(
        unrecorded as usize <= NODE_CONCURRENCY,
        "only node 2's attempts in flight (at most {NODE_CONCURRENCY}) went unrecorded: \
         {unrecorded}"
    );
    assert!(
        duplicates as u64 <= unrecorded + retried,
        "every duplicate is a retry in the attempt log or one of node 2's attempts in flight"
    );
    assert!(three.nodes[0].alive() && three.nodes[2].alive());
}

/// A PostgreSQL cluster of this test's own (the same binaries as the test cluster's), which it
/// may stop and start again on the same port; stopped when dropped.
struct PrivateCluster {
    bin: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
    running: bool,
}

impl PrivateCluster {
    /// Makes and starts a cluster, or `None` (with the reason) when there are no PostgreSQL
    /// binaries.
    fn start() -> Option<PrivateCluster> {
        let Some(bin) = std::fs::read_dir("/usr/lib/postgresql")
            .ok()
            .into_iter()
            .flatten()
            .filter_map(|e| Some(e.ok()?.path().join("bin")))
            .filter(|b| b.join("pg_ctl").exists())
            .max_by_key(|b| {
                let version = b.parent().and_then(|v| v.file_name());
                version.and_then(|v| v.to_str()?.parse::<u32>().ok())
            })
        else {
            eprintln!("no PostgreSQL binaries under /usr/lib/postgresql: no cluster to restart");
            return None;
        };
        let dir = tempfile::tempdir().unwrap();
        if is_root() {
            // PostgreSQL refuses to run as root: the cluster belongs to the postgres user.
            let owned = Command::new("chown")
                .arg("postgres")
                .arg(dir.path())
                .status()
                .unwrap();
            assert!(owned.success(), "chown postgres");
        }
        let mut cluster = PrivateCluster {
            bin,
            dir,
            port: std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port(),
            running: false,
        };
        let data = cluster.data();
        cluster.run(
            "initdb",
            &[
                "-D",
                &data,
                "-U",
                "postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--no-sync",
            ],
        );
        cluster.start_again();
        Some(cluster)
    }

    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Runs one of the PostgreSQL tools as the cluster's owner.
    fn run(&self, tool: &str, args: &[&str]) {
        let tool = self.bin.join(tool);
        let mut command = if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&tool);
            c
        } else {
            Command::new(&tool)
        };
        let out = command
            .args(args)
            .output()
            .expect("running a PostgreSQL tool");
        assert!(
            out.status.success(),
            "{} {args:?}: {}",
            tool.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Starts it (again) on its port; returns once it accepts connections.
    fn start_again(&mut self) {
        let log = self.dir.path().join("server.log").display().to_string();
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {} -c max_connections=60 \
             -c shared_buffers=16MB",
            self.port,
            self.dir.path().display()
        );
        let data = self.data();
        self.run(
            "pg_ctl",
            &["-D", &data, "-w", "-l", &log, "start", "-o", &options],
        );
        self.running = true;
    }

    /// Stops it as an operator's restart does (`-m fast`: sessions are ended, committed work
    /// is on disk); returns once it is down.
    fn stop(&mut self) {
        let data = self.data();
        self.run("pg_ctl", &["-D", &data, "-m", "fast", "-w", "stop"]);
        self.running = false;
    }
}

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        if self.running {
            let data = self.data();
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                self.run("pg_ctl", &["-D", &data, "-m", "immediate", "-w", "stop"])
            }));
        }
    }
}

fn is_root() -> bool {
    let out = Command::new("id").arg("-u").output().expect("id -u");
    String::from_utf8_lossy(&out.stdout).trim() == "0"
}

/// A PostgreSQL restart in the middle of the load: the nodes say they are not ready while the
/// database is away and ready once it is back, reconnect by themselves (each delivers again),
/// and every event acknowledged before, during or after the restart is delivered.
#[tokio::test]
async fn a_database_restart_in_the_middle_loses_no_acknowledged_event() {
    if std::env::var("WASMHOOK_TEST_DATABASE_URL").is_err() {
        eprintln!("WASMHOOK_TEST_DATABASE_URL is not set: PostgreSQL is not set up for the tests");
        return;
    }
    let Some(mut cluster) = PrivateCluster::start() else {
        return;
    };
    // Each attempt lasts a while, so deliveries are out when the database goes away; and long
    // enough (100 ms) that no node counts the endpoint as fast and claims ahead of its slots:
    // otherwise the node that reconnects first may claim the whole backlog and keep the
    // subscription's `max_in_flight` to itself, and the others, reconnected as well, have
    // nothing to show for it.
    let three = Three::start(&cluster.url(), Duration::from_millis(100)).await;
    let posted = Arc::new(Posted::default());
    let next = Arc::new(AtomicU64::new(0));
    let stop_posting = Arc::new(AtomicBool::new(false));
    let poster = tokio::spawn(post_events(
        three.http.clone(),
        three.bases(),
        three.key.clone(),
        next.clone(),
        u64::MAX,
        stop_posting.clone(),
        12,
        OnRefusal::Drop,
        posted.clone(),
    ));
    eventually(
        "500 events acknowledged and some delivered",
        DEADLINE,
        || async { (posted.acked_count() >= 500 && three.receiver.count() > 0).then_some(()) },
    )
    .await;
    cluster.stop();
    let refused_at_stop = posted.refused.load(Ordering::SeqCst);
    for (i, node) in three.nodes.iter().enumerate() {
        eventually(
            &format!("node {} says it is not ready", i + 1),
            DEADLINE,
            || async { (node.readyz(&three.http).await == Some(503)).then_some(()) },
        )
        .await;
    }
    // Posts meanwhile are refused, not acknowledged and lost.
    eventually(
        "posts are refused while the database is away",
        DEADLINE,
        || {
            let refused = posted.refused.load(Ordering::SeqCst);
            async move { (refused >= refused_at_stop + 3).then_some(()) }
        },
    )
    .await;
    let acked_while_away = posted.acked_count();
    let mut before: Vec<f64> = Vec::new();
    for node in &three.nodes {
        before.push(node.succeeded(&three.http).await.expect("the node answers"));
    }
    cluster.start_again();
    for (i, node) in three.nodes.iter().enumerate() {
        eventually(
            &format!("node {} is ready again", i + 1),
            DEADLINE,
            || async { (node.readyz(&three.http).await == Some(200)).then_some(()) },
        )
        .await;
    }
    // Every node records deliveries again, through connections of its own making.
    for (i, node) in three.nodes.iter().enumerate() {
        eventually(
            &format!("node {} delivers again", i + 1),
            DEADLINE,
            || async {
                let now = node.succeeded(&three.http).await?;
                (now > before[i]).then_some(())
            },
        )
        .await;
    }
    eventually(
        "500 more events acknowledged after the restart",
        DEADLINE,
        || async { (posted.acked_count() >= acked_while_away + 500).then_some(()) },
    )
    .await;
    stop_posting.store(true, Ordering::SeqCst);
    poster.await.expect("the poster");
    let acked = posted.acked();
    eprintln!(
        "{} events acknowledged ({acked_while_away} before the restart), {} posts refused",
        acked.len(),
        posted.refused.load(Ordering::SeqCst)
    );
    three
        .all_received(&acked, "the receiver gets every acknowledged event")
        .await;
    // No claim is left stranded by the restart: every delivery (those of the acknowledged
    // events, and of any refused post whose commit went through) ends succeeded.
    let deliveries = three.all_settled(1, None).await;
    all_succeeded(&deliveries);
    assert!(
        deliveries.len() >= acked.len(),
        "a delivery per acknowledged event"
    );
    let mut three = three;
    for (i, node) in three.nodes.iter_mut().enumerate() {
        assert!(node.alive(), "node {} is still running", i + 1);
    }
}

impl Three {
    /// Sends one request with the account's key through node `node` (0-based); returns its
    /// status and JSON body.
    async fn call(
        &self,
        node: usize,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.nodes[node].base))
            .bearer_auth(&self.key);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("the node answers");
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    /// Uploads `wasm` through node `node`: a new plugin named `name` (`plugin: None`) or a new
    /// version of `plugin`; expects 202.
    async fn upload(&self, node: usize, name: &str, plugin: Option<&str>, wasm: &str) -> Value {
        let bytes = std::fs::read(wasm).unwrap_or_else(|e| panic!("{wasm}: {e}"));
        let base = &self.nodes[node].base;
        let req = match plugin {
            None => self.http.post(format!("{base}/v1/plugins?name={name}")),
            Some(id) => self.http.put(format!("{base}/v1/plugins/{id}")),
        };
        let resp = req
            .bearer_auth(&self.key)
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

    /// Waits until the plugin's `version` is compiled and the current one, as node `node`
    /// answers; asserts it is `ready`.
    async fn ready(&self, node: usize, plugin: &str, version: u64) -> Value {
        let path = format!("/v1/plugins/{plugin}");
        let p = eventually(
            &format!("version {version} of {plugin} compiled"),
            DEADLINE,
            || async {
                let (status, p) = self.call(node, reqwest::Method::GET, &path, None).await;
                assert_eq!(status, 200, "{p}");
                (p["latest_version"] == version && p["status"] != "compiling").then_some(p)
            },
        )
        .await;
        assert_eq!(
            (&p["status"], &p["version"]),
            (&json!("ready"), &json!(version)),
            "{p}"
        );
        p
    }
}

/// A plugin uploaded through node 1 and attached runs on the events nodes 2 and 3 claim; a
/// new version uploaded through node 3 is what every node runs 1 s after it became ready:
/// every event posted from then on, whichever node claims it, meets the new version.
///
/// Version 1 is the PII redactor (a delivery's `text` arrives redacted); version 2 is the
/// router, configured (from the start: the redactor ignores the key) to drop everything, so a
/// delivery it handles ends `filtered` and nothing reaches the receiver.
#[tokio::test]
async fn a_plugin_uploaded_through_one_node_runs_on_every_node() {
    let Ok(cluster) = std::env::var("WASMHOOK_TEST_DATABASE_URL") else {
        eprintln!("WASMHOOK_TEST_DATABASE_URL is not set: no PostgreSQL to run three nodes on");
        return;
    };
    use wasmhook_plugin_artifacts as wasm;
    let database_url = common::fresh_database(&cluster).await;
    let three = Three::start(&database_url, Duration::ZERO).await;
    let plugin = three.upload(0, "changing", None, wasm::PII_REDACTOR).await;
    let id = plugin["id"].as_str().expect("a plugin id").to_string();
    three.ready(0, &id, 1).await;
    let (status, p) = three
        .call(
            0,
            reqwest::Method::PATCH,
            &format!("/v1/plugins/{id}"),
            Some(json!({"config": {"default": "drop"}})),
        )
        .await;
    assert_eq!(status, 200, "{p}");
    let (status, s) = three
        .call(
            0,
            reqwest::Method::PATCH,
            &format!("/v1/subscriptions/{}", three.sub),
            Some(json!({"transform_plugin_id": id})),
        )
        .await;
    assert_eq!(status, 200, "{s}");

    // Version 1 on every node: each event arrives redacted, whichever node claimed it.
    const EVENTS: u64 = 300;
    let sample = r#"wasmhook_plugin_instances_total{source="fresh"}"#;
    let posted = Arc::new(Posted::default());
    post_text_events(&three, 0..EVENTS, &posted).await;
    let acked = posted.acked();
    assert_eq!(acked.len() as u64, EVENTS, "every post is acknowledged");
    three
        .all_received(&acked, "version 1 delivers every event")
        .await;
    for r in three.receiver.received() {
        assert_eq!(
            r.json()["data"]["text"],
            "write to [email]",
            "redacted by version 1"
        );
    }
    let mut ran = Vec::new();
    for node in &three.nodes {
        ran.push(
            node.metric(&three.http, sample)
                .await
                .expect("the node answers"),
        );
    }
    eprintln!("plugin runs by node with version 1: {ran:?}");
    for i in [1, 2] {
        assert!(ran[i] > 0.0, "node {} ran the plugin: {ran:?}", i + 1);
    }

    // Version 2 through node 3. The rule: 1 s after it is ready, every node runs it (a node
    // still compiling it holds the plugin's events meanwhile rather than run version 1). Ready
    // is seen here a poll after it happened, so the bound is 1 s plus at most one poll.
    three.upload(2, "changing", Some(&id), wasm::ROUTER).await;
    three.ready(2, &id, 2).await;
    let ready_at = tokio::time::Instant::now();
    // Not a wait for something to happen: the bound under test itself.
    tokio::time::sleep_until(ready_at + Duration::from_secs(1)).await;
    // Every event posted from now on meets version 2 (dropped, so `filtered`), whichever node
    // claims it, and every node claims some.
    let sample = r#"wasmhook_deliveries_total{outcome="filtered"}"#;
    let received_before = three.receiver.count();
    let posted = Arc::new(Posted::default());
    post_text_events(&three, EVENTS..2 * EVENTS, &posted).await;
    assert_eq!(
        posted.acked_count() as u64,
        EVENTS,
        "every post is acknowledged"
    );
    let deliveries = three.all_settled(0, Some(2 * EVENTS as usize)).await;
    let expected = [
        ("filtered", EVENTS as usize),
        ("succeeded", EVENTS as usize),
    ];
    let expected: BTreeMap<String, usize> =
        expected.iter().map(|(s, n)| (s.to_string(), *n)).collect();
    assert_eq!(
        by_status(&deliveries),
        expected,
        "version 1's deliveries succeeded, version 2's were dropped"
    );
    let mut dropped = Vec::new();
    for node in &three.nodes {
        dropped.push(
            node.metric(&three.http, sample)
                .await
                .expect("the node answers"),
        );
    }
    eprintln!("events dropped by version 2, by node: {dropped:?}");
    assert_eq!(dropped.iter().sum::<f64>(), EVENTS as f64, "{dropped:?}");
    for (i, n) in dropped.iter().enumerate() {
        assert!(*n > 0.0, "node {} ran version 2: {dropped:?}", i + 1);
    }
    assert_eq!(
        three.receiver.count(),
        received_before,
        "nothing posted after the switch reached the receiver"
    );
}

/// Posts events `range` round-robin (with a `text` the redactor changes), 12 at a time.
async fn post_text_events(three: &Three, range: std::ops::Range<u64>, posted: &Arc<Posted>) {
    let next = Arc::new(AtomicU64::new(range.start));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..12 {
        let (http, bases, key, next, posted) = (
            three.http.clone(),
            three.bases(),
            three.key.clone(),
            next.clone(),
            posted.clone(),
        );
        let end = range.end;
        tasks.spawn(async move {
            loop {
                let n = next.fetch_add(1, Ordering::SeqCst);
                if n >= end {
                    return;
                }
                let answer = http
                    .post(format!("{}/v1/events", bases[n as usize % bases.len()]))
                    .bearer_auth(&key)
                    .json(&json!({"type": "load", "payload": {"n": n, "text": "write to x@example.com"}}))
                    .send()
                    .await;
                if answer.is_ok_and(|r| r.status() == 202) {
                    posted.acked.lock().unwrap().insert(n);
                } else {
                    posted.refused.fetch_add(1, Ordering::SeqCst);
                }
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("a poster");
    }
}
