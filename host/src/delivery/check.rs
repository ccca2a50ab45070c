//! Webhook checks: what subscribing would run against a URL, run before it is saved, reported
//! with what was sent and what came back.
//!
//! A subscription that would need the verification handshake (`papercups`, or `verify`) gets
//! the handshake; any other gets one signed test delivery of a `webhook:test` event in its
//! format. Both go through the delivery path itself ([`send`]): the same client, network
//! policy, timeout and failure kinds. Signatures use a throwaway secret made for the check
//! (the subscription's own secret does not exist yet), returned so the receiver's
//! verification code can be tried against it. Nothing is stored.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use utoipa::ToSchema;

use super::formats::{BodyInput, render};
use super::http::USER_AGENT;
use super::subscriber::{send, signed_headers};
use super::verification;
use super::{AttemptOutcome, Verdict};
use crate::clock::{new_id, now_ms, rfc3339};
use crate::model::Format;
use crate::state::AppState;
use crate::subscriptions::{needs_verification, new_secret};

/// The event type of a test delivery.
pub const TEST_EVENT_TYPE: &str = "webhook:test";

/// What to check.
pub struct Check<'a> {
    /// The URL, already validated.
    pub url: &'a str,
    /// The body format the subscription would use.
    pub format: Format,
    /// Its custom headers, already validated.
    pub headers: &'a BTreeMap<String, String>,
    /// Whether the subscription would ask for the handshake.
    pub verify: bool,
}

/// Which request a check made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CheckMode {
    /// The `webhook:verify` handshake: passes when the answer is 2xx with the challenge as body.
    Verification,
    /// One signed `webhook:test` delivery: passes on any 2xx.
    TestDelivery,
}

/// The request a check sent, exactly.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SentRequest {
    /// Always `POST`.
    pub method: String,
    /// Where it went.
    pub url: String,
    /// Every header sent, signatures included.
    pub headers: BTreeMap<String, String>,
    /// The body, byte for byte (JSON text).
    pub body: String,
    /// The throwaway secret the `webhook-signature` was made with (not the secret the
    /// subscription will get when saved).
    pub signing_secret: String,
}

/// The result of a check.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CheckReport {
    /// The check's id, sent as `webhook-id`.
    pub id: String,
    /// True when subscribing would succeed: the challenge was echoed, or the test delivery got a 2xx.
    pub ok: bool,
    /// Which request was made.
    pub mode: CheckMode,
    /// The HTTP status received, if a response came.
    pub status_code: Option<u16>,
    /// The first 4 KiB of the response body, if a response came.
    pub response_excerpt: Option<String>,
    /// From sending the request to the end of the response (or the failure), in milliseconds.
    pub duration_ms: u64,
    /// Why the check failed (null when `ok`), e.g. `HTTP 404 Not Found`, `no response within 15s`,
    /// `refused by network policy: ...`, or the challenge expected and what came back instead.
    pub reason: Option<String>,
    /// The failure's kind, as in the attempt log (`timeout`, `connect`, `dns`, `tls`,
    /// `network_policy`, `http_status`, `request`), or `challenge_mismatch`; null when `ok`.
    pub error_kind: Option<String>,
    /// What was sent.
    pub request: SentRequest,
}

/// The payload of a test delivery.
fn test_payload(check_id: &str) -> Box<RawValue> {
    let payload = serde_json::json!({
        "check_id": check_id,
        "message": "A test delivery from wasmhook, sent to check this URL before it is saved; it is not a real event.",
    });
    RawValue::from_string(payload.to_string()).expect("serde_json output is valid JSON")
}

/// A check refused by the account's rate limit.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("at most {per_minute} webhook checks a minute per account; try again in {} s", retry_after.as_secs_f64().ceil())]
pub struct RateLimited {
    /// The limit (`--webhook-checks-per-minute`).
    pub per_minute: u32,
    /// When a check will be accepted again.
    pub retry_after: Duration,
}

/// Runs a check for `account`, within its rate limit. It takes at most the delivery timeout.
pub async fn run(
    state: &AppState,
    account: &str,
    check: Check<'_>,
) -> Result<CheckReport, RateLimited> {
    state
        .webhook_checks
        .take(account, now_ms())
        .map_err(|retry_after| RateLimited {
            per_minute: state.config.webhook_checks_per_minute,
            retry_after,
        })?;
    Ok(run_unlimited(state, check).await)
}

async fn run_unlimited(state: &AppState, check: Check<'_>) -> CheckReport {
    let id = new_id("chk");
    let now = now_ms();
    let mode = if needs_verification(check.format, check.verify, true) {
        CheckMode::Verification
    } else {
        CheckMode::TestDelivery
    };
    let challenge = verification::new_challenge();
    let body = match mode {
        CheckMode::Verification => verification::request_body(&challenge),
        CheckMode::TestDelivery => render(
            check.format,
            &BodyInput {
                event_id: &id,
                event_type: TEST_EVENT_TYPE,
                occurred_at: &rfc3339(now),
                payload: &test_payload(&id),
            },
        ),
    };
    let secret = new_secret();
    let headers = signed_headers(check.headers, &[&secret], None, &id, now / 1000, &body);
    let request = SentRequest {
        method: "POST".into(),
        url: check.url.to_string(),
        headers: headers
            .iter()
            .cloned()
            .chain([("user-agent".to_string(), USER_AGENT.to_string())])
            .collect(),
        body: String::from_utf8_lossy(&body).into_owned(),
        signing_secret: secret,
    };
    let started = Instant::now();
    let outcome = send(state, check.url, &headers, body).await;
    let duration_ms = started.elapsed().as_millis() as u64;
    let failure = match mode {
        CheckMode::Verification => verification::judge(&outcome, &challenge)
            .err()
            .map(|f| (f.kind, f.reason)),
        CheckMode::TestDelivery => delivery_failure(&outcome),
    };
    CheckReport {
        id,
        ok: failure.is_none(),
        mode,
        status_code: outcome.status_code,
        response_excerpt: outcome.response_body,
        duration_ms,
        error_kind: failure.as_ref().map(|(kind, _)| kind.clone()),
        reason: failure.map(|(_, reason)| reason),
        request,
    }
}

/// A test delivery's failure: (kind, reason).
fn delivery_failure(outcome: &AttemptOutcome) -> Option<(String, String)> {
    match &outcome.verdict {
        Verdict::Delivered => None,
        Verdict::Failed { kind, message, .. } => Some((kind.clone(), message.clone())),
        Verdict::Filtered(m) => Some(("filtered".into(), m.clone())),
    }
}
