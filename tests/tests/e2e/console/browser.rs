//! Runs a browser flow (`tests/browser/<flow>.mjs`) in Debian's headless Chromium through
//! `playwright-core`, and hands back what it reported.
//!
//! Missing tools (node, `/usr/bin/chromium`, `npm ci --prefix tests/browser`) fail the test
//! under CI (`CI=true`), as `scripts/test` installs them; elsewhere the test is skipped with
//! the reason printed.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn chromium() -> PathBuf {
    std::env::var_os("CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"))
}

/// Whether flows can run here; `false` (skip) only outside CI.
pub fn available() -> bool {
    let node = std::process::Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    let playwright = workspace().join("tests/browser/node_modules/playwright-core");
    let missing: Vec<String> = [
        (!node).then(|| "node".to_string()),
        (!chromium().exists())
            .then(|| format!("{} (apt-get install chromium)", chromium().display())),
        (!playwright.exists())
            .then(|| "tests/browser/node_modules (npm ci --prefix tests/browser)".to_string()),
    ]
    .into_iter()
    .flatten()
    .collect();
    if missing.is_empty() {
        return true;
    }
    let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0");
    assert!(
        !ci,
        "browser tests cannot run, missing: {} (scripts/test installs them)",
        missing.join(", ")
    );
    eprintln!("SKIPPED: browser test, missing: {}", missing.join(", "));
    false
}

/// What a flow printed as `RESULT <json>` lines, merged into one object.
pub struct Reported(pub serde_json::Map<String, Value>);

impl Reported {
    pub fn str(&self, key: &str) -> &str {
        self.0
            .get(key)
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("the flow reported no {key}"))
    }
}

/// One browser at a time: on two cores, parallel Chromiums only make every flow slow.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Runs `tests/browser/<flow>.mjs` with `vars`; panics with its output unless it exits 0.
pub async fn run(flow: &str, vars: &[(&str, String)]) -> Reported {
    let _turn = ONE_AT_A_TIME.lock().await;
    let root = workspace();
    let mut cmd = tokio::process::Command::new("node");
    cmd.arg(root.join("tests/browser").join(format!("{flow}.mjs")))
        .current_dir(&root)
        .env("CHROMIUM", chromium())
        .env("SCREENSHOT_DIR", root.join("target/browser-screenshots"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for (k, v) in vars {
        cmd.env(k, v);
    }
    let child = cmd.spawn().expect("starting node");
    let output = tokio::time::timeout(Duration::from_secs(180), child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("the {flow} flow did not finish within 180 s"))
        .expect("running node");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "browser flow {flow} failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    let mut reported = serde_json::Map::new();
    for line in stdout.lines() {
        if let Some(json) = line.strip_prefix("RESULT ") {
            let value: Value = serde_json::from_str(json).expect("a JSON result");
            if let Value::Object(map) = value {
                reported.extend(map);
            }
        }
    }
    Reported(reported)
}
