//! `plugin`: upload, list, configure, attach and read the logs of plugins on a server.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};
use reqwest::Method;

use super::output::{Table, or_dash, print_json, time};
use super::{CliError, Client, Ctx, key_value};
use crate::api::ListResponse;
use crate::api::plugin_test_runs::{TestRunIn, TestRunOut};
use crate::api::plugins::UpdatePlugin;
use crate::api::subscriptions::CreatedSubscription;
use crate::model::{Plugin, PluginLogLine, PluginVersion, Subscription, VersionStatus};
use crate::subscriptions::{CreateSubscription, UpdateSubscription};

/// `plugin` subcommands.
#[derive(Debug, Subcommand)]
pub enum PluginCommand {
    /// Upload a component: creates the plugin, or a new version of the plugin with that name.
    ///
    /// The server checks the component at once and compiles it after; the command waits until
    /// the version is ready (it runs from then on) or failed (exit 1, with the reason), unless
    /// --no-wait.
    #[command(
        after_help = "Examples:\n  wasmhook plugin push target/wasm32-wasip2/release/my_plugin.wasm --name my-plugin\n  wasmhook plugin push my_plugin.wasm --name my-plugin --no-wait"
    )]
    Push(PushArgs),
    /// List plugins, newest first.
    #[command(after_help = "Example:\n  wasmhook plugin list")]
    List,
    /// Show a plugin's settings.
    #[command(after_help = "Example:\n  wasmhook plugin get plg_...")]
    Get(IdArg),
    /// Set configuration values (merged into the current configuration).
    #[command(
        after_help = "Examples:\n  wasmhook plugin config plg_... reply_text='Thanks!' keywords=help,urgent\n  wasmhook plugin config plg_... --unset keywords"
    )]
    Config(ConfigArgs),
    /// Show a plugin's recent log lines (oldest first), or follow new ones.
    #[command(
        after_help = "Examples:\n  wasmhook plugin logs plg_...\n  wasmhook plugin logs plg_... --follow"
    )]
    Logs(LogsArgs),
    /// Validate a component as an upload would, and show its imports and exports (no server).
    #[command(
        after_help = "Example:\n  wasmhook plugin check target/wasm32-wasip2/release/my_plugin.wasm"
    )]
    Check(super::local::CheckArgs),
    /// Run a component on one event, without a server.
    ///
    /// Prints the decision, the payload, log lines and every host call (send-message, kv,
    /// outgoing HTTP), captured. Exit 1 when the plugin fails.
    #[command(
        after_help = "Examples:\n  wasmhook plugin run my_plugin.wasm --example message:created --config greeting=hi\n  wasmhook plugin run my_plugin.wasm --event @event.json --kv @state.json --allow-host api.example.com\n  wasmhook plugin run my_plugin.wasm --example message:created --loop 1000"
    )]
    Run(super::run::RunArgs),
    /// Run a plugin on the server on one event, without side effects.
    ///
    /// The server's dry run: send-message and kv writes are captured, not performed. Exit 1
    /// when the plugin fails.
    #[command(
        after_help = "Examples:\n  wasmhook plugin test plg_... --example message:created\n  wasmhook plugin test plg_... --event @event.json --config greeting=hi"
    )]
    Test(TestArgs),
    /// Make a plugin project that builds out of the box (Rust, Python or JavaScript).
    #[command(
        after_help = "Examples:\n  wasmhook plugin new reply-bot --lang rust\n  wasmhook plugin new tagger --lang python --dir ~/plugins\n  wasmhook plugin new tagger-js --lang js"
    )]
    New(super::scaffold::NewArgs),
    /// Use a plugin: as the transform of a URL subscription, or as a subscriber of event types.
    #[command(
        after_help = "Examples:\n  wasmhook plugin attach plg_... --sub sub_...\n  wasmhook plugin attach plg_... --events message:created"
    )]
    Attach(AttachArgs),
}

/// A plugin id.
#[derive(Debug, Args)]
pub struct IdArg {
    /// Plugin id (`plg_...`).
    id: String,
}

/// Arguments of `plugin push`.
#[derive(Debug, Args)]
pub struct PushArgs {
    /// The component (`.wasm`).
    file: PathBuf,
    /// The plugin's name: a plugin with this name gets a new version, else one is created.
    #[arg(long)]
    name: String,
    /// Return once the upload is stored, without waiting for its compilation (the version
    /// is then `compiling`; `plugin get` shows when it is `ready` or `failed`).
    #[arg(long)]
    no_wait: bool,
    /// How long to wait for the compilation before giving up waiting (e.g. `2m`).
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    timeout: Duration,
}

/// Arguments of `plugin config`.
#[derive(Debug, Args)]
pub struct ConfigArgs {
    /// Plugin id (`plg_...`).
    id: String,
    /// Values to set, as KEY=VALUE.
    #[arg(value_parser = key_value)]
    values: Vec<(String, String)>,
    /// A secret value to set, as KEY=VALUE (repeatable): encrypted at rest on the server and
    /// shown as ******** from then on.
    #[arg(long, value_parser = key_value, value_name = "KEY=VALUE")]
    secret: Vec<(String, String)>,
    /// Keys to remove (repeatable).
    #[arg(long)]
    unset: Vec<String>,
}

/// Arguments of `plugin logs`.
#[derive(Debug, Args)]
pub struct LogsArgs {
    /// Plugin id (`plg_...`).
    id: String,
    /// Lines to show (1 to 1000).
    #[arg(long, default_value_t = 100)]
    limit: usize,
    /// Keep printing new lines until Ctrl-C.
    #[arg(long, short = 'f')]
    follow: bool,
}

/// Arguments of `plugin test`.
#[derive(Debug, Args)]
pub struct TestArgs {
    /// Plugin id (`plg_...`).
    id: String,
    /// The event, as posted to `POST /v1/events` (`{"type", "payload"}`): JSON, `@event.json`,
    /// or `-` for stdin.
    #[arg(long, conflicts_with = "example", required_unless_present = "example")]
    event: Option<String>,
    /// Run on the example event of a known type.
    #[arg(long, value_name = "TYPE")]
    example: Option<String>,
    /// Configuration for this run only, merged over the plugin's (repeatable).
    #[arg(long = "config", value_parser = key_value)]
    config: Vec<(String, String)>,
}

/// Arguments of `plugin attach`.
#[derive(Debug, Args)]
pub struct AttachArgs {
    /// Plugin id (`plg_...`).
    id: String,
    /// Make the plugin this URL subscription's transform.
    #[arg(
        long = "sub",
        conflicts_with = "events",
        required_unless_present = "events"
    )]
    subscription: Option<String>,
    /// Subscribe the plugin to these event types (comma-separated).
    #[arg(long, value_delimiter = ',')]
    events: Vec<String>,
}

/// Runs a `plugin` subcommand.
pub async fn run(cmd: PluginCommand, ctx: &Ctx) -> Result<(), CliError> {
    // Local commands need no server (nor a profile).
    let cmd = match cmd {
        PluginCommand::Check(args) => return super::local::check(args, ctx).await,
        PluginCommand::New(args) => return super::scaffold::new(args, ctx),
        PluginCommand::Run(args) => return super::run::run(args, ctx).await,
        other => other,
    };
    let client = ctx.client()?;
    match cmd {
        PluginCommand::Check(_) | PluginCommand::New(_) | PluginCommand::Run(_) => {
            unreachable!("handled above")
        }
        PluginCommand::Push(args) => push(args, &client, ctx).await,
        PluginCommand::List => {
            let page: ListResponse<Plugin> = client.get("/v1/plugins?limit=250").await?;
            if ctx.json() {
                print_json(&page);
                return Ok(());
            }
            let mut t = Table::new(["ID", "NAME", "VERSION", "STATUS", "LOG LEVEL", "UPDATED"]);
            for p in &page.data {
                t.row([
                    p.id.clone(),
                    p.name.clone(),
                    p.version.to_string(),
                    status_text(p),
                    p.log_level.as_str().to_string(),
                    time(p.updated_at),
                ]);
            }
            t.print("No plugins.");
            Ok(())
        }
        PluginCommand::Get(IdArg { id }) => {
            let p: Plugin = client.get(&format!("/v1/plugins/{id}")).await?;
            show(&p, ctx);
            Ok(())
        }
        PluginCommand::Config(args) => {
            let path = format!("/v1/plugins/{}", args.id);
            let current: Plugin = client.get(&path).await?;
            // Secret values come back masked; sent back as they are, the server keeps them.
            let mut config: BTreeMap<String, String> = current.config;
            let mut secret_keys = current.secret_keys.clone();
            for key in &args.unset {
                config.remove(key);
                secret_keys.remove(key);
            }
            config.extend(args.values);
            secret_keys.extend(args.secret.iter().map(|(k, _)| k.clone()));
            config.extend(args.secret);
            let patch = UpdatePlugin {
                config: Some(config),
                secret_keys: (secret_keys != current.secret_keys).then_some(secret_keys),
                ..Default::default()
            };
            let p: Plugin = client.patch(&path, &patch).await?;
            show(&p, ctx);
            Ok(())
        }
        PluginCommand::Logs(args) => logs(args, &client, ctx).await,
        PluginCommand::Attach(args) => attach(args, &client, ctx).await,
        PluginCommand::Test(args) => {
            let req = TestRunIn {
                event: super::run::posted_event(args.event.as_deref(), args.example.as_deref())?,
                config: args.config.into_iter().collect(),
            };
            let out: TestRunOut = client
                .post(&format!("/v1/plugins/{}/test", args.id), &req)
                .await?;
            if ctx.json() {
                print_json(&out);
            } else {
                super::run::print_run(&out, None, None);
            }
            super::run::failed(&out)
        }
    }
}

/// A plugin's newest version's status, e.g. `ready`, or `v3 compiling` when it is not the
/// active one.
fn status_text(p: &Plugin) -> String {
    if p.latest_version == p.version || p.latest_version == 0 {
        p.status.as_str().to_string()
    } else {
        format!("v{} {}", p.latest_version, p.status.as_str())
    }
}

async fn find_by_name(client: &Client, name: &str) -> Result<Option<Plugin>, CliError> {
    let mut cursor: Option<String> = None;
    loop {
        let mut path = "/v1/plugins?limit=250".to_string();
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let page: ListResponse<Plugin> = client.get(&path).await?;
        if let Some(p) = page.data.into_iter().find(|p| p.name == name) {
            return Ok(Some(p));
        }
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => return Ok(None),
        }
    }
}

async fn push(args: PushArgs, client: &Client, ctx: &Ctx) -> Result<(), CliError> {
    let wasm = std::fs::read(&args.file).map_err(|e| CliError::io(&args.file, e))?;
    let existing = find_by_name(client, &args.name).await?;
    let req = match &existing {
        Some(p) => client.request(Method::PUT, &format!("/v1/plugins/{}", p.id)),
        None => client.request(
            Method::POST,
            &format!(
                "/v1/plugins?name={}",
                super::client::query_value(&args.name)
            ),
        ),
    };
    let mut plugin: Plugin = client
        .json(req.header("content-type", "application/wasm").body(wasm))
        .await?;
    let uploaded = plugin.latest_version;
    let status = if args.no_wait {
        VersionStatus::Compiling
    } else {
        if !ctx.json() {
            eprintln!("Compiling version {uploaded} of {}...", plugin.name);
        }
        let version = compiled(client, &plugin.id, uploaded, args.timeout).await?;
        plugin = client.get(&format!("/v1/plugins/{}", plugin.id)).await?;
        if let Some(why) = version
            .failure
            .filter(|_| version.status == VersionStatus::Failed)
        {
            if ctx.json() {
                print_json(&plugin);
            }
            return Err(CliError::Failed(format!(
                "version {uploaded} of {} ({}) failed to compile: {why}",
                plugin.name, plugin.id
            )));
        }
        version.status
    };
    if ctx.json() {
        print_json(&plugin);
        return Ok(());
    }
    let what = match status {
        VersionStatus::Compiling => "compiling (see `wasmhook plugin get`)",
        _ => "ready, new events run on it",
    };
    if existing.is_some() {
        println!(
            "Uploaded version {uploaded} of {} ({}): {what}",
            plugin.name, plugin.id
        );
    } else {
        println!(
            "Created plugin {} ({}), version 1: {what}",
            plugin.name, plugin.id
        );
    }
    Ok(())
}

/// Polls version `version` of plugin `id` until it is no longer `compiling` (or `timeout`).
async fn compiled(
    client: &Client,
    id: &str,
    version: u32,
    timeout: Duration,
) -> Result<PluginVersion, CliError> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut pause = Duration::from_millis(100);
    loop {
        let versions: ListResponse<PluginVersion> =
            client.get(&format!("/v1/plugins/{id}/versions")).await?;
        match versions.data.into_iter().find(|v| v.version == version) {
            Some(v) if v.status != VersionStatus::Compiling => return Ok(v),
            Some(_) => {}
            None => {
                return Err(CliError::Invalid(format!(
                    "version {version} of plugin {id} is gone (deleted?)"
                )));
            }
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(CliError::Failed(format!(
                "version {version} of plugin {id} is still compiling after {}; \
                 `wasmhook plugin get {id}` shows when it is ready",
                humantime::format_duration(timeout)
            )));
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(1));
    }
}

fn print_log_line(line: &PluginLogLine) {
    println!(
        "{}  {:<5}  {}  {}",
        time(line.at),
        line.level,
        or_dash(line.event_id.as_deref()),
        line.message
    );
}

async fn logs(args: LogsArgs, client: &Client, ctx: &Ctx) -> Result<(), CliError> {
    let path = format!("/v1/plugins/{}/logs?limit={}", args.id, args.limit);
    let page: ListResponse<PluginLogLine> = client.get(&path).await?;
    let print = |line: &PluginLogLine| {
        if ctx.json() {
            println!(
                "{}",
                serde_json::to_string(line).expect("API types serialize")
            );
        } else {
            print_log_line(line);
        }
    };
    if !args.follow {
        if ctx.json() {
            print_json(&page);
        } else if page.data.is_empty() {
            println!("No log lines.");
        }
        if !ctx.json() {
            page.data.iter().rev().for_each(print);
        }
        return Ok(());
    }
    // Following: JSON lines. Lines are new when they are newer than the newest seen (or as
    // new and not seen yet: several lines share a millisecond).
    page.data.iter().rev().for_each(print);
    eprintln!("Following new lines; Ctrl-C to stop.");
    let mut newest = page.data.first().map(|l| l.at).unwrap_or(0);
    let mut at_newest: Vec<(String, Option<String>)> = page
        .data
        .iter()
        .filter(|l| l.at == newest)
        .map(|l| (l.message.clone(), l.event_id.clone()))
        .collect();
    let poll = format!("/v1/plugins/{}/logs?limit=1000", args.id);
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return Ok(()),
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
        let page: ListResponse<PluginLogLine> = client.get(&poll).await?;
        let fresh: Vec<&PluginLogLine> = page
            .data
            .iter()
            .rev()
            .filter(|l| {
                l.at > newest
                    || (l.at == newest
                        && !at_newest.contains(&(l.message.clone(), l.event_id.clone())))
            })
            .collect();
        for l in fresh {
            if l.at > newest {
                newest = l.at;
                at_newest.clear();
            }
            at_newest.push((l.message.clone(), l.event_id.clone()));
            print(l);
        }
    }
}

async fn attach(args: AttachArgs, client: &Client, ctx: &Ctx) -> Result<(), CliError> {
    let sub: Subscription = match (&args.subscription, args.events.is_empty()) {
        (Some(sub), true) => {
            let patch = UpdateSubscription {
                transform_plugin_id: Some(Some(args.id.clone())),
                ..Default::default()
            };
            client
                .patch(&format!("/v1/subscriptions/{sub}"), &patch)
                .await?
        }
        (None, false) => {
            let req = CreateSubscription {
                url: None,
                plugin_id: Some(args.id.clone()),
                transform_plugin_id: None,
                description: String::new(),
                event_types: args.events.iter().map(|e| e.trim().to_string()).collect(),
                headers: BTreeMap::new(),
                format: Default::default(),
                verify: false,
                rate_limit_per_second: None,
                max_in_flight: None,
                ordering: None,
            };
            let created: CreatedSubscription = client.post("/v1/subscriptions", &req).await?;
            created.subscription
        }
        _ => {
            return Err(CliError::Invalid(
                "give --sub SUB (as its transform) or --events TYPES (as a subscriber)".into(),
            ));
        }
    };
    if ctx.json() {
        print_json(&sub);
    } else if args.subscription.is_some() {
        println!(
            "{} now passes every event through {} before delivery",
            sub.id, args.id
        );
    } else {
        println!(
            "{} subscribed to {} as {}",
            args.id,
            sub.event_types.join(","),
            sub.id
        );
    }
    Ok(())
}

fn show(p: &Plugin, ctx: &Ctx) {
    if ctx.json() {
        print_json(p);
        return;
    }
    let mut t = Table::new(["FIELD", "VALUE"]);
    let mut field = |k: &str, v: String| t.row([k.to_string(), v]);
    field("id", p.id.clone());
    field("name", p.name.clone());
    field("version", p.version.to_string());
    field("status", status_text(p));
    if let Some(why) = &p.failure {
        field("failure", why.clone());
    }
    field("log_level", p.log_level.as_str().to_string());
    field("instances", p.instances.as_str().to_string());
    field("allowed_hosts", p.allowed_hosts.join(","));
    field(
        "limits",
        serde_json::to_string(&p.limits).expect("limits serialize"),
    );
    for (k, v) in &p.config {
        field(&format!("config.{k}"), v.clone());
    }
    field("updated_at", time(p.updated_at));
    t.print("");
}
