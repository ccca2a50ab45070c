//! Moving an installation to another store with the real binary: `wasmhook export` piped into
//! `wasmhook import`, SQLite to PostgreSQL and back, then servers on the targets checked
//! through the API. The round trip needs the test cluster (`WASMHOOK_TEST_DATABASE_URL`);
//! the refusals run on whatever target there is (PostgreSQL when the cluster is set).

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use crate::common::{self, ADMIN, Receiver, TestServer, eventually, wasmhook_bin};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use wasmhook_plugin_artifacts as wasm;

const WAIT: Duration = Duration::from_secs(60);
/// Slow retries: the delivery to the receiver that is down stays pending across the move.
const RETRIES: [&str; 2] = ["--retry-schedule", "3s,3s,3s,3s,3s,3s,3s,3s"];

fn signature_ok(secret: &str, got: &common::Received) -> bool {
    let key = STANDARD
        .decode(secret.strip_prefix("whsec_").unwrap())
        .unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    let id = got.header("webhook-id").unwrap();
    let ts = got.header("webhook-timestamp").unwrap();
    mac.update(format!("{id}.{ts}.").as_bytes());
    mac.update(&got.body);
    let expected = format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()));
    got.header("webhook-signature")
        .unwrap()
        .split(' ')
        .any(|s| s == expected)
}

/// The options that name a store: a data dir, and a database when there is one.
fn store_args(dir: &Path, database_url: Option<&str>) -> Vec<String> {
    let mut args = vec!["--data-dir".to_string(), dir.display().to_string()];
    if let Some(url) = database_url {
        args.extend(["--database-url".to_string(), url.to_string()]);
    }
    args
}

/// `wasmhook export <from> | wasmhook import <to>`: both processes' outputs.
fn pipe(from: &[String], to: &[String]) -> (Output, Output) {
    let mut export = Command::new(wasmhook_bin())
        .arg("export")
        .args(from)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting wasmhook export");
    let import = Command::new(wasmhook_bin())
        .arg("import")
        .args(to)
        .stdin(Stdio::from(export.stdout.take().unwrap()))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting wasmhook import");
    let imported = import.wait_with_output().unwrap();
    let exported = export.wait_with_output().unwrap();
    (exported, imported)
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `wasmhook import <to> --file <dump>`.
fn import_file(to: &[String], dump: &Path) -> Output {
    Command::new(wasmhook_bin())
        .arg("import")
        .args(to)
        .arg("--file")
        .arg(dump)
        .output()
        .unwrap()
}

/// A customer's message in `conversation`.
fn customer_message(conversation: &str) -> Value {
    json!({"type": "message:created", "payload": {
        "conversation_id": conversation, "text": "hello", "source": "facebook",
        "sender": {"id": format!("contact-{conversation}"), "type": "source_contact"}}})
}

/// The greetings the greeter sent into `conversation`, once the plugin's delivery of `event`
/// (a customer's message there) has settled.
async fn greetings_after(s: &TestServer, key: &str, event: &Value, conversation: &str) -> usize {
    let path = format!("/v1/events/{}/deliveries", event["id"].as_str().unwrap());
    eventually("the plugin's delivery settles", WAIT, || async {
        let (_, list) = s.get(&path, key).await;
        let list = list["data"].as_array().cloned().unwrap_or_default();
        (!list.is_empty() && list.iter().all(|d| d["status"] != "pending")).then_some(())
    })
    .await;
    let (_, list) = s
        .get("/v1/events?type=message:created&limit=250", key)
        .await;
    list["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| {
            e["payload"]["conversation_id"] == conversation && e["payload"]["text"] == "Welcome!"
        })
        .count()
}

/// The deliveries of a page: id, event, subscription.
fn delivery_ids(page: &Value) -> Vec<(Value, Value, Value)> {
    page["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["id"].clone(),
                d["event_id"].clone(),
                d["subscription_id"].clone(),
            )
        })
        .collect()
}

/// What the source looked like, to compare each target with.
struct Before {
    key: String,
    revoked_key: String,
    sub_id: String,
    secret: String,
    plugin_id: String,
    pending_delivery: String,
    events: Value,
    deliveries: Value,
}

/// Fills a server through the API: an account with a live and a revoked key, a plugin with two
/// versions (the newest current) and key-value state, a subscription whose receiver is down
/// (its delivery pending, one failed attempt in its log), events.
async fn fill(s: &TestServer, r: &Receiver) -> Before {
    let (acc, key) = s.account("Acme").await;
    let (_, extra) = s
        .post(&format!("/v1/accounts/{acc}/api-keys"), ADMIN, json!({}))
        .await;
    let revoked_key = extra["api_key"].as_str().unwrap().to_string();
    let (status, _) = s
        .delete(
            &format!(
                "/v1/accounts/{acc}/api-keys/{}",
                extra["id"].as_str().unwrap()
            ),
            ADMIN,
        )
        .await;
    assert_eq!(status, 204);

    // Version 1 does nothing; version 2, the greeter, is current. Its greeting is secret.
    let plugin = s.plugin(&key, "greeter", wasm::NOOP, Value::Null).await;
    let plugin_id = plugin["id"].as_str().unwrap().to_string();
    let greeter = std::fs::read(wasm::FIRST_CONTACT_GREETER).unwrap();
    s.upload_version(&key, &plugin_id, greeter).await;
    let plugin = s.compiled(&key, &plugin_id, "ready").await;
    assert_eq!(plugin["version"], 2, "{plugin}");
    let (status, patched) = s
        .patch(
            &format!("/v1/plugins/{plugin_id}"),
            &key,
            json!({"config": {"greeting": "Welcome!"}, "secret_keys": ["greeting"]}),
        )
        .await;
    assert_eq!(status, 200, "{patched}");
    s.subscribe(
        &key,
        json!({"plugin_id": plugin_id, "event_types": ["message:created"]}),
    )
    .await;
    // The greeter records the conversation it greeted in its key-value store.
    let first = s.event(&key, customer_message("c1")).await;
    assert_eq!(greetings_after(s, &key, &first, "c1").await, 1);

    // The receiver is down: the delivery fails once and waits for its retry.
    r.status(503);
    let sub = s
        .subscribe(
            &key,
            json!({"url": format!("{}/hook", r.url), "event_types": ["ticket:created"]}),
        )
        .await;
    let sub_id = sub["id"].as_str().unwrap().to_string();
    let secret = sub["secret"].as_str().unwrap().to_string();
    let ticket = s
        .event(
            &key,
            json!({"type": "ticket:created", "payload": {"ticket": 7}}),
        )
        .await;
    let path = format!("/v1/events/{}/deliveries", ticket["id"].as_str().unwrap());
    let pending_delivery = eventually("a failed attempt, retry pending", WAIT, || async {
        let (_, list) = s.get(&path, &key).await;
        let d = list["data"][0].clone();
        (d["status"] == "pending" && d["attempts"] == 1)
            .then(|| d["id"].as_str().unwrap().to_string())
    })
    .await;

    let (_, events) = s.get("/v1/events?limit=100", &key).await;
    let (_, deliveries) = s.get("/v1/deliveries?limit=100", &key).await;
    Before {
        key,
        revoked_key,
        sub_id,
        secret,
        plugin_id,
        pending_delivery,
        events,
        deliveries,
    }
}

/// What every target must show: the same key (the revoked one still revoked), the same
/// secret, the same events, the plugin's versions, and the plugin running its current
/// version with the key-value state it had (no second greeting in c1).
async fn check_carried(s: &TestServer, b: &Before, conversation: &str) {
    let (status, account) = s.get("/v1/account", &b.key).await;
    assert_eq!(status, 200, "the old key authenticates: {account}");
    let (status, _) = s.get("/v1/account", &b.revoked_key).await;
    assert_eq!(status, 401, "a revoked key stays revoked");

    let (status, secret) = s
        .get(&format!("/v1/subscriptions/{}/secret", b.sub_id), &b.key)
        .await;
    assert_eq!(status, 200, "{secret}");
    assert_eq!(secret["secret"], b.secret.as_str());

    let (_, versions) = s
        .get(&format!("/v1/plugins/{}/versions", b.plugin_id), &b.key)
        .await;
    let versions: Vec<_> = versions["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| (v["version"].as_u64().unwrap(), v["status"].clone()))
        .collect();
    assert_eq!(versions, [(2, json!("ready")), (1, json!("ready"))]);
    let plugin = s.compiled(&b.key, &b.plugin_id, "ready").await;
    assert_eq!(plugin["version"], 2, "{plugin}");
    assert_eq!(plugin["config"]["greeting"], "********", "still secret");

    // The greeter (version 2, its secret greeting opened) greets a new conversation...
    let new = s.event(&b.key, customer_message(conversation)).await;
    assert_eq!(greetings_after(s, &b.key, &new, conversation).await, 1);
    // ... and remembers, in its carried key-value store, that it greeted c1 already.
    let again = s.event(&b.key, customer_message("c1")).await;
    assert_eq!(greetings_after(s, &b.key, &again, "c1").await, 1);
}

/// SQLite → PostgreSQL → SQLite (or, with the suite on PostgreSQL, PostgreSQL → PostgreSQL →
/// SQLite): everything the source held is there, under the target's own key file, and the
/// pending delivery is delivered, signed with the same secret, from the new store.
#[tokio::test]
async fn an_installation_moves_to_postgres_and_back() {
    let Ok(cluster) = std::env::var("WASMHOOK_TEST_DATABASE_URL") else {
        eprintln!(
            "WASMHOOK_TEST_DATABASE_URL is not set: no PostgreSQL to move an installation to"
        );
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let r = Receiver::start().await;
    let mut source = TestServer::start_with(&RETRIES).await;
    let before = fill(&source, &r).await;
    source.stop().await;

    // Into PostgreSQL, with a key file of the target's own (made by the import).
    let database_url = common::fresh_database(&cluster).await;
    let pg_dir = tmp.path().join("pg-node");
    let (exported, imported) = pipe(
        &store_args(&source.dir, source.database_url.as_deref()),
        &store_args(&pg_dir, Some(&database_url)),
    );
    assert!(exported.status.success(), "export: {}", stderr(&exported));
    assert!(imported.status.success(), "import: {}", stderr(&imported));
    assert!(exported.stdout.is_empty(), "the dump went to the import");
    assert!(
        stderr(&exported).contains("in clear"),
        "{}",
        stderr(&exported)
    );
    let source_keys = std::fs::read(source.dir.join("encryption-keys")).unwrap();
    let target_keys = std::fs::read(pg_dir.join("encryption-keys")).unwrap();
    assert_ne!(
        source_keys, target_keys,
        "the target seals with its own key"
    );

    let mut pg = TestServer::start_on(pg_dir.clone(), Some(database_url), &RETRIES).await;
    let (_, events) = pg.get("/v1/events?limit=100", &before.key).await;
    assert_eq!(events, before.events, "the same events, in the same order");
    // The same deliveries (the pending one may be attempted again meanwhile).
    let (_, deliveries) = pg.get("/v1/deliveries?limit=100", &before.key).await;
    assert_eq!(
        delivery_ids(&deliveries),
        delivery_ids(&before.deliveries),
        "the same deliveries"
    );

    // The receiver is back: the pending delivery goes out from PostgreSQL, signed with the
    // secret the subscription had, its first (failed) attempt still in its log.
    r.status(200);
    let got = eventually("the pending delivery arrives", WAIT, || async {
        r.at("/hook")
            .into_iter()
            .find(|g| g.json()["data"]["ticket"] == 7)
    })
    .await;
    assert!(
        signature_ok(&before.secret, &got),
        "signed with the same secret"
    );
    let delivery = eventually("the delivery succeeds", WAIT, || async {
        let (_, d) = pg
            .get(
                &format!("/v1/deliveries/{}", before.pending_delivery),
                &before.key,
            )
            .await;
        (d["status"] == "succeeded").then_some(d)
    })
    .await;
    let log: Vec<_> = delivery["attempt_log"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["status_code"].clone())
        .collect();
    assert_eq!(log.first(), Some(&json!(503)), "{delivery}");
    assert_eq!(log.last(), Some(&json!(200)), "{delivery}");
    check_carried(&pg, &before, "c2").await;
    pg.stop().await;

    // And back to SQLite.
    let sqlite_dir = tmp.path().join("sqlite-again");
    let (exported, imported) = pipe(
        &store_args(&pg.dir, pg.database_url.as_deref()),
        &store_args(&sqlite_dir, None),
    );
    assert!(exported.status.success(), "export: {}", stderr(&exported));
    assert!(imported.status.success(), "import: {}", stderr(&imported));
    let back = TestServer::start_on(sqlite_dir, None, &RETRIES).await;
    check_carried(&back, &before, "c3").await;
    let (_, d) = back
        .get(
            &format!("/v1/deliveries/{}", before.pending_delivery),
            &before.key,
        )
        .await;
    assert_eq!(d["status"], "succeeded", "{d}");
}

/// A target for the refusals: a fresh database on the test cluster when there is one, else a
/// new SQLite data dir.
async fn fresh_target(dir: &Path) -> Vec<String> {
    match std::env::var("WASMHOOK_TEST_DATABASE_URL") {
        Ok(cluster) => store_args(dir, Some(&common::fresh_database(&cluster).await)),
        Err(_) => store_args(dir, None),
    }
}

/// A source with an account, exported to a file (mode 0600).
async fn dump_of_one_account(tmp: &Path) -> (std::path::PathBuf, String) {
    let mut s = TestServer::start().await;
    let (_, key) = s.account("Acme").await;
    s.event(&key, json!({"type": "ticket:created", "payload": {"n": 1}}))
        .await;
    s.stop().await;
    let dump = tmp.join("wasmhook.dump");
    let out = Command::new(wasmhook_bin())
        .arg("export")
        .args(store_args(&s.dir, s.database_url.as_deref()))
        .arg("--file")
        .arg(&dump)
        .output()
        .unwrap();
    assert!(out.status.success(), "export: {}", stderr(&out));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&dump).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "the dump holds secrets: owner only");
    }
    (dump, key)
}

/// Importing into a store that holds data is refused, and leaves it as it was.
#[tokio::test]
async fn an_import_into_a_store_with_data_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let (dump, key) = dump_of_one_account(tmp.path()).await;
    let target_dir = tmp.path().join("target");
    let target = fresh_target(&target_dir).await;
    let first = import_file(&target, &dump);
    assert!(first.status.success(), "{}", stderr(&first));
    let again = import_file(&target, &dump);
    assert!(
        !again.status.success(),
        "a second import into the same store"
    );
    assert!(
        stderr(&again).contains("not empty"),
        "names the reason: {}",
        stderr(&again)
    );
    let database_url = target.get(3).cloned();
    let s = TestServer::start_on(target_dir, database_url, &[]).await;
    let (_, accounts) = s.get("/v1/accounts", ADMIN).await;
    assert_eq!(accounts["data"].as_array().unwrap().len(), 1, "{accounts}");
    let (_, events) = s.get("/v1/events", &key).await;
    assert_eq!(events["data"].as_array().unwrap().len(), 1, "{events}");
}

/// A dump with a bad line, or cut short, is refused naming the line, and writes nothing: the
/// same target then takes the intact dump.
#[tokio::test]
async fn a_corrupt_dump_is_refused_with_its_line_and_nothing_written() {
    let tmp = tempfile::tempdir().unwrap();
    let (dump, key) = dump_of_one_account(tmp.path()).await;
    let text = std::fs::read_to_string(&dump).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let target_dir = tmp.path().join("target");
    let target = fresh_target(&target_dir).await;

    // Line 4 (after the header, the account and its key) no longer holds a row.
    let event_line = lines
        .iter()
        .position(|l| l.contains("\"table\":\"events\""))
        .expect("the event's line");
    let mut broken = lines.clone();
    let bad = broken[event_line].replace("\"received_at\":", "\"received_at\":\"soon\",\"x\":");
    broken[event_line] = &bad;
    let corrupt = tmp.path().join("corrupt.dump");
    std::fs::write(&corrupt, broken.join("\n")).unwrap();
    let out = import_file(&target, &corrupt);
    assert!(!out.status.success());
    let message = stderr(&out);
    assert!(
        message.contains(&format!("line {}", event_line + 1)) && message.contains("received_at"),
        "names the line and the column: {message}"
    );

    // Not JSON at all.
    let mut garbled = lines.clone();
    garbled[2] = "{\"table\": \"api_keys\", ";
    std::fs::write(&corrupt, garbled.join("\n")).unwrap();
    let out = import_file(&target, &corrupt);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("line 3"), "{}", stderr(&out));

    // Cut short: no last line.
    std::fs::write(&corrupt, lines[..lines.len() - 1].join("\n")).unwrap();
    let out = import_file(&target, &corrupt);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("cut short"), "{}", stderr(&out));

    // Nothing of the refused imports was written: the target is still empty and takes the dump.
    let out = import_file(&target, &dump);
    assert!(out.status.success(), "{}", stderr(&out));
    let database_url = target.get(3).cloned();
    let s = TestServer::start_on(target_dir, database_url, &[]).await;
    let (_, events) = s.get("/v1/events", &key).await;
    assert_eq!(events["data"].as_array().unwrap().len(), 1, "{events}");
}
