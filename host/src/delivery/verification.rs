//! The Papercups verification handshake: POST `{"event": "webhook:verify", "payload": <random>}`
//! and activate the subscription only if the receiver answers 2xx with that string (raw, or as
//! a JSON string).

use super::subscriber::post;
use super::{AttemptOutcome, Verdict};
use crate::auth::random_token;
use crate::clock::{new_id, now_ms};
use crate::model::{Subscription, SubscriptionStatus};
use crate::state::AppState;

/// Whether a response body echoes the challenge.
pub fn echoes(body: &str, challenge: &str) -> bool {
    let body = body.trim();
    body == challenge || serde_json::from_str::<String>(body).is_ok_and(|s| s == challenge)
}

/// A fresh challenge string.
pub fn new_challenge() -> String {
    random_token(24)
}

/// The handshake request body for `challenge`, as Papercups sends it.
pub fn request_body(challenge: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({ "event": "webhook:verify", "payload": challenge }))
        .expect("plain JSON")
}

/// Why a handshake failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandshakeFailure {
    /// The attempt-log kind (`timeout`, `http_status`, ...), or `challenge_mismatch` when a
    /// 2xx came back without the challenge.
    pub kind: String,
    /// For a person: `verification failed: ...`.
    pub reason: String,
}

/// Longest part of a wrong answer quoted in a failure reason.
const QUOTED_ANSWER: usize = 200;

/// Judges the answer to a handshake.
pub fn judge(outcome: &AttemptOutcome, challenge: &str) -> Result<(), HandshakeFailure> {
    let fail = |kind: &str, why: String| HandshakeFailure {
        kind: kind.to_string(),
        reason: format!("verification failed: {why}"),
    };
    match (&outcome.verdict, &outcome.response_body) {
        (Verdict::Delivered, Some(b)) if echoes(b, challenge) => Ok(()),
        (Verdict::Delivered, body) => {
            let body = body.as_deref().unwrap_or("").trim();
            let got = if body.is_empty() {
                "an empty body".to_string()
            } else {
                let cut = body
                    .char_indices()
                    .nth(QUOTED_ANSWER)
                    .map_or(body, |(at, _)| &body[..at]);
                let more = if cut.len() < body.len() { "..." } else { "" };
                format!("{cut:?}{more}")
            };
            Err(fail(
                "challenge_mismatch",
                format!(
                    "the answer must be the challenge {challenge:?} as the body (raw or as a JSON string); got {got}"
                ),
            ))
        }
        (Verdict::Failed { kind, message, .. }, _) => Err(fail(kind, message.clone())),
        (Verdict::Filtered(m), _) => Err(fail("filtered", m.clone())),
    }
}

/// Runs the handshake in the background and records the result on the subscription.
pub fn spawn(state: &AppState, sub: Subscription) {
    let state = state.clone();
    tokio::spawn(async move {
        let Some(url) = sub.url.clone() else { return };
        let challenge = new_challenge();
        let outcome = post(
            &state,
            &sub,
            &url,
            &new_id("verify"),
            request_body(&challenge),
        )
        .await;
        let failure = judge(&outcome, &challenge).err().map(|f| f.reason);
        let expected_url = url.clone();
        let result = state
            .store
            .update_subscription(sub.account_id.clone(), sub.id.clone(), move |s| {
                // Only settle the handshake this task ran: the URL may have changed meanwhile.
                if s.status == SubscriptionStatus::PendingVerification
                    && s.url.as_deref() == Some(&expected_url)
                {
                    match &failure {
                        None => {
                            s.status = SubscriptionStatus::Active;
                            s.status_reason = None;
                        }
                        Some(reason) => s.status_reason = Some(reason.clone()),
                    }
                    s.updated_at = now_ms();
                }
                Ok(failure.is_none())
            })
            .await;
        match result {
            Ok((_, true)) => {
                tracing::info!(subscription = %sub.id, "subscription verified");
                state.wake_dispatcher();
            }
            Ok((s, false)) => {
                tracing::info!(subscription = %sub.id, reason = ?s.status_reason, "verification failed")
            }
            Err(e) => {
                tracing::warn!(subscription = %sub.id, error = %e, "recording verification failed")
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answered(status: u16, body: &str) -> AttemptOutcome {
        AttemptOutcome {
            status_code: Some(status),
            response_body: Some(body.to_string()),
            verdict: Verdict::Delivered,
        }
    }

    #[test]
    fn a_wrong_answer_is_quoted_in_the_reason() {
        assert_eq!(judge(&answered(200, "\"abc\""), "abc"), Ok(()));
        let f = judge(&answered(200, "ok"), "abc").unwrap_err();
        assert_eq!(f.kind, "challenge_mismatch");
        assert_eq!(
            f.reason,
            "verification failed: the answer must be the challenge \"abc\" as the body \
             (raw or as a JSON string); got \"ok\""
        );
        let f = judge(&answered(204, ""), "abc").unwrap_err();
        assert!(f.reason.ends_with("got an empty body"), "{}", f.reason);
        let long = "x".repeat(1000);
        let f = judge(&answered(200, &long), "abc").unwrap_err();
        assert!(f.reason.ends_with(&format!("{:?}...", "x".repeat(200))));
        let f = judge(
            &AttemptOutcome::failed("timeout", "no response within 2s", true),
            "abc",
        )
        .unwrap_err();
        assert_eq!(
            (f.kind.as_str(), f.reason.as_str()),
            ("timeout", "verification failed: no response within 2s")
        );
    }

    #[test]
    fn accepts_the_raw_string_or_a_json_string() {
        assert!(echoes("abc", "abc"));
        assert!(echoes(" abc\n", "abc"));
        assert!(echoes("\"abc\"", "abc"));
        assert!(!echoes("ok", "abc"));
        assert!(!echoes("{\"payload\":\"abc\"}", "abc"));
    }
}
