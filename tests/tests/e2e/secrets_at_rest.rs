//! Secrets at rest: signing secrets (the previous one during a rotation too), Airy api secrets
//! and plugin config values marked secret are encrypted in the database with a key kept
//! outside it. A copy of the database files (the main file and its WAL) reveals none of them;
//! the server and the plugins still see them in clear; the keys rotate without losing a row;
//! and a missing or wrong key file stops the start with an error naming the file.

use crate::common;

use std::path::{Path, PathBuf};

use base64::Engine;

use crate::common::{TestServer, args_with};
use serde_json::{Value, json};
use wasmhook::key_rotation::{KeyFileArgs, KeysCommand};
use wasmhook_plugin_artifacts as wasm;

/// Every byte the database keeps on disk: the main file and its WAL, as a copy would take them.
fn database_bytes(dir: &Path) -> Vec<u8> {
    let mut all = Vec::new();
    for name in ["wasmhook.sqlite3", "wasmhook.sqlite3-wal"] {
        all.extend(std::fs::read(dir.join(name)).unwrap_or_default());
    }
    assert!(!all.is_empty(), "the database files are where expected");
    all
}

fn holds(bytes: &[u8], text: &str) -> bool {
    bytes.windows(text.len()).any(|w| w == text.as_bytes())
}

fn key_file(dir: &Path) -> PathBuf {
    dir.join("encryption-keys")
}

fn key_ids(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| l.split_whitespace().next().unwrap().to_string())
        .collect()
}

/// A test run of the first-contact greeter: the text it sends is its `greeting` config value,
/// so it shows what the plugin itself reads with `config-get`.
async fn greeting_seen_by_plugin(s: &TestServer, key: &str, plugin_id: &str) -> String {
    let (status, run) = s
        .post(
            &format!("/v1/plugins/{plugin_id}/test"),
            key,
            json!({"event": {"type": "message:created", "payload": {
                "conversation_id": "c1", "id": "m1", "text": "hi", "source": "facebook",
                "sender": {"id": "contact-1", "type": "source_contact"}}}}),
        )
        .await;
    assert_eq!(status, 200, "{run}");
    run["sent_messages"][0]["text"]
        .as_str()
        .unwrap_or_else(|| panic!("the greeter sent a message: {run}"))
        .to_string()
}

async fn secret_of(s: &TestServer, key: &str, sub_id: &str) -> String {
    let (status, body) = s
        .get(&format!("/v1/subscriptions/{sub_id}/secret"), key)
        .await;
    assert_eq!(status, 200, "{body}");
    body["secret"].as_str().unwrap().to_string()
}

/// Starts a server on `dir` with `extra` options and returns how the start ended.
async fn start_result(dir: &Path, extra: &[&str]) -> anyhow::Result<()> {
    let mut args = args_with(&extra.iter().map(|s| s.to_string()).collect::<Vec<_>>());
    args.extend(["--data-dir".to_string(), dir.display().to_string()]);
    let config = wasmhook::config::Config::from_args(args).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    // A start that succeeds stops at once: only a failed start is of interest here.
    wasmhook::run(config, listener, async {}).await
}

struct Secrets {
    sub_id: String,
    first_secret: String,
    current_secret: String,
    airy_secret: String,
    plugin_id: String,
    plugin_secret: String,
}

/// An account with a rotated subscription secret, an Airy webhook and a plugin with a secret
/// config value (and a plain one, which a copy of the database may show).
async fn make_secrets(s: &TestServer) -> (String, Secrets) {
    let (_, key) = s.account("A").await;
    let sub = s
        .subscribe(
            &key,
            json!({"url": "https://example.com/hook", "event_types": ["message:created"]}),
        )
        .await;
    let sub_id = sub["id"].as_str().unwrap().to_string();
    let first_secret = sub["secret"].as_str().unwrap().to_string();
    let (status, rotated) = s
        .post(
            &format!("/v1/subscriptions/{sub_id}/secret/rotate"),
            &key,
            json!({}),
        )
        .await;
    assert_eq!(status, 200, "{rotated}");
    let current_secret = secret_of(s, &key, &sub_id).await;
    assert_ne!(current_secret, first_secret);

    let (status, airy) = s
        .post(
            "/webhooks.subscribe",
            &key,
            json!({"url": "https://example.com/airy"}),
        )
        .await;
    assert_eq!(status, 200, "{airy}");
    let airy_secret = airy["api_secret"].as_str().unwrap().to_string();

    let plugin_secret = "greeting-sk_live_5f2b9c0e7a41".to_string();
    let plugin = s
        .plugin(
            &key,
            "greeter",
            wasm::FIRST_CONTACT_GREETER,
            json!({"config": {"greeting": plugin_secret, "region": "plain-config-eu-west"},
                   "secret_keys": ["greeting"]}),
        )
        .await;
    let plugin_id = plugin["id"].as_str().unwrap().to_string();
    (
        key,
        Secrets {
            sub_id,
            first_secret,
            current_secret,
            airy_secret,
            plugin_id,
            plugin_secret,
        },
    )
}

fn assert_none_in(bytes: &[u8], secrets: &Secrets, when: &str) {
    for (what, value) in [
        ("the signing secret", &secrets.current_secret),
        ("the previous signing secret", &secrets.first_secret),
        ("the Airy api secret", &secrets.airy_secret),
        ("the secret plugin config value", &secrets.plugin_secret),
    ] {
        assert!(
            !holds(bytes, value),
            "{when}: {what} is in the database files"
        );
    }
    // The search itself works: what is not secret is there in clear.
    assert!(holds(bytes, &secrets.sub_id), "{when}");
}

#[tokio::test]
async fn a_copy_of_the_database_reveals_no_secret() {
    if common::sqlite_only("a_copy_of_the_database_reveals_no_secret") {
        return;
    }
    let mut s = TestServer::start().await;
    let (key, secrets) = make_secrets(&s).await;

    // The key file: generated in the data dir, readable by its owner only.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(key_file(&s.dir))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    // While the server runs: the recent writes are in the WAL.
    let bytes = database_bytes(&s.dir);
    assert_none_in(&bytes, &secrets, "running");
    assert!(
        holds(&bytes, "plain-config-eu-west"),
        "a plain config value is in clear"
    );

    // The API never shows the secret config value again, and says which keys are secret.
    let path = format!("/v1/plugins/{}", secrets.plugin_id);
    let (_, plugin) = s.get(&path, &key).await;
    assert_eq!(plugin["config"]["greeting"], "********", "{plugin}");
    assert_eq!(plugin["config"]["region"], "plain-config-eu-west");
    assert_eq!(plugin["secret_keys"], json!(["greeting"]));
    let (_, list) = s.get("/v1/plugins", &key).await;
    assert!(!list.to_string().contains(&secrets.plugin_secret), "{list}");
    // The console's plugin page neither.
    let page = console_plugin_page(&s, &key, &secrets.plugin_id).await;
    assert!(!page.contains(&secrets.plugin_secret));
    assert!(
        page.contains("greeting=********"),
        "the page shows the key, masked"
    );

    // A read-modify-write of the whole config (what `wasmhook plugin config` does) sends the
    // mask back: the secret stays as it was.
    let mut config = plugin["config"].clone();
    config["region"] = json!("plain-config-us-east");
    let (status, patched) = s.patch(&path, &key, json!({ "config": config })).await;
    assert_eq!(status, 200, "{patched}");
    assert_eq!(patched["config"]["greeting"], "********");
    // The plugin itself reads the clear value.
    assert_eq!(
        greeting_seen_by_plugin(&s, &key, &secrets.plugin_id).await,
        secrets.plugin_secret
    );

    // Stopped: the WAL folded into the main file.
    s.stop().await;
    let mut secrets = secrets;
    let bytes = database_bytes(&s.dir);
    assert!(holds(&bytes, "plain-config-us-east"));
    assert_none_in(&bytes, &secrets, "stopped");

    // Started again: the server reads its secrets back, and the plugin still gets its value.
    s.restart().await;
    assert_eq!(
        secret_of(&s, &key, &secrets.sub_id).await,
        secrets.current_secret
    );
    assert_eq!(
        greeting_seen_by_plugin(&s, &key, &secrets.plugin_id).await,
        secrets.plugin_secret
    );
    // A new value for a secret key replaces it, still sealed.
    secrets.plugin_secret = "greeting-rotated-9d7e1c".into();
    let (status, patched) = s
        .patch(
            &path,
            &key,
            json!({"config": {"greeting": secrets.plugin_secret, "region": "plain-config-eu-west"}}),
        )
        .await;
    assert_eq!(status, 200, "{patched}");
    assert_eq!(
        greeting_seen_by_plugin(&s, &key, &secrets.plugin_id).await,
        secrets.plugin_secret
    );
    assert_none_in(&database_bytes(&s.dir), &secrets, "after a change");
    s.stop().await;
}

/// The value of the first `marker..."` in a page.
fn attr_after(html: &str, marker: &str) -> String {
    let at = html.find(marker).expect(marker) + marker.len();
    let rest = &html[at..];
    rest[..rest.find('"').unwrap()].to_string()
}

fn cookie_of(resp: &reqwest::Response, name: &str) -> String {
    resp.headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap())
        .find(|v| v.starts_with(name))
        .map(|v| v.split(';').next().unwrap().to_string())
        .unwrap_or_else(|| panic!("a {name} cookie"))
}

/// The console's page of a plugin, signed in with `key`.
async fn console_plugin_page(s: &TestServer, key: &str, plugin_id: &str) -> String {
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let form = http.get(s.url("/console/sign-in")).send().await.unwrap();
    let form_cookie = cookie_of(&form, "");
    let token = attr_after(
        &form.text().await.unwrap(),
        "name=\"sign_in_token\" value=\"",
    );
    let signed = http
        .post(s.url("/console/sign-in"))
        .header("cookie", form_cookie)
        .form(&[("sign_in_token", token.as_str()), ("key", key)])
        .send()
        .await
        .unwrap();
    assert_eq!(signed.status(), 303, "signed in");
    let session = cookie_of(&signed, "wasmhook_session=");
    let page = http
        .get(s.url(&format!("/console/plugins/{plugin_id}")))
        .header("cookie", session)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    page.text().await.unwrap()
}

#[tokio::test]
async fn keys_rotate_without_losing_a_row_and_the_old_key_can_go() {
    if common::sqlite_only("keys_rotate_without_losing_a_row_and_the_old_key_can_go") {
        return;
    }
    let mut s = TestServer::start().await;
    let (key, secrets) = make_secrets(&s).await;
    s.stop().await;
    let path = key_file(&s.dir);
    let old = key_ids(&path);
    assert_eq!(old.len(), 1);
    let old_sealed = format!("enc1:{}:", old[0]);
    assert!(holds(&database_bytes(&s.dir), &old_sealed));

    let data_dir = s.dir.clone();
    let args = || KeyFileArgs {
        data_dir: data_dir.clone(),
        encryption_key_file: None,
    };
    wasmhook::key_rotation::run(KeysCommand::Rotate(args())).unwrap();
    let both = key_ids(&path);
    assert_eq!(both.len(), 2);
    assert_eq!(both[0], old[0]);
    let new = both[1].clone();

    // Before the server starts again the old key still seals every row: prune keeps it.
    wasmhook::key_rotation::run(KeysCommand::Prune(args())).unwrap();
    assert_eq!(key_ids(&path), both);

    // The start re-encrypts every secret under the new key; every row reads as before.
    s.restart().await;
    assert_eq!(
        secret_of(&s, &key, &secrets.sub_id).await,
        secrets.current_secret
    );
    assert_eq!(
        greeting_seen_by_plugin(&s, &key, &secrets.plugin_id).await,
        secrets.plugin_secret
    );
    let (_, airy) = s.post("/webhooks.info", &key, json!({})).await;
    assert_eq!(airy["status"], "Subscribed", "{airy}");
    s.stop().await;
    let bytes = database_bytes(&s.dir);
    assert!(
        !holds(&bytes, &old_sealed),
        "no value is left under the old key"
    );
    assert!(holds(&bytes, &format!("enc1:{new}:")));
    assert_none_in(&bytes, &secrets, "after rotation");

    // Now the old key goes, and the server reads everything with the new key alone.
    wasmhook::key_rotation::run(KeysCommand::Prune(args())).unwrap();
    assert_eq!(key_ids(&path), vec![new.clone()]);
    s.restart().await;
    assert_eq!(
        secret_of(&s, &key, &secrets.sub_id).await,
        secrets.current_secret
    );
    let (status, body) = s
        .get(
            &format!("/v1/subscriptions/{}/secret", secrets.sub_id),
            &key,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body["previous_secret_expires_at"].is_string(),
        "the previous secret still signs: {body}"
    );
    assert_eq!(
        greeting_seen_by_plugin(&s, &key, &secrets.plugin_id).await,
        secrets.plugin_secret
    );
    s.stop().await;
}

#[tokio::test]
async fn a_missing_or_wrong_key_file_stops_the_start_naming_it() {
    if common::sqlite_only("a_missing_or_wrong_key_file_stops_the_start_naming_it") {
        return;
    }
    let mut s = TestServer::start().await;
    let (key, secrets) = make_secrets(&s).await;
    s.stop().await;
    let path = key_file(&s.dir);
    let saved = std::fs::read(&path).unwrap();

    // The key file is gone: no new key is made for a database that needs the old one.
    std::fs::remove_file(&path).unwrap();
    let err = format!("{:#}", start_result(&s.dir, &[]).await.unwrap_err());
    assert!(err.contains(&path.display().to_string()), "{err}");
    assert!(err.contains("restore"), "{err}");
    assert!(!path.exists(), "no stray key file is left behind");

    // A key file given by option must exist.
    let given = s.dir.join("elsewhere").join("keys");
    let given_arg = given.display().to_string();
    let err = format!(
        "{:#}",
        start_result(&s.dir, &["--encryption-key-file", &given_arg])
            .await
            .unwrap_err()
    );
    assert!(err.contains(&given_arg), "{err}");

    // Another installation's key file (even one whose key has the same id) is refused.
    std::fs::create_dir_all(given.parent().unwrap()).unwrap();
    let id = String::from_utf8_lossy(&saved)
        .lines()
        .find(|l| !l.starts_with('#') && !l.trim().is_empty())
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    let other_key = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
    std::fs::write(&given, format!("{id} {other_key}\n")).unwrap();
    let err = format!(
        "{:#}",
        start_result(&s.dir, &["--encryption-key-file", &given_arg])
            .await
            .unwrap_err()
    );
    assert!(err.contains(&given_arg), "{err}");
    assert!(err.contains("does not decrypt"), "{err}");

    // A damaged key file names itself and its line.
    std::fs::write(&given, "this is not a key\n").unwrap();
    let err = format!(
        "{:#}",
        start_result(&s.dir, &["--encryption-key-file", &given_arg])
            .await
            .unwrap_err()
    );
    assert!(err.contains(&given_arg) && err.contains("line 1"), "{err}");

    // The right key file, moved out of the data dir and given by option: all is well.
    std::fs::write(&given, &saved).unwrap();
    s.restart_with(&["--encryption-key-file", &given_arg]).await;
    assert_eq!(
        secret_of(&s, &key, &secrets.sub_id).await,
        secrets.current_secret
    );
    s.stop().await;
}

#[tokio::test]
async fn secrets_stored_in_clear_by_an_earlier_version_are_encrypted_at_start() {
    if common::sqlite_only("secrets_stored_in_clear_by_an_earlier_version_are_encrypted_at_start") {
        return;
    }
    let mut s = TestServer::start().await;
    let (key, secrets) = make_secrets(&s).await;
    s.stop().await;
    // What a version without encryption at rest left: the secrets in clear.
    let legacy = "whsec_bGVnYWN5LXNlY3JldC1mcm9tLWJlZm9yZS0wMDA=";
    let legacy_airy = "3e9c0f55-legacy-airy-secret";
    {
        let db = rusqlite::Connection::open(s.dir.join("wasmhook.sqlite3")).unwrap();
        db.execute(
            "UPDATE subscriptions SET secret = ?1 WHERE id = ?2",
            [legacy, secrets.sub_id.as_str()],
        )
        .unwrap();
        db.execute(
            "UPDATE subscriptions SET airy_api_secret = ?1 WHERE airy_api_secret IS NOT NULL",
            [legacy_airy],
        )
        .unwrap();
    }
    let bytes = database_bytes(&s.dir);
    assert!(holds(&bytes, legacy) && holds(&bytes, legacy_airy));

    s.restart().await;
    // Nothing is lost...
    assert_eq!(secret_of(&s, &key, &secrets.sub_id).await, legacy);
    let (_, airy) = s
        .post(
            "/webhooks.subscribe",
            &key,
            json!({"url": "https://example.com/airy"}),
        )
        .await;
    assert_eq!(airy["api_secret"], legacy_airy, "{airy}");
    // ...and the clear copies are gone from the files, free pages and WAL included.
    let bytes = database_bytes(&s.dir);
    assert!(!holds(&bytes, legacy), "the clear secret is still on disk");
    assert!(
        !holds(&bytes, legacy_airy),
        "the clear api secret is still on disk"
    );
    s.stop().await;
    let bytes = database_bytes(&s.dir);
    assert!(!holds(&bytes, legacy) && !holds(&bytes, legacy_airy));
}

#[tokio::test]
async fn secret_keys_are_checked_and_settable_at_upload() {
    let s = TestServer::start().await;
    let (_, key) = s.account("A").await;
    let resp = s
        .http
        .post(s.url("/v1/plugins?name=g&config=%7B%22token%22%3A%22t-123%22%7D&secret_keys=token"))
        .bearer_auth(&key)
        .header("content-type", "application/wasm")
        .body(std::fs::read(wasm::NOOP).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let plugin: Value = resp.json().await.unwrap();
    assert_eq!(plugin["config"]["token"], "********", "{plugin}");
    assert_eq!(plugin["secret_keys"], json!(["token"]));

    let path = format!("/v1/plugins/{}", plugin["id"].as_str().unwrap());
    let (status, body) = s.patch(&path, &key, json!({"secret_keys": [""]})).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("secret_keys")
    );
    let (status, body) = s.patch(&path, &key, json!({"secret_keys": "token"})).await;
    assert_eq!(status, 400, "{body}");
    // Unmarking a key shows its value again (the operator chose so).
    let (status, body) = s.patch(&path, &key, json!({"secret_keys": []})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["config"]["token"], "t-123");
}
