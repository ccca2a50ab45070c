//! The compiled `wasmhook` binary as an operator runs it: clean shutdown on SIGTERM, and no
//! acknowledged event lost when the process is killed outright during delivery. The processes
//! run on the backend the harness chose ([`ProcessDatabase`]).

use std::collections::HashSet;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::common::{
    ADMIN, ProcessDatabase, Receiver, answers_ok, eventually, json_call, signal, wasmhook_bin,
};
use serde_json::{Value, json};

struct Process {
    child: Child,
    base: String,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn spawn(dir: &Path, db: &ProcessDatabase, extra: &[&str]) -> Process {
    spawn_logging(dir, db, extra, None).await
}

async fn spawn_logging(
    dir: &Path,
    db: &ProcessDatabase,
    extra: &[&str],
    log: Option<&Path>,
) -> Process {
    let port = free_port();
    let mut cmd = Command::new(wasmhook_bin());
    cmd.args([
        "serve",
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--data-dir",
    ])
    .arg(dir)
    .args([
        "--admin-token",
        ADMIN,
        "--allow-network",
        "127.0.0.0/8",
        "--log-format",
        "json",
    ])
    .args(db.args())
    .args(extra)
    .env("WASMHOOK_LOG", if log.is_some() { "info" } else { "warn" })
    .stdout(match log {
        Some(path) => Stdio::from(std::fs::File::create(path).unwrap()),
        None => Stdio::null(),
    })
    .stderr(Stdio::null());
    let child = cmd.spawn().expect("starting wasmhook");
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    answers_ok(
        &http,
        &format!("{base}/healthz"),
        "the server answers /healthz",
    )
    .await;
    Process { child, base }
}

async fn wait_exit(p: &mut Process, within: Duration) -> std::process::ExitStatus {
    eventually("the process exits", within, || {
        let status = p.child.try_wait().unwrap();
        async move { status }
    })
    .await
}

#[tokio::test]
async fn sigterm_stops_cleanly_and_keeps_the_data() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let http = reqwest::Client::new();
    let log = tmp.path().join("log.jsonl");
    let db = ProcessDatabase::new().await;
    let mut p = spawn_logging(&dir, &db, &[], Some(&log)).await;
    let acc = json_call(
        &http,
        reqwest::Method::POST,
        format!("{}/v1/accounts", p.base),
        ADMIN,
        Some(json!({"name": "a"})),
    )
    .await;
    let key = acc["api_key"].as_str().unwrap().to_string();
    json_call(
        &http,
        reqwest::Method::POST,
        format!("{}/v1/events", p.base),
        &key,
        Some(json!({"id": "e1", "type": "a", "payload": {}})),
    )
    .await;
    signal(&p.child, "-TERM");
    let status = wait_exit(&mut p, Duration::from_secs(20)).await;
    assert!(status.success(), "exit status {status:?}");
    assert!(
        http.get(format!("{}/healthz", p.base))
            .send()
            .await
            .is_err(),
        "no longer accepting"
    );
    // One JSON log line per request, inside its span: method, route, status, latency.
    let lines = std::fs::read_to_string(&log).unwrap();
    let request_line = lines
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|l| l["span"]["route"] == "/v1/events")
        .unwrap_or_else(|| panic!("no request log line for /v1/events in:\n{lines}"));
    assert_eq!(request_line["span"]["method"], "POST");
    assert_eq!(request_line["status"], 202);
    assert!(request_line["latency_ms"].is_number(), "{request_line}");
    // The database was closed cleanly: on SQLite the WAL was folded back into the file (a
    // PostgreSQL database has no file of wasmhook's to look at); a new process reads the data.
    if db.is_sqlite() {
        let wal = dir.join("wasmhook.sqlite3-wal");
        assert!(
            !wal.exists() || std::fs::metadata(&wal).unwrap().len() == 0,
            "WAL checkpointed on close"
        );
    }
    let mut p = spawn(&dir, &db, &[]).await;
    let e = json_call(
        &http,
        reqwest::Method::GET,
        format!("{}/v1/events/e1", p.base),
        &key,
        None,
    )
    .await;
    assert_eq!(e["id"], "e1");
    signal(&p.child, "-TERM");
    assert!(wait_exit(&mut p, Duration::from_secs(20)).await.success());
}

#[tokio::test]
async fn sigkill_during_delivery_loses_no_acknowledged_event() {
    const EVENTS: usize = 2000;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let http = reqwest::Client::new();
    let receiver = Receiver::start().await;
    receiver.set_delay(Duration::from_millis(10));
    let opts = [
        "--delivery-concurrency",
        "8",
        "--delivery-timeout",
        "1s",
        "--retry-schedule",
        "10ms,20ms,50ms,100ms,200ms",
    ];
    let db = ProcessDatabase::new().await;
    let mut p = spawn(&dir, &db, &opts).await;
    let acc = json_call(
        &http,
        reqwest::Method::POST,
        format!("{}/v1/accounts", p.base),
        ADMIN,
        Some(json!({"name": "a"})),
    )
    .await;
    let key = acc["api_key"].as_str().unwrap().to_string();
    let sub = json_call(
        &http,
        reqwest::Method::POST,
        format!("{}/v1/subscriptions", p.base),
        &key,
        Some(json!({"url": receiver.url})),
    )
    .await;
    let sub_id = sub["id"].as_str().unwrap().to_string();
    for chunk in 0..EVENTS / 1000 {
        let events: Vec<Value> =
            (0..1000).map(|i| json!({"id": format!("e-{}", chunk * 1000 + i), "type": "a", "payload": {"i": chunk * 1000 + i}})).collect();
        let resp = http
            .post(format!("{}/v1/events/batch", p.base))
            .bearer_auth(&key)
            .json(&json!({"events": events}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 202);
    }
    for kill in 1..=3 {
        let before = receiver.received().len();
        eventually("delivery is under way", Duration::from_secs(30), || {
            let n = receiver.received().len();
            async move { (n >= before + 50).then_some(()) }
        })
        .await;
        signal(&p.child, "-KILL");
        wait_exit(&mut p, Duration::from_secs(10)).await;
        assert!(
            receiver.received().len() < EVENTS,
            "kill {kill} came during delivery"
        );
        p = spawn(&dir, &db, &opts).await;
    }
    eventually("every event delivered", Duration::from_secs(120), || {
        let ids: HashSet<i64> = receiver
            .received()
            .iter()
            .map(|r| r.json()["data"]["i"].as_i64().unwrap())
            .collect();
        async move { (ids.len() == EVENTS).then_some(()) }
    })
    .await;
    // The delivery log agrees: every delivery succeeded, and each succeeded id was received.
    let received_ids: HashSet<String> = receiver
        .received()
        .iter()
        .map(|r| r.header("webhook-id").unwrap().to_string())
        .collect();
    let mut logged = HashSet::new();
    let mut cursor: Option<String> = None;
    loop {
        let url = match &cursor {
            Some(c) => format!(
                "{}/v1/subscriptions/{sub_id}/deliveries?limit=250&cursor={c}",
                p.base
            ),
            None => format!("{}/v1/subscriptions/{sub_id}/deliveries?limit=250", p.base),
        };
        let page = eventually("deliveries settle", Duration::from_secs(60), || {
            let (http, key, url) = (http.clone(), key.clone(), url.clone());
            async move {
                let page = json_call(&http, reqwest::Method::GET, url, &key, None).await;
                page["data"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .all(|d| d["status"] == "succeeded")
                    .then_some(page)
            }
        })
        .await;
        for d in page["data"].as_array().unwrap() {
            logged.insert(d["id"].as_str().unwrap().to_string());
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    assert_eq!(logged.len(), EVENTS);
    assert_eq!(
        logged, received_ids,
        "the receiver got exactly the logged deliveries (some more than once)"
    );
    signal(&p.child, "-TERM");
    assert!(wait_exit(&mut p, Duration::from_secs(20)).await.success());
}

#[test]
fn serve_help_lists_every_option_with_its_environment_variable() {
    let out = Command::new(wasmhook_bin())
        .args(["serve", "--help"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    // Every option `serve` defines, read from the command definition itself, so a new flag
    // without help or without an environment variable fails here.
    let cli = <wasmhook::cli::Cli as clap::CommandFactory>::command();
    let serve = cli.find_subcommand("serve").expect("a serve subcommand");
    let mut checked = 0;
    for arg in serve.get_arguments() {
        let Some(long) = arg.get_long() else {
            continue; // --help
        };
        if long == "help" {
            continue;
        }
        let flag = format!("--{long}");
        let env = arg
            .get_env()
            .unwrap_or_else(|| panic!("{flag} has no environment variable"))
            .to_string_lossy()
            .into_owned();
        assert!(
            !arg.is_hide_set()
                && help.split([' ', '\n', ',']).any(|word| word == flag)
                && help.contains(&env),
            "{flag} / {env} missing from:\n{help}"
        );
        assert!(
            arg.get_help()
                .is_some_and(|h| !h.to_string().trim().is_empty()),
            "{flag} has no help text"
        );
        checked += 1;
    }
    assert!(checked > 10, "only {checked} options read from the command");
    assert!(help.contains("262144"), "the default event size is shown");
    assert!(help.contains("pretty") && help.contains("json"));
}

#[tokio::test]
async fn the_first_start_generates_an_admin_token_once_and_keeps_it_private() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let port = free_port();
    let db = ProcessDatabase::new().await;
    let run = |log: &Path| {
        Command::new(wasmhook_bin())
            .args([
                "serve",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--data-dir",
            ])
            .arg(&dir)
            .args(db.args())
            .env_remove("WASMHOOK_ADMIN_TOKEN")
            .env("WASMHOOK_LOG", "warn")
            .stdout(Stdio::from(std::fs::File::create(log).unwrap()))
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let http = reqwest::Client::new();
    let ready = |http: reqwest::Client| async move {
        eventually("ready", Duration::from_secs(30), || {
            let http = http.clone();
            async move {
                http.get(format!("http://127.0.0.1:{port}/readyz"))
                    .send()
                    .await
                    .ok()
                    .map(|_| ())
            }
        })
        .await
    };
    let first_log = tmp.path().join("first.log");
    let mut first = Process {
        child: run(&first_log),
        base: format!("http://127.0.0.1:{port}"),
    };
    ready(http.clone()).await;
    let token = std::fs::read_to_string(dir.join("admin-token")).unwrap();
    let printed = std::fs::read_to_string(&first_log).unwrap();
    assert!(
        printed.contains(token.trim()),
        "the token is printed on the first start: {printed}"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.join("admin-token"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600, "readable by the owner only");
    }
    let ok = http
        .get(format!("{}/v1/accounts", first.base))
        .bearer_auth(token.trim())
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    signal(&first.child, "-TERM");
    wait_exit(&mut first, Duration::from_secs(20)).await;

    let second_log = tmp.path().join("second.log");
    let mut second = Process {
        child: run(&second_log),
        base: format!("http://127.0.0.1:{port}"),
    };
    ready(http.clone()).await;
    assert!(
        !std::fs::read_to_string(&second_log)
            .unwrap()
            .contains(token.trim()),
        "printed only once"
    );
    let ok = http
        .get(format!("{}/v1/accounts", second.base))
        .bearer_auth(token.trim())
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200, "the stored token still works");
    signal(&second.child, "-TERM");
    wait_exit(&mut second, Duration::from_secs(20)).await;
}
