//! The scenarios: each starts a fresh server, drives it, and reports one row.

use std::path::Path;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::drive::{CONVERSATIONS, Driven, Plan, batch, conversation_event, drive, message_event};
use crate::receiver::{Receiver, SLOW_RESPONSE, quantile};
use crate::server::Server;

/// One measured scenario.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Row {
    pub scenario: String,
    pub events_per_s: Option<f64>,
    pub deliveries_per_s: Option<f64>,
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub peak_rss_mb: Option<f64>,
    pub cpu_cores: Option<f64>,
    pub seconds: Option<f64>,
    pub note: String,
    /// The build that ran the scenario when it is not the one under test (`run
    /// --baseline-server`), as `--baseline-name` names it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build: Option<String>,
}

/// Shared settings.
pub struct Ctx<'a> {
    pub bin: &'a Path,
    pub duration: Duration,
    pub receiver: Receiver,
    /// Where the Python and JavaScript example plugins were built, if they were.
    pub other_languages: &'a Path,
}

async fn fresh(ctx: &Ctx<'_>) -> anyhow::Result<(Server, String, tempfile::TempDir)> {
    let tmp = tempfile::tempdir()?;
    let (server, _) = Server::start(ctx.bin, &tmp.path().join("data")).await?;
    let key = server.account().await?;
    ctx.receiver.reset();
    Ok((server, key, tmp))
}

/// Waits until the receiver has `expected` requests or makes no progress for 10 s; returns
/// when the last one arrived, measured from `since`.
pub(crate) async fn await_deliveries(r: &Receiver, expected: u64, since: Instant) -> Duration {
    let (mut last, mut last_change) = (r.total(), Instant::now());
    let mut done_at = since.elapsed();
    while r.total() < expected && last_change.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(5)).await;
        let now = r.total();
        if now != last {
            last = now;
            last_change = Instant::now();
            done_at = since.elapsed();
        }
    }
    if r.total() >= expected {
        done_at = since.elapsed();
    }
    done_at
}

/// Polls `count` every `poll` until it reaches `expected`, makes no progress for `patience`, or
/// `limit` has passed since `since`. Returns the last count and when it last changed, measured
/// from `since`. A poll that fails (`None`) counts as no change.
pub(crate) async fn await_progress(
    mut count: impl AsyncFnMut() -> Option<u64>,
    expected: u64,
    since: Instant,
    poll: Duration,
    patience: Duration,
    limit: Duration,
) -> (u64, Duration) {
    let mut last = count().await.unwrap_or(0);
    let (mut last_change, mut done_at) = (Instant::now(), since.elapsed());
    while last < expected && last_change.elapsed() < patience && since.elapsed() < limit {
        tokio::time::sleep(poll).await;
        if let Some(now) = count().await
            && now != last
        {
            last = now;
            last_change = Instant::now();
            done_at = since.elapsed();
        }
    }
    (last, done_at)
}

/// `n` with a comma between thousands, as the report writes counts.
pub(crate) fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn resources(row: &mut Row, server: &Server, cpu_before: f64, wall: Duration) {
    row.peak_rss_mb = server.peak_rss_mb();
    row.cpu_cores = server
        .cpu_seconds()
        .map(|c| (c - cpu_before) / wall.as_secs_f64());
}

pub(crate) fn latencies(row: &mut Row, r: &Receiver) {
    let l = r.latencies_ms();
    row.p50_ms = quantile(&l, 0.50);
    row.p95_ms = quantile(&l, 0.95);
    row.p99_ms = quantile(&l, 0.99);
}

/// Like [`latencies`], with `missing` deliveries that never arrived counted as infinitely late:
/// a quantile they reach is unknown (`None`), not the quantile of the deliveries that made it.
fn latencies_with_missing(row: &mut Row, r: &Receiver, missing: u64) {
    let mut l = r.latencies_ms();
    l.extend(std::iter::repeat_n(f64::INFINITY, missing as usize));
    let q = |q| quantile(&l, q).filter(|v: &f64| v.is_finite());
    row.p50_ms = q(0.50);
    row.p95_ms = q(0.95);
    row.p99_ms = q(0.99);
}

/// The receiver's own bound: the load tool posting straight to it.
pub async fn receiver_bound(ctx: &Ctx<'_>) -> anyhow::Result<Row> {
    ctx.receiver.reset();
    let http = reqwest::Client::new();
    let d = drive(
        &http,
        format!("{}/direct", ctx.receiver.url),
        None,
        Plan {
            workers: 64,
            duration: ctx.duration,
            rate: None,
        },
        || json!({"data": message_event()["payload"].clone()}),
    )
    .await;
    let mut row = Row {
        scenario: "receiver bound (direct POST)".into(),
        ..Default::default()
    };
    row.deliveries_per_s = Some(d.ok as f64 / d.elapsed.as_secs_f64());
    latencies(&mut row, &ctx.receiver);
    row.note = "baseline: what the receiver and loopback can take".into();
    Ok(row)
}

/// Posts single message events (`POST /v1/events`), or batches of 100 of them
/// (`/v1/events/batch`), with `key`, as planned.
async fn post_events(server: &Server, key: &str, plan: Plan, batched: bool) -> Driven {
    let (path, body): (&str, fn() -> serde_json::Value) = if batched {
        ("/v1/events/batch", || batch(100))
    } else {
        ("/v1/events", message_event)
    };
    let url = format!("{}{path}", server.base);
    drive(&server.http, url, Some(key.to_string()), plan, body).await
}

/// Events accepted per second with nothing subscribed: single requests, then batches of 100.
pub async fn ingest(ctx: &Ctx<'_>, batched: bool) -> anyhow::Result<Row> {
    let (server, key, _tmp) = fresh(ctx).await?;
    let cpu0 = server.cpu_seconds().unwrap_or(0.0);
    let plan = Plan {
        workers: if batched { 8 } else { 64 },
        duration: ctx.duration,
        rate: None,
    };
    let d = post_events(&server, &key, plan, batched).await;
    let per_request = if batched { 100.0 } else { 1.0 };
    let mut row = Row {
        scenario: if batched {
            "ingest, batches of 100".into()
        } else {
            "ingest, single events".into()
        },
        events_per_s: Some(d.ok as f64 * per_request / d.elapsed.as_secs_f64()),
        note: format!(
            "every 202 after its commit (sync=full); {} failed requests",
            d.failed
        ),
        ..Default::default()
    };
    resources(&mut row, &server, cpu0, d.elapsed);
    server.stop().await?;
    Ok(row)
}

/// A transform plugin for [`fanout`].
#[derive(Clone, Copy)]
pub struct Transform<'a> {
    /// The name the row shows.
    pub name: &'a str,
    /// The component file.
    pub path: &'a str,
    /// Instances reused across events (`"instances": "reuse"`) instead of one per event.
    pub reuse: bool,
}

/// Events posted for the duration, each delivered to `subs` URL subscriptions (optionally
/// through a transform plugin); with `rate`, at that steady rate.
/// The name of the fan-out scenario's row with `subs` subscriptions.
pub fn fanout_name(subs: usize) -> String {
    match subs {
        1 => "fan-out to 1 subscription".into(),
        n => format!("fan-out to {n} subscriptions"),
    }
}

pub async fn fanout(
    ctx: &Ctx<'_>,
    subs: usize,
    transform: Option<Transform<'_>>,
    rate: Option<f64>,
) -> anyhow::Result<Row> {
    let (server, key, _tmp) = fresh(ctx).await?;
    let plugin = match transform {
        Some(t) => {
            let mut settings = json!({"config": {}});
            if t.reuse {
                settings["instances"] = json!("reuse");
            }
            Some(server.plugin(&key, t.path, settings).await?)
        }
        None => None,
    };
    for i in 0..subs {
        let mut body = json!({"url": format!("{}/s{i}", ctx.receiver.url)});
        if let Some(p) = &plugin {
            body["transform_plugin_id"] = json!(p);
        }
        server.post("/v1/subscriptions", &key, body).await?;
    }
    let cpu0 = server.cpu_seconds().unwrap_or(0.0);
    let started = Instant::now();
    let workers = if rate.is_some() { 16 } else { 32 };
    let d = post_events(
        &server,
        &key,
        Plan {
            workers,
            duration: ctx.duration,
            rate,
        },
        false,
    )
    .await;
    let expected = d.ok * subs as u64;
    let done = await_deliveries(&ctx.receiver, expected, started).await;
    let delivered = ctx.receiver.total();
    let mut row = Row {
        scenario: match (transform, rate) {
            (_, Some(r)) => format!("steady {r:.0} events/s, 1 subscription"),
            (Some(t), None) => format!(
                "transform plugin ({}{}), {subs} subscription",
                t.name,
                if t.reuse { ", reuse" } else { "" }
            ),
            (None, None) => format!(
                "fan-out to {subs} subscription{}",
                if subs > 1 { "s" } else { "" }
            ),
        },
        events_per_s: Some(d.ok as f64 / d.elapsed.as_secs_f64()),
        deliveries_per_s: Some(delivered as f64 / done.as_secs_f64()),
        note: format!("{delivered}/{expected} delivered"),
        ..Default::default()
    };
    if transform.is_some() {
        // How many events paid for an instantiation: in reuse mode, what reuse saved.
        let fresh = server
            .metric(r#"wasmhook_plugin_instances_total{source="fresh""#)
            .await?;
        let reused = server
            .metric(r#"wasmhook_plugin_instances_total{source="reused""#)
            .await?;
        // An older build (a baseline) has no such series.
        if fresh + reused > 0.0 {
            row.note += &format!("; instances: {fresh:.0} fresh, {reused:.0} reused");
        }
    }
    latencies(&mut row, &ctx.receiver);
    resources(&mut row, &server, cpu0, started.elapsed());
    server.stop().await?;
    Ok(row)
}

/// Clients posting single events at saturation, as in the issue that asked for delivery to
/// keep up with ingest.
pub const SATURATION_CLIENTS: usize = 50;

/// Delivery at saturation: [`SATURATION_CLIENTS`] clients post single events as fast as the
/// server takes them, to one URL subscription on a fast receiver. `events_per_s` is what was
/// accepted while posting and `deliveries_per_s` what the receiver got in the same window: if
/// delivery keeps up they are equal, and the backlog left when posting stops is small.
pub async fn saturation(ctx: &Ctx<'_>) -> anyhow::Result<Row> {
    let (server, key, _tmp) = fresh(ctx).await?;
    let url = format!("{}/saturation", ctx.receiver.url);
    server
        .post("/v1/subscriptions", &key, json!({ "url": url }))
        .await?;
    let cpu0 = server.cpu_seconds().unwrap_or(0.0);
    let started = Instant::now();
    let d = post_events(
        &server,
        &key,
        Plan {
            workers: SATURATION_CLIENTS,
            duration: ctx.duration,
            rate: None,
        },
        false,
    )
    .await;
    let during = ctx.receiver.total();
    let cpu = server.cpu_seconds();
    let done = await_deliveries(&ctx.receiver, d.ok, started).await;
    let secs = d.elapsed.as_secs_f64();
    let mut row = Row {
        scenario: format!("saturation: {SATURATION_CLIENTS} clients, 1 subscription"),
        events_per_s: Some(d.ok as f64 / secs),
        deliveries_per_s: Some(during as f64 / secs),
        note: format!(
            "{during} of {} accepted events delivered while posting ({:.0}%); all {} delivered {:.2} s after posting stopped; {} failed requests",
            d.ok,
            100.0 * during as f64 / d.ok.max(1) as f64,
            ctx.receiver.total(),
            (done.as_secs_f64() - secs).max(0.0),
            d.failed
        ),
        ..Default::default()
    };
    latencies(&mut row, &ctx.receiver);
    row.peak_rss_mb = server.peak_rss_mb();
    row.cpu_cores = cpu.map(|c| (c - cpu0) / secs);
    server.stop().await?;
    Ok(row)
}

/// Delivery alone: events are posted in batches of 100 (faster than one subscription's
/// delivery can follow) for the duration; once posting stops, `deliveries_per_s` is how fast
/// the backlog left drains with nothing else running, the delivery path's own capacity.
pub async fn drain(ctx: &Ctx<'_>) -> anyhow::Result<Row> {
    let (server, key, _tmp) = fresh(ctx).await?;
    let url = format!("{}/drain", ctx.receiver.url);
    server
        .post("/v1/subscriptions", &key, json!({ "url": url }))
        .await?;
    let started = Instant::now();
    let d = post_events(
        &server,
        &key,
        Plan {
            workers: 8,
            duration: ctx.duration,
            rate: None,
        },
        true,
    )
    .await;
    let (posted_at, before) = (started.elapsed(), ctx.receiver.total());
    let cpu0 = server.cpu_seconds().unwrap_or(0.0);
    let expected = d.ok * 100;
    let done = await_deliveries(&ctx.receiver, expected, started).await;
    let total = ctx.receiver.total();
    let drained = total.saturating_sub(before);
    let secs = (done - posted_at.min(done)).as_secs_f64();
    let mut row = Row {
        scenario: "delivery alone: a backlog drained, 1 subscription".into(),
        deliveries_per_s: (secs > 0.0).then(|| drained as f64 / secs),
        note: format!(
            "{} events posted in batches; {} delivered while posting, the other {} drained in {secs:.2} s; {total}/{expected} delivered",
            thousands(expected),
            thousands(before),
            thousands(drained)
        ),
        ..Default::default()
    };
    row.peak_rss_mb = server.peak_rss_mb();
    row.cpu_cores = server
        .cpu_seconds()
        .map(|c| (c - cpu0) / secs.max(f64::EPSILON));
    server.stop().await?;
    Ok(row)
}

/// A reacting plugin (auto-reply): every customer message gets a reply through
/// `send-message`, and the replies are delivered to a webhook.
pub async fn reacting(ctx: &Ctx<'_>, auto_reply: &str) -> anyhow::Result<Row> {
    let (server, key, _tmp) = fresh(ctx).await?;
    let bot = server
        .plugin(
            &key,
            auto_reply,
            json!({"config": {"reply_text": "Thanks, we are on it!"}}),
        )
        .await?;
    server
        .post(
            "/v1/subscriptions",
            &key,
            json!({"plugin_id": bot, "event_types": ["message:created"]}),
        )
        .await?;
    server
        .post("/v1/subscriptions", &key, json!({"url": format!("{}/replies", ctx.receiver.url), "event_types": ["message:created"]}))
        .await?;
    ctx.receiver.require("/replies", "app_user");
    let cpu0 = server.cpu_seconds().unwrap_or(0.0);
    let started = Instant::now();
    let d = post_events(
        &server,
        &key,
        Plan {
            workers: 16,
            duration: ctx.duration,
            rate: None,
        },
        false,
    )
    .await;
    let done = await_deliveries(&ctx.receiver, d.ok, started).await;
    let replies = ctx.receiver.total();
    let mut row = Row {
        scenario: "reacting plugin (auto-reply), replies delivered".into(),
        events_per_s: Some(d.ok as f64 / d.elapsed.as_secs_f64()),
        deliveries_per_s: Some(replies as f64 / done.as_secs_f64()),
        note: format!(
            "{replies}/{} replies delivered; latency = customer message posted → reply received",
            d.ok
        ),
        ..Default::default()
    };
    latencies(&mut row, &ctx.receiver);
    resources(&mut row, &server, cpu0, started.elapsed());
    server.stop().await?;
    Ok(row)
}

/// A noisy neighbour. Account A subscribes an endpoint that answers after 2 s (the receiver's
/// `/slow/` paths) and posts a backlog of 2,000 events; then account B posts 500 events/s for
/// the duration to a healthy endpoint. The latencies are B's alone: A's slow endpoint must hold
/// only its own subscription's delivery slots (`max_in_flight`, the server's default), not B's.
pub async fn noisy_neighbour(ctx: &Ctx<'_>) -> anyhow::Result<Row> {
    const BACKLOG: usize = 2_000;
    const RATE: f64 = 500.0;
    let (server, key_b, _tmp) = fresh(ctx).await?;
    let key_a = server.account().await?;
    let url = &ctx.receiver.url;
    server
        .post(
            "/v1/subscriptions",
            &key_a,
            json!({"url": format!("{url}/slow/a")}),
        )
        .await?;
    server
        .post(
            "/v1/subscriptions",
            &key_b,
            json!({"url": format!("{url}/healthy/b")}),
        )
        .await?;
    for _ in 0..BACKLOG / 1000 {
        server.post("/v1/events/batch", &key_a, batch(1000)).await?;
    }
    let cpu0 = server.cpu_seconds().unwrap_or(0.0);
    let started = Instant::now();
    let d = post_events(
        &server,
        &key_b,
        Plan {
            workers: 16,
            duration: ctx.duration,
            rate: Some(RATE),
        },
        false,
    )
    .await;
    // B's events are due at once; the ones still queued behind A's backlog 30 s after the
    // last was posted count as never delivered.
    let limit = d.elapsed + Duration::from_secs(30);
    let (delivered, done) = await_progress(
        async || Some(ctx.receiver.total()),
        d.ok,
        started,
        Duration::from_millis(5),
        Duration::from_secs(10),
        limit,
    )
    .await;
    let missing = d.ok.saturating_sub(delivered);
    let slow = ctx.receiver.slow_total();
    let mut row = Row {
        scenario: format!(
            "noisy neighbour: healthy account at {RATE:.0} events/s beside a {} s endpoint with a {}-event backlog",
            SLOW_RESPONSE.as_secs(),
            thousands(BACKLOG as u64)
        ),
        events_per_s: Some(d.ok as f64 / d.elapsed.as_secs_f64()),
        deliveries_per_s: Some(delivered as f64 / done.as_secs_f64()),
        note: format!(
            "{delivered}/{} of the healthy account's events delivered{}; latency = the healthy account's only; \
             the slow endpoint answered {slow} of its {} meanwhile",
            d.ok,
            if missing > 0 {
                format!(
                    " ({missing} not within {:.0} s: unknown quantiles shown as –)",
                    limit.as_secs_f64()
                )
            } else {
                String::new()
            },
            thousands(BACKLOG as u64),
        ),
        ..Default::default()
    };
    latencies_with_missing(&mut row, &ctx.receiver, missing);
    resources(&mut row, &server, cpu0, started.elapsed());
    server.stop().await?;
    Ok(row)
}

/// The server's count of successful deliveries (a plugin subscriber's are its handled events).
const SUCCEEDED: &str = "wasmhook_deliveries_total{outcome=\"succeeded\"";

/// A plugin subscriber (the no-op plugin, so the scheduling is what is measured) receiving
/// events spread over 1,000 conversations, posted as fast as possible, with the subscription's
/// `ordering` set to `ordering`: `"conversation"` (one delivery at a time per conversation, in
/// ingest order) or `"none"`. Completion is read from the server's succeeded-deliveries counter.
pub async fn ordered(ctx: &Ctx<'_>, noop: &str, ordering: &str) -> anyhow::Result<Row> {
    let (server, key, _tmp) = fresh(ctx).await?;
    let plugin = server.plugin(&key, noop, json!({})).await?;
    let sub = server
        .post(
            "/v1/subscriptions",
            &key,
            json!({"plugin_id": plugin, "event_types": ["message:created"], "ordering": ordering}),
        )
        .await?;
    if let Some(got) = sub.get("ordering") {
        anyhow::ensure!(got == ordering, "asked for ordering {ordering}, got {got}");
    }
    let cpu0 = server.cpu_seconds().unwrap_or(0.0);
    let started = Instant::now();
    let d = drive(
        &server.http,
        format!("{}/v1/events", server.base),
        Some(key),
        Plan {
            workers: 32,
            duration: ctx.duration,
            rate: None,
        },
        conversation_event,
    )
    .await;
    let (processed, done) = await_progress(
        async || server.metric(SUCCEEDED).await.ok().map(|v| v as u64),
        d.ok,
        started,
        Duration::from_millis(20),
        Duration::from_secs(10),
        Duration::MAX,
    )
    .await;
    let mut row = Row {
        scenario: match ordering {
            "none" => format!(
                "plugin subscriber, unordered (no-op, {} conversations)",
                thousands(CONVERSATIONS)
            ),
            _ => format!(
                "plugin subscriber, ordered by conversation (no-op, {} conversations)",
                thousands(CONVERSATIONS)
            ),
        },
        events_per_s: Some(d.ok as f64 / d.elapsed.as_secs_f64()),
        deliveries_per_s: Some(processed as f64 / done.as_secs_f64()),
        note: format!(
            "{processed}/{} events handled by the plugin; deliveries/s = events handled per second, \
             first post to last handled; \"ordering\": \"{ordering}\"",
            d.ok
        ),
        ..Default::default()
    };
    resources(&mut row, &server, cpu0, started.elapsed());
    server.stop().await?;
    Ok(row)
}

/// Start-up with 50 stored plugins, from stored artifacts and forced to recompile; then the
/// idle memory of that server with 1,000 subscriptions.
pub async fn startup_and_idle(ctx: &Ctx<'_>, plugin: &str) -> anyhow::Result<Vec<Row>> {
    let (server, key, _tmp) = fresh(ctx).await?;
    let mut ids = Vec::new();
    for _ in 0..50 {
        ids.push(server.plugin(&key, plugin, json!({})).await?);
    }
    for i in 0..1000 {
        let body = if let Some(id) = ids.get(i) {
            json!({"plugin_id": id, "event_types": ["message:created"]})
        } else {
            json!({"url": format!("https://hooks{i}.example.com/in"), "event_types": ["message:created"]})
        };
        server.post("/v1/subscriptions", &key, body).await?;
    }
    let (server, cached) = server.restart().await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let idle = server.rss_mb();
    let dir = server.dir.clone();
    server.stop().await?;
    for entry in std::fs::read_dir(dir.join("plugins"))? {
        for f in std::fs::read_dir(entry?.path())? {
            let f = f?.path();
            if f.extension().is_some_and(|e| e == "cwasm") {
                std::fs::remove_file(f)?;
            }
        }
    }
    let (server, recompiled) = Server::start(ctx.bin, &dir).await?;
    server.stop().await?;
    Ok(vec![
        Row {
            scenario: "start-up, 50 plugins, stored artifacts".into(),
            seconds: Some(cached.as_secs_f64()),
            note: "process start to /readyz".into(),
            ..Default::default()
        },
        Row {
            scenario: "start-up, 50 plugins, forced to recompile".into(),
            seconds: Some(recompiled.as_secs_f64()),
            note: "compiled artifacts deleted first".into(),
            ..Default::default()
        },
        Row {
            scenario: "idle, 50 plugins + 1,000 subscriptions".into(),
            peak_rss_mb: idle,
            note: "RSS 3 s after start-up (the column shows current RSS here)".into(),
            ..Default::default()
        },
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_thousands_with_commas() {
        assert_eq!(thousands(7), "7");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1234567), "1,234,567");
    }
}
