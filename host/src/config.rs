//! Server configuration: every option is a `serve` flag and an environment variable.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};
use ipnet::IpNet;

use crate::store::SyncMode;

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Pretty,
    /// One JSON object per line.
    Json,
}

/// Options of `wasmhook serve`.
#[derive(Debug, Clone, Args)]
pub struct Config {
    /// Address to listen on.
    #[arg(long, env = "WASMHOOK_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Directory for the database, the admin token and compiled plugins.
    #[arg(long, env = "WASMHOOK_DATA_DIR", default_value = "./wasmhook-data")]
    pub data_dir: PathBuf,

    /// Token for the admin endpoints (`/v1/accounts`). Without one, the first start generates one,
    /// stores it in the data dir (mode 0600) and prints it once. `none` turns the admin
    /// endpoints (and the console's admin sign-in) off; it needs at least one account.
    #[arg(long, env = "WASMHOOK_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,

    /// Largest accepted event (request body of `POST /v1/events`), in bytes.
    #[arg(long, env = "WASMHOOK_MAX_EVENT_BYTES", default_value_t = 256 * 1024)]
    pub max_event_bytes: usize,

    /// Largest accepted batch request (`POST /v1/events/batch`), in bytes.
    #[arg(long, env = "WASMHOOK_MAX_BATCH_BYTES", default_value_t = 16 * 1024 * 1024)]
    pub max_batch_bytes: usize,

    /// The keyring that encrypts secrets in the database (signing secrets, secret plugin
    /// config). Without it, `<data-dir>/encryption-keys` is used, generated (mode 0600) on the
    /// first start. Keep it out of database backups and back it up separately.
    #[arg(long, env = "WASMHOOK_ENCRYPTION_KEY_FILE")]
    pub encryption_key_file: Option<PathBuf>,

    /// Log format.
    #[arg(long, env = "WASMHOOK_LOG_FORMAT", value_enum, default_value_t = LogFormat::Pretty)]
    pub log_format: LogFormat,

    /// Store everything in this PostgreSQL database (`postgres://user:password@host:port/db`,
    /// PostgreSQL 13 or newer) instead of the embedded SQLite database in the data dir: any
    /// number of nodes started with the same URL share one queue. Migrations run at start.
    #[arg(long, env = "WASMHOOK_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,

    /// Connections to PostgreSQL this node opens at most (plus one that listens for wake-ups).
    /// Keep `nodes × (pool size + 1)` below the server's `max_connections` minus its reserved
    /// ones.
    #[arg(long, env = "WASMHOOK_DATABASE_POOL_SIZE", default_value_t = crate::store::postgres::DEFAULT_POOL_SIZE)]
    pub database_pool_size: usize,

    /// `full` syncs every group commit to disk (survives power loss); `normal` survives a process
    /// crash but may lose the last commits on power loss.
    #[arg(long, env = "WASMHOOK_SYNC", value_enum, default_value_t = SyncMode::Full)]
    pub sync: SyncMode,

    /// Deliveries in flight at once.
    #[arg(long, env = "WASMHOOK_DELIVERY_CONCURRENCY", default_value_t = 64)]
    pub delivery_concurrency: usize,

    /// Attempts in flight at once per subscription, unless the subscription sets
    /// `max_in_flight`: one slow endpoint holds at most this many delivery slots.
    #[arg(long, env = "WASMHOOK_SUBSCRIPTION_MAX_IN_FLIGHT", default_value_t = 8,
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub subscription_max_in_flight: u32,

    /// Pending deliveries above which new events are refused (429 with `Retry-After`) until
    /// delivery catches up; 0 never refuses. The depth is sampled every second.
    #[arg(long, env = "WASMHOOK_MAX_QUEUE_DEPTH", default_value_t = 1_000_000)]
    pub max_queue_depth: u64,

    /// Endpoint failures in a row (timeouts, connection errors, 5xx) that trip a subscription's
    /// circuit breaker: its deliveries pause, then one probe attempt decides.
    #[arg(long, env = "WASMHOOK_CIRCUIT_BREAKER_THRESHOLD", default_value_t = 5,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub circuit_breaker_threshold: u32,

    /// The first pause of a tripped circuit breaker; it doubles after each failed probe.
    #[arg(long, env = "WASMHOOK_CIRCUIT_BREAKER_COOLDOWN", default_value = "30s", value_parser = humantime::parse_duration)]
    pub circuit_breaker_cooldown: Duration,

    /// The longest pause of a tripped circuit breaker.
    #[arg(long, env = "WASMHOOK_CIRCUIT_BREAKER_MAX_COOLDOWN", default_value = "10m", value_parser = humantime::parse_duration)]
    pub circuit_breaker_max_cooldown: Duration,

    /// Time limit of one delivery attempt (e.g. `15s`, `500ms`).
    #[arg(long, env = "WASMHOOK_DELIVERY_TIMEOUT", default_value = "15s", value_parser = humantime::parse_duration)]
    pub delivery_timeout: Duration,

    /// Delays before each retry, comma-separated (each gets ±20% jitter).
    #[arg(
        long,
        env = "WASMHOOK_RETRY_SCHEDULE",
        default_value = "5s,5m,30m,2h,5h,10h,10h",
        value_parser = parse_schedule
    )]
    pub retry_schedule: Schedule,

    /// A subscription whose deliveries all failed for this long is disabled.
    #[arg(long, env = "WASMHOOK_DISABLE_AFTER", default_value = "5days", value_parser = humantime::parse_duration)]
    pub disable_after: Duration,

    /// Let deliveries reach this otherwise refused network (CIDR, repeatable), e.g. `127.0.0.0/8`
    /// for a receiver on this machine.
    #[arg(
        long = "allow-network",
        env = "WASMHOOK_ALLOW_NETWORK",
        value_delimiter = ','
    )]
    pub allow_network: Vec<IpNet>,

    /// Webhook checks (`POST /v1/webhook-checks`) an account may run per minute; a burst of this
    /// many is allowed, then one more every `60 s / N`.
    #[arg(long, env = "WASMHOOK_WEBHOOK_CHECKS_PER_MINUTE", default_value_t = 10,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub webhook_checks_per_minute: u32,

    /// How long a `wasmhook listen` subscription outlives its command line's last connection
    /// (a command line that exits cleanly deletes it at once).
    #[arg(long, env = "WASMHOOK_LISTEN_GRACE", default_value = "60s", value_parser = humantime::parse_duration)]
    pub listen_grace: Duration,

    /// Time a connection has to send a request's headers: from its start, or from the first
    /// byte after the previous response.
    #[arg(long, env = "WASMHOOK_HEADER_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub header_timeout: Duration,

    /// Time a request has to send its body, from the end of its headers (answered 408).
    #[arg(long, env = "WASMHOOK_BODY_TIMEOUT", default_value = "60s", value_parser = humantime::parse_duration)]
    pub body_timeout: Duration,

    /// How long a keep-alive connection may wait for its next request. Longer than the idle
    /// timeout of a proxy in front (often 60 s), so the proxy closes first.
    #[arg(long, env = "WASMHOOK_IDLE_TIMEOUT", default_value = "75s", value_parser = humantime::parse_duration)]
    pub idle_timeout: Duration,

    /// Connections open at once; more wait to be accepted until one closes.
    #[arg(long, env = "WASMHOOK_MAX_CONNECTIONS", default_value_t = 4096,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_connections: u32,

    /// Failed authentications (a wrong API key or admin token, a failed console sign-in) a
    /// client address may make per minute: a burst of this many, then one more every
    /// `60 s / N`; past that every authenticated request from the address gets 429.
    #[arg(long, env = "WASMHOOK_AUTH_FAILURES_PER_MINUTE", default_value_t = 20,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub auth_failures_per_minute: u32,

    /// Proxies in front of the server (CIDR, repeatable): for a request from one of them, the
    /// client's address (which failed authentications are counted by) is the last address of
    /// `X-Forwarded-For` that is not itself one of them.
    #[arg(
        long = "trusted-proxy",
        env = "WASMHOOK_TRUSTED_PROXY",
        value_delimiter = ','
    )]
    pub trusted_proxies: Vec<IpNet>,

    /// Largest accepted plugin upload, in bytes.
    #[arg(long, env = "WASMHOOK_MAX_PLUGIN_BYTES", default_value_t = 64 * 1024 * 1024)]
    pub max_plugin_bytes: usize,

    /// Tests only, never an option of the command line: uploads are not compiled until this
    /// file exists, so a test can act while a version is `compiling` (post events, restart)
    /// without racing the compiler. Set on the parsed configuration by the test harness.
    #[arg(skip)]
    pub test_hold_compiles_until: Option<PathBuf>,

    /// Memory all plugin instances may reserve together (e.g. `8GiB`; bare numbers are bytes).
    /// Each instance reserves its plugin's memory limit before it starts; one that does not fit
    /// waits for running ones to finish. Default: half of the machine's memory (`MemTotal`).
    #[arg(long, env = "WASMHOOK_PLUGIN_MEMORY_BUDGET", value_parser = parse_size)]
    pub plugin_memory_budget: Option<u64>,

    /// Events one instance of a plugin in `reuse` mode serves at most before it is thrown away.
    #[arg(long, env = "WASMHOOK_REUSE_MAX_EVENTS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub reuse_max_events: u32,

    /// How long after its instantiation an instance of a plugin in `reuse` mode is still used.
    #[arg(long, env = "WASMHOOK_REUSE_MAX_AGE", default_value = "5m", value_parser = humantime::parse_duration)]
    pub reuse_max_age: Duration,

    /// How long an instance of a plugin in `reuse` mode is kept without an event.
    #[arg(long, env = "WASMHOOK_REUSE_IDLE_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub reuse_idle_timeout: Duration,

    /// How many times its linear memory after its first event an instance of a plugin in
    /// `reuse` mode may grow to before it is thrown away (at least 1).
    #[arg(long, env = "WASMHOOK_REUSE_MAX_MEMORY_GROWTH", default_value_t = 2.0, value_parser = parse_growth)]
    pub reuse_max_memory_growth: f64,

    /// Idle instances of plugins in `reuse` mode kept at most, all plugins together (each
    /// holds an instance slot and its memory reservation; 0 turns reuse off).
    #[arg(long, env = "WASMHOOK_REUSE_MAX_IDLE", default_value_t = 64)]
    pub reuse_max_idle: usize,

    /// Plugins an account may have.
    #[arg(long, env = "WASMHOOK_MAX_PLUGINS_PER_ACCOUNT", default_value_t = 100)]
    pub max_plugins_per_account: u64,

    /// Bytes of plugin components an account may store, every version of every plugin counted
    /// (e.g. `1GiB`; bare numbers are bytes).
    #[arg(long, env = "WASMHOOK_MAX_PLUGIN_STORAGE_PER_ACCOUNT", default_value = "1GiB", value_parser = parse_size)]
    pub max_plugin_storage_per_account: u64,

    /// Subscriptions an account may have (`wasmhook listen` ones included).
    #[arg(
        long,
        env = "WASMHOOK_MAX_SUBSCRIPTIONS_PER_ACCOUNT",
        default_value_t = 1000
    )]
    pub max_subscriptions_per_account: u64,

    /// How long settled deliveries (succeeded, failed, filtered), their attempts and events
    /// without a pending delivery are kept (`30d`, `12h`, ...; `off` or `0` keeps everything).
    /// A periodic job deletes older ones in batches of 1,000 rows, on one node at a time.
    #[arg(long, env = "WASMHOOK_RETENTION", default_value = "30d", value_parser = parse_retention)]
    pub retention: Retention,
}

/// How long settled records are kept; `None` keeps them forever.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention(pub Option<Duration>);

fn parse_retention(s: &str) -> Result<Retention, String> {
    match s.trim() {
        "off" | "0" => Ok(Retention(None)),
        d => match humantime::parse_duration(d) {
            Ok(d) if d.is_zero() => Ok(Retention(None)),
            Ok(d) => Ok(Retention(Some(d))),
            Err(e) => Err(format!(
                "{s:?}: {e} (a duration such as 30d or 12h, or off)"
            )),
        },
    }
}

/// A retry schedule: the delay before retry 1, 2, ...
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule(pub Vec<Duration>);

fn parse_schedule(s: &str) -> Result<Schedule, String> {
    let steps = s
        .split(',')
        .map(|p| humantime::parse_duration(p.trim()).map_err(|e| format!("{p:?}: {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Schedule(steps))
}

/// A growth factor: a finite number of at least 1.
fn parse_growth(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(f) if f.is_finite() && f >= 1.0 => Ok(f),
        _ => Err(format!("{s:?}: a factor of at least 1, such as 2 or 1.5")),
    }
}

/// A size in bytes: a number with an optional unit, `B`, `KiB`, `MiB`, `GiB`, `TiB` (powers of
/// 1024) or `KB`, `MB`, `GB`, `TB` (powers of 1000), case-insensitive: `512MiB`, `8GiB`, `1048576`.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{s:?}: expected a number of bytes, e.g. 512MiB or 8GiB"))?;
    let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kib" | "k" => 1 << 10,
        "mib" | "m" => 1 << 20,
        "gib" | "g" => 1 << 30,
        "tib" | "t" => 1 << 40,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        other => {
            return Err(format!(
                "{s:?}: unknown unit {other:?} (use KiB, MiB, GiB, ...)"
            ));
        }
    };
    number
        .checked_mul(multiplier)
        .ok_or_else(|| format!("{s:?}: too large"))
}

impl Config {
    /// Options as parsed from `args` (without the program name), environment included.
    pub fn from_args<I, T>(args: I) -> Result<Config, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        #[derive(clap::Parser)]
        struct Wrapper {
            #[command(flatten)]
            config: Config,
        }
        let args = std::iter::once(std::ffi::OsString::from("wasmhook"))
            .chain(args.into_iter().map(Into::into));
        <Wrapper as clap::Parser>::try_parse_from(args).map(|w| w.config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_parse_down_to_milliseconds() {
        assert_eq!(
            parse_schedule("10ms, 20ms,1s").unwrap().0,
            vec![
                Duration::from_millis(10),
                Duration::from_millis(20),
                Duration::from_secs(1)
            ]
        );
        assert!(parse_schedule("10parsecs").is_err());
    }

    #[test]
    fn defaults_match_the_documentation() {
        let c = Config::from_args(["--data-dir", "/tmp/x"]).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.max_event_bytes, 262_144);
        assert_eq!(c.delivery_concurrency, 64);
        assert_eq!(c.subscription_max_in_flight, 8);
        assert_eq!(c.max_queue_depth, 1_000_000);
        assert_eq!(c.circuit_breaker_threshold, 5);
        assert_eq!(c.circuit_breaker_cooldown, Duration::from_secs(30));
        assert_eq!(c.retry_schedule.0.len(), 7);
        assert_eq!(c.disable_after, Duration::from_secs(5 * 86_400));
        assert_eq!(c.webhook_checks_per_minute, 10);
        assert_eq!(c.listen_grace, Duration::from_secs(60));
        assert_eq!(c.header_timeout, Duration::from_secs(10));
        assert_eq!(c.body_timeout, Duration::from_secs(60));
        assert_eq!(c.idle_timeout, Duration::from_secs(75));
        assert_eq!(c.max_connections, 4096);
        assert_eq!(c.auth_failures_per_minute, 20);
        assert_eq!(c.plugin_memory_budget, None);
        assert_eq!(c.max_plugins_per_account, 100);
        assert_eq!(c.max_plugin_storage_per_account, 1 << 30);
        assert_eq!(c.max_subscriptions_per_account, 1000);
        assert_eq!(c.reuse_max_events, 10_000);
        assert_eq!(c.reuse_max_age, Duration::from_secs(300));
        assert_eq!(c.reuse_idle_timeout, Duration::from_secs(30));
        assert_eq!(c.reuse_max_memory_growth, 2.0);
        assert_eq!(c.reuse_max_idle, 64);
        assert_eq!(
            c.retention,
            Retention(Some(Duration::from_secs(30 * 86_400)))
        );
        let off = |v: &str| Config::from_args(["--data-dir", "/x", "--retention", v]).unwrap();
        assert_eq!(off("off").retention, Retention(None));
        assert_eq!(off("0").retention, Retention(None));
        assert_eq!(
            off("12h").retention,
            Retention(Some(Duration::from_secs(12 * 3600)))
        );
        assert!(Config::from_args(["--data-dir", "/x", "--retention", "soon"]).is_err());
        assert!(
            Config::from_args(["--data-dir", "/x", "--reuse-max-memory-growth", "0.5"]).is_err()
        );
    }

    #[test]
    fn sizes_parse_with_binary_and_decimal_units() {
        assert_eq!(parse_size("1048576"), Ok(1 << 20));
        assert_eq!(parse_size("512MiB"), Ok(512 << 20));
        assert_eq!(parse_size("8gib"), Ok(8 << 30));
        assert_eq!(parse_size("2 GB"), Ok(2_000_000_000));
        assert_eq!(parse_size("64k"), Ok(64 << 10));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("12 parsecs").is_err());
        assert!(parse_size("99999999999TiB").is_err());
    }
}
