//! `wasmhook-load`: drives a real wasmhook server (the release binary) and a fast local
//! receiver over loopback, and writes the benchmark report.
//!
//! `wasmhook-load run --server target/release/wasmhook --out target/bench/load.json`
//! `wasmhook-load report --load target/bench/load.json --criterion target/criterion --out BENCHMARKS.md`

mod drive;
mod receiver;
mod report;
mod scenarios;
mod server;

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};

use scenarios::{Ctx, Row};

#[derive(Parser)]
#[command(
    name = "wasmhook-load",
    about = "Load tool and benchmark report for wasmhook"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the load scenarios against fresh servers.
    Run {
        /// The wasmhook binary (a release build).
        #[arg(long, default_value = "target/release/wasmhook")]
        server: PathBuf,
        /// How long each scenario drives load.
        #[arg(long, default_value = "8s", value_parser = parse_secs)]
        duration: Duration,
        /// Where to write the results (JSON).
        #[arg(long, default_value = "target/bench/load.json")]
        out: PathBuf,
    },
    /// Write BENCHMARKS.md from the load results and criterion's estimates.
    Report {
        #[arg(long, default_value = "target/bench/load.json")]
        load: PathBuf,
        #[arg(long, default_value = "target/criterion")]
        criterion: PathBuf,
        #[arg(long, default_value = "BENCHMARKS.md")]
        out: PathBuf,
        /// Hand-written analysis appended to the report.
        #[arg(long, default_value = "load/analysis.md")]
        analysis: PathBuf,
        /// How long the whole suite took, build included (scripts/bench passes it).
        #[arg(long)]
        suite_seconds: Option<u64>,
        /// Whether the suite started from a clean target dir ("clean") or not ("incremental").
        #[arg(long)]
        build: Option<String>,
    },
}

fn parse_secs(s: &str) -> Result<Duration, String> {
    let n: f64 = s
        .trim_end_matches('s')
        .parse()
        .map_err(|e| format!("{s}: {e}"))?;
    Ok(Duration::from_secs_f64(n))
}

async fn run(server: PathBuf, duration: Duration, out: PathBuf) -> anyhow::Result<()> {
    anyhow::ensure!(
        server.exists(),
        "{} not found: build it with cargo build --release -p wasmhook",
        server.display()
    );
    let receiver = receiver::Receiver::start().await?;
    let ctx = Ctx {
        bin: &server,
        duration,
        receiver,
    };
    let mut rows: Vec<Row> = Vec::new();
    let mut push = |row: Row| {
        eprintln!("{}", report::line(&row));
        rows.push(row);
    };
    push(scenarios::receiver_bound(&ctx).await?);
    push(scenarios::ingest(&ctx, false).await?);
    push(scenarios::ingest(&ctx, true).await?);
    push(scenarios::fanout(&ctx, 1, None, None).await?);
    push(scenarios::fanout(&ctx, 10, None, None).await?);
    push(scenarios::fanout(&ctx, 1, None, Some(1000.0)).await?);
    push(scenarios::fanout(&ctx, 1, Some(wasmhook_plugin_artifacts::PII_REDACTOR), None).await?);
    push(scenarios::reacting(&ctx, wasmhook_plugin_artifacts::AUTO_REPLY).await?);
    for row in scenarios::startup_and_idle(&ctx, wasmhook_plugin_artifacts::NOOP).await? {
        push(row);
    }
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&out, serde_json::to_string_pretty(&rows)?)?;
    eprintln!("wrote {}", out.display());
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Run {
            server,
            duration,
            out,
        } => run(server, duration, out).await,
        Command::Report {
            load,
            criterion,
            out,
            analysis,
            suite_seconds,
            build,
        } => {
            let duration = suite_seconds.map(|s| report::SuiteTime {
                seconds: s,
                build: build.unwrap_or_else(|| "incremental".into()),
            });
            report::write(&load, &criterion, &analysis, &out, duration.as_ref())
        }
    }
}
