//! The plugin commands that need no server: `plugin check` (validate a component as an upload
//! would, and show its interface) and `plugin run` (run it on an event with host calls
//! captured). They use the server's own plugin runtime: the same engine, linker and limits.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::Args;
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::output::print_json;
use super::{CliError, Ctx};
use crate::delivery::netpolicy::NetPolicy;
use crate::plugins::PluginRuntime;
use crate::plugins::inspect::Interface;

/// Instances the local runtime's pool holds: runs are one at a time.
const LOCAL_INSTANCES: u32 = 4;

/// A plugin runtime for this process alone, like the server's (engine, linker, limits), with
/// nothing stored: `data_dir` is never written by a check or a local run.
pub fn runtime(net_policy: NetPolicy) -> Result<PluginRuntime, CliError> {
    PluginRuntime::new(
        &std::env::temp_dir(),
        LOCAL_INSTANCES,
        // One run at a time: the budget only has to let the largest plugin run.
        crate::plugins::budget::default_budget(),
        Default::default(),
        Arc::new(net_policy),
    )
    .map_err(|e| CliError::Invalid(format!("starting the plugin runtime: {e:#}")))
}

/// Reads a component file.
pub fn read_component(path: &Path) -> Result<Vec<u8>, CliError> {
    std::fs::read(path).map_err(|e| CliError::io(path, e))
}

/// Arguments of `plugin check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The component (`.wasm`).
    file: PathBuf,
}

/// What `plugin check -o json` prints.
#[derive(Debug, Serialize)]
struct CheckReport {
    file: String,
    /// Whether an upload would accept it.
    ok: bool,
    /// Why an upload would refuse it.
    reason: Option<String>,
    size_bytes: usize,
    sha256: String,
    imports: Vec<Interface>,
    exports: Vec<Interface>,
}

fn print_interfaces(title: &str, list: &[Interface]) {
    println!("{title}");
    if list.is_empty() {
        println!("  (none)");
    }
    let width = list.iter().map(|i| i.name.len()).max().unwrap_or(0);
    for i in list {
        let functions = match i.functions.is_empty() {
            true => "(types only)".to_string(),
            false => i.functions.join(", "),
        };
        println!("  {:<width$}  {functions}", i.name);
    }
}

/// Validates a component the way an upload would and prints its imports and exports.
pub async fn check(args: CheckArgs, ctx: &Ctx) -> Result<(), CliError> {
    let wasm = read_component(&args.file)?;
    let checked = tokio::task::spawn_blocking({
        let wasm = wasm.clone();
        move || runtime(NetPolicy::default()).map(|rt| rt.check_component(&wasm))
    })
    .await
    .expect("the check does not panic")?;
    let interface = checked.interface.unwrap_or_default();
    let report = CheckReport {
        file: args.file.display().to_string(),
        ok: checked.refused.is_none(),
        reason: checked.refused.as_ref().map(|e| e.to_string()),
        size_bytes: wasm.len(),
        sha256: hex::encode(Sha256::digest(&wasm)),
        imports: interface.imports,
        exports: interface.exports,
    };
    if ctx.json() {
        print_json(&report);
    } else {
        match &report.reason {
            None => println!(
                "{}: a valid wasmhook plugin component ({} bytes, sha256 {})",
                report.file, report.size_bytes, report.sha256
            ),
            Some(_) => println!(
                "{}: {} bytes, sha256 {}",
                report.file, report.size_bytes, report.sha256
            ),
        }
        if !report.exports.is_empty() || !report.imports.is_empty() {
            println!();
            print_interfaces("EXPORTS", &report.exports);
            print_interfaces("IMPORTS", &report.imports);
        }
    }
    match report.reason {
        None => Ok(()),
        Some(reason) => Err(CliError::Failed(format!(
            "an upload would be refused: {reason}"
        ))),
    }
}
