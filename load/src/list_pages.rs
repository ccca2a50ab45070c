//! The console's list pages with a long history (issue 12: "with 100,000 deliveries stored,
//! every list page answers in under 100 ms"): a fresh server gets an account whose two
//! webhooks have `count` deliveries between them, posted in batches and delivered to the
//! receiver (1% of them refused with a 400 until they are dead letters, a tenth through the
//! pii-redactor transform, whose log lines fill its plugin page). Then every console list page
//! and the API list endpoint behind each is requested [`SAMPLES`] times in turn, with a
//! signed-in session (the console) or the account's key (the API), and timed from the request
//! to the whole body read.

use std::time::{Duration, Instant};

use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};
use serde_json::{Value, json};

use crate::receiver::quantile;
use crate::scenarios::{Ctx, Row, await_progress, thousands};
use crate::server::Server;

/// Requests timed per page (after [`WARM_UP`] untimed ones).
pub const SAMPLES: usize = 30;
const WARM_UP: usize = 3;
/// The target every list page is held to (its p99).
pub const TARGET_MS: f64 = 100.0;
/// Row names of the timed pages start with this.
pub const PAGE_PREFIX: &str = "list page: ";
/// The seeding row's name starts with this (or, when seeding failed, is [`SEEDING`] (failed)).
pub const SEEDED_PREFIX: &str = "list pages: ";
pub const SEEDING: &str = "list pages: seeding";
/// Events per batch request while seeding.
const BATCH: u64 = 1000;
/// Every this many events, one asks the receiver to fail (it becomes a dead letter).
const FAIL_EVERY: u64 = 100;
/// Every this many events, one is a `conversation:updated` (the transformed webhook's).
const UPDATE_EVERY: u64 = 10;

/// The seed's i-th event.
fn event(i: u64) -> Value {
    let update = i.is_multiple_of(UPDATE_EVERY);
    json!({
        "type": if update { "conversation:updated" } else { "message:created" },
        "payload": {
            "conversation_id": format!("conv-{}", i % 1000),
            "text": format!("message {i}: mail me at jane.doe@example.com"),
            "status": "open",
            "fail_me": i % FAIL_EVERY == 1,
        }
    })
}

/// `count` deliveries for one account, settled; returns the account's key and how long it took.
async fn seed(ctx: &Ctx<'_>, server: &Server, count: u64) -> anyhow::Result<(Seeded, Duration)> {
    let key = server.account().await?;
    let pii = wasmhook_plugin_artifacts::PII_REDACTOR;
    let plugin = server.plugin(&key, pii, json!({})).await?;
    let url = &ctx.receiver.url;
    let messages = server
        .post(
            "/v1/subscriptions",
            &key,
            json!({"url": format!("{url}/history/messages"), "event_types": ["message:created"]}),
        )
        .await?;
    let updates = server
        .post(
            "/v1/subscriptions",
            &key,
            json!({"url": format!("{url}/history/updates"), "event_types": ["conversation:updated"],
                   "transform_plugin_id": plugin}),
        )
        .await?;
    let started = Instant::now();
    let mut posted = 0;
    while posted < count {
        let n = BATCH.min(count - posted);
        let events: Vec<Value> = (posted..posted + n).map(event).collect();
        server
            .post("/v1/events/batch", &key, json!({"events": events}))
            .await?;
        posted += n;
    }
    let settled = async || {
        let mut n = 0.0;
        for outcome in ["succeeded", "failed", "filtered"] {
            let series = format!("wasmhook_deliveries_total{{outcome=\"{outcome}\"");
            n += server.metric(&series).await.ok()?;
        }
        Some(n as u64)
    };
    let (done, _) = await_progress(
        settled,
        count,
        started,
        Duration::from_millis(200),
        Duration::from_secs(30),
        Duration::from_secs(1800),
    )
    .await;
    anyhow::ensure!(
        done >= count,
        "only {done} of {count} deliveries settled while seeding"
    );
    let id = |v: &Value| v["id"].as_str().unwrap_or_default().to_string();
    Ok((
        Seeded {
            key,
            messages: id(&messages),
            updates: id(&updates),
            plugin,
        },
        started.elapsed(),
    ))
}

/// What the seed made.
struct Seeded {
    key: String,
    /// The `message:created` webhook (nine tenths of the deliveries).
    messages: String,
    /// The `conversation:updated` webhook, through the transform.
    updates: String,
    /// The transform plugin.
    plugin: String,
}

/// The value of `marker...` up to the next `"` in `html`.
fn attr_after(html: &str, marker: &str) -> Option<String> {
    let at = html.find(marker)? + marker.len();
    let end = html[at..].find('"')?;
    Some(html[at..at + end].to_string())
}

/// Signs in to the console with `key` through its form; returns the session cookie.
async fn sign_in(server: &Server, key: &str) -> anyhow::Result<String> {
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let form = http
        .get(format!("{}/console/sign-in", server.base))
        .send()
        .await?;
    let form_cookie = form
        .headers()
        .get(SET_COOKIE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .unwrap_or_default()
        .to_string();
    let html = form.text().await?;
    let token = attr_after(&html, "name=\"sign_in_token\" value=\"")
        .ok_or_else(|| anyhow::anyhow!("the sign-in form has no token"))?;
    let resp = http
        .post(format!("{}/console/sign-in", server.base))
        .header(COOKIE, form_cookie)
        .form(&[("sign_in_token", token.as_str()), ("key", key)])
        .send()
        .await?;
    anyhow::ensure!(
        resp.status() == 303 && resp.headers().contains_key(LOCATION),
        "sign-in answered {}",
        resp.status()
    );
    resp.headers()
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("wasmhook_session="))
        .and_then(|v| v.split(';').next())
        .map(str::to_string)
        .ok_or_else(|| anyhow::anyhow!("sign-in set no session cookie"))
}

/// A JSON GET with the key.
async fn api(server: &Server, key: &str, path: &str) -> anyhow::Result<Value> {
    let resp = server
        .http
        .get(format!("{}{path}", server.base))
        .bearer_auth(key)
        .send()
        .await?;
    anyhow::ensure!(resp.status() == 200, "GET {path}: {}", resp.status());
    Ok(resp.json().await?)
}

/// Each page's name and path: the console's with the session, the API's (`/v1/...`) with the key.
async fn pages(server: &Server, s: &Seeded) -> anyhow::Result<Vec<(String, String)>> {
    let (m, u, p) = (&s.messages, &s.updates, &s.plugin);
    let first = api(server, &s.key, &format!("/v1/subscriptions/{m}/deliveries")).await?;
    let cursor = first["next_cursor"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let newest = api(server, &s.key, "/v1/events?limit=1").await?;
    let event = newest["data"][0]["id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let (from, to) = ("2000-01-01T00:00:00Z", "2100-01-01T00:00:00Z");
    let list = [
        ("overview", "/console".to_string()),
        ("integrations", "/console/integrations".to_string()),
        (
            "a subscription's deliveries",
            format!("/console/subscriptions/{m}"),
        ),
        (
            "a subscription's failed deliveries",
            format!("/console/subscriptions/{m}?status=failed"),
        ),
        (
            "a subscription's deliveries, second page",
            format!("/console/subscriptions/{m}?cursor={cursor}"),
        ),
        (
            "a transformed subscription's deliveries",
            format!("/console/subscriptions/{u}"),
        ),
        (
            "the account's deliveries",
            "/console/deliveries".to_string(),
        ),
        (
            "the account's failed deliveries",
            "/console/deliveries?status=failed".to_string(),
        ),
        (
            "the account's pending deliveries (none)",
            "/console/deliveries?status=pending".to_string(),
        ),
        (
            "deliveries changed in the last hour",
            "/console/deliveries?window=1h".to_string(),
        ),
        ("events", "/console/events".to_string()),
        (
            "events by type",
            "/console/events?type=conversation:updated".to_string(),
        ),
        (
            "events by conversation",
            "/console/events?conversation_id=conv-7".to_string(),
        ),
        ("events by id", format!("/console/events?id={event}")),
        (
            "events in a time range (all of them)",
            format!("/console/events?from={from}&to={to}"),
        ),
        (
            "an event and its deliveries",
            format!("/console/events/{event}"),
        ),
        ("plugins", "/console/plugins".to_string()),
        ("a plugin and its log", format!("/console/plugins/{p}")),
        ("API keys", "/console/api-keys".to_string()),
        ("API: subscriptions", "/v1/subscriptions".to_string()),
        (
            "API: a subscription's deliveries",
            format!("/v1/subscriptions/{m}/deliveries"),
        ),
        (
            "API: a subscription's failed deliveries",
            format!("/v1/subscriptions/{m}/deliveries?status=failed"),
        ),
        (
            "API: a subscription's deliveries, second page",
            format!("/v1/subscriptions/{m}/deliveries?cursor={cursor}"),
        ),
        (
            "API: the account's deliveries",
            "/v1/deliveries".to_string(),
        ),
        (
            "API: the account's failed deliveries",
            "/v1/deliveries?status=failed".to_string(),
        ),
        (
            "API: the account's pending deliveries (none)",
            "/v1/deliveries?status=pending".to_string(),
        ),
        ("API: events", "/v1/events".to_string()),
        (
            "API: events by type",
            "/v1/events?type=conversation:updated".to_string(),
        ),
        (
            "API: an event's deliveries",
            format!("/v1/events/{event}/deliveries"),
        ),
        ("API: plugins", "/v1/plugins".to_string()),
        ("API: a plugin's log", format!("/v1/plugins/{p}/logs")),
    ];
    Ok(list
        .into_iter()
        .map(|(name, path)| (name.to_string(), path))
        .collect())
}

/// Times `path`: [`SAMPLES`] requests one after another; returns their durations in ms, sorted.
async fn time(server: &Server, auth: (&str, &str), path: &str) -> anyhow::Result<Vec<f64>> {
    let mut ms = Vec::with_capacity(SAMPLES);
    for i in 0..WARM_UP + SAMPLES {
        let started = Instant::now();
        let resp = server
            .http
            .get(format!("{}{path}", server.base))
            .header(auth.0, auth.1)
            .send()
            .await?;
        let status = resp.status();
        let body = resp.bytes().await?;
        let took = started.elapsed().as_secs_f64() * 1000.0;
        anyhow::ensure!(status == 200, "GET {path}: {status} ({} bytes)", body.len());
        if i >= WARM_UP {
            ms.push(took);
        }
    }
    ms.sort_by(|a, b| a.total_cmp(b));
    Ok(ms)
}

/// Seeds `count` deliveries, then times every list page: one row for the seed, one per page.
pub async fn list_pages(ctx: &Ctx<'_>, count: u64) -> anyhow::Result<Vec<Row>> {
    let tmp = tempfile::tempdir()?;
    // One retry a second later, so the failing 1% become dead letters while seeding.
    let (server, _) = Server::start_with(
        ctx.bin,
        &tmp.path().join("data"),
        &["--retry-schedule", "1s"],
    )
    .await?;
    ctx.receiver.reset();
    ctx.receiver.fail_when("\"fail_me\":true");
    let (seeded, took) = seed(ctx, &server, count).await?;
    let cookie = sign_in(&server, &seeded.key).await?;
    let bearer = format!("Bearer {}", seeded.key);
    let mut rows = vec![Row {
        scenario: format!("{SEEDED_PREFIX}{} deliveries stored", thousands(count)),
        deliveries_per_s: Some(count as f64 / took.as_secs_f64()),
        seconds: Some(took.as_secs_f64()),
        note: format!(
            "{} deliveries stored (one account, two webhooks, 1% dead letters, a tenth through pii-redactor), posted in batches of {BATCH} and settled",
            thousands(count)
        ),
        ..Default::default()
    }];
    for (name, path) in pages(&server, &seeded).await? {
        let auth = if path.starts_with("/v1/") {
            ("authorization", bearer.as_str())
        } else {
            ("cookie", cookie.as_str())
        };
        let ms = time(&server, auth, &path).await?;
        rows.push(Row {
            scenario: format!("{PAGE_PREFIX}{name}"),
            p50_ms: quantile(&ms, 0.50),
            p95_ms: quantile(&ms, 0.95),
            p99_ms: quantile(&ms, 0.99),
            note: path,
            ..Default::default()
        });
    }
    server.stop().await?;
    Ok(rows)
}
