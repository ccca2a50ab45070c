//! The Papercups verification handshake: POST `{"event": "webhook:verify", "payload": <random>}`
//! and activate the subscription only if the receiver answers 2xx with that string (raw, or as
//! a JSON string).

use super::Verdict;
use super::subscriber::post;
use crate::auth::random_token;
use crate::clock::{new_id, now_ms};
use crate::model::{Subscription, SubscriptionStatus};
use crate::state::AppState;

/// Whether a response body echoes the challenge.
pub fn echoes(body: &str, challenge: &str) -> bool {
    let body = body.trim();
    body == challenge || serde_json::from_str::<String>(body).is_ok_and(|s| s == challenge)
}

/// Runs the handshake in the background and records the result on the subscription.
pub fn spawn(state: &AppState, sub: Subscription) {
    let state = state.clone();
    tokio::spawn(async move {
        let Some(url) = sub.url.clone() else { return };
        let challenge = random_token(24);
        let body = serde_json::to_vec(
            &serde_json::json!({ "event": "webhook:verify", "payload": challenge }),
        )
        .expect("plain JSON");
        let outcome = post(&state, &sub, &url, &new_id("verify"), body).await;
        let failure = match (&outcome.verdict, &outcome.response_body) {
            (Verdict::Delivered, Some(b)) if echoes(b, &challenge) => None,
            (Verdict::Delivered, _) => Some(
                "verification failed: the response body was not the challenge string".to_string(),
            ),
            (Verdict::Failed { message, .. }, _) => Some(format!("verification failed: {message}")),
            (Verdict::Filtered(m), _) => Some(m.clone()),
        };
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
    use super::echoes;

    #[test]
    fn accepts_the_raw_string_or_a_json_string() {
        assert!(echoes("abc", "abc"));
        assert!(echoes(" abc\n", "abc"));
        assert!(echoes("\"abc\"", "abc"));
        assert!(!echoes("ok", "abc"));
        assert!(!echoes("{\"payload\":\"abc\"}", "abc"));
    }
}
