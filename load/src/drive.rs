//! Load generation: bounded in time and count, over one pooled HTTP client.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::receiver::now_ns;

/// What a drive achieved.
#[derive(Debug, Clone, Copy)]
pub struct Driven {
    /// Requests answered with a 2xx.
    pub ok: u64,
    /// Requests answered otherwise or failed.
    pub failed: u64,
    /// How long it ran.
    pub elapsed: Duration,
}

/// One chat message event, stamped with its send time in the conversation id.
pub fn message_event() -> Value {
    json!({"type": "message:created", "payload": {
        "conversation_id": format!("c{}", now_ns()),
        "text": "Hi, mail me at jane.doe@example.com or call +1 415 555 0100",
        "sender": {"id": "contact-1", "type": "source_contact"},
        "source": "web"
    }})
}

/// How many conversations [`conversation_event`] spreads its events over.
pub const CONVERSATIONS: u64 = 1_000;

/// One chat message event in one of [`CONVERSATIONS`] conversations, taken in turn.
pub fn conversation_event() -> Value {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed) % CONVERSATIONS;
    json!({"type": "message:created", "payload": {
        "conversation_id": format!("conv-{n}"),
        "text": "Hi, mail me at jane.doe@example.com or call +1 415 555 0100",
        "sender": {"id": format!("contact-{n}"), "type": "source_contact"},
        "source": "web"
    }})
}

/// A batch of `n` message events.
pub fn batch(n: usize) -> Value {
    json!({"events": (0..n).map(|_| message_event()).collect::<Vec<_>>()})
}

/// How hard and how long to drive.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    /// Concurrent requests.
    pub workers: usize,
    /// How long.
    pub duration: Duration,
    /// Total requests per second, or as fast as possible.
    pub rate: Option<f64>,
}

/// At most this many requests per drive, whatever the duration: loads stay bounded in count too.
const MAX_REQUESTS: u64 = 5_000_000;

/// Posts `body()` to `url` as planned.
pub async fn drive(
    http: &reqwest::Client,
    url: String,
    token: Option<String>,
    plan: Plan,
    body: fn() -> Value,
) -> Driven {
    let Plan {
        workers,
        duration,
        rate,
    } = plan;
    let max = MAX_REQUESTS;
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let issued = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = Vec::with_capacity(workers);
    for _ in 0..workers {
        let (http, url, token) = (http.clone(), url.clone(), token.clone());
        let (ok, failed, issued) = (ok.clone(), failed.clone(), issued.clone());
        tasks.push(tokio::spawn(async move {
            let mut pace = rate.map(|r| {
                let mut i = tokio::time::interval(Duration::from_secs_f64(workers as f64 / r));
                i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                i
            });
            while Instant::now() < deadline && issued.fetch_add(1, Ordering::Relaxed) < max {
                if let Some(p) = pace.as_mut() {
                    p.tick().await;
                }
                let mut req = http.post(&url).json(&body());
                if let Some(t) = &token {
                    req = req.bearer_auth(t);
                }
                match req.send().await {
                    Ok(r) if r.status().is_success() => {
                        let _ = r.bytes().await;
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    Driven {
        ok: ok.load(Ordering::Relaxed),
        failed: failed.load(Ordering::Relaxed),
        elapsed: started.elapsed(),
    }
}
