//! `wasmhook-load`: drives a real wasmhook server (the release binary) and a fast local
//! receiver over loopback, and writes the benchmark report.
//!
//! `wasmhook-load run --server target/release/wasmhook --out target/bench/load.json`
//! `wasmhook-load run --server target/debug/wasmhook --duration 2s --only noisy,ordered`
//! `wasmhook-load run --server target/debug/wasmhook --only lists --stored-deliveries 5000`
//! `wasmhook-load report --load target/bench/load.json --criterion target/criterion --out BENCHMARKS.md`

mod drive;
mod list_pages;
mod postgres;
mod receiver;
mod report;
mod scenarios;
mod server;
mod uploads;

use std::path::{Path, PathBuf};
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
    Run(RunArgs),
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
        /// The share of CPU time stolen by the hypervisor during the suite, in percent
        /// (scripts/bench reads it from /proc/stat).
        #[arg(long)]
        steal_percent: Option<f64>,
        /// The previous report, whose fan-out figures this run is compared with (default: the
        /// file at --out, read before it is overwritten).
        #[arg(long)]
        previous: Option<PathBuf>,
        /// Load results of a run of its own for the SQLite-and-PostgreSQL section (which then
        /// compares the SQLite and PostgreSQL rows of that run); by default that section
        /// comes from --load.
        #[arg(long)]
        backends: Option<PathBuf>,
    },
}

/// `wasmhook-load run`'s options.
#[derive(clap::Args)]
struct RunArgs {
    /// The wasmhook binary (a release build).
    #[arg(long, default_value = "target/release/wasmhook")]
    server: PathBuf,
    /// How long each scenario drives load.
    #[arg(long, default_value = "8s", value_parser = parse_secs)]
    duration: Duration,
    /// Where to write the results (JSON).
    #[arg(long, default_value = "target/bench/load.json")]
    out: PathBuf,
    /// Run only these scenarios (comma-separated); all of them by default.
    #[arg(long, value_delimiter = ',', value_parser = clap::builder::PossibleValuesParser::new(SCENARIOS))]
    only: Vec<String>,
    /// How many deliveries the list-pages scenario ("lists") stores before timing the pages.
    #[arg(long, default_value_t = 100_000)]
    stored_deliveries: u64,
    /// Where the Python and JavaScript example plugins were built (their build.sh's output
    /// directory); the transform scenarios run them when they are there.
    #[arg(
        long,
        env = "WASMHOOK_OTHER_LANGUAGES_DIR",
        default_value = "target/other-languages"
    )]
    other_languages: PathBuf,
    /// A PostgreSQL server the "postgres" scenarios create their databases on (a role
    /// allowed to CREATE DATABASE); without it those rows say why they are missing.
    #[arg(long, env = "WASMHOOK_BENCH_DATABASE_URL")]
    database_url: Option<String>,
    /// An earlier build (a release binary) to compare fan-out with in this run: the fan-out
    /// scenarios then run `--rounds` times on each build in turn, and each row (the
    /// baseline's too, as "..., baseline build") keeps its median round. Runs on a shared
    /// machine differ in speed by more than the 5% the comparison allows; builds run in
    /// turn in one sitting do not.
    #[arg(long)]
    baseline_server: Option<PathBuf>,
    /// How the report names the baseline build, e.g. "56209d6, before the scheduler".
    #[arg(long, requires = "baseline_server")]
    baseline_name: Option<String>,
    /// Rounds of the fan-out scenarios on each build when a baseline is given.
    #[arg(long, default_value_t = 3, requires = "baseline_server")]
    rounds: usize,
    /// Where the Python example was built against the baseline build's WIT (its build.sh
    /// takes the WIT directory): the Python transform with one instance per event then also
    /// runs on the baseline build, in turn with this one, `--rounds` times.
    #[arg(long, requires = "baseline_server")]
    baseline_other_languages: Option<PathBuf>,
}

/// The scenario groups `run --only` can name, in the order they run.
const SCENARIOS: &[&str] = &[
    "receiver",
    "ingest",
    "fanout",
    "saturation",
    "steady",
    "noisy",
    "transform",
    "reacting",
    "ordered",
    "startup",
    "uploads",
    "lists",
    "postgres",
];

/// Keeps a scenario's row, or a row saying it failed (under the scenario's name, so that its
/// targets show as not met) and goes on with the next scenario.
fn keep(rows: &mut Vec<Row>, name: &str, result: anyhow::Result<Row>) {
    let row = match result {
        Ok(row) => row,
        Err(e) => {
            eprintln!("{name}: failed: {e:#}");
            Row {
                scenario: format!("{name} (failed)"),
                note: format!("failed: {e:#}"),
                ..Default::default()
            }
        }
    };
    eprintln!("{}", report::line(&row));
    rows.push(row);
}

/// An earlier build some scenarios are compared with in the same run.
struct Baseline {
    server: PathBuf,
    name: String,
    rounds: usize,
    /// Its Python example (built against its WIT), if given.
    other_languages: Option<PathBuf>,
}

/// The fan-out scenarios on this build and on the baseline in turn.
async fn fanout_against(ctx: &Ctx<'_>, baseline: &Baseline, rows: &mut Vec<Row>) {
    let base_ctx = Ctx {
        bin: &baseline.server,
        duration: ctx.duration,
        receiver: ctx.receiver.clone(),
        other_languages: ctx.other_languages,
    };
    for subs in [1, 10] {
        let name = scenarios::fanout_name(subs);
        in_turn(ctx, &base_ctx, baseline, &name, rows, |c| {
            scenarios::fanout(c, subs, None, None)
        })
        .await;
    }
}

/// `scenario` on this build and on the baseline (`base_ctx`) in turn, `rounds` times; each
/// row (the baseline's named "..., baseline build") is its median round, its note lists every
/// round. A failed round fails the row.
async fn in_turn<'c, F, Fut>(
    ctx: &'c Ctx<'c>,
    base_ctx: &'c Ctx<'c>,
    baseline: &Baseline,
    name: &str,
    rows: &mut Vec<Row>,
    scenario: F,
) where
    F: Fn(&'c Ctx<'c>) -> Fut,
    Fut: Future<Output = anyhow::Result<Row>>,
{
    let mut now = Vec::new();
    let mut base = Vec::new();
    for round in 1..=baseline.rounds {
        for (c, into, which) in [
            (ctx, &mut now, "this build"),
            (base_ctx, &mut base, "baseline"),
        ] {
            let r = scenario(c).await;
            match &r {
                Ok(row) => eprintln!("{name}, {which}, round {round}: {}", report::line(row)),
                Err(e) => eprintln!("{name}, {which}, round {round}: failed: {e:#}"),
            }
            into.push(r);
        }
    }
    let base_name = format!("{name}, baseline build");
    keep(rows, name, median_round(now));
    let base = median_round(base).map(|mut r| {
        r.scenario = base_name.clone();
        r.build = Some(baseline.name.clone());
        r
    });
    keep(rows, &base_name, base);
}

/// The Python example's transform with one instance per event, on this build and on the
/// baseline (with its own build of the example) in turn.
async fn python_per_event_against(
    ctx: &Ctx<'_>,
    baseline: &Baseline,
    dir: &Path,
    rows: &mut Vec<Row>,
) {
    let base_ctx = Ctx {
        bin: &baseline.server,
        duration: ctx.duration,
        receiver: ctx.receiver.clone(),
        other_languages: dir,
    };
    let name = "transform plugin (python-hello), 1 subscription";
    in_turn(ctx, &base_ctx, baseline, name, rows, |c| async move {
        let path = c.other_languages.join("python_hello.wasm");
        let path = path
            .to_str()
            .filter(|_| path.exists())
            .ok_or_else(|| anyhow::anyhow!("{} not built", path.display()))?;
        let t = scenarios::Transform {
            name: "python-hello",
            path,
            reuse: false,
        };
        scenarios::fanout(c, 1, Some(t), None).await
    })
    .await;
}

/// The round with the median deliveries/s, its note saying so.
fn median_round(rounds: Vec<anyhow::Result<Row>>) -> anyhow::Result<Row> {
    let mut rows = rounds.into_iter().collect::<anyhow::Result<Vec<Row>>>()?;
    let rate = |r: &Row| r.deliveries_per_s.unwrap_or(0.0);
    rows.sort_by(|a, b| rate(a).total_cmp(&rate(b)));
    let all: Vec<String> = rows.iter().map(|r| format!("{:.0}", rate(r))).collect();
    let mut median = rows.swap_remove(rows.len() / 2);
    median.note = format!(
        "median of {} rounds run in turn with the other build (deliveries/s {}); {}",
        all.len(),
        all.join(", "),
        median.note
    );
    Ok(median)
}

fn parse_secs(s: &str) -> Result<Duration, String> {
    let n: f64 = s
        .trim_end_matches('s')
        .parse()
        .map_err(|e| format!("{s}: {e}"))?;
    Ok(Duration::from_secs_f64(n))
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    let RunArgs {
        server,
        duration,
        out,
        only,
        stored_deliveries,
        other_languages,
        database_url,
        baseline_server,
        baseline_name,
        rounds,
        baseline_other_languages,
    } = args;
    let baseline = baseline_server.map(|server| Baseline {
        name: baseline_name.unwrap_or_else(|| server.display().to_string()),
        server,
        rounds: rounds.max(1),
        other_languages: baseline_other_languages,
    });
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
        other_languages: &other_languages,
    };
    let wanted = |name: &str| only.is_empty() || only.iter().any(|o| o == name);
    let mut rows: Vec<Row> = Vec::new();
    let rows = &mut rows;
    if wanted("receiver") {
        keep(
            rows,
            "receiver bound",
            scenarios::receiver_bound(&ctx).await,
        );
    }
    if wanted("ingest") {
        keep(
            rows,
            "ingest, single events",
            scenarios::ingest(&ctx, false).await,
        );
        keep(
            rows,
            "ingest, batches of 100",
            scenarios::ingest(&ctx, true).await,
        );
    }
    if wanted("fanout") {
        match &baseline {
            None => {
                for subs in [1, 10] {
                    let r = scenarios::fanout(&ctx, subs, None, None).await;
                    keep(rows, &scenarios::fanout_name(subs), r);
                }
            }
            Some(b) => fanout_against(&ctx, b, rows).await,
        }
    }
    if wanted("saturation") {
        let r = scenarios::saturation(&ctx).await;
        keep(rows, "saturation", r);
        keep(rows, "delivery alone", scenarios::drain(&ctx).await);
    }
    if wanted("steady") {
        let r = scenarios::fanout(&ctx, 1, None, Some(1000.0)).await;
        keep(rows, "steady 1000 events/s, 1 subscription", r);
    }
    if wanted("noisy") {
        let r = scenarios::noisy_neighbour(&ctx).await;
        keep(rows, "noisy neighbour", r);
    }
    if wanted("transform") {
        // pii-redactor, then the Python and JavaScript examples when built (scripts/bench
        // builds them), each with one instance per event and with instances reused.
        let mut plugins = vec![(
            "pii-redactor",
            PathBuf::from(wasmhook_plugin_artifacts::PII_REDACTOR),
        )];
        plugins.push((
            "python-hello",
            ctx.other_languages.join("python_hello.wasm"),
        ));
        plugins.push(("js-hello", ctx.other_languages.join("js_hello.wasm")));
        for (name, path) in &plugins {
            for reuse in [false, true] {
                let scenario = format!(
                    "transform plugin ({name}{}), 1 subscription",
                    if reuse { ", reuse" } else { "" }
                );
                if let Some((b, dir)) = baseline
                    .as_ref()
                    .and_then(|b| Some((b, b.other_languages.as_deref()?)))
                    .filter(|_| *name == "python-hello" && !reuse)
                {
                    python_per_event_against(&ctx, b, dir, rows).await;
                    continue;
                }
                let r = match path.to_str() {
                    Some(path) if std::path::Path::new(path).exists() => {
                        let t = scenarios::Transform { name, path, reuse };
                        scenarios::fanout(&ctx, 1, Some(t), None).await
                    }
                    _ => Err(anyhow::anyhow!("{} not built", path.display())),
                };
                keep(rows, &scenario, r);
            }
        }
    }
    if wanted("reacting") {
        let r = scenarios::reacting(&ctx, wasmhook_plugin_artifacts::AUTO_REPLY).await;
        keep(rows, "reacting plugin (auto-reply)", r);
    }
    if wanted("ordered") {
        let noop = wasmhook_plugin_artifacts::NOOP;
        let r = scenarios::ordered(&ctx, noop, "conversation").await;
        keep(rows, "plugin subscriber, ordered by conversation", r);
        let r = scenarios::ordered(&ctx, noop, "none").await;
        keep(rows, "plugin subscriber, unordered", r);
    }
    if wanted("startup") {
        match scenarios::startup_and_idle(&ctx, wasmhook_plugin_artifacts::NOOP).await {
            Ok(all) => all.into_iter().for_each(|r| keep(rows, "", Ok(r))),
            Err(e) => keep(rows, "start-up and idle", Err(e)),
        }
    }
    if wanted("uploads") {
        match uploads::uploads(&ctx).await {
            Ok(all) => all.into_iter().for_each(|r| keep(rows, "", Ok(r))),
            Err(e) => keep(rows, "upload answered", Err(e)),
        }
    }
    if wanted("lists") {
        match list_pages::list_pages(&ctx, stored_deliveries).await {
            Ok(all) => all.into_iter().for_each(|r| keep(rows, "", Ok(r))),
            Err(e) => keep(rows, list_pages::SEEDING, Err(e)),
        }
    }
    if wanted("postgres") {
        match database_url.as_deref().map(postgres::Postgres::new) {
            Some(Ok(pg)) => {
                postgres::rows(&ctx, &pg, &mut |name, r| keep(rows, name, r)).await;
            }
            Some(Err(e)) => keep(rows, "postgres", Err(e.context("--database-url"))),
            None => keep(
                rows,
                "postgres",
                Err(anyhow::anyhow!(
                    "no --database-url: the PostgreSQL rows need a server to create databases on (scripts/bench starts one)"
                )),
            ),
        }
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
        Command::Run(args) => run(args).await,
        Command::Report {
            load,
            criterion,
            out,
            analysis,
            suite_seconds,
            build,
            steal_percent,
            previous,
            backends,
        } => {
            let duration = suite_seconds.map(|s| report::SuiteTime {
                seconds: s,
                build: build.unwrap_or_else(|| "incremental".into()),
                steal_percent,
            });
            let previous = previous.unwrap_or_else(|| out.clone());
            report::write(
                &load,
                &criterion,
                &analysis,
                &out,
                &previous,
                duration.as_ref(),
                backends.as_deref(),
            )
        }
    }
}
