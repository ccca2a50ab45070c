//! `deliveries list|get`, `retry` and `recover`: the attempt log and putting failed deliveries
//! back in the queue.

use clap::builder::TypedValueParser as _;
use clap::{Args, Subcommand};

use super::output::{Table, cut, or_dash, print_json, time};
use super::{CliError, Ctx, confirm};
use crate::api::ListResponse;
use crate::api::deliveries::{DeliveryDetail, RecoverRequest, RecoverResponse};
use crate::clock::{now_ms, parse_rfc3339, rfc3339};
use crate::model::{Delivery, DeliveryStatus};

/// `deliveries` subcommands.
#[derive(Debug, Subcommand)]
pub enum DeliveriesCommand {
    /// List deliveries, newest first: all of the account's, a subscription's or an event's.
    #[command(
        after_help = "Examples:\n  wasmhook deliveries list --status failed\n  wasmhook deliveries list --sub sub_... --status pending\n  wasmhook deliveries list --event evt_..."
    )]
    List(ListArgs),
    /// Show a delivery with its attempt log.
    #[command(after_help = "Example:\n  wasmhook deliveries get msg_...")]
    Get(GetArgs),
}

/// Delivery statuses by their API name.
fn status_arg() -> impl clap::builder::TypedValueParser<Value = DeliveryStatus> {
    clap::builder::PossibleValuesParser::new(["pending", "succeeded", "failed", "filtered"])
        .map(|s| DeliveryStatus::parse(&s).expect("one of the possible values"))
}

/// Arguments of `deliveries list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only this subscription's deliveries.
    #[arg(long = "sub")]
    subscription: Option<String>,
    /// Only this event's deliveries.
    #[arg(long)]
    event: Option<String>,
    /// Only deliveries in this status.
    #[arg(long, value_parser = status_arg())]
    status: Option<DeliveryStatus>,
    /// At most this many (1 to 250).
    #[arg(long, default_value_t = 50)]
    limit: usize,
}

/// Arguments of `deliveries get`.
#[derive(Debug, Args)]
pub struct GetArgs {
    /// Delivery id (`msg_...`).
    id: String,
}

/// Arguments of `retry`.
#[derive(Debug, Args)]
pub struct RetryArgs {
    /// Delivery id (`msg_...`).
    delivery: String,
}

/// Arguments of `recover`.
#[derive(Debug, Args)]
pub struct RecoverArgs {
    /// Subscription id (`sub_...`).
    subscription: String,
    /// Failed deliveries created since: a duration ago (`2h`, `30m`, `3days`) or an RFC 3339 time.
    #[arg(long)]
    since: String,
    /// Only count them; requeue nothing.
    #[arg(long)]
    dry_run: bool,
    /// Requeue without asking.
    #[arg(long, short = 'y')]
    yes: bool,
}

/// `--since`: a duration before now, or an RFC 3339 time; returned as RFC 3339.
pub fn since_arg(raw: &str, now: i64) -> Result<String, CliError> {
    if let Some((normalised, _)) = parse_rfc3339(raw) {
        return Ok(normalised);
    }
    let ago = humantime::parse_duration(raw).map_err(|_| {
        CliError::Invalid(format!(
            "--since {raw:?}: expected a duration (2h, 30m, 3days) or an RFC 3339 time"
        ))
    })?;
    Ok(rfc3339(now - ago.as_millis() as i64))
}

/// Runs a `deliveries` subcommand.
pub async fn run(cmd: DeliveriesCommand, ctx: &Ctx) -> Result<(), CliError> {
    let client = ctx.client()?;
    match cmd {
        DeliveriesCommand::List(args) => {
            let mut query = format!("limit={}", args.limit);
            if let Some(s) = args.status {
                query.push_str(&format!("&status={}", s.as_str()));
            }
            let path = match (&args.subscription, &args.event) {
                (Some(_), Some(_)) => {
                    return Err(CliError::Invalid("give --sub or --event, not both".into()));
                }
                (Some(sub), None) => format!("/v1/subscriptions/{sub}/deliveries?{query}"),
                (None, Some(event)) => format!("/v1/events/{event}/deliveries?{query}"),
                (None, None) => format!("/v1/deliveries?{query}"),
            };
            let page: ListResponse<Delivery> = client.get(&path).await?;
            if ctx.json() {
                print_json(&page);
                return Ok(());
            }
            let mut t = Table::new([
                "ID",
                "STATUS",
                "SUBSCRIPTION",
                "EVENT",
                "ATTEMPTS",
                "UPDATED",
                "LAST ERROR",
            ]);
            for d in &page.data {
                t.row([
                    d.id.clone(),
                    d.status.as_str().to_string(),
                    d.subscription_id.clone(),
                    d.event_id.clone(),
                    d.attempts.to_string(),
                    time(d.updated_at),
                    or_dash(d.last_error.as_deref().map(|e| cut(e, 60))),
                ]);
            }
            t.print("No deliveries.");
            Ok(())
        }
        DeliveriesCommand::Get(GetArgs { id }) => {
            let detail: DeliveryDetail = client.get(&format!("/v1/deliveries/{id}")).await?;
            if ctx.json() {
                print_json(&detail);
                return Ok(());
            }
            let d = &detail.delivery;
            println!("id            {}", d.id);
            println!("status        {}", d.status.as_str());
            println!("event         {}", d.event_id);
            println!("subscription  {}", d.subscription_id);
            println!("attempts      {}", d.attempts);
            if let Some(next) = d.next_attempt_at {
                println!("next attempt  {}", time(next));
            }
            if let Some(e) = &d.last_error {
                println!("last error    {e}");
            }
            println!();
            let mut t = Table::new(["#", "AT", "DURATION", "STATUS", "ERROR", "RESPONSE"]);
            for (i, a) in detail.attempt_log.iter().enumerate() {
                let error = match (&a.error_kind, &a.error_message) {
                    (Some(k), Some(m)) => format!("{k}: {}", cut(m, 60)),
                    (Some(k), None) => k.clone(),
                    (None, Some(m)) => cut(m, 60),
                    (None, None) => "-".into(),
                };
                t.row([
                    (i + 1).to_string(),
                    time(a.attempted_at),
                    format!("{} ms", a.duration_ms),
                    or_dash(a.status_code),
                    error,
                    or_dash(
                        a.response_body
                            .as_deref()
                            .map(|b| cut(&b.replace(['\n', '\r'], " "), 60)),
                    ),
                ]);
            }
            t.print("No attempts yet.");
            Ok(())
        }
    }
}

/// Attempts a delivery again now.
pub async fn retry(args: RetryArgs, ctx: &Ctx) -> Result<(), CliError> {
    let client = ctx.client()?;
    let d: Delivery = client
        .post(&format!("/v1/deliveries/{}/retry", args.delivery), &())
        .await?;
    if ctx.json() {
        print_json(&d);
    } else {
        println!(
            "{} queued for another attempt (status {})",
            d.id,
            d.status.as_str()
        );
    }
    Ok(())
}

/// Counts the failed deliveries since a time, then requeues them (asking first unless `--yes`).
pub async fn recover(args: RecoverArgs, ctx: &Ctx) -> Result<(), CliError> {
    let client = ctx.client()?;
    let since = since_arg(&args.since, now_ms())?;
    let path = format!("/v1/subscriptions/{}/recover", args.subscription);
    let count: RecoverResponse = client
        .post(
            &path,
            &RecoverRequest {
                since: since.clone(),
                dry_run: true,
            },
        )
        .await?;
    if args.dry_run || count.recovered == 0 {
        if ctx.json() {
            print_json(&count);
        } else {
            println!(
                "{} failed deliveries of {} since {since}{}",
                count.recovered,
                args.subscription,
                if count.recovered == 0 {
                    "; nothing to requeue"
                } else {
                    ""
                }
            );
        }
        return Ok(());
    }
    if !ctx.json() {
        println!(
            "{} failed deliveries of {} since {since}",
            count.recovered, args.subscription
        );
    }
    if !args.yes && !confirm(&format!("Requeue {} deliveries?", count.recovered)) {
        return Err(CliError::Invalid(
            "not confirmed: nothing requeued (pass --yes to requeue without asking)".into(),
        ));
    }
    let done: RecoverResponse = client
        .post(
            &path,
            &RecoverRequest {
                since,
                dry_run: false,
            },
        )
        .await?;
    if ctx.json() {
        print_json(&done);
    } else {
        println!("Requeued {} deliveries", done.recovered);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_durations_and_times() {
        let now = 1_800_000_000_000;
        assert_eq!(
            since_arg("2h", now).unwrap(),
            rfc3339(now - 2 * 3600 * 1000)
        );
        assert_eq!(
            since_arg("2026-11-01T00:00:00Z", now).unwrap(),
            "2026-11-01T00:00:00Z"
        );
        assert!(since_arg("yesterday", now).is_err());
    }
}
