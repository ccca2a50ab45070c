//! Plugin uploads: the time to the upload's answer (`202`, validated and stored) and to the
//! version's `ready` (compiled in the background), for the largest components at hand: the
//! Python and JavaScript examples when built (`--other-languages`, `WASMHOOK_OTHER_LANGUAGES_DIR`
//! as `scripts/test` and `scripts/bench` set it, else `target/other-languages`) and pii-redactor. Uploads answer within 2 s
//! whatever the component's size; compiling takes what it takes, after the answer.

use std::path::Path;

use crate::scenarios::{Ctx, Row};
use crate::server::Server;

/// The components to upload: (label, path), largest first when they exist.
fn components(dir: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (label, file) in [
        ("Python example (componentize-py)", "python_hello.wasm"),
        ("JavaScript example (ComponentizeJS)", "js_hello.wasm"),
    ] {
        let path = dir.join(file);
        if path.exists() {
            out.push((label.to_string(), path.display().to_string()));
        }
    }
    out.push((
        "pii-redactor (Rust)".into(),
        wasmhook_plugin_artifacts::PII_REDACTOR.into(),
    ));
    out
}

/// One row per component: seconds to the `202`, and to `ready` in the note.
pub async fn uploads(ctx: &Ctx<'_>) -> anyhow::Result<Vec<Row>> {
    let tmp = tempfile::tempdir()?;
    let (server, _) = Server::start(ctx.bin, &tmp.path().join("data")).await?;
    let key = server.account().await?;
    let mut rows = Vec::new();
    for (label, path) in components(ctx.other_languages) {
        let size_mb = std::fs::metadata(&path)?.len() as f64 / 1e6;
        let (_, answered, ready) = server.upload(&key, &path).await?;
        rows.push(Row {
            scenario: format!("upload answered, {label}"),
            seconds: Some(answered.as_secs_f64()),
            note: format!(
                "{size_mb:.1} MB; ready (compiled) after {:.2} s",
                ready.as_secs_f64()
            ),
            ..Default::default()
        });
    }
    server.stop().await?;
    Ok(rows)
}
