//! The live feed: what happens in an account as it happens (events stored, delivery attempts
//! settled, plugin log lines written), for `GET /v1/stream`.
//!
//! Publishers call it after the store has committed, never inside a transaction, and it never
//! waits: each account has its own bounded broadcast channel, made when someone listens and
//! dropped with the last listener. Publishing costs a map lookup when nobody listens (the
//! message is not even serialized); a slow listener loses its own oldest messages, and is told
//! how many, instead of slowing anyone; a busy account cannot push a quiet one's messages out.
//! Nothing is kept: a listener gets what happens after it connects.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;
use utoipa::ToSchema;

use crate::clock::{ms_as_rfc3339, opt_ms_as_rfc3339};
use crate::model::{DeliveryStatus, Event, PluginLogLine};

mod filter;

pub use filter::Filter;

/// Messages a listener may fall behind by before it loses the oldest.
pub const BUFFER: usize = 1024;

/// What a message is about; its SSE `event:` name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// An event was stored.
    Event,
    /// A delivery attempt settled.
    Attempt,
    /// A plugin log line was written.
    Log,
}

impl Kind {
    /// The SSE event name.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Event => "event",
            Kind::Attempt => "attempt",
            Kind::Log => "log",
        }
    }
}

/// What filters look at.
#[derive(Debug, Clone, Default)]
pub struct Keys {
    /// The event's type (of the event itself, or of the event attempted).
    pub event_type: Option<String>,
    /// The subscription attempted.
    pub subscription_id: Option<String>,
    /// Plugins involved: the one that logged, the subscriber or transform attempted, the one
    /// that emitted the event.
    pub plugin_ids: Vec<String>,
}

/// One message of the feed.
#[derive(Debug)]
pub struct Message {
    /// Increasing over the server's life (the SSE `id`).
    pub id: u64,
    /// What it is about.
    pub kind: Kind,
    /// The JSON `data`.
    pub data: String,
    /// What filters look at.
    pub keys: Keys,
}

/// A settled delivery attempt, as streamed.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AttemptSettled {
    /// The delivery (`msg_...`).
    pub delivery_id: String,
    /// The event delivered.
    pub event_id: String,
    /// Its type.
    pub event_type: String,
    /// The subscription it went to.
    pub subscription_id: String,
    /// The attempt's number, from 1.
    pub attempt: u32,
    /// The delivery's status after it: `succeeded`, `pending` (a retry is scheduled), `failed`
    /// (dead letter) or `filtered`.
    pub status: DeliveryStatus,
    /// `succeeded`, `retrying`, `failed` or `filtered`.
    pub outcome: String,
    /// The HTTP status received, if a response came.
    pub status_code: Option<u16>,
    /// What went wrong, as in the attempt log (`timeout`, `connect`, `http_status`, `plugin`, ...).
    pub error_kind: Option<String>,
    /// A human-readable reason.
    pub error_message: Option<String>,
    /// How long the attempt took, in milliseconds.
    pub duration_ms: i64,
    /// When it started.
    #[serde(with = "ms_as_rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub attempted_at: i64,
    /// When the next attempt is due, if one is scheduled.
    #[serde(with = "opt_ms_as_rfc3339")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub next_attempt_at: Option<i64>,
}

/// A plugin log line, as streamed.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct LogWritten<'a> {
    /// The plugin that wrote it.
    pub plugin_id: &'a str,
    /// The event it was handling.
    pub event_id: Option<&'a str>,
    /// `trace`, `debug`, `info`, `warn`, `error`.
    pub level: &'a str,
    /// The text.
    pub message: &'a str,
    /// When it was written.
    #[serde(with = "ms_as_rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub at: i64,
}

/// The feeds of every account.
#[derive(Default)]
pub struct LiveFeed {
    channels: RwLock<HashMap<String, broadcast::Sender<Arc<Message>>>>,
    next_id: AtomicU64,
    closed: AtomicBool,
}

impl LiveFeed {
    /// Publishes a stored event.
    pub fn event(&self, account_id: &str, event: &Event) {
        let keys = || Keys {
            event_type: Some(event.event_type.clone()),
            subscription_id: None,
            plugin_ids: event
                .causation
                .iter()
                .map(|c| c.plugin_id.clone())
                .collect(),
        };
        self.publish(account_id, Kind::Event, keys, || json(event));
    }

    /// Publishes a settled attempt; `plugin_ids` are the subscription's subscriber or transform plugin.
    pub fn attempt(&self, account_id: &str, attempt: &AttemptSettled, plugin_ids: Vec<String>) {
        let keys = || Keys {
            event_type: Some(attempt.event_type.clone()),
            subscription_id: Some(attempt.subscription_id.clone()),
            plugin_ids,
        };
        self.publish(account_id, Kind::Attempt, keys, || json(attempt));
    }

    /// Publishes log lines a plugin wrote.
    pub fn logs(&self, account_id: &str, plugin_id: &str, lines: &[PluginLogLine]) {
        for line in lines {
            let keys = || Keys {
                plugin_ids: vec![plugin_id.to_string()],
                ..Keys::default()
            };
            self.publish(account_id, Kind::Log, keys, || {
                json(&LogWritten {
                    plugin_id,
                    event_id: line.event_id.as_deref(),
                    level: &line.level,
                    message: &line.message,
                    at: line.at,
                })
            });
        }
    }

    /// Whether anyone listens to the account now (to skip preparing what nobody would get).
    pub fn is_listened_to(&self, account_id: &str) -> bool {
        let channels = self.channels.read().expect("live feed lock");
        channels
            .get(account_id)
            .is_some_and(|tx| tx.receiver_count() > 0)
    }

    fn publish(
        &self,
        account_id: &str,
        kind: Kind,
        keys: impl FnOnce() -> Keys,
        data: impl FnOnce() -> String,
    ) {
        let channels = self.channels.read().expect("live feed lock");
        let Some(tx) = channels.get(account_id) else {
            return;
        };
        if tx.receiver_count() == 0 {
            return;
        }
        let message = Message {
            id: self.next_id.fetch_add(1, Ordering::Relaxed) + 1,
            kind,
            data: data(),
            keys: keys(),
        };
        // Fails only when the last listener left meanwhile: nobody to tell.
        let _ = tx.send(Arc::new(message));
    }

    /// Starts listening to an account; `None` once the feed is closed (shutting down).
    pub fn listen(self: &Arc<Self>, account_id: &str) -> Option<Listener> {
        let mut channels = self.channels.write().expect("live feed lock");
        if self.closed.load(Ordering::Acquire) {
            return None;
        }
        let rx = channels
            .entry(account_id.to_string())
            .or_insert_with(|| broadcast::channel(BUFFER).0)
            .subscribe();
        Some(Listener {
            rx: Some(rx),
            feed: self.clone(),
            account_id: account_id.to_string(),
        })
    }

    /// Ends every listener (after what they have buffered) and refuses new ones: streams must
    /// end for a graceful shutdown to finish.
    pub fn close(&self) {
        let mut channels = self.channels.write().expect("live feed lock");
        self.closed.store(true, Ordering::Release);
        channels.clear();
    }
}

fn json(value: &impl Serialize) -> String {
    serde_json::to_string(value).expect("serializing plain data and valid raw JSON")
}

/// What a listener gets next.
pub enum Next {
    /// A message.
    Message(Arc<Message>),
    /// The listener fell behind and lost this many messages of its account.
    Lagged(u64),
    /// The feed closed.
    Closed,
}

/// One account's messages, for one stream.
pub struct Listener {
    rx: Option<broadcast::Receiver<Arc<Message>>>,
    feed: Arc<LiveFeed>,
    account_id: String,
}

impl Listener {
    /// Waits for the next message.
    pub async fn next(&mut self) -> Next {
        let Some(rx) = self.rx.as_mut() else {
            return Next::Closed;
        };
        match rx.recv().await {
            Ok(m) => Next::Message(m),
            Err(broadcast::error::RecvError::Lagged(n)) => Next::Lagged(n),
            Err(broadcast::error::RecvError::Closed) => Next::Closed,
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        let mut channels = self.feed.channels.write().expect("live feed lock");
        drop(self.rx.take());
        if channels
            .get(&self.account_id)
            .is_some_and(|tx| tx.receiver_count() == 0)
        {
            channels.remove(&self.account_id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn publishes_only_to_listeners_of_the_account() {
        let feed = Arc::new(LiveFeed::default());
        let event = |id: &str| Event {
            seq: 1,
            id: id.into(),
            event_type: "a".into(),
            payload: serde_json::value::RawValue::from_string("{}".into()).unwrap(),
            occurred_at: "2026-01-01T00:00:00.000Z".into(),
            received_at: 0,
            causation: None,
        };
        feed.event("acc_1", &event("before"));
        let mut one = feed.listen("acc_1").unwrap();
        feed.event("acc_2", &event("other"));
        feed.event("acc_1", &event("mine"));
        let Next::Message(m) = one.next().await else {
            panic!("a message")
        };
        assert_eq!(m.kind, Kind::Event);
        assert!(m.data.contains("\"mine\""), "{}", m.data);
        feed.close();
        assert!(matches!(one.next().await, Next::Closed));
        assert!(feed.listen("acc_1").is_none());
    }

    #[tokio::test]
    async fn a_slow_listener_is_told_what_it_lost() {
        let feed = Arc::new(LiveFeed::default());
        let mut slow = feed.listen("acc").unwrap();
        for i in 0..BUFFER + 5 {
            feed.logs(
                "acc",
                "plg",
                &[PluginLogLine {
                    at: 0,
                    level: "info".into(),
                    event_id: None,
                    message: i.to_string(),
                }],
            );
        }
        assert!(matches!(slow.next().await, Next::Lagged(5)));
        assert!(matches!(slow.next().await, Next::Message(_)));
    }

    #[test]
    fn the_last_listener_leaving_drops_the_channel() {
        let feed = Arc::new(LiveFeed::default());
        let a = feed.listen("acc").unwrap();
        let b = feed.listen("acc").unwrap();
        drop(a);
        assert_eq!(feed.channels.read().unwrap().len(), 1);
        drop(b);
        assert!(feed.channels.read().unwrap().is_empty());
    }
}
