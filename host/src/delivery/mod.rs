//! The delivery engine: claims due deliveries from the outbox, hands each to its subscriber,
//! and settles the outcome (attempt log, retry schedule, dead letters, auto-disable).

pub mod check;
pub mod dispatcher;
pub mod formats;
pub mod http;
pub mod listen;
pub mod netpolicy;
pub mod ratelimit;
pub mod schedule;
pub mod signing;
pub mod subscriber;
pub mod verification;

use std::time::Duration;

/// How one attempt went.
#[derive(Debug, Clone)]
pub struct AttemptOutcome {
    /// The HTTP status, if a response came.
    pub status_code: Option<u16>,
    /// The first 4 KiB of the response body, if a response came.
    pub response_body: Option<String>,
    /// What it means for the delivery.
    pub verdict: Verdict,
}

/// What an attempt means for its delivery.
#[derive(Debug, Clone)]
pub enum Verdict {
    /// Delivered (2xx, or a plugin subscriber ran).
    Delivered,
    /// A transform dropped the event; nothing was sent.
    Filtered(String),
    /// The attempt failed.
    Failed {
        /// Attempt-log kind: `timeout`, `connect`, `dns`, `tls`, `network_policy`, `http_status`, `plugin`, ...
        kind: String,
        /// What happened, for a person.
        message: String,
        /// Whether a later attempt may succeed.
        retryable: bool,
        /// The receiver asked for this pause (`Retry-After` on 429/503).
        retry_after: Option<Duration>,
        /// The receiver answered 410 Gone: disable the subscription.
        gone: bool,
    },
}

impl AttemptOutcome {
    /// A failure without an HTTP response.
    pub fn failed(
        kind: impl Into<String>,
        message: impl Into<String>,
        retryable: bool,
    ) -> AttemptOutcome {
        AttemptOutcome {
            status_code: None,
            response_body: None,
            verdict: Verdict::Failed {
                kind: kind.into(),
                message: message.into(),
                retryable,
                retry_after: None,
                gone: false,
            },
        }
    }
}
