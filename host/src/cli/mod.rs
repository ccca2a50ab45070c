//! The `wasmhook` command line: `serve`, and the client subcommands that manage a server over
//! its HTTP API (`login`, `sub`, `send`, `events`, `deliveries`, `plugin`, ...).
//!
//! Client commands send and read the API's own request and response types (`crate::api`,
//! `crate::model`), so they cannot drift from the server; they never touch the store. The local
//! plugin commands (`plugin check`, `plugin run`) use the plugin runtime itself, without a
//! server. Every command prints a table by default and the API's JSON with `-o json`; an error
//! prints the API's message and exits 1 (2 for a usage error).

mod account;
mod client;
mod deliveries;
mod events;
mod listen;
mod local;
mod output;
mod plugins;
mod profile;
mod run;
mod scaffold;
mod subs;
mod tail;
mod verify;

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, CommandFactory, Parser, Subcommand};

pub use self::client::Client;
pub use self::output::Output;
use crate::config::Config;

/// The `wasmhook` command.
#[derive(Parser)]
#[command(
    name = "wasmhook",
    version,
    about = "Durable, signed webhooks and WebAssembly plugins for chat events",
    after_help = "Examples:\n  wasmhook serve\n  wasmhook login --url http://127.0.0.1:8080 --api-key whk_...\n  wasmhook sub create https://example.com/hook -e message:created\n  wasmhook send message:created --example"
)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
    /// Options of every client command.
    #[command(flatten)]
    pub global: Global,
}

/// Options every client command takes.
#[derive(Debug, Clone, Args)]
pub struct Global {
    /// Output format: tables for people, the API's JSON for scripts.
    #[arg(short = 'o', long, global = true, value_enum, default_value_t = Output::Table)]
    pub output: Output,
    /// The stored profile to use (see `login`); `default` when not given.
    #[arg(long, global = true, env = "WASMHOOK_PROFILE")]
    pub profile: Option<String>,
}

/// `wasmhook migrate`.
#[derive(Args)]
pub struct MigrateArgs {
    /// The PostgreSQL database (`postgres://user:password@host:port/db`).
    #[arg(long, env = "WASMHOOK_DATABASE_URL", hide_env_values = true)]
    pub database_url: String,
}

/// The subcommands.
#[derive(Subcommand)]
pub enum Command {
    /// Run the server.
    #[command(
        after_help = "Example:\n  wasmhook serve --listen 127.0.0.1:8080 --data-dir ./wasmhook-data"
    )]
    Serve(Box<Config>),
    /// Check an API key and store it, with the server's URL, as a profile.
    #[command(
        after_help = "Examples:\n  wasmhook login --url http://127.0.0.1:8080 --api-key whk_...\n  wasmhook login --profile staging --url https://hooks.example.com --api-key whk_..."
    )]
    Login(account::LoginArgs),
    /// Show the account the API key belongs to (and so check the key).
    #[command(
        after_help = "Examples:\n  wasmhook whoami\n  WASMHOOK_URL=http://127.0.0.1:8080 WASMHOOK_API_KEY=whk_... wasmhook whoami -o json"
    )]
    Whoami,
    /// Manage subscriptions: webhook URLs and plugin subscribers.
    #[command(
        subcommand,
        after_help = "Examples:\n  wasmhook sub create https://example.com/hook -e message:created,conversation:created\n  wasmhook sub list"
    )]
    Sub(subs::SubCommand),
    /// Post an event, print its id, and follow its deliveries until they settle.
    #[command(
        after_help = "Examples:\n  wasmhook send message:created --example\n  wasmhook send conversation:updated --data @event.json\n  echo '{\"conversation_id\": \"c1\"}' | wasmhook send conversation:created --data - --no-wait"
    )]
    Send(events::SendArgs),
    /// List and inspect events.
    #[command(
        subcommand,
        after_help = "Examples:\n  wasmhook events list --type message:created\n  wasmhook events get evt_..."
    )]
    Events(events::EventsCommand),
    /// List and inspect deliveries and their attempt log.
    #[command(
        subcommand,
        after_help = "Examples:\n  wasmhook deliveries list --status failed\n  wasmhook deliveries get msg_..."
    )]
    Deliveries(deliveries::DeliveriesCommand),
    /// Attempt a delivery again now.
    #[command(after_help = "Example:\n  wasmhook retry msg_...")]
    Retry(deliveries::RetryArgs),
    /// Requeue a subscription's failed deliveries since a time.
    #[command(
        after_help = "Examples:\n  wasmhook recover sub_... --since 2h --dry-run\n  wasmhook recover sub_... --since 2026-11-01T00:00:00Z --yes"
    )]
    Recover(deliveries::RecoverArgs),
    /// Try a webhook URL before subscribing it.
    ///
    /// Runs what subscribing would (the handshake, or a signed test delivery) and shows what was
    /// sent, what came back and why it failed.
    #[command(
        after_help = "Examples:\n  wasmhook verify https://example.com/hook\n  wasmhook verify https://example.com/papercups --format papercups"
    )]
    Verify(verify::VerifyArgs),
    /// Print what happens in the account as it happens, until Ctrl-C.
    ///
    /// One line per event stored, delivery attempt settled and plugin log line written; a
    /// dropped connection is reopened by itself.
    #[command(
        after_help = "Examples:\n  wasmhook tail\n  wasmhook tail --sub sub_... --type message:created\n  wasmhook tail --plugin plg_... -o json"
    )]
    Tail(tail::TailArgs),
    /// Receive webhooks on this machine without a tunnel, until Ctrl-C.
    ///
    /// A temporary subscription's deliveries come over a connection this command opens and are
    /// POSTed to the local URL with their body and signed headers; the answers go to the
    /// attempt log. Ctrl-C deletes the subscription.
    #[command(
        after_help = "Examples:\n  wasmhook listen http://localhost:3000/webhook\n  wasmhook listen http://localhost:3000/webhook -e message:created,conversation:created --format papercups"
    )]
    Listen(listen::ListenArgs),
    /// Manage plugins on a server, and build, check and run them locally.
    #[command(
        subcommand,
        after_help = "Examples:\n  wasmhook plugin check my_plugin.wasm\n  wasmhook plugin push my_plugin.wasm --name my-plugin\n  wasmhook plugin list"
    )]
    Plugin(plugins::PluginCommand),
    /// Rotate the keys that encrypt the server's secrets at rest (run on the server's machine).
    #[command(
        subcommand,
        after_help = "Examples:\n  wasmhook keys rotate --data-dir ./wasmhook-data\n  wasmhook keys prune --data-dir ./wasmhook-data"
    )]
    Keys(crate::key_rotation::KeysCommand),
    /// Apply pending schema migrations to a PostgreSQL database and exit (`serve` also applies
    /// them at start; this runs them ahead of an upgrade of the nodes).
    #[command(
        after_help = "Example:\n  wasmhook migrate --database-url postgres://wasmhook@db.internal/wasmhook"
    )]
    Migrate(MigrateArgs),
    /// Write a whole installation to a dump, to move it to another store (SQLite to PostgreSQL,
    /// or back).
    ///
    /// Stop the server first. The source is given with the same options as `serve`: the SQLite
    /// database in --data-dir, or --database-url. The dump is JSON lines on standard output (or
    /// --file, created with mode 0600): accounts, API keys (hashed), plugins with every
    /// version's component and their key-value stores, subscriptions, events, messages,
    /// deliveries with their attempts. WARNING: it holds the signing secrets and secret plugin
    /// settings in clear (decrypted with the source's key file, encrypted again by `import`
    /// with the target's): keep it private and delete it once imported.
    #[command(
        after_help = "Examples:\n  wasmhook export --data-dir ./wasmhook-data | wasmhook import --database-url postgres://wasmhook@db.internal/wasmhook\n  wasmhook export --data-dir ./wasmhook-data --file wasmhook.dump"
    )]
    Export(crate::transfer::ExportArgs),
    /// Fill a new, empty installation from a dump written by `wasmhook export`.
    ///
    /// The target is given with the same options as `serve`: --database-url for PostgreSQL
    /// (then --data-dir is the node's, for its key file), else the SQLite
    /// database in --data-dir. Secrets are encrypted with the target's key file (the data dir's,
    /// made if missing, or --encryption-key-file): start the server(s) with that file. A target
    /// that holds data is refused, and nothing is written unless the whole dump is read and
    /// stored: a bad line is an error naming its number. Sessions of the web console are not
    /// carried (sign in again); plugins compile on the target's first start.
    #[command(
        after_help = "Examples:\n  wasmhook export --data-dir ./wasmhook-data | wasmhook import --database-url postgres://wasmhook@db.internal/wasmhook --data-dir ./node-data\n  wasmhook import --data-dir ./new-data --file wasmhook.dump"
    )]
    Import(crate::transfer::ImportArgs),
    /// Print a shell completion script.
    #[command(
        after_help = "Examples:\n  wasmhook completion bash > ~/.local/share/bash-completion/completions/wasmhook\n  wasmhook completion zsh > \"${fpath[1]}/_wasmhook\"\n  wasmhook completion fish > ~/.config/fish/completions/wasmhook.fish"
    )]
    Completion(CompletionArgs),
}

/// Arguments of `completion`.
#[derive(Debug, Args)]
pub struct CompletionArgs {
    /// The shell.
    #[arg(value_enum)]
    shell: Shell,
}

/// Shells completions are made for.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Shell {
    Bash,
    Zsh,
    Fish,
}

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The server answered with an error.
    #[error("{message}")]
    Api {
        /// HTTP status.
        status: u16,
        /// The API's error code.
        code: String,
        /// The API's message.
        message: String,
    },
    /// The server could not be reached.
    #[error("cannot reach {url}: {reason}")]
    Unreachable {
        /// The server.
        url: String,
        /// Why.
        reason: String,
    },
    /// Bad input, or a state the command cannot work with.
    #[error("{0}")]
    Invalid(String),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The command ran, and what it checked failed (a failed delivery, a trapping plugin); the
    /// details were printed already.
    #[error("{0}")]
    Failed(String),
}

impl CliError {
    /// An I/O error on `path`.
    pub fn io(path: &Path, source: std::io::Error) -> CliError {
        CliError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// What every command gets: the output format and the profile.
#[derive(Debug, Clone)]
pub struct Ctx {
    /// Tables or JSON.
    pub output: Output,
    /// The profile named with `--profile`.
    pub profile: Option<String>,
}

impl Ctx {
    /// A client of the server of the current profile (after environment overrides).
    pub fn client(&self) -> Result<Client, CliError> {
        Client::new(&profile::current(self.profile.as_deref())?)
    }

    /// True for `-o json`.
    pub fn json(&self) -> bool {
        self.output == Output::Json
    }
}

/// Runs a client command (anything but `serve`) and returns the process exit code: 0 on
/// success, 1 on failure, after printing the error on stderr (the API's error body with
/// `-o json`).
pub async fn run(command: Command, global: Global) -> ExitCode {
    let ctx = Ctx {
        output: global.output,
        profile: global.profile,
    };
    match dispatch(command, &ctx).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            report(&e, &ctx);
            ExitCode::FAILURE
        }
    }
}

fn report(e: &CliError, ctx: &Ctx) {
    match e {
        CliError::Failed(_) if !ctx.json() => eprintln!("{e}"),
        CliError::Api { code, message, .. } if ctx.json() => eprintln!(
            "{}",
            serde_json::json!({"error": {"code": code, "message": message}})
        ),
        _ if ctx.json() => {
            let code = match e {
                CliError::Unreachable { .. } => "unreachable",
                CliError::Io { .. } => "io",
                CliError::Failed(_) => "failed",
                _ => "invalid",
            };
            eprintln!(
                "{}",
                serde_json::json!({"error": {"code": code, "message": e.to_string()}})
            )
        }
        _ => eprintln!("error: {e}"),
    }
}

async fn dispatch(command: Command, ctx: &Ctx) -> Result<(), CliError> {
    match command {
        Command::Serve(_) => unreachable!("main runs the server"),
        Command::Login(args) => account::login(args, ctx).await,
        Command::Whoami => account::whoami(ctx).await,
        Command::Sub(cmd) => subs::run(cmd, ctx).await,
        Command::Send(args) => events::send(args, ctx).await,
        Command::Events(cmd) => events::run(cmd, ctx).await,
        Command::Deliveries(cmd) => deliveries::run(cmd, ctx).await,
        Command::Retry(args) => deliveries::retry(args, ctx).await,
        Command::Recover(args) => deliveries::recover(args, ctx).await,
        Command::Plugin(cmd) => plugins::run(cmd, ctx).await,
        Command::Keys(cmd) => {
            crate::key_rotation::run(cmd).map_err(|e| CliError::Invalid(format!("{e:#}")))
        }
        Command::Migrate(args) => {
            let applied = crate::store::postgres::PgStore::migrate(&args.database_url)
                .await
                .map_err(|e| CliError::Invalid(format!("migrating the database: {e}")))?;
            println!("{applied} migration(s) applied; the schema is up to date");
            Ok(())
        }
        Command::Export(args) => crate::transfer::export(args)
            .await
            .map_err(|e| CliError::Invalid(format!("{e:#}"))),
        Command::Import(args) => crate::transfer::import(args)
            .await
            .map_err(|e| CliError::Invalid(format!("{e:#}"))),
        Command::Verify(args) => verify::verify(args, ctx).await,
        Command::Tail(args) => tail::tail(args, ctx).await,
        Command::Listen(args) => listen::listen(args, ctx).await,
        Command::Completion(args) => {
            let shell = match args.shell {
                Shell::Bash => clap_complete::Shell::Bash,
                Shell::Zsh => clap_complete::Shell::Zsh,
                Shell::Fish => clap_complete::Shell::Fish,
            };
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "wasmhook",
                &mut std::io::stdout(),
            );
            Ok(())
        }
    }
}

/// Reads `@file`, `-` (stdin) or inline text: the `--data` convention of curl.
pub fn read_data(arg: &str) -> Result<Vec<u8>, CliError> {
    if arg == "-" {
        let mut buf = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut buf)
            .map_err(|e| CliError::io(Path::new("<stdin>"), e))?;
        Ok(buf)
    } else if let Some(path) = arg.strip_prefix('@') {
        std::fs::read(path).map_err(|e| CliError::io(Path::new(path), e))
    } else {
        Ok(arg.as_bytes().to_vec())
    }
}

/// Parses `K=V`.
pub fn key_value(raw: &str) -> Result<(String, String), String> {
    match raw.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.to_string())),
        _ => Err(format!("{raw:?}: expected KEY=VALUE")),
    }
}

/// Asks a yes/no question on the terminal; false when stdin is not a terminal.
pub fn confirm(question: &str) -> bool {
    if !std::io::stdin().is_terminal() {
        return false;
    }
    eprint!("{question} [y/N] ");
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer).is_ok()
        && matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every command and subcommand's `--help` ends with an example.
    #[test]
    fn every_command_has_an_example() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for sub in cmd.get_subcommands() {
                let path = format!("{path} {}", sub.get_name());
                let help = sub
                    .get_after_help()
                    .map(|h| h.to_string())
                    .unwrap_or_default();
                if !help.contains("wasmhook ") {
                    missing.push(path.clone());
                }
                walk(sub, &path, missing);
            }
        }
        let mut missing = Vec::new();
        walk(&Cli::command(), "wasmhook", &mut missing);
        assert!(
            missing.is_empty(),
            "commands without an example: {missing:?}"
        );
        Cli::command().debug_assert();
    }

    /// What the server sends reads back into the same types and serializes the same: the
    /// command line's view of a response is the server's.
    #[test]
    fn responses_round_trip_through_the_api_types() {
        use crate::api::subscriptions::CreatedSubscription;
        use crate::delivery::netpolicy::NetPolicy;
        use crate::subscriptions::{CreateSubscription, build};

        fn round_trip<T: serde::Serialize + serde::de::DeserializeOwned>(value: &T) {
            let json = serde_json::to_value(value).unwrap();
            let back: T = serde_json::from_value(json.clone()).unwrap();
            assert_eq!(serde_json::to_value(&back).unwrap(), json);
        }
        let req: CreateSubscription = serde_json::from_value(serde_json::json!({
            "url": "https://example.com/hook",
            "event_types": ["message:created"],
            "headers": {"X-Team": "a"},
            "format": "papercups",
        }))
        .unwrap();
        // What the command line sends is what the server reads.
        round_trip(&req);
        let sub = build("acc_1", req, &NetPolicy::default()).unwrap();
        round_trip(&sub);
        round_trip(&CreatedSubscription {
            secret: "whsec_x".into(),
            subscription: sub,
        });
        let event: crate::model::Event = serde_json::from_value(serde_json::json!({
            "id": "evt_1", "type": "message:created", "payload": {"text": "hi"},
            "occurred_at": "2026-01-01T00:00:00Z", "received_at": "2026-01-01T00:00:01.250Z",
            "causation": {"plugin_id": "plg_1", "event_id": "evt_0", "depth": 1}
        }))
        .unwrap();
        assert_eq!(event.received_at % 1000, 250);
        round_trip(&event);
    }

    #[test]
    fn key_values_parse() {
        assert_eq!(key_value("a=b=c").unwrap(), ("a".into(), "b=c".into()));
        assert!(key_value("=x").is_err());
        assert!(key_value("nothing").is_err());
    }
}
