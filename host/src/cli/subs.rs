//! `sub`: create, list, inspect, enable, disable and delete subscriptions; their secrets.

use std::collections::BTreeMap;
use std::time::Duration;

use clap::builder::TypedValueParser as _;
use clap::{Args, Subcommand};

use super::output::{Table, or_dash, print_json, time};
use super::{CliError, Client, Ctx, key_value};
use crate::api::ListResponse;
use crate::api::subscriptions::{CreatedSubscription, SecretResponse};
use crate::model::{DeliveryOrdering, Format, Subscription, SubscriptionStatus};
use crate::subscriptions::{CreateSubscription, UpdateSubscription};

/// `sub` subcommands.
#[derive(Debug, Subcommand)]
pub enum SubCommand {
    /// Subscribe a URL (or, with --plugin, a plugin) to event types.
    #[command(
        after_help = "Examples:\n  wasmhook sub create https://example.com/hook -e message:created,conversation:created -H X-Team=support\n  wasmhook sub create https://example.com/papercups --format papercups\n  wasmhook sub create https://example.com/hook -e message:created --transform plg_...\n  wasmhook sub create --plugin plg_... -e message:created"
    )]
    Create(CreateArgs),
    /// List subscriptions, newest first.
    #[command(after_help = "Examples:\n  wasmhook sub list\n  wasmhook sub list -o json")]
    List(ListArgs),
    /// Show a subscription.
    #[command(after_help = "Example:\n  wasmhook sub get sub_...")]
    Get(IdArg),
    /// Let a subscription receive events again (runs the handshake again where it applies).
    #[command(after_help = "Example:\n  wasmhook sub enable sub_...")]
    Enable(IdArg),
    /// Stop a subscription receiving events; its pending deliveries wait.
    #[command(after_help = "Example:\n  wasmhook sub disable sub_...")]
    Disable(IdArg),
    /// Delete a subscription and its deliveries.
    #[command(after_help = "Example:\n  wasmhook sub delete sub_...")]
    Delete(IdArg),
    /// Show a subscription's signing secret, or rotate it (the old one signs 24 h more).
    #[command(
        after_help = "Examples:\n  wasmhook sub secret sub_...\n  wasmhook sub secret sub_... --rotate"
    )]
    Secret(SecretArgs),
}

/// A subscription id.
#[derive(Debug, Args)]
pub struct IdArg {
    /// Subscription id (`sub_...`).
    id: String,
}

/// Arguments of `sub list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// At most this many (1 to 250).
    #[arg(long, default_value_t = 50)]
    limit: usize,
}

/// Arguments of `sub secret`.
#[derive(Debug, Args)]
pub struct SecretArgs {
    /// Subscription id (`sub_...`).
    id: String,
    /// Make a new secret; the previous one keeps signing (as a second signature) for 24 hours.
    #[arg(long)]
    rotate: bool,
}

/// Parses a body format by its API name.
pub fn format_arg() -> impl clap::builder::TypedValueParser<Value = Format> {
    clap::builder::PossibleValuesParser::new(["standard", "papercups", "airy"])
        .map(|s| Format::parse(&s).expect("one of the possible values"))
}

/// Arguments of `sub create`.
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// The URL deliveries are POSTed to.
    #[arg(required_unless_present = "plugin", conflicts_with = "plugin")]
    url: Option<String>,
    /// Subscribe this plugin (`plg_...`) instead of a URL.
    #[arg(long)]
    plugin: Option<String>,
    /// Event types, comma-separated or repeated; all types (`*`) when not given.
    #[arg(short = 'e', long = "events", value_delimiter = ',')]
    events: Vec<String>,
    /// A custom header sent with each delivery (repeatable).
    #[arg(short = 'H', long = "header", value_parser = key_value)]
    headers: Vec<(String, String)>,
    /// Body shape of deliveries.
    #[arg(long, value_parser = format_arg(), default_value = "standard")]
    format: Format,
    /// A plugin (`plg_...`) each event passes through before it is sent to the URL.
    #[arg(long, conflicts_with = "plugin")]
    transform: Option<String>,
    /// Require the verification handshake (`webhook:verify`) before delivering; always on for papercups.
    #[arg(long)]
    verify: bool,
    /// Free text.
    #[arg(long, default_value = "")]
    description: String,
    /// `conversation`: one delivery at a time per conversation, in order; `none`: no order.
    #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(["none", "conversation"])
        .map(|s| DeliveryOrdering::parse(&s).expect("one of the possible values")))]
    ordering: Option<DeliveryOrdering>,
    /// At most this many attempts at once (1 to 1000).
    #[arg(long)]
    max_in_flight: Option<u32>,
    /// At most this many deliveries a second.
    #[arg(long)]
    rate_limit: Option<u32>,
}

/// Runs a `sub` subcommand.
pub async fn run(cmd: SubCommand, ctx: &Ctx) -> Result<(), CliError> {
    let client = ctx.client()?;
    match cmd {
        SubCommand::Create(args) => create(args, &client, ctx).await,
        SubCommand::List(args) => {
            let page: ListResponse<Subscription> = client
                .get(&format!("/v1/subscriptions?limit={}", args.limit))
                .await?;
            if ctx.json() {
                print_json(&page);
            } else {
                print_list(&page.data);
            }
            Ok(())
        }
        SubCommand::Get(IdArg { id }) => {
            let sub: Subscription = client.get(&format!("/v1/subscriptions/{id}")).await?;
            show(&sub, None, ctx);
            Ok(())
        }
        SubCommand::Enable(IdArg { id }) => {
            set_status(&client, &id, SubscriptionStatus::Active, ctx).await
        }
        SubCommand::Disable(IdArg { id }) => {
            set_status(&client, &id, SubscriptionStatus::Disabled, ctx).await
        }
        SubCommand::Delete(IdArg { id }) => {
            client.delete(&format!("/v1/subscriptions/{id}")).await?;
            if ctx.json() {
                print_json(&serde_json::json!({"id": id, "deleted": true}));
            } else {
                println!("Deleted {id}");
            }
            Ok(())
        }
        SubCommand::Secret(args) => {
            let secret: SecretResponse = if args.rotate {
                client
                    .post(&format!("/v1/subscriptions/{}/secret/rotate", args.id), &())
                    .await?
            } else {
                client
                    .get(&format!("/v1/subscriptions/{}/secret", args.id))
                    .await?
            };
            if ctx.json() {
                print_json(&secret);
            } else {
                println!("{}", secret.secret);
                if let Some(until) = secret.previous_secret_expires_at {
                    eprintln!(
                        "The previous secret also signs deliveries until {}",
                        time(until)
                    );
                }
            }
            Ok(())
        }
    }
}

async fn create(args: CreateArgs, client: &Client, ctx: &Ctx) -> Result<(), CliError> {
    let req = CreateSubscription {
        url: args.url,
        plugin_id: args.plugin,
        transform_plugin_id: args.transform,
        description: args.description,
        event_types: if args.events.is_empty() {
            vec!["*".into()]
        } else {
            args.events
                .into_iter()
                .map(|e| e.trim().to_string())
                .collect()
        },
        headers: args.headers.into_iter().collect::<BTreeMap<_, _>>(),
        format: args.format,
        verify: args.verify,
        rate_limit_per_second: args.rate_limit,
        max_in_flight: args.max_in_flight,
        ordering: args.ordering,
    };
    let mut created: CreatedSubscription = client.post("/v1/subscriptions", &req).await?;
    if created.subscription.status == SubscriptionStatus::PendingVerification {
        // The handshake runs right away; wait for its outcome so the user sees it.
        created.subscription = wait_for_verification(client, created.subscription).await?;
    }
    if ctx.json() {
        print_json(&created);
    } else {
        show(&created.subscription, Some(&created.secret), ctx);
    }
    Ok(())
}

/// Polls a subscription until its handshake has an outcome (or 30 s pass).
async fn wait_for_verification(
    client: &Client,
    sub: Subscription,
) -> Result<Subscription, CliError> {
    let path = format!("/v1/subscriptions/{}", sub.id);
    let waiting = sub.status_reason.clone();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut latest = sub;
    while latest.status == SubscriptionStatus::PendingVerification
        && latest.status_reason == waiting
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
        latest = client.get(&path).await?;
    }
    Ok(latest)
}

async fn set_status(
    client: &Client,
    id: &str,
    status: SubscriptionStatus,
    ctx: &Ctx,
) -> Result<(), CliError> {
    let patch = UpdateSubscription {
        status: Some(status),
        ..Default::default()
    };
    let mut sub: Subscription = client
        .patch(&format!("/v1/subscriptions/{id}"), &patch)
        .await?;
    if sub.status == SubscriptionStatus::PendingVerification {
        sub = wait_for_verification(client, sub).await?;
    }
    show(&sub, None, ctx);
    Ok(())
}

fn target(sub: &Subscription) -> String {
    if sub.listen_expires_at.is_some() {
        return sub.description.clone();
    }
    match (&sub.url, &sub.plugin_id) {
        (Some(url), _) => url.clone(),
        (None, Some(plugin)) => format!("plugin {plugin}"),
        (None, None) => "-".into(),
    }
}

fn print_list(subs: &[Subscription]) {
    let mut t = Table::new(["ID", "STATUS", "TARGET", "EVENTS", "FORMAT", "CREATED"]);
    for s in subs {
        t.row([
            s.id.clone(),
            s.status.as_str().to_string(),
            target(s),
            s.event_types.join(","),
            s.format.as_str().to_string(),
            time(s.created_at),
        ]);
    }
    t.print("No subscriptions.");
}

/// Prints one subscription (and its secret when just created).
fn show(sub: &Subscription, secret: Option<&str>, ctx: &Ctx) {
    if ctx.json() {
        print_json(sub);
        return;
    }
    let mut t = Table::new(["FIELD", "VALUE"]);
    let mut field = |k: &str, v: String| t.row([k.to_string(), v]);
    field("id", sub.id.clone());
    field("status", sub.status.as_str().to_string());
    if let Some(reason) = &sub.status_reason {
        field("status_reason", reason.clone());
    }
    field("url", or_dash(sub.url.as_ref()));
    field("plugin_id", or_dash(sub.plugin_id.as_ref()));
    field(
        "transform_plugin_id",
        or_dash(sub.transform_plugin_id.as_ref()),
    );
    field("event_types", sub.event_types.join(","));
    field("format", sub.format.as_str().to_string());
    field("verify", sub.verify.to_string());
    field("ordering", sub.ordering.as_str().to_string());
    field(
        "headers",
        sub.headers
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" "),
    );
    field("max_in_flight", or_dash(sub.max_in_flight));
    field("rate_limit_per_second", or_dash(sub.rate_limit_per_second));
    field(
        "circuit",
        format!(
            "{:?} ({} failures in a row)",
            sub.circuit.state, sub.circuit.consecutive_failures
        )
        .to_lowercase(),
    );
    if !sub.description.is_empty() {
        field("description", sub.description.clone());
    }
    field("created_at", time(sub.created_at));
    if let Some(secret) = secret {
        field("secret", secret.to_string());
    }
    t.print("");
}
