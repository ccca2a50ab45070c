//! `send` (post an event and follow its deliveries) and `events list|get`.

use std::collections::HashMap;
use std::time::Duration;

use clap::{Args, Subcommand};
use serde::Serialize;
use serde_json::value::RawValue;

use super::output::{Table, cut, or_dash, print_json, time};
use super::{CliError, Client, Ctx, read_data};
use crate::api::ListResponse;
use crate::events::EventIn;
use crate::examples;
use crate::model::{Delivery, DeliveryStatus, Event};

/// Arguments of `send`.
#[derive(Debug, Args)]
pub struct SendArgs {
    /// Event type, e.g. `message:created`.
    #[arg(value_name = "TYPE")]
    event_type: String,
    /// The payload: a JSON object, `@file.json`, or `-` for stdin.
    #[arg(long, conflicts_with = "example", required_unless_present = "example")]
    data: Option<String>,
    /// Send the example payload of a known type (message:created, conversation:created,
    /// conversation:updated).
    #[arg(long)]
    example: bool,
    /// Your id for the event (posting the same id again returns the first event).
    #[arg(long)]
    id: Option<String>,
    /// Print the event id and return without following its deliveries.
    #[arg(long)]
    no_wait: bool,
    /// How long to follow deliveries before giving up waiting (e.g. `30s`, `5m`).
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    timeout: Duration,
}

/// `events` subcommands.
#[derive(Debug, Subcommand)]
pub enum EventsCommand {
    /// List events, newest first.
    #[command(
        after_help = "Examples:\n  wasmhook events list\n  wasmhook events list --type message:created --limit 10"
    )]
    List(ListArgs),
    /// Show an event with its payload.
    #[command(after_help = "Example:\n  wasmhook events get evt_...")]
    Get(GetArgs),
}

/// Arguments of `events list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only events of this type.
    #[arg(long = "type")]
    event_type: Option<String>,
    /// At most this many (1 to 250).
    #[arg(long, default_value_t = 50)]
    limit: usize,
}

/// Arguments of `events get`.
#[derive(Debug, Args)]
pub struct GetArgs {
    /// Event id.
    id: String,
}

/// What `send -o json` prints: the event as stored and its deliveries as they ended.
#[derive(Debug, Serialize)]
struct Sent {
    event: Event,
    deliveries: Vec<Delivery>,
}

/// The example payload of a known type.
pub fn example_payload(event_type: &str) -> Result<serde_json::Value, CliError> {
    if !examples::KNOWN_TYPES.contains(&event_type) {
        return Err(CliError::Invalid(format!(
            "no example for {event_type:?}; examples exist for {}",
            examples::KNOWN_TYPES.join(", ")
        )));
    }
    Ok(examples::payload(event_type))
}

/// Posts an event, prints its id, and follows its deliveries until they settle.
pub async fn send(args: SendArgs, ctx: &Ctx) -> Result<(), CliError> {
    let client = ctx.client()?;
    let payload = match &args.data {
        Some(data) => {
            let bytes = read_data(data)?;
            let text = String::from_utf8(bytes)
                .map_err(|_| CliError::Invalid("--data: not UTF-8 text".into()))?;
            RawValue::from_string(text.trim().to_string())
                .map_err(|e| CliError::Invalid(format!("--data: not JSON: {e}")))?
        }
        None => RawValue::from_string(example_payload(&args.event_type)?.to_string())
            .expect("serde_json output is JSON"),
    };
    let event: Event = client
        .post(
            "/v1/events",
            &EventIn {
                event_type: args.event_type,
                payload,
                id: args.id,
                occurred_at: None,
            },
        )
        .await?;
    if !ctx.json() {
        println!("{}", event.id);
    }
    let path = format!("/v1/events/{}/deliveries?limit=250", event.id);
    if args.no_wait {
        if ctx.json() {
            let page: ListResponse<Delivery> = client.get(&path).await?;
            print_json(&Sent {
                event,
                deliveries: page.data,
            });
        }
        return Ok(());
    }
    let deliveries = follow(&client, &path, args.timeout, ctx).await?;
    let failed = deliveries
        .iter()
        .filter(|d| d.status == DeliveryStatus::Failed)
        .count();
    if ctx.json() {
        print_json(&Sent { event, deliveries });
    }
    if failed > 0 {
        return Err(CliError::Failed(format!(
            "{failed} deliver{} failed",
            if failed == 1 { "y" } else { "ies" }
        )));
    }
    Ok(())
}

fn settled(d: &Delivery) -> bool {
    d.status != DeliveryStatus::Pending
}

/// Polls an event's deliveries, printing each change (in table mode), until every one has
/// settled or `timeout` passes; returns them as they are then.
async fn follow(
    client: &Client,
    path: &str,
    timeout: Duration,
    ctx: &Ctx,
) -> Result<Vec<Delivery>, CliError> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut seen: HashMap<String, (DeliveryStatus, u32)> = HashMap::new();
    loop {
        let page: ListResponse<Delivery> = client.get(path).await?;
        if !ctx.json() {
            if page.data.is_empty() && seen.is_empty() {
                println!("No subscription receives this event type.");
            }
            for d in page.data.iter().rev() {
                let now = (d.status, d.attempts);
                if seen.get(&d.id) != Some(&now) {
                    seen.insert(d.id.clone(), now);
                    println!("{}", delivery_line(d));
                }
            }
        }
        if page.data.iter().all(settled) {
            return Ok(page.data);
        }
        if tokio::time::Instant::now() >= deadline {
            if !ctx.json() {
                let pending = page.data.iter().filter(|d| !settled(d)).count();
                println!(
                    "Stopped waiting after {}: {pending} still pending (see `wasmhook deliveries get ID`).",
                    humantime::format_duration(timeout)
                );
            }
            return Ok(page.data);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// One line about a delivery: where it went and how it stands.
pub fn delivery_line(d: &Delivery) -> String {
    let state = match (d.status, d.attempts) {
        (DeliveryStatus::Pending, 0) => "pending".to_string(),
        (DeliveryStatus::Pending, n) => format!(
            "retrying after attempt {n}{}",
            d.next_attempt_at
                .map(|t| format!(", next at {}", time(t)))
                .unwrap_or_default()
        ),
        (status, n) => format!(
            "{} after {n} attempt{}",
            status.as_str(),
            if n == 1 { "" } else { "s" }
        ),
    };
    let error = d
        .last_error
        .as_deref()
        .filter(|_| d.status != DeliveryStatus::Succeeded)
        .map(|e| format!(": {}", cut(e, 120)))
        .unwrap_or_default();
    format!("{}  {}  {state}{error}", d.id, d.subscription_id)
}

/// Runs an `events` subcommand.
pub async fn run(cmd: EventsCommand, ctx: &Ctx) -> Result<(), CliError> {
    let client = ctx.client()?;
    match cmd {
        EventsCommand::List(args) => {
            let mut path = format!("/v1/events?limit={}", args.limit);
            if let Some(t) = &args.event_type {
                path.push_str(&format!("&type={}", super::client::query_value(t)));
            }
            let page: ListResponse<Event> = client.get(&path).await?;
            if ctx.json() {
                print_json(&page);
                return Ok(());
            }
            let mut t = Table::new(["ID", "TYPE", "RECEIVED", "CAUSED BY", "PAYLOAD"]);
            for e in &page.data {
                t.row([
                    e.id.clone(),
                    e.event_type.clone(),
                    time(e.received_at),
                    or_dash(e.causation.as_ref().map(|c| c.plugin_id.clone())),
                    cut(e.payload.get(), 60),
                ]);
            }
            t.print("No events.");
            Ok(())
        }
        EventsCommand::Get(GetArgs { id }) => {
            let event: Event = client.get(&format!("/v1/events/{id}")).await?;
            if ctx.json() {
                print_json(&event);
                return Ok(());
            }
            println!("id           {}", event.id);
            println!("type         {}", event.event_type);
            println!("occurred_at  {}", event.occurred_at);
            println!("received_at  {}", time(event.received_at));
            if let Some(c) = &event.causation {
                println!(
                    "caused_by    plugin {} handling {} (depth {})",
                    c.plugin_id, c.event_id, c.depth
                );
            }
            let payload: serde_json::Value =
                serde_json::from_str(event.payload.get()).unwrap_or_default();
            println!(
                "payload\n{}",
                serde_json::to_string_pretty(&payload).expect("JSON")
            );
            Ok(())
        }
    }
}
