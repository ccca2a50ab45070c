//! `listen LOCAL_URL`: receive webhooks on a laptop without a tunnel. A temporary subscription
//! (`POST /v1/listeners`) is delivered to this command over a connection it opens
//! (`GET /v1/listeners/{id}/stream`); each delivery is POSTed to the local URL with the same
//! body and signed headers a URL subscriber gets, and the answer (status, body excerpt,
//! duration, or why none came) is reported back (`POST /v1/listeners/{id}/results`) into the
//! delivery's attempt log, so a failure is retried as usual. The server never connects to this
//! machine. Ctrl-C deletes the subscription; if this command dies instead, the server deletes it
//! after its `--listen-grace`.

use std::time::{Duration, Instant};

use clap::Args;
use reqwest::Method;
use serde::Serialize;

use super::client::{api_error, error_chain};
use super::output::time;
use super::subs::format_arg;
use super::tail::SseParser;
use super::{CliError, Client, Ctx};
use crate::api::listeners::ListenIn;
use crate::api::subscriptions::CreatedSubscription;
use crate::clock::now_ms;
use crate::delivery::listen::{Handoff, ListenResult};
use crate::model::Format;

/// Arguments of `listen`.
#[derive(Debug, Args)]
pub struct ListenArgs {
    /// The local receiver, e.g. `http://localhost:3000/webhook`.
    url: String,
    /// Event types, comma-separated or repeated; all types when not given.
    #[arg(short = 'e', long = "events", value_delimiter = ',')]
    events: Vec<String>,
    /// Body shape of deliveries.
    #[arg(long, value_parser = format_arg(), default_value = "standard")]
    format: Format,
    /// Time limit of one local request.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    timeout: Duration,
}

const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// How much of the local answer is reported (the server keeps 4 KiB).
const EXCERPT_BYTES: usize = 4096;

/// What `listen -o json` prints per delivery.
#[derive(Debug, Serialize)]
struct Forwarded<'a> {
    delivery: &'a Handoff,
    result: &'a ListenResult,
}

/// Registers the listener, forwards deliveries until Ctrl-C, then deletes it.
pub async fn listen(args: ListenArgs, ctx: &Ctx) -> Result<(), CliError> {
    let local =
        url::Url::parse(&args.url).map_err(|e| CliError::Invalid(format!("{}: {e}", args.url)))?;
    if !matches!(local.scheme(), "http" | "https") {
        return Err(CliError::Invalid(format!(
            "{}: the scheme must be http or https",
            args.url
        )));
    }
    let client = ctx.client()?;
    let created: CreatedSubscription = client
        .post(
            "/v1/listeners",
            &ListenIn {
                event_types: if args.events.is_empty() {
                    vec!["*".into()]
                } else {
                    args.events.iter().map(|e| e.trim().to_string()).collect()
                },
                format: args.format,
                forward_to: Some(args.url.clone()),
            },
        )
        .await?;
    let sub = created.subscription;
    eprintln!(
        "Listening as {} for {} ({} format), forwarding to {}\nSigning secret: {}\nCtrl-C to stop.",
        sub.id,
        sub.event_types.join(","),
        sub.format.as_str(),
        args.url,
        created.secret
    );
    let local_http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(args.timeout)
        .build()
        .expect("a client with default TLS settings builds");
    let outcome = tokio::select! {
        r = follow(&client, &local_http, &sub.id, &args.url, ctx) => r,
        _ = tokio::signal::ctrl_c() => Ok(()),
    };
    // Whatever ended it, the temporary subscription goes (the server would in a minute anyway).
    match client
        .delete(&format!("/v1/subscriptions/{}", sub.id))
        .await
    {
        Ok(()) => eprintln!("Stopped; subscription {} deleted.", sub.id),
        Err(e) => eprintln!(
            "Stopped; deleting {} failed ({e}); the server deletes it shortly.",
            sub.id
        ),
    }
    outcome
}

async fn follow(
    client: &Client,
    local: &reqwest::Client,
    sub_id: &str,
    url: &str,
    ctx: &Ctx,
) -> Result<(), CliError> {
    let mut backoff = FIRST_BACKOFF;
    loop {
        let err = match connect(client, local, sub_id, url, ctx, &mut backoff).await {
            Ok(()) => CliError::Unreachable {
                url: client.base().to_string(),
                reason: "the server closed the connection".into(),
            },
            Err(e) => e,
        };
        let transient = match &err {
            CliError::Unreachable { .. } => true,
            CliError::Api { status, .. } => *status >= 500 || *status == 429,
            _ => false,
        };
        if !transient {
            return Err(err);
        }
        eprintln!(
            "{err}; reconnecting in {}",
            humantime::format_duration(backoff)
        );
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// One connection: forwards deliveries until it ends.
async fn connect(
    client: &Client,
    local: &reqwest::Client,
    sub_id: &str,
    url: &str,
    ctx: &Ctx,
    backoff: &mut Duration,
) -> Result<(), CliError> {
    let req = client
        .request(Method::GET, &format!("/v1/listeners/{sub_id}/stream"))
        .header("accept", "text/event-stream");
    let mut response = client.send(req).await?;
    *backoff = FIRST_BACKOFF;
    eprintln!("Connected to {}.", client.base());
    let mut parser = SseParser::default();
    loop {
        let chunk = response.chunk().await.map_err(|e| CliError::Unreachable {
            url: client.base().to_string(),
            reason: format!("the connection broke: {}", error_chain(&e)),
        })?;
        let Some(chunk) = chunk else { return Ok(()) };
        for m in parser.feed(&chunk) {
            if m.event != "delivery" {
                continue;
            }
            let Ok(handoff) = serde_json::from_str::<Handoff>(&m.data) else {
                continue;
            };
            // Each delivery on its own, so a slow local receiver does not hold up the stream.
            let (client, local, sub_id, url, json) = (
                client.clone(),
                local.clone(),
                sub_id.to_string(),
                url.to_string(),
                ctx.json(),
            );
            tokio::spawn(async move {
                let result = forward(&local, &url, &handoff).await;
                if json {
                    println!(
                        "{}",
                        serde_json::to_string(&Forwarded {
                            delivery: &handoff,
                            result: &result,
                        })
                        .expect("plain data")
                    );
                } else {
                    println!("{}", line(&handoff, &result));
                }
                let report = client
                    .request(Method::POST, &format!("/v1/listeners/{sub_id}/results"))
                    .json(&result);
                match report.send().await {
                    Ok(r) if r.status().is_success() => {}
                    Ok(r) => eprintln!(
                        "reporting {} failed: {}",
                        handoff.delivery_id,
                        api_error(r).await
                    ),
                    Err(e) => eprintln!(
                        "reporting {} failed: {}",
                        handoff.delivery_id,
                        error_chain(&e)
                    ),
                }
            });
        }
    }
}

/// POSTs a handed-off delivery to the local receiver, as the server would POST it.
async fn forward(local: &reqwest::Client, url: &str, h: &Handoff) -> ListenResult {
    let mut req = local
        .post(url)
        .header("user-agent", crate::delivery::http::USER_AGENT);
    for (name, value) in &h.headers {
        req = req.header(name.as_str(), value.as_str());
    }
    let started = Instant::now();
    let sent = req.body(h.body.clone()).send().await;
    let (status_code, response_body, error_kind, error_message) = match sent {
        Ok(r) => {
            let status = r.status().as_u16();
            let body = r.bytes().await.unwrap_or_default();
            let body = String::from_utf8_lossy(&body[..body.len().min(EXCERPT_BYTES)]).into_owned();
            (Some(status), Some(body), None, None)
        }
        Err(e) => {
            let kind = if e.is_timeout() {
                "timeout"
            } else if e.is_connect() {
                "connect"
            } else {
                "request"
            };
            (None, None, Some(kind.to_string()), Some(error_chain(&e)))
        }
    };
    ListenResult {
        handoff_id: h.handoff_id.clone(),
        status_code,
        response_body,
        duration_ms: started.elapsed().as_millis() as u64,
        error_kind,
        error_message,
    }
}

fn line(h: &Handoff, r: &ListenResult) -> String {
    let answer = match (&r.status_code, &r.error_kind) {
        (Some(code), _) => format!("{code}"),
        (None, Some(kind)) => format!(
            "{kind}: {}",
            r.error_message.as_deref().unwrap_or("no answer")
        ),
        (None, None) => "no answer".into(),
    };
    format!(
        "{}  {} {} {} #{} -> {answer} ({} ms)",
        time(now_ms()),
        h.event_type,
        h.event_id,
        h.delivery_id,
        h.attempt,
        r.duration_ms
    )
}
