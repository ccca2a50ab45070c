//! The PostgreSQL rows: the SQLite rows' ingest, fan-out and steady-rate loads against 1 and 3
//! nodes sharing one database, each scenario on a database of its own created on the server
//! `--database-url` names (scripts/bench starts a private cluster for it, durable commits on).
//! Events are posted round-robin: each node gets its share of the clients.

use std::time::Instant;

use serde_json::json;
use tokio::task::JoinSet;

use crate::drive::{Driven, Plan, batch, drive, message_event};
use crate::scenarios::{Ctx, Row, await_deliveries, latencies};
use crate::server::Server;

/// A PostgreSQL server the tool may create databases on.
pub struct Postgres {
    url: reqwest::Url,
}

/// A database created for one scenario, dropped by [`Database::drop_now`].
struct Database {
    admin: tokio_postgres::Client,
    name: String,
    url: String,
}

async fn connect(url: &str) -> anyhow::Result<tokio_postgres::Client> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    Ok(client)
}

impl Postgres {
    pub fn new(url: &str) -> anyhow::Result<Postgres> {
        Ok(Postgres {
            url: reqwest::Url::parse(url)?,
        })
    }

    /// A new, empty database, with the server's durability settings (the rows state them).
    async fn database(&self) -> anyhow::Result<(Database, String)> {
        let admin = connect(self.url.as_str()).await?;
        let durability = {
            let show = |setting: &'static str| {
                let admin = &admin;
                async move {
                    let row = admin.query_one(&format!("SHOW {setting}"), &[]).await?;
                    anyhow::Ok(format!("{setting}={}", row.get::<_, String>(0)))
                }
            };
            format!(
                "{}, {}",
                show("fsync").await?,
                show("synchronous_commit").await?
            )
        };
        let name = format!(
            "wasmhook_load_{}_{}",
            std::process::id(),
            crate::receiver::now_ns()
        );
        admin
            .batch_execute(&format!("CREATE DATABASE \"{name}\""))
            .await?;
        let mut url = self.url.clone();
        url.set_path(&format!("/{name}"));
        let url = url.to_string();
        Ok((Database { admin, name, url }, durability))
    }
}

impl Database {
    async fn drop_now(self) -> anyhow::Result<()> {
        self.admin
            .batch_execute(&format!("DROP DATABASE \"{}\" WITH (FORCE)", self.name))
            .await?;
        Ok(())
    }
}

/// `n` nodes on one fresh database, with an account created through the first.
struct Nodes {
    servers: Vec<Server>,
    key: String,
    db: Database,
    durability: String,
    _dirs: tempfile::TempDir,
}

impl Nodes {
    async fn start(ctx: &Ctx<'_>, pg: &Postgres, n: usize) -> anyhow::Result<Nodes> {
        let (db, durability) = pg.database().await?;
        let dirs = tempfile::tempdir()?;
        let mut servers = Vec::with_capacity(n);
        // One after the other: the first runs the migrations, the others find them done.
        for i in 0..n {
            let dir = dirs.path().join(format!("node{i}"));
            let (server, _) =
                Server::start_with(ctx.bin, &dir, &["--database-url", &db.url]).await?;
            servers.push(server);
        }
        let key = servers[0].account().await?;
        ctx.receiver.reset();
        Ok(Nodes {
            servers,
            key,
            db,
            durability,
            _dirs: dirs,
        })
    }

    fn cpu_seconds(&self) -> f64 {
        self.servers.iter().filter_map(Server::cpu_seconds).sum()
    }

    /// Resources of the nodes: CPU summed over them, the largest node's peak RSS.
    fn resources(&self, row: &mut Row, cpu_before: f64, wall: std::time::Duration) {
        row.cpu_cores = Some((self.cpu_seconds() - cpu_before) / wall.as_secs_f64());
        row.peak_rss_mb = self
            .servers
            .iter()
            .filter_map(Server::peak_rss_mb)
            .reduce(f64::max);
    }

    /// Posts single events or batches of 100 round-robin: each node gets its share of the
    /// planned clients (and of the rate), all driven at once.
    async fn post(&self, plan: Plan, batched: bool) -> Driven {
        let (path, body): (&str, fn() -> serde_json::Value) = if batched {
            ("/v1/events/batch", || batch(100))
        } else {
            ("/v1/events", message_event)
        };
        let n = self.servers.len();
        let share = Plan {
            workers: plan.workers.div_ceil(n),
            duration: plan.duration,
            rate: plan.rate.map(|r| r / n as f64),
        };
        let mut all = JoinSet::new();
        for server in &self.servers {
            let (http, url, key) = (
                server.http.clone(),
                format!("{}{path}", server.base),
                self.key.clone(),
            );
            all.spawn(async move { drive(&http, url, Some(key), share, body).await });
        }
        let mut total = Driven {
            ok: 0,
            failed: 0,
            elapsed: std::time::Duration::ZERO,
        };
        while let Some(d) = all.join_next().await {
            let d = d.expect("a drive does not panic");
            total.ok += d.ok;
            total.failed += d.failed;
            total.elapsed = total.elapsed.max(d.elapsed);
        }
        total
    }

    async fn stop(self) -> anyhow::Result<()> {
        for server in self.servers {
            server.stop().await?;
        }
        self.db.drop_now().await
    }
}

fn prefix(nodes: usize) -> String {
    format!(
        "postgres, {nodes} node{}: ",
        if nodes > 1 { "s" } else { "" }
    )
}

/// Events accepted per second with nothing subscribed, single requests or batches of 100.
pub async fn ingest(
    ctx: &Ctx<'_>,
    pg: &Postgres,
    nodes: usize,
    batched: bool,
) -> anyhow::Result<Row> {
    let cluster = Nodes::start(ctx, pg, nodes).await?;
    let cpu0 = cluster.cpu_seconds();
    let plan = Plan {
        workers: if batched { 8 } else { 64 },
        duration: ctx.duration,
        rate: None,
    };
    let d = cluster.post(plan, batched).await;
    let per_request = if batched { 100.0 } else { 1.0 };
    let mut row = Row {
        scenario: format!(
            "{}ingest, {}",
            prefix(nodes),
            if batched {
                "batches of 100"
            } else {
                "single events"
            }
        ),
        events_per_s: Some(d.ok as f64 * per_request / d.elapsed.as_secs_f64()),
        note: format!(
            "every 202 after its commit ({}); {} failed requests",
            cluster.durability, d.failed
        ),
        ..Default::default()
    };
    cluster.resources(&mut row, cpu0, d.elapsed);
    cluster.stop().await?;
    Ok(row)
}

/// Events posted for the duration and delivered to one URL subscription, as fast as possible
/// or (`rate`) at that steady rate.
pub async fn delivery(
    ctx: &Ctx<'_>,
    pg: &Postgres,
    nodes: usize,
    rate: Option<f64>,
) -> anyhow::Result<Row> {
    let cluster = Nodes::start(ctx, pg, nodes).await?;
    let url = format!("{}/pg", ctx.receiver.url);
    cluster.servers[0]
        .post("/v1/subscriptions", &cluster.key, json!({ "url": url }))
        .await?;
    let cpu0 = cluster.cpu_seconds();
    let started = Instant::now();
    let plan = Plan {
        workers: if rate.is_some() { 16 } else { 32 },
        duration: ctx.duration,
        rate,
    };
    let d = cluster.post(plan, false).await;
    let done = await_deliveries(&ctx.receiver, d.ok, started).await;
    let delivered = ctx.receiver.total();
    let mut row = Row {
        scenario: match rate {
            Some(r) => format!("{}steady {r:.0} events/s, 1 subscription", prefix(nodes)),
            None => format!("{}fan-out to 1 subscription", prefix(nodes)),
        },
        events_per_s: Some(d.ok as f64 / d.elapsed.as_secs_f64()),
        deliveries_per_s: Some(delivered as f64 / done.as_secs_f64()),
        note: format!("{delivered}/{} delivered ({})", d.ok, cluster.durability),
        ..Default::default()
    };
    latencies(&mut row, &ctx.receiver);
    cluster.resources(&mut row, cpu0, started.elapsed());
    cluster.stop().await?;
    Ok(row)
}

/// Every PostgreSQL row, on 1 node and on 3.
pub async fn rows(ctx: &Ctx<'_>, pg: &Postgres, keep: &mut dyn FnMut(&str, anyhow::Result<Row>)) {
    for nodes in [1, 3] {
        let p = prefix(nodes);
        keep(
            &format!("{p}ingest, single events"),
            ingest(ctx, pg, nodes, false).await,
        );
        keep(
            &format!("{p}ingest, batches of 100"),
            ingest(ctx, pg, nodes, true).await,
        );
        keep(
            &format!("{p}fan-out to 1 subscription"),
            delivery(ctx, pg, nodes, None).await,
        );
        let steady = delivery(ctx, pg, nodes, Some(1000.0)).await;
        keep(&format!("{p}steady 1000 events/s, 1 subscription"), steady);
    }
}
