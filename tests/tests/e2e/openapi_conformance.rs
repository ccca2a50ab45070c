//! `/openapi.json` is exact: every route is documented and every documented operation is
//! routed; every operation lists the errors it can answer; and schemathesis, driving the live
//! server from the document, finds no answer the document does not describe.

use crate::common;

use std::collections::BTreeSet;

use crate::common::{ADMIN, TestServer};
use reqwest::Method;
use serde_json::Value;
use wasmhook_plugin_artifacts as wasm;

/// Routes served outside the API document: the web console's HTML pages.
fn is_console(path: &str) -> bool {
    path == "/" || path == "/console" || path.starts_with("/console/")
}

/// `(METHOD, path)` of every route in the server's router, read from its `Debug` output:
/// axum has no other way to list routes, and reading the real router (rather than a list
/// kept by hand) is the point.
fn routed(router: &axum::Router) -> BTreeSet<(String, String)> {
    let text = format!("{router:?}");
    // The fallback router's route ids are its own; only the main one serves routes.
    let main = text
        .split_once("fallback_router:")
        .map(|(main, _)| main)
        .expect("axum's Router Debug names its fallback_router");
    let id_after = |s: &str| -> Option<(String, usize)> {
        let digits: String = s.chars().take_while(char::is_ascii_digit).collect();
        (!digits.is_empty()).then(|| (digits.clone(), digits.len()))
    };
    let mut paths = std::collections::BTreeMap::new();
    let mut methods = std::collections::BTreeMap::new();
    for (at, _) in main.match_indices("RouteId(") {
        let rest = &main[at + "RouteId(".len()..];
        let Some((id, len)) = id_after(rest) else {
            continue;
        };
        let rest = &rest[len..];
        if let Some(path) = rest.strip_prefix("): \"") {
            paths.insert(id, path[..path.find('"').unwrap()].to_string());
        } else if rest.starts_with("): MethodRouter(") {
            let allow = rest
                .split_once("allow_header: ")
                .map(|(_, a)| a)
                .expect("a MethodRouter's Debug ends with its allow_header");
            let list = allow
                .strip_prefix("Bytes(b\"")
                .map(|a| a[..a.find('"').unwrap()].to_string())
                .unwrap_or_default();
            methods.insert(id, list);
        }
    }
    assert!(
        paths.len() > 20 && methods.len() == paths.len(),
        "could not read the routes from the router's Debug output (axum changed it?): \
         {} paths, {} method sets",
        paths.len(),
        methods.len()
    );
    let mut out = BTreeSet::new();
    for (id, path) in paths {
        for method in methods[&id].split(',').filter(|m| !m.is_empty()) {
            // axum answers HEAD wherever it answers GET; the document lists GET.
            if method != "HEAD" {
                out.insert((method.to_string(), path.clone()));
            }
        }
    }
    out
}

fn documented(doc: &Value) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in item.as_object().unwrap().keys() {
            if [
                "get", "put", "post", "delete", "patch", "options", "head", "trace",
            ]
            .contains(&method.as_str())
            {
                out.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    out
}

async fn document(s: &TestServer) -> Value {
    let (status, doc) = s.call(Method::GET, "/openapi.json", None, None).await;
    assert_eq!(status, 200, "{doc}");
    doc
}

#[tokio::test]
async fn every_route_is_documented_and_every_documented_operation_is_routed() {
    let s = TestServer::start().await;
    let doc = document(&s).await;

    let tmp = tempfile::tempdir().unwrap();
    let db = common::ProcessDatabase::new().await;
    let mut args = common::default_args();
    args.extend(["--data-dir".into(), tmp.path().display().to_string()]);
    args.extend(db.args());
    let config = wasmhook::config::Config::from_args(args).unwrap();
    let router = wasmhook::api::app(wasmhook::open(config).await.unwrap());
    let routes: BTreeSet<_> = routed(&router)
        .into_iter()
        .filter(|(_, path)| !is_console(path))
        .collect();

    for known in [
        ("GET", "/openapi.json"),
        ("DELETE", "/v1/subscriptions/{id}"),
    ] {
        let known = (known.0.to_string(), known.1.to_string());
        assert!(
            routes.contains(&known),
            "{known:?} not read from the router"
        );
    }
    let documented = documented(&doc);
    let undocumented: Vec<_> = routes.difference(&documented).collect();
    let unrouted: Vec<_> = documented.difference(&routes).collect();
    assert!(
        undocumented.is_empty(),
        "routes missing from /openapi.json: {undocumented:?}"
    );
    assert!(
        unrouted.is_empty(),
        "documented operations with no route: {unrouted:?}"
    );
}

/// The responses of one operation, by status.
fn statuses(op: &Value) -> BTreeSet<String> {
    op["responses"]
        .as_object()
        .map(|r| r.keys().cloned().collect())
        .unwrap_or_default()
}

fn operations(doc: &Value) -> Vec<(String, String, Value)> {
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            out.push((method.clone(), path.clone(), op.clone()));
        }
    }
    out
}

#[tokio::test]
async fn every_operation_lists_the_errors_it_can_answer() {
    let s = TestServer::start().await;
    let doc = document(&s).await;
    let schemes = doc["components"]["securitySchemes"].as_object().unwrap();
    assert_eq!(schemes["api_key"]["scheme"], "bearer");
    assert_eq!(schemes["admin_token"]["scheme"], "bearer");

    for (method, path, op) in operations(&doc) {
        let has = statuses(&op);
        let error_body = |status: &str| {
            op["responses"][status]["content"]["application/json"]["schema"]["$ref"]
                == "#/components/schemas/ErrorBody"
        };
        let authenticated = op["security"].as_array().is_some_and(|s| !s.is_empty());
        let mut wanted = Vec::new();
        if authenticated {
            wanted.extend(["401", "429", "503"]);
        }
        if op.get("requestBody").is_some() {
            wanted.extend(["400", "408", "413", "415"]);
        }
        let params = op["parameters"].as_array().cloned().unwrap_or_default();
        if params.iter().any(|p| p["in"] == "path") {
            wanted.push("404");
        }
        if !params.is_empty() {
            wanted.push("400");
        }
        for status in wanted {
            assert!(
                has.contains(status) && error_body(status),
                "{method} {path} lacks {status} with ErrorBody: {has:?}"
            );
        }
        assert!(
            has.iter().any(|s| s.starts_with('2')),
            "{method} {path} has no success response"
        );
    }
    // Every operation but the public probes needs credentials.
    for (method, path, op) in operations(&doc) {
        let public = ["/healthz", "/readyz", "/metrics", "/openapi.json"].contains(&path.as_str());
        assert_eq!(
            op["security"].as_array().is_some_and(|s| !s.is_empty()),
            !public,
            "{method} {path}: security {}",
            op["security"]
        );
    }
    // And the server answers as documented: a missing key is a 401 with the error body.
    let (status, body) = s.call(Method::GET, "/v1/subscriptions", None, None).await;
    assert_eq!(status, 401);
    assert_eq!(body["error"]["code"], "unauthorized");
    let (status, body) = s
        .call(Method::GET, "/v1/accounts", Some("nope"), None)
        .await;
    assert_eq!(status, 401, "{body}");
    let _ = ADMIN;
}

/// The virtualenv with schemathesis and openapi-python-client (`tests/openapi/install-tools.sh`),
/// or `None` (skipped, with a message) where the tools are not installed; CI must have them.
fn tools() -> Option<std::path::PathBuf> {
    match std::env::var_os("WASMHOOK_OPENAPI_TOOLS_DIR") {
        Some(dir) => {
            let venv = std::path::PathBuf::from(dir).join("venv");
            assert!(
                venv.join("bin/schemathesis").exists(),
                "WASMHOOK_OPENAPI_TOOLS_DIR is set but {} has no schemathesis: run \
                 tests/openapi/install-tools.sh",
                venv.display()
            );
            Some(venv)
        }
        None if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("CI=true but WASMHOOK_OPENAPI_TOOLS_DIR is unset: scripts/test sets it")
        }
        None => {
            eprintln!(
                "SKIPPED: WASMHOOK_OPENAPI_TOOLS_DIR is unset (scripts/test installs the OpenAPI \
                 tools and sets it)"
            );
            None
        }
    }
}

/// Runs `program` with `args` in `dir` (the tools keep caches in their working directory) to
/// completion; panics with its output unless it succeeds.
async fn run(
    program: &std::path::Path,
    dir: &std::path::Path,
    args: &[&str],
    envs: &[(&str, &str)],
) -> String {
    let out = tokio::process::Command::new(program)
        .current_dir(dir)
        .args(args)
        .envs(envs.iter().copied())
        .kill_on_drop(true)
        .output()
        .await
        .unwrap_or_else(|e| panic!("running {}: {e}", program.display()));
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "{} {args:?} failed ({}):\n{text}",
        program.display(),
        out.status
    );
    text
}

/// schemathesis (checks: no 5xx, documented status, content type and response schema) over
/// every operation but the two event streams, 25 examples per operation and phase by default
/// (`WASMHOOK_SCHEMATHESIS_EXAMPLES` for more), with a fixed seed so a failure reproduces.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_answer_the_document_does_not_describe() {
    let Some(venv) = tools() else { return };
    // The default network policy: the URLs schemathesis makes up never reach this machine.
    let s = TestServer::start_with(&["--allow-network", "192.0.2.0/24"]).await;
    let (account, key) = s.account("conformance").await;
    // One real resource of each kind, so operations on an id also answer with the resource
    // (and its schema is checked), not only with 404s for made-up ids. TEST-NET-1 is allowed
    // and never answers: deliveries fail, slowly enough to be seen pending.
    let sub = s
        .subscribe(&key, serde_json::json!({"url": "http://192.0.2.1/hook"}))
        .await;
    let event = s
        .event(
            &key,
            serde_json::json!({"type": "message:created", "payload": {"conversation_id": "c-1"}}),
        )
        .await;
    let (_, deliveries) = s
        .get(
            &format!("/v1/events/{}/deliveries", event["id"].as_str().unwrap()),
            &key,
        )
        .await;
    let plugin = s
        .plugin(&key, "conformance", wasm::HOSTILE, Value::Null)
        .await;
    let ids = [
        ("/v1/subscriptions/", sub["id"].clone()),
        ("/v1/events/", event["id"].clone()),
        ("/v1/deliveries/", deliveries["data"][0]["id"].clone()),
        ("/v1/plugins/", plugin["id"].clone()),
        ("/v1/accounts/", Value::String(account)),
    ];
    let mut toml = format!(
        "[auth.openapi.api_key]\nbearer = \"{key}\"\n\n\
         [auth.openapi.admin_token]\nbearer = \"{ADMIN}\"\n"
    );
    for (prefix, id) in ids {
        let id = id.as_str().expect("a created resource has an id");
        toml.push_str(&format!(
            "\n[[operations]]\ninclude-path-regex = \"^{prefix}\\\\{{id\\\\}}\"\n\
             parameters = {{ \"path.id\" = \"{id}\" }}\n"
        ));
    }
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("schemathesis.toml");
    std::fs::write(&config, toml).unwrap();
    let schema = s.url("/openapi.json");
    let hooks = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("openapi");
    let report = dir.path().join("report");
    let examples = std::env::var("WASMHOOK_SCHEMATHESIS_EXAMPLES").unwrap_or("25".into());
    let output = run(
        &venv.join("bin/schemathesis"),
        dir.path(),
        &[
            "--config-file",
            config.to_str().unwrap(),
            "--no-color",
            "run",
            &schema,
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,\
             response_schema_conformance",
            "--max-examples",
            &examples,
            // One worker: CPython 3.11 can fail inside schemathesis ("AST constructor recursion
            // depth mismatch") when two generate at once.
            "--workers",
            "1",
            "--seed",
            "14",
            "--generation-database",
            "none",
            "--request-timeout",
            "20",
            "--suppress-health-check",
            "all",
            // Streams never end, so a request-and-response fuzzer cannot check them; the
            // stream tests do.
            "--exclude-path-regex",
            "/stream$",
            "--report-dir",
            report.to_str().unwrap(),
        ],
        &[
            // Uploads are raw bytes: tell schemathesis to send `application/wasm` as such.
            ("SCHEMATHESIS_HOOKS", "wasm_hooks"),
            ("PYTHONPATH", hooks.to_str().unwrap()),
        ],
    )
    .await;
    eprintln!("{output}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_generated_python_client_runs_the_readme_flow() {
    let Some(venv) = tools() else { return };
    let s = TestServer::start().await;
    let receiver = common::Receiver::start().await;
    let (_, key) = s.account("python").await;
    let dir = tempfile::tempdir().unwrap();
    let doc = dir.path().join("openapi.json");
    std::fs::write(&doc, document(&s).await.to_string()).unwrap();
    let client = dir.path().join("wasmhook_client");
    run(
        &venv.join("bin/openapi-python-client"),
        dir.path(),
        &[
            "generate",
            "--path",
            doc.to_str().unwrap(),
            "--meta",
            "none",
            "--output-path",
            client.to_str().unwrap(),
        ],
        &[],
    )
    .await;
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("openapi/readme_flow.py");
    let output = run(
        &venv.join("bin/python"),
        dir.path(),
        &[script.to_str().unwrap()],
        &[
            ("PYTHONPATH", dir.path().to_str().unwrap()),
            ("PYTHONDONTWRITEBYTECODE", "1"),
            ("WASMHOOK_URL", &s.base),
            ("WASMHOOK_API_KEY", &key),
            ("RECEIVER_URL", &format!("{}/hook", receiver.url)),
        ],
    )
    .await;
    assert!(output.contains("delivery succeeded"), "{output}");
    // What the script did is what the server recorded.
    let got = receiver.at("/hook");
    assert_eq!(got.len(), 1, "one delivery reached the receiver");
    assert_eq!(got[0].json()["data"]["body"], "Hello world!");
}
