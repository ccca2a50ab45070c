//! Per-account quotas: plugins, stored plugin bytes (every version), subscriptions. Past one,
//! a request is a 403 `quota_exceeded` naming the quota, its limit and the account's usage;
//! concurrent requests cannot slip past it together, and a refused upload leaves no files.

use crate::common::TestServer;
use serde_json::{Value, json};
use wasmhook_plugin_artifacts as wasm;

/// Uploads `path` as a new plugin; returns the status and body.
async fn upload(s: &TestServer, key: &str, path: &str) -> (u16, Value) {
    let resp = upload_request(s, key, path).send().await.unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap())
}

/// Uploads `path` as a new version of plugin `id`.
async fn new_version(s: &TestServer, key: &str, id: &str, path: &str) -> (u16, Value) {
    let resp = s
        .http
        .put(s.url(&format!("/v1/plugins/{id}")))
        .bearer_auth(key)
        .header("content-type", "application/wasm")
        .body(std::fs::read(path).unwrap())
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap())
}

fn assert_quota(status: u16, body: &Value, quota: &str, limit: u64, usage: u64) {
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"]["code"], "quota_exceeded", "{body}");
    assert_eq!(body["error"]["quota"]["quota"], quota, "{body}");
    assert_eq!(body["error"]["quota"]["limit"], limit, "{body}");
    assert_eq!(body["error"]["quota"]["usage"], usage, "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains(&format!("at most {limit}")), "{message}");
}

/// Files under the data dir's `plugins/` (every stored version has a .wasm and a .cwasm).
/// The files kept in the data dir: uploaded components (in a directory per plugin) and
/// compiled artifacts (in `compiled/`, one per distinct component and engine: identical uploads
/// share one).
fn stored_files(s: &TestServer) -> (usize, usize) {
    let Ok(dirs) = std::fs::read_dir(s.dir.join("plugins")) else {
        return (0, 0);
    };
    let (mut components, mut compiled) = (0, 0);
    for dir in dirs {
        let dir = dir.unwrap();
        let files = std::fs::read_dir(dir.path()).unwrap().count();
        if dir.file_name() == "compiled" {
            compiled += files;
        } else {
            components += files;
        }
    }
    (components, compiled)
}

#[tokio::test]
async fn concurrent_uploads_stop_at_the_plugin_quota_and_leave_no_files() {
    let s = TestServer::start_with(&["--max-plugins-per-account", "3"]).await;
    let (_, key) = s.account("A").await;
    let (_, other) = s.account("B").await;
    let results = send_all(
        (0..6)
            .map(|_| upload_request(&s, &key, wasm::NOOP))
            .collect(),
    )
    .await;
    let created = results.iter().filter(|(status, _)| *status == 202).count();
    assert_eq!(created, 3, "{results:?}");
    for (status, body) in results.iter().filter(|(status, _)| *status != 202) {
        assert_quota(*status, body, "plugins", 3, 3);
    }
    let (_, list) = s.get("/v1/plugins", &key).await;
    assert_eq!(list["data"].as_array().unwrap().len(), 3);
    for p in list["data"].as_array().unwrap() {
        s.compiled(&key, p["id"].as_str().unwrap(), "ready").await;
    }
    let (components, compiled) = stored_files(&s);
    assert_eq!(components, 3, "refused uploads leave no files");
    assert_eq!(
        compiled, 1,
        "the three identical uploads share one compiled artifact"
    );
    // Another account has its own quota.
    assert_eq!(upload(&s, &other, wasm::NOOP).await.0, 202);
    // Deleting one makes room again.
    let id = list["data"][0]["id"].as_str().unwrap();
    assert_eq!(s.delete(&format!("/v1/plugins/{id}"), &key).await.0, 204);
    assert_eq!(upload(&s, &key, wasm::NOOP).await.0, 202);
}

#[tokio::test]
async fn every_version_counts_against_the_storage_quota() {
    let size = std::fs::metadata(wasm::NOOP).unwrap().len();
    let limit = 2 * size + size / 2;
    let s = TestServer::start_with(&["--max-plugin-storage-per-account", &limit.to_string()]).await;
    let (_, key) = s.account("A").await;
    let (status, plugin) = upload(&s, &key, wasm::NOOP).await;
    assert_eq!(status, 202, "{plugin}");
    let id = plugin["id"].as_str().unwrap();
    let (status, body) = new_version(&s, &key, id, wasm::NOOP).await;
    assert_eq!(status, 202, "{body}");
    let (status, body) = new_version(&s, &key, id, wasm::NOOP).await;
    assert_quota(status, &body, "plugin_bytes", limit, 2 * size);
    assert_eq!(body["error"]["quota"]["requested"], size);
    let (status, body) = upload(&s, &key, wasm::NOOP).await;
    assert_quota(status, &body, "plugin_bytes", limit, 2 * size);
    let (_, versions) = s.get(&format!("/v1/plugins/{id}/versions"), &key).await;
    assert_eq!(versions["data"].as_array().unwrap().len(), 2, "{versions}");
    s.compiled(&key, id, "ready").await;
    let (components, compiled) = stored_files(&s);
    assert_eq!(components, 2, "refused versions leave no files");
    assert_eq!(
        compiled, 1,
        "identical versions share one compiled artifact"
    );
    let (_, got) = s.get(&format!("/v1/plugins/{id}"), &key).await;
    assert_eq!(got["version"], 2);
}

#[tokio::test]
async fn concurrent_subscriptions_stop_at_the_quota_on_every_path() {
    let s = TestServer::start_with(&["--max-subscriptions-per-account", "3"]).await;
    let (_, key) = s.account("A").await;
    let create = |i: usize| {
        s.http
            .post(s.url("/v1/subscriptions"))
            .bearer_auth(&key)
            .json(&json!({"url": format!("http://127.0.0.1:9/{i}"), "event_types": ["*"]}))
    };
    let results = send_all((0..10).map(create).collect()).await;
    let created = results.iter().filter(|(status, _)| *status == 201).count();
    assert_eq!(created, 3, "{results:?}");
    for (status, body) in results.iter().filter(|(status, _)| *status != 201) {
        assert_quota(*status, body, "subscriptions", 3, 3);
    }
    let (_, list) = s.get("/v1/subscriptions", &key).await;
    assert_eq!(list["data"].as_array().unwrap().len(), 3);
    // The Airy webhook and `wasmhook listen` create subscriptions too.
    let (status, body) = s
        .post(
            "/webhooks.subscribe",
            &key,
            json!({"url": "http://127.0.0.1:9/airy"}),
        )
        .await;
    assert_quota(status, &body, "subscriptions", 3, 3);
    let (status, body) = s
        .post("/v1/listeners", &key, json!({"event_types": ["*"]}))
        .await;
    assert_quota(status, &body, "subscriptions", 3, 3);
    // Deleting one makes room again.
    let id = list["data"][0]["id"].as_str().unwrap();
    assert_eq!(
        s.delete(&format!("/v1/subscriptions/{id}"), &key).await.0,
        204
    );
    assert_eq!(create(99).send().await.unwrap().status(), 201);
}

#[tokio::test]
async fn the_defaults_allow_ordinary_use() {
    let s = TestServer::start().await;
    let (_, key) = s.account("A").await;
    for i in 0..20 {
        s.subscribe(
            &key,
            json!({"url": format!("http://127.0.0.1:9/{i}"), "event_types": ["*"]}),
        )
        .await;
    }
    assert_eq!(upload(&s, &key, wasm::NOOP).await.0, 202);
}

/// Sends the requests side by side; returns each one's status and body, in order.
async fn send_all(requests: Vec<reqwest::RequestBuilder>) -> Vec<(u16, Value)> {
    let mut tasks = tokio::task::JoinSet::new();
    for (i, request) in requests.into_iter().enumerate() {
        tasks.spawn(async move {
            let resp = request.send().await.expect("request reaches the server");
            let status = resp.status().as_u16();
            (i, status, resp.json::<Value>().await.unwrap())
        });
    }
    let mut results = tasks.join_all().await;
    results.sort_by_key(|(i, _, _)| *i);
    results.into_iter().map(|(_, s, b)| (s, b)).collect()
}

fn upload_request(s: &TestServer, key: &str, path: &str) -> reqwest::RequestBuilder {
    s.http
        .post(s.url("/v1/plugins?name=quota"))
        .bearer_auth(key)
        .header("content-type", "application/wasm")
        .body(std::fs::read(path).unwrap())
}
