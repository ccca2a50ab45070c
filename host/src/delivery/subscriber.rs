//! Subscribers: the one place that knows what delivering to a URL (or a plugin) means.
//! The dispatcher only sees [`deliver`].

use std::collections::BTreeMap;
use std::time::{Instant, SystemTime};

use reqwest::header::{HeaderName, HeaderValue, RETRY_AFTER};

use super::formats::{BodyInput, render};
use super::http::{FailureKind, USER_AGENT, classify, excerpt, literal_refused};
use super::listen::{Handoff, handoff_id};
use super::schedule::parse_retry_after;
use super::signing::{airy_signature, signature_header};
use super::{AttemptOutcome, Verdict};
use crate::clock::now_ms;
use crate::model::{AttemptRequest, Subscription};
use crate::plugins::budget::Reservation;
use crate::plugins::invoke::Input;
use crate::plugins::{Decision, InvokeError};
use crate::state::AppState;
use crate::store::Claimed;
use serde_json::value::RawValue;

/// Where a subscription's events go.
pub enum Subscriber<'a> {
    /// A signed POST to a URL, optionally through a transform plugin first.
    Url {
        /// The endpoint.
        url: &'a str,
        /// A plugin that may replace or drop the payload before it is sent.
        transform: Option<&'a str>,
    },
    /// A plugin that reacts to the event.
    Plugin(&'a str),
    /// A `wasmhook listen` command line connected to the server (see [`super::listen`]): it
    /// gets the signed request a URL would, and reports its local receiver's answer.
    Listener,
}

impl<'a> Subscriber<'a> {
    /// The subscriber behind a subscription, if it has one it can deliver to.
    pub fn of(sub: &'a Subscription) -> Option<Subscriber<'a>> {
        if sub.listen_expires_at.is_some() {
            return Some(Subscriber::Listener);
        }
        match (&sub.url, &sub.plugin_id) {
            (Some(url), _) => Some(Subscriber::Url {
                url,
                transform: sub.transform_plugin_id.as_deref(),
            }),
            (None, Some(plugin)) => Some(Subscriber::Plugin(plugin)),
            (None, None) => None,
        }
    }
}

fn plugin_input(work: &Claimed) -> Input<'_> {
    Input {
        event: &work.event,
        subscription_id: &work.subscription.id,
        attempt: work.delivery.attempts + 1,
    }
}

fn plugin_failure(plugin_id: &str, e: InvokeError) -> AttemptOutcome {
    AttemptOutcome::failed(
        "plugin",
        format!("plugin {plugin_id}: {}", e.message),
        e.retryable,
    )
}

/// The plugin an attempt at this subscription runs, as subscriber or transform, if any.
pub fn plugin_of(sub: &Subscription) -> Option<&str> {
    match Subscriber::of(sub)? {
        Subscriber::Plugin(plugin_id) => Some(plugin_id),
        Subscriber::Url { transform, .. } => transform,
        Subscriber::Listener => None,
    }
}

/// Makes one attempt at a claimed delivery; returns how it went and the request it sent, if it
/// sent one (for the attempt log). `memory` is what the dispatcher reserved from the plugin
/// memory budget for the plugin it runs ([`plugin_of`]), if any.
pub async fn deliver(
    state: &AppState,
    work: &Claimed,
    memory: Option<Reservation>,
) -> (AttemptOutcome, Option<AttemptRequest>) {
    let sub = &work.subscription;
    let event = &work.event;
    let outcome = match Subscriber::of(sub) {
        Some(Subscriber::Plugin(plugin_id)) => match state
            .plugins
            .invoke_reserved(
                state.plugin_services(),
                plugin_id,
                plugin_input(work),
                memory,
            )
            .await
        {
            Ok(_) => AttemptOutcome {
                status_code: None,
                response_body: None,
                verdict: Verdict::Delivered,
            },
            Err(e) => plugin_failure(plugin_id, e),
        },
        Some(Subscriber::Url { url, transform }) => {
            let replaced;
            let payload: &RawValue = match transform {
                None => &event.payload,
                Some(plugin_id) => match state
                    .plugins
                    .invoke_reserved(
                        state.plugin_services(),
                        plugin_id,
                        plugin_input(work),
                        memory,
                    )
                    .await
                {
                    Ok(Decision::Keep) => &event.payload,
                    Ok(Decision::Replace(p)) => {
                        replaced = p;
                        &replaced
                    }
                    Ok(Decision::Drop) => {
                        let outcome = AttemptOutcome {
                            status_code: None,
                            response_body: None,
                            verdict: Verdict::Filtered(format!(
                                "dropped by transform plugin {plugin_id}"
                            )),
                        };
                        return (outcome, None);
                    }
                    Err(e) => return (plugin_failure(plugin_id, e), None),
                },
            };
            let body = render(
                sub.format,
                &BodyInput {
                    event_id: &event.id,
                    event_type: &event.event_type,
                    occurred_at: &event.occurred_at,
                    payload,
                },
            );
            let headers = delivery_headers(sub, &work.delivery.id, now_ms(), &body);
            let request = sent(Some(url), &headers, &body);
            return (send(state, url, &headers, body).await, Some(request));
        }
        Some(Subscriber::Listener) => {
            let body = render(
                sub.format,
                &BodyInput {
                    event_id: &event.id,
                    event_type: &event.event_type,
                    occurred_at: &event.occurred_at,
                    payload: &event.payload,
                },
            );
            let now = now_ms();
            let headers = signed_headers(
                &sub.headers,
                &sub.signing_secrets(now),
                None,
                &work.delivery.id,
                now / 1000,
                &body,
            );
            let request = AttemptRequest::new(None, &headers, &body);
            let handoff = Handoff {
                handoff_id: handoff_id(),
                delivery_id: work.delivery.id.clone(),
                event_id: event.id.clone(),
                event_type: event.event_type.clone(),
                attempt: work.delivery.attempts + 1,
                headers,
                body: String::from_utf8_lossy(&body).into_owned(),
            };
            let outcome = state
                .listeners
                .hand_off(&sub.id, handoff, state.config.delivery_timeout)
                .await;
            return (outcome, Some(request));
        }
        None => AttemptOutcome::failed(
            "config",
            "the subscription has no URL or plugin to deliver to",
            false,
        ),
    };
    (outcome, None)
}

/// A delivery request's headers at `now` (Unix ms): the subscription's custom headers and the
/// signatures of `body` with every secret in force.
fn delivery_headers(
    sub: &Subscription,
    msg_id: &str,
    now: i64,
    body: &[u8],
) -> Vec<(String, String)> {
    signed_headers(
        &sub.headers,
        &sub.signing_secrets(now),
        sub.airy_api_secret.as_deref(),
        msg_id,
        now / 1000,
        body,
    )
}

/// The attempt log's record of a request to `url`: the headers [`send`] sends (the client adds
/// `user-agent`) and the body.
fn sent(url: Option<&str>, headers: &[(String, String)], body: &[u8]) -> AttemptRequest {
    let mut request = AttemptRequest::new(url, headers, body);
    request
        .headers
        .insert("user-agent".into(), USER_AGENT.to_string());
    request
}

/// POSTs a signed body to `url` with the subscription's headers; classifies the result.
pub async fn post(
    state: &AppState,
    sub: &Subscription,
    url: &str,
    msg_id: &str,
    body: Vec<u8>,
) -> AttemptOutcome {
    let headers = delivery_headers(sub, msg_id, now_ms(), &body);
    send(state, url, &headers, body).await
}

/// The headers of a delivery request, in the order they are sent: `content-type`, the custom
/// headers, then `webhook-id`, `webhook-timestamp`, `webhook-signature` (one signature per
/// secret in force) and, for an Airy webhook, `x-airy-content-signature`. `user-agent` is the
/// client's own (`super::http::USER_AGENT`).
pub fn signed_headers(
    custom: &BTreeMap<String, String>,
    secrets: &[&str],
    airy_api_secret: Option<&str>,
    msg_id: &str,
    timestamp: i64,
    body: &[u8],
) -> Vec<(String, String)> {
    let mut headers = vec![("content-type".to_string(), "application/json".to_string())];
    headers.extend(custom.iter().map(|(n, v)| (n.clone(), v.clone())));
    headers.push(("webhook-id".into(), msg_id.to_string()));
    headers.push(("webhook-timestamp".into(), timestamp.to_string()));
    headers.push((
        "webhook-signature".into(),
        signature_header(secrets, msg_id, timestamp, body),
    ));
    if let Some(api_secret) = airy_api_secret {
        headers.push((
            "x-airy-content-signature".into(),
            airy_signature(api_secret, body),
        ));
    }
    headers
}

/// POSTs `body` with `headers` to `url` under the network policy and the delivery timeout;
/// classifies the result.
pub async fn send(
    state: &AppState,
    url: &str,
    headers: &[(String, String)],
    body: Vec<u8>,
) -> AttemptOutcome {
    let url = match reqwest::Url::parse(url) {
        Ok(u) => u,
        Err(e) => return AttemptOutcome::failed("config", format!("invalid url: {e}"), false),
    };
    if let Some(refused) = literal_refused(&url, &state.net_policy) {
        return AttemptOutcome::failed(FailureKind::NetworkPolicy.as_str(), refused, true);
    }
    let mut req = state.http.post(url);
    for (name, value) in headers {
        // Custom headers were validated when saved; anything unsendable is left out.
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            req = req.header(n, v);
        }
    }
    let started = Instant::now();
    let resp = match req.body(body).send().await {
        Ok(r) => r,
        Err(e) => {
            let (kind, mut message) = classify(&e);
            if kind == FailureKind::Timeout {
                message = format!("no response within {:?}", state.config.delivery_timeout);
            }
            return AttemptOutcome::failed(kind.as_str(), message, true);
        }
    };
    let status = resp.status();
    let retry_after = if status.as_u16() == 429 || status.as_u16() == 503 {
        resp.headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, SystemTime::now()))
    } else {
        None
    };
    let location = resp
        .headers()
        .get(reqwest::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let response_body = excerpt(resp).await;
    tracing::debug!(
        status = status.as_u16(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "delivery attempt"
    );
    let verdict = if status.is_success() {
        Verdict::Delivered
    } else {
        let message = match (status.is_redirection(), location) {
            (true, Some(to)) => {
                format!("HTTP {status}: redirects are not followed (Location: {to})")
            }
            _ => format!("HTTP {status}"),
        };
        Verdict::Failed {
            kind: "http_status".into(),
            message,
            retryable: true,
            retry_after,
            gone: status.as_u16() == 410,
        }
    };
    AttemptOutcome {
        status_code: Some(status.as_u16()),
        response_body: Some(response_body),
        verdict,
    }
}
