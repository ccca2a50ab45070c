//! `tail`: the account's live stream (`GET /v1/stream`, Server-Sent Events) as one compact
//! line per event, attempt and plugin log line, until Ctrl-C. A dropped connection is opened
//! again by itself, waiting longer after each failure in a row (0.5 s doubling to 10 s); an
//! answer that will not change by retrying (a bad key, an unknown subscription) ends it.

use std::time::Duration;

use clap::Args;
use reqwest::Method;

use super::client::{error_chain, query_value};
use super::output::{cut, or_dash, time};
use super::{CliError, Client, Ctx};
use crate::live::AttemptSettled;
use crate::model::{Event, PluginLogLine};

/// Arguments of `tail`.
#[derive(Debug, Args)]
pub struct TailArgs {
    /// Only attempts of this subscription.
    #[arg(long = "sub")]
    subscription: Option<String>,
    /// Only events of these types, and attempts at delivering them (comma-separated or repeated).
    #[arg(long = "type", value_delimiter = ',')]
    types: Vec<String>,
    /// Only this plugin's log lines, the attempts it handled and the events it emitted.
    #[arg(long)]
    plugin: Option<String>,
}

const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// One Server-Sent Events message.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct SseMessage {
    /// `event:`; `message` when absent.
    pub event: String,
    /// `data:` lines joined with newlines.
    pub data: String,
}

/// Splits a Server-Sent Events byte stream into messages (the WHATWG parsing rules that
/// matter here: `event`, `data`, comments, CRLF or LF line ends, a blank line dispatches).
#[derive(Default)]
pub struct SseParser {
    buffer: Vec<u8>,
    event: String,
    data: Vec<String>,
}

impl SseParser {
    /// Feeds bytes; returns the messages they completed.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<SseMessage> {
        self.buffer.extend_from_slice(bytes);
        let mut out = Vec::new();
        while let Some(end) = self.buffer.iter().position(|b| *b == b'\n') {
            let mut line: Vec<u8> = self.buffer.drain(..=end).collect();
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            let line = String::from_utf8_lossy(&line).into_owned();
            if line.is_empty() {
                if !self.data.is_empty() {
                    out.push(SseMessage {
                        event: match std::mem::take(&mut self.event) {
                            e if e.is_empty() => "message".into(),
                            e => e,
                        },
                        data: std::mem::take(&mut self.data).join("\n"),
                    });
                }
                self.event.clear();
                continue;
            }
            if line.starts_with(':') {
                continue;
            }
            let (field, value) = match line.split_once(':') {
                Some((f, v)) => (f.to_string(), v.strip_prefix(' ').unwrap_or(v).to_string()),
                None => (line.clone(), String::new()),
            };
            match field.as_str() {
                "event" => self.event = value,
                "data" => self.data.push(value),
                _ => {}
            }
        }
        out
    }
}

/// The compact line for a message (`None` for kinds this version does not know).
pub fn line(m: &SseMessage) -> Option<String> {
    match m.event.as_str() {
        "event" => {
            let e: Event = serde_json::from_str(&m.data).ok()?;
            let by = e
                .causation
                .as_ref()
                .map(|c| format!(" (from plugin {})", c.plugin_id))
                .unwrap_or_default();
            Some(format!(
                "{}  event    {} {}{by}  {}",
                time(e.received_at),
                e.event_type,
                e.id,
                cut(e.payload.get(), 100)
            ))
        }
        "attempt" => {
            let a: AttemptSettled = serde_json::from_str(&m.data).ok()?;
            let detail = match (&a.status_code, &a.error_kind, &a.error_message) {
                (_, Some(kind), Some(msg)) => format!(" {kind}: {}", cut(msg, 100)),
                (Some(code), _, _) => format!(" HTTP {code}"),
                _ => String::new(),
            };
            Some(format!(
                "{}  attempt  {} {} -> {}  #{} {}{detail} ({} ms)",
                time(a.attempted_at),
                a.event_type,
                a.delivery_id,
                a.subscription_id,
                a.attempt,
                a.outcome,
                a.duration_ms
            ))
        }
        "log" => {
            let l: PluginLogLine = serde_json::from_str(&m.data).ok()?;
            let plugin: serde_json::Value = serde_json::from_str(&m.data).ok()?;
            Some(format!(
                "{}  log      {} {:<5} {}  ({})",
                time(l.at),
                plugin["plugin_id"].as_str().unwrap_or("-"),
                l.level,
                l.message,
                or_dash(l.event_id.as_deref())
            ))
        }
        "lagged" => Some(format!("lagged: {} messages were skipped", m.data)),
        _ => None,
    }
}

fn path(args: &TailArgs) -> String {
    let mut q = Vec::new();
    if !args.types.is_empty() {
        q.push(format!("types={}", query_value(&args.types.join(","))));
    }
    if let Some(s) = &args.subscription {
        q.push(format!("subscription_id={}", query_value(s)));
    }
    if let Some(p) = &args.plugin {
        q.push(format!("plugin_id={}", query_value(p)));
    }
    if q.is_empty() {
        "/v1/stream".into()
    } else {
        format!("/v1/stream?{}", q.join("&"))
    }
}

/// Whether an error is worth reconnecting after: the server may come back; a refusal will not
/// change.
fn transient(e: &CliError) -> bool {
    match e {
        CliError::Unreachable { .. } => true,
        CliError::Api { status, .. } => *status >= 500 || *status == 429,
        _ => false,
    }
}

/// Streams until Ctrl-C (exit 0), or until the server refuses the stream (exit 1).
pub async fn tail(args: TailArgs, ctx: &Ctx) -> Result<(), CliError> {
    let client = ctx.client()?;
    let path = path(&args);
    tokio::select! {
        r = follow(&client, &path, ctx) => r,
        _ = tokio::signal::ctrl_c() => Ok(()),
    }
}

async fn follow(client: &Client, path: &str, ctx: &Ctx) -> Result<(), CliError> {
    let mut backoff = FIRST_BACKOFF;
    loop {
        match stream_once(client, path, ctx).await {
            Ok(()) => {
                // The server ended the stream (it is stopping): come back as soon as it does.
                eprintln!("stream closed by the server; reconnecting");
                backoff = FIRST_BACKOFF;
            }
            Err((connected, e)) if transient(&e) => {
                if connected {
                    backoff = FIRST_BACKOFF;
                }
                eprintln!(
                    "{e}; reconnecting in {}",
                    humantime::format_duration(backoff)
                );
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
            Err((_, e)) => return Err(e),
        }
    }
}

/// One connection: prints messages until it ends. The error says whether it had connected.
async fn stream_once(client: &Client, path: &str, ctx: &Ctx) -> Result<(), (bool, CliError)> {
    let req = client
        .request(Method::GET, path)
        .header("accept", "text/event-stream");
    let mut response = client.send(req).await.map_err(|e| (false, e))?;
    eprintln!("connected to {}{path}; Ctrl-C to stop", client.base());
    let mut parser = SseParser::default();
    loop {
        let chunk = response.chunk().await.map_err(|e| {
            (
                true,
                CliError::Unreachable {
                    url: client.base().to_string(),
                    reason: format!("the stream broke: {}", error_chain(&e)),
                },
            )
        })?;
        let Some(chunk) = chunk else { return Ok(()) };
        for m in parser.feed(&chunk) {
            if ctx.json() {
                let data: serde_json::Value =
                    serde_json::from_str(&m.data).unwrap_or(serde_json::Value::String(m.data));
                println!("{}", serde_json::json!({"kind": m.event, "data": data}));
            } else if let Some(l) = line(&m) {
                println!("{l}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_messages_are_split_across_chunks() {
        let mut p = SseParser::default();
        assert!(
            p.feed(b": connected\nretry: 3000\n\nid: 1\nevent: ev")
                .is_empty()
        );
        let got = p.feed(b"ent\r\ndata: {\"a\":\ndata: 1}\r\n\r\ndata: x\n\n");
        assert_eq!(
            got,
            vec![
                SseMessage {
                    event: "event".into(),
                    data: "{\"a\":\n1}".into()
                },
                SseMessage {
                    event: "message".into(),
                    data: "x".into()
                }
            ]
        );
    }
}
