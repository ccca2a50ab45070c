//! `plugin run FILE.wasm`: a plugin author's loop without a server. The component runs on one
//! event in the server's own runtime (engine, linker, limits, sandbox, outgoing-HTTP policy)
//! with a capturing [`PluginServices`]: `send-message` calls, key-value reads and writes, log
//! lines and outgoing requests are recorded and printed, and nothing leaves the run (outgoing
//! requests to `--allow-host` hosts are really sent, as a delivery would).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use clap::Args;
use ipnet::IpNet;
use serde::Serialize;
use serde_json::value::RawValue;

use super::local::{read_component, runtime};
use super::output::print_json;
use super::{CliError, Ctx, key_value, read_data};
use crate::api::plugin_test_runs::{KvBytes, TestDecision, TestRunOut};
use crate::clock::now_ms;
use crate::delivery::netpolicy::NetPolicy;
use crate::events::EventIn;
use crate::model::{Event, LogLevel, Plugin, PluginLimits, PluginLogLine};
use crate::plugins::dry_run::{DryRun, DryRunReport, MemoryKv};
use crate::plugins::invoke::Input;
use crate::plugins::services::{
    HttpRequest, KvLimits, KvResult, Outgoing, PluginServices, SendRefusal, Unavailable,
};

/// Arguments of `plugin run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The component (`.wasm`).
    file: PathBuf,
    /// The event, as posted to `POST /v1/events` (`{"type", "payload", "id"?}`): JSON,
    /// `@event.json`, or `-` for stdin.
    #[arg(long, conflicts_with = "example", required_unless_present = "example")]
    event: Option<String>,
    /// Run on the example event of a known type (message:created, conversation:created,
    /// conversation:updated).
    #[arg(long, value_name = "TYPE")]
    example: Option<String>,
    /// A configuration value the plugin reads with `config-get` (repeatable).
    #[arg(long = "config", value_parser = key_value)]
    config: Vec<(String, String)>,
    /// The key-value store the run starts with: a JSON object (`@state.json`); strings are
    /// stored as their bytes, other values as JSON text. Writes stay in the run.
    #[arg(long)]
    kv: Option<String>,
    /// A host outgoing HTTP may reach (repeatable; none by default, as on the server).
    #[arg(long = "allow-host")]
    allow_hosts: Vec<String>,
    /// An internal address range outgoing HTTP may reach despite the network policy
    /// (repeatable), like the server's `--allow-network`.
    #[arg(long = "allow-network")]
    allow_network: Vec<IpNet>,
    /// Wall-clock deadline of the call, in milliseconds (server default 1000).
    #[arg(long)]
    deadline_ms: Option<u32>,
    /// Linear memory limit, in MiB (server default 64).
    #[arg(long)]
    memory_mb: Option<u32>,
    /// Keep log lines at this level and above.
    #[arg(long, default_value = "trace", value_parser = clap::builder::PossibleValuesParser::new(["trace", "debug", "info", "warn", "error"]))]
    log_level: String,
    /// Run the call this many times and print the time per call (each run starts from the
    /// same state).
    #[arg(long = "loop", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    loops: u32,
}

/// A `PluginServices` that records key-value reads and hands everything to a [`DryRun`].
struct LocalRun {
    dry: Arc<DryRun>,
    reads: Mutex<Vec<(String, Option<Vec<u8>>)>>,
}

#[async_trait]
impl PluginServices for LocalRun {
    async fn send_message(&self, message: Outgoing) -> Result<String, SendRefusal> {
        self.dry.send_message(message).await
    }

    async fn kv_get(&self, plugin_id: &str, key: &str) -> Result<Option<Vec<u8>>, Unavailable> {
        let value = self.dry.kv_get(plugin_id, key).await?;
        self.reads
            .lock()
            .expect("reads lock")
            .push((key.to_string(), value.clone()));
        Ok(value)
    }

    async fn kv_set(&self, p: &str, key: &str, value: Vec<u8>, l: KvLimits) -> KvResult<()> {
        self.dry.kv_set(p, key, value, l).await
    }

    async fn kv_delete(&self, p: &str, key: &str) -> Result<(), Unavailable> {
        self.dry.kv_delete(p, key).await
    }

    async fn kv_increment(&self, p: &str, key: &str, delta: i64, l: KvLimits) -> KvResult<i64> {
        self.dry.kv_increment(p, key, delta, l).await
    }

    async fn kv_set_if(
        &self,
        p: &str,
        key: &str,
        expected: Option<Vec<u8>>,
        value: Vec<u8>,
        l: KvLimits,
    ) -> KvResult<bool> {
        self.dry.kv_set_if(p, key, expected, value, l).await
    }

    fn plugin_logs(&self, account_id: &str, plugin_id: &str, lines: Vec<PluginLogLine>) {
        self.dry.plugin_logs(account_id, plugin_id, lines)
    }

    fn http_requests(&self, requests: Vec<HttpRequest>) {
        self.dry.http_requests(requests)
    }
}

/// Key-value bytes as the API shows them (text, or base64 when not UTF-8).
fn kv_bytes(bytes: Vec<u8>) -> KvBytes {
    match String::from_utf8(bytes) {
        Ok(text) => KvBytes::Text(text),
        Err(e) => KvBytes::Binary {
            base64: base64::Engine::encode(
                &base64::engine::general_purpose::STANDARD,
                e.into_bytes(),
            ),
        },
    }
}

/// What `plugin run -o json` prints: the report of the server's dry run
/// (`POST /v1/plugins/{id}/test`), plus the key-value reads and, with `--loop`, the times.
#[derive(Debug, Serialize)]
struct LocalRunOut {
    #[serde(flatten)]
    run: TestRunOut,
    /// Key-value reads, in order, with what they returned.
    kv_reads: Vec<KvRead>,
    /// The largest linear memory the instance had, in bytes.
    peak_memory_bytes: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    timing: Option<Timing>,
}

/// A key-value read.
#[derive(Debug, Serialize)]
pub struct KvRead {
    key: String,
    value: Option<KvBytes>,
}

/// Per-call times of a `--loop` run.
#[derive(Debug, Serialize)]
pub struct Timing {
    calls: u32,
    min_us: u64,
    median_us: u64,
    mean_us: u64,
    max_us: u64,
}

fn us(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// The event given with `--event` (as posted to `POST /v1/events`) or `--example TYPE`.
pub fn posted_event(event: Option<&str>, example: Option<&str>) -> Result<EventIn, CliError> {
    Ok(match (event, example) {
        (Some(raw), _) => {
            let bytes = read_data(raw)?;
            serde_json::from_slice(&bytes).map_err(|e| {
                CliError::Invalid(format!(
                    "--event: not an event as POST /v1/events takes it ({{\"type\", \"payload\"}}): {e}"
                ))
            })?
        }
        (None, Some(t)) => EventIn {
            event_type: t.to_string(),
            payload: RawValue::from_string(super::events::example_payload(t)?.to_string())
                .expect("serde_json output is JSON"),
            id: None,
            occurred_at: None,
        },
        (None, None) => unreachable!("clap requires one"),
    })
}

/// The event to run on.
fn event(args: &RunArgs) -> Result<Event, CliError> {
    let posted = posted_event(args.event.as_deref(), args.example.as_deref())?;
    // The server's own validation of a posted event.
    let prepared = crate::events::prepare("acc_local", posted, None, usize::MAX, "event.")
        .map_err(|e| CliError::Invalid(e.to_string()))?;
    Ok(Event {
        seq: 0,
        id: prepared.id,
        event_type: prepared.event_type,
        payload: prepared.payload,
        occurred_at: prepared.occurred_at,
        received_at: prepared.received_at,
        causation: None,
    })
}

/// Runs the component on the event and prints what it did; exit 1 when the call failed.
pub async fn run(args: RunArgs, ctx: &Ctx) -> Result<(), CliError> {
    let wasm = read_component(&args.file)?;
    let event = event(&args)?;
    let base = Arc::new(match &args.kv {
        None => MemoryKv::default(),
        Some(raw) => {
            let value: serde_json::Value = serde_json::from_slice(&read_data(raw)?)
                .map_err(|e| CliError::Invalid(format!("--kv: not JSON: {e}")))?;
            MemoryKv::from_json(&value).map_err(|e| CliError::Invalid(format!("--kv: {e}")))?
        }
    });
    let limits = PluginLimits {
        deadline_ms: args.deadline_ms,
        memory_mb: args.memory_mb,
        ..Default::default()
    };
    crate::plugins::limits::validate(&limits).map_err(CliError::Invalid)?;
    let name = args
        .file
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "plugin".into());
    let plugin = Plugin {
        id: "plg_local".into(),
        account_id: "acc_local".into(),
        name,
        config: args.config.iter().cloned().collect::<BTreeMap<_, _>>(),
        secret_keys: Default::default(),
        allowed_hosts: args.allow_hosts.clone(),
        limits,
        log_level: LogLevel::parse(&args.log_level).expect("one of the possible values"),
        instances: Default::default(),
        version: 1,
        latest_version: 1,
        status: crate::model::VersionStatus::Ready,
        failure: None,
        created_at: now_ms(),
        updated_at: now_ms(),
    };
    let policy = NetPolicy::new(args.allow_network.clone());
    let (rt, loaded) = tokio::task::spawn_blocking(move || {
        let rt = runtime(policy)?;
        let loaded = rt
            .load_local(&plugin, &wasm)
            .map_err(|e| CliError::Failed(format!("an upload would be refused: {e}")))?;
        Ok::<_, CliError>((rt, Arc::new(loaded)))
    })
    .await
    .expect("loading does not panic")?;
    let input = Input {
        event: &event,
        subscription_id: "sub_local",
        attempt: 1,
    };
    let mut times = Vec::with_capacity(args.loops as usize);
    let mut last = None;
    for _ in 0..args.loops {
        let services = Arc::new(LocalRun {
            dry: Arc::new(DryRun::new(base.clone())),
            reads: Mutex::default(),
        });
        let started = Instant::now();
        let (result, usage) = rt
            .invoke_measured(services.clone(), loaded.clone(), input, None)
            .await;
        times.push(started.elapsed());
        last = Some((result, usage, services));
    }
    let (result, usage, services) = last.expect("at least one call");
    let reads = std::mem::take(&mut *services.reads.lock().expect("reads lock"));
    let timing = (args.loops > 1).then(|| {
        let mut sorted = times.clone();
        sorted.sort();
        let total: Duration = times.iter().sum();
        Timing {
            calls: args.loops,
            min_us: us(sorted[0]),
            median_us: us(sorted[sorted.len() / 2]),
            mean_us: us(total / args.loops),
            max_us: us(*sorted.last().expect("at least one call")),
        }
    });
    let out = LocalRunOut {
        run: TestRunOut::from(DryRunReport {
            result,
            duration: *times.last().expect("at least one call"),
            captured: services.dry.take(),
        }),
        kv_reads: reads
            .into_iter()
            .map(|(key, value)| KvRead {
                key,
                value: value.map(kv_bytes),
            })
            .collect(),
        peak_memory_bytes: usage.peak_memory_bytes,
        timing,
    };
    if ctx.json() {
        print_json(&out);
    } else {
        println!("event       {} {}", event.event_type, event.id);
        print_run(&out.run, Some(&out.kv_reads), out.timing.as_ref());
        println!();
        println!(
            "peak memory {:.1} KiB (limit {} MiB)",
            out.peak_memory_bytes as f64 / 1024.0,
            loaded.limits.memory_bytes >> 20
        );
    }
    failed(&out.run)
}

/// Exit 1 (after the report) when the plugin failed.
pub fn failed(run: &TestRunOut) -> Result<(), CliError> {
    match &run.error {
        None => Ok(()),
        Some(e) => Err(CliError::Failed(format!(
            "the plugin failed ({}): {}",
            e.kind, e.message
        ))),
    }
}

fn show_bytes(b: &KvBytes) -> String {
    match b {
        KvBytes::Text(t) => format!("{t:?}"),
        KvBytes::Binary { base64 } => format!("base64:{base64}"),
    }
}

/// Prints a run's report: a local run's, or the server's dry run's.
pub fn print_run(r: &TestRunOut, kv_reads: Option<&[KvRead]>, timing: Option<&Timing>) {
    match (&r.decision, &r.error) {
        (TestDecision::Error, Some(e)) => println!(
            "failed      {}: {}{}",
            e.kind,
            e.message,
            if e.retryable { " (retryable)" } else { "" }
        ),
        (d, _) => println!(
            "decision    {}",
            serde_json::to_value(d)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default()
        ),
    }
    if let Some(p) = &r.payload {
        let value: serde_json::Value = serde_json::from_str(p.get()).unwrap_or_default();
        println!(
            "payload     {}",
            serde_json::to_string_pretty(&value)
                .expect("JSON")
                .replace('\n', "\n            ")
        );
    }
    println!("duration    {:.3} ms", r.duration_us as f64 / 1000.0);
    if let Some(t) = timing {
        println!(
            "per call    {} calls: min {:.3} ms, median {:.3} ms, mean {:.3} ms, max {:.3} ms",
            t.calls,
            t.min_us as f64 / 1000.0,
            t.median_us as f64 / 1000.0,
            t.mean_us as f64 / 1000.0,
            t.max_us as f64 / 1000.0
        );
    }
    let section = |title: &str, empty: bool| {
        println!();
        println!("{title}{}", if empty { ": none" } else { "" });
    };
    section("log", r.logs.is_empty());
    for l in &r.logs {
        println!("  {:<5}  {}", l.level, l.message);
    }
    section(
        "send-message (captured, not sent)",
        r.sent_messages.is_empty(),
    );
    for m in &r.sent_messages {
        println!("  {}: {:?}", m.conversation_id, m.text);
    }
    if let Some(reads) = kv_reads {
        section("kv reads", reads.is_empty());
        for k in reads {
            match &k.value {
                Some(v) => println!("  {} = {}", k.key, show_bytes(v)),
                None => println!("  {} (absent)", k.key),
            }
        }
    }
    section("kv writes (kept in this run only)", r.kv_writes.is_empty());
    for w in &r.kv_writes {
        let mut line = format!("  {} {}", w.op, w.key);
        if let Some(d) = w.delta {
            line.push_str(&format!(" by {d}"));
        }
        if let Some(Some(e)) = &w.expected {
            line.push_str(&format!(" if {}", show_bytes(e)));
        }
        if let Some(v) = &w.value {
            line.push_str(&format!(" = {}", show_bytes(v)));
        }
        if let Some(written) = w.written {
            line.push_str(&format!(" (written: {written})"));
        }
        if let Some(e) = &w.error {
            line.push_str(&format!(" refused: {e}"));
        }
        println!("{line}");
    }
    section("outgoing HTTP", r.http_requests.is_empty());
    for h in &r.http_requests {
        let outcome = match (&h.status, &h.error) {
            (Some(s), _) => s.to_string(),
            (None, Some(e)) => e.clone(),
            _ => "-".into(),
        };
        println!("  {} {} -> {outcome}", h.method, h.url);
    }
}
