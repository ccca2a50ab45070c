//! `wasmhook listen`: deliveries handed to a command line connected to the server, instead of
//! POSTed to an address. The command line opens the connection (`GET /v1/listeners/{id}/stream`),
//! receives each delivery's body and signed headers exactly as a URL subscriber would get them,
//! POSTs them to its local receiver, and reports the answer back
//! (`POST /v1/listeners/{id}/results`), which becomes the attempt: recorded in the attempt log,
//! retried on failure like any other. The server never connects anywhere, so the network
//! policy is untouched.
//!
//! [`Listeners`] is in memory: which listener subscriptions have a command line connected, and
//! the attempts waiting for its answer. A listener subscription outlives its last connection by
//! `--listen-grace`; [`sweep`] deletes it after that.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use utoipa::ToSchema;

use super::{AttemptOutcome, Verdict};
use crate::clock::{new_id, now_ms};
use crate::state::AppState;

/// How often expired listener subscriptions are looked for, at most.
const SWEEP_EVERY: Duration = Duration::from_secs(5);

/// Largest response excerpt kept from a local receiver, as for a URL subscriber.
const EXCERPT_BYTES: usize = 4096;

/// One delivery attempt handed to the command line: what a URL subscriber would be sent.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Handoff {
    /// Names this attempt in the result.
    pub handoff_id: String,
    /// The delivery (`msg_...`), also the `webhook-id` header.
    pub delivery_id: String,
    /// The event delivered.
    pub event_id: String,
    /// Its type.
    pub event_type: String,
    /// The attempt's number, from 1.
    pub attempt: u32,
    /// The request headers, in order, signatures included.
    pub headers: Vec<(String, String)>,
    /// The request body, byte for byte.
    pub body: String,
}

/// What the local receiver answered, reported by the command line.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ListenResult {
    /// The handoff answered.
    pub handoff_id: String,
    /// The local receiver's HTTP status, when it answered.
    pub status_code: Option<u16>,
    /// The start of its response body (the first 4 KiB are kept).
    pub response_body: Option<String>,
    /// How long the local request took, in milliseconds.
    pub duration_ms: u64,
    /// Why no answer came (`connect`, `timeout` or `request`), when none did.
    pub error_kind: Option<String>,
    /// What happened, for a person.
    pub error_message: Option<String>,
}

struct Connection {
    id: u64,
    deliveries: mpsc::UnboundedSender<Handoff>,
    waiting: HashMap<String, oneshot::Sender<ListenResult>>,
}

/// The command lines connected to listener subscriptions, by subscription id.
#[derive(Default)]
pub struct Listeners {
    connections: Mutex<HashMap<String, Connection>>,
    next_id: AtomicU64,
}

/// A command line's connection; dropping it disconnects.
pub struct Connected {
    /// The subscription.
    pub subscription_id: String,
    /// This connection, among the subscription's successive ones.
    pub id: u64,
    /// Deliveries to hand over.
    pub deliveries: mpsc::UnboundedReceiver<Handoff>,
}

impl Listeners {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Connection>> {
        self.connections.lock().expect("listeners lock")
    }

    /// Connects a command line to `subscription_id`, replacing an earlier connection (whose
    /// waiting attempts fail as disconnected).
    pub fn connect(&self, subscription_id: &str) -> Connected {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::unbounded_channel();
        self.lock().insert(
            subscription_id.to_string(),
            Connection {
                id,
                deliveries: tx,
                waiting: HashMap::new(),
            },
        );
        Connected {
            subscription_id: subscription_id.to_string(),
            id,
            deliveries: rx,
        }
    }

    /// Ends connection `id` of `subscription_id` (not a later one).
    pub fn disconnect(&self, subscription_id: &str, id: u64) {
        let mut connections = self.lock();
        if connections.get(subscription_id).is_some_and(|c| c.id == id) {
            connections.remove(subscription_id);
        }
    }

    /// The subscriptions with a command line connected.
    pub fn connected(&self) -> Vec<String> {
        self.lock().keys().cloned().collect()
    }

    /// Takes a command line's result; false when nothing waits for it (answered too late, or
    /// the connection was replaced).
    pub fn report(&self, subscription_id: &str, result: ListenResult) -> bool {
        let waiter = self
            .lock()
            .get_mut(subscription_id)
            .and_then(|c| c.waiting.remove(&result.handoff_id));
        match waiter {
            Some(w) => w.send(result).is_ok(),
            None => false,
        }
    }

    /// Hands an attempt to the connected command line and waits up to `timeout` for its result.
    pub async fn hand_off(
        &self,
        subscription_id: &str,
        handoff: Handoff,
        timeout: Duration,
    ) -> AttemptOutcome {
        let handoff_id = handoff.handoff_id.clone();
        let (tx, rx) = oneshot::channel();
        {
            let mut connections = self.lock();
            let Some(c) = connections.get_mut(subscription_id) else {
                return AttemptOutcome::failed(
                    "listener_offline",
                    "no `wasmhook listen` is connected to this subscription",
                    true,
                );
            };
            if c.deliveries.send(handoff).is_err() {
                return AttemptOutcome::failed(
                    "listener_offline",
                    "the `wasmhook listen` connection closed",
                    true,
                );
            }
            c.waiting.insert(handoff_id.clone(), tx);
        }
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(result)) => outcome(result),
            Ok(Err(_)) => AttemptOutcome::failed(
                "listener_offline",
                "`wasmhook listen` disconnected before reporting the answer",
                true,
            ),
            Err(_) => {
                if let Some(c) = self.lock().get_mut(subscription_id) {
                    c.waiting.remove(&handoff_id);
                }
                AttemptOutcome::failed(
                    "timeout",
                    format!("no answer from the local receiver within {timeout:?}"),
                    true,
                )
            }
        }
    }
}

/// A new handoff id.
pub fn handoff_id() -> String {
    new_id("hnd")
}

/// The attempt a local receiver's answer amounts to: judged as a URL subscriber's response is.
pub fn outcome(r: ListenResult) -> AttemptOutcome {
    let response_body = r.response_body.map(|mut b| {
        if b.len() > EXCERPT_BYTES {
            let mut cut = EXCERPT_BYTES;
            while !b.is_char_boundary(cut) {
                cut -= 1;
            }
            b.truncate(cut);
        }
        b
    });
    let verdict = match (r.status_code, r.error_kind) {
        (Some(code), _) if (200..300).contains(&code) => Verdict::Delivered,
        (Some(code), _) => Verdict::Failed {
            kind: "http_status".into(),
            message: format!("HTTP {code} from the local receiver"),
            retryable: true,
            retry_after: None,
            gone: false,
        },
        (None, kind) => Verdict::Failed {
            kind: kind.unwrap_or_else(|| "request".into()),
            message: format!(
                "local receiver: {}",
                r.error_message.as_deref().unwrap_or("no answer")
            ),
            retryable: true,
            retry_after: None,
            gone: false,
        },
    };
    AttemptOutcome {
        status_code: r.status_code,
        response_body,
        verdict,
    }
}

/// Deletes listener subscriptions that have had no command line for their grace period, every
/// few seconds, until `stop`.
pub async fn sweep(state: AppState, stop: CancellationToken) {
    let grace = state.config.listen_grace;
    let every = (grace / 4).clamp(Duration::from_millis(10), SWEEP_EVERY);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        let connected = state.listeners.connected();
        match state
            .store
            .delete_expired_listeners(now_ms(), connected, grace.as_millis() as i64)
            .await
        {
            Ok(deleted) if !deleted.is_empty() => {
                tracing::info!(?deleted, "expired `wasmhook listen` subscriptions deleted")
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "sweeping listener subscriptions"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(status: Option<u16>, kind: Option<&str>) -> ListenResult {
        ListenResult {
            handoff_id: "h".into(),
            status_code: status,
            response_body: Some("x".repeat(5000)),
            duration_ms: 3,
            error_kind: kind.map(str::to_string),
            error_message: kind.map(|_| "connection refused".to_string()),
        }
    }

    #[test]
    fn answers_are_judged_as_a_url_subscriber_s() {
        let ok = outcome(result(Some(204), None));
        assert!(matches!(ok.verdict, Verdict::Delivered));
        assert_eq!(ok.response_body.unwrap().len(), EXCERPT_BYTES);
        let failed = outcome(result(Some(500), None));
        assert!(
            matches!(failed.verdict, Verdict::Failed { ref kind, .. } if kind == "http_status")
        );
        let refused = outcome(result(None, Some("connect")));
        assert!(
            matches!(refused.verdict, Verdict::Failed { ref kind, ref message, .. }
                if kind == "connect" && message.contains("connection refused"))
        );
    }

    #[tokio::test]
    async fn a_handoff_waits_for_the_connected_command_line() {
        let listeners = std::sync::Arc::new(Listeners::default());
        let offline = listeners
            .hand_off("sub_1", handoff("h0"), Duration::from_secs(1))
            .await;
        assert!(
            matches!(offline.verdict, Verdict::Failed { ref kind, .. } if kind == "listener_offline")
        );

        let mut conn = listeners.connect("sub_1");
        let l = listeners.clone();
        let answer = tokio::spawn(async move {
            let h = conn.deliveries.recv().await.unwrap();
            assert!(l.report(
                "sub_1",
                ListenResult {
                    handoff_id: h.handoff_id,
                    ..result(Some(200), None)
                }
            ));
            conn
        });
        let done = listeners
            .hand_off("sub_1", handoff("h1"), Duration::from_secs(5))
            .await;
        assert!(matches!(done.verdict, Verdict::Delivered));
        let conn = answer.await.unwrap();
        // A late or unknown result is refused; a replaced connection is not ended by its
        // predecessor's disconnect.
        assert!(!listeners.report("sub_1", result(Some(200), None)));
        let newer = listeners.connect("sub_1");
        listeners.disconnect("sub_1", conn.id);
        assert_eq!(listeners.connected(), vec!["sub_1".to_string()]);
        listeners.disconnect("sub_1", newer.id);
        assert!(listeners.connected().is_empty());
    }

    fn handoff(id: &str) -> Handoff {
        Handoff {
            handoff_id: id.into(),
            delivery_id: "msg_1".into(),
            event_id: "evt_1".into(),
            event_type: "message:created".into(),
            attempt: 1,
            headers: vec![],
            body: "{}".into(),
        }
    }
}
