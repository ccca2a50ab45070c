//! A fast receiver on loopback: answers 200 at once and records, per path, how many requests
//! arrived and how long after the client sent the event (the client writes its send time, in
//! nanoseconds, into the conversation id `c<ns>`).
//!
//! Paths under `/slow/` play a slow endpoint instead: each request is answered after
//! [`SLOW_RESPONSE`] and only counted apart ([`Receiver::slow_total`]), never in [`Receiver::total`]
//! or the latencies. A body containing the text given to [`Receiver::fail_when`] is answered
//! 400 (and counted): refused, while the endpoint itself stays healthy (no circuit breaker).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::http::{StatusCode, Uri};

/// How long a request to a `/slow/` path takes to be answered.
pub const SLOW_RESPONSE: Duration = Duration::from_secs(2);

/// Nanoseconds since the Unix epoch.
pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("a clock after 1970")
        .as_nanos() as u64
}

/// The send time embedded in a body as `"conversation_id":"c<ns>"` (with or without a space
/// after the colon: Python's `json.dumps` writes one).
fn sent_ns(body: &[u8]) -> Option<u64> {
    const KEY: &[u8] = b"\"conversation_id\":";
    let mut at = body.windows(KEY.len()).position(|w| w == KEY)? + KEY.len();
    while body.get(at) == Some(&b' ') {
        at += 1;
    }
    at += body[at..].starts_with(b"\"c").then_some(2)?;
    let digits = body[at..].iter().take_while(|b| b.is_ascii_digit()).count();
    std::str::from_utf8(&body[at..at + digits])
        .ok()?
        .parse()
        .ok()
}

#[derive(Default)]
struct PathStats {
    latencies_ns: Vec<u64>,
}

/// What the receiver saw.
#[derive(Clone, Default)]
pub struct Receiver {
    pub url: String,
    total: Arc<AtomicU64>,
    slow: Arc<AtomicU64>,
    paths: Arc<Mutex<HashMap<String, PathStats>>>,
    /// Bodies at paths in this map are only counted when they contain the text.
    require: Arc<Mutex<HashMap<String, String>>>,
    /// Bodies containing this text are answered 400.
    fail: Arc<Mutex<Option<String>>>,
}

impl Receiver {
    /// Starts on an ephemeral loopback port.
    pub async fn start() -> anyhow::Result<Receiver> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let mut r = Receiver {
            url: format!("http://{}", listener.local_addr()?),
            ..Default::default()
        };
        let handle = r.clone();
        let app = axum::Router::new().fallback(move |uri: Uri, body: Bytes| {
            let r = handle.clone();
            async move {
                if uri.path().starts_with("/slow/") {
                    tokio::time::sleep(SLOW_RESPONSE).await;
                    r.slow.fetch_add(1, Ordering::Relaxed);
                } else {
                    r.record(uri.path(), &body);
                }
                if r.fails(&body) {
                    StatusCode::BAD_REQUEST
                } else {
                    StatusCode::OK
                }
            }
        });
        tokio::spawn(async move { axum::serve(listener, app).await });
        r.url = r.url.clone();
        Ok(r)
    }

    fn record(&self, path: &str, body: &[u8]) {
        if let Some(needle) = self.require.lock().expect("lock").get(path)
            && !body.windows(needle.len()).any(|w| w == needle.as_bytes())
        {
            return;
        }
        self.total.fetch_add(1, Ordering::Relaxed);
        let latency = sent_ns(body).map(|t| now_ns().saturating_sub(t));
        let mut paths = self.paths.lock().expect("lock");
        let stats = paths.entry(path.to_string()).or_default();
        if let Some(l) = latency {
            stats.latencies_ns.push(l);
        }
    }

    /// Answers 400 to every body that contains `needle`.
    pub fn fail_when(&self, needle: &str) {
        *self.fail.lock().expect("lock") = Some(needle.to_string());
    }

    fn fails(&self, body: &[u8]) -> bool {
        let fail = self.fail.lock().expect("lock");
        fail.as_deref()
            .is_some_and(|needle| body.windows(needle.len()).any(|w| w == needle.as_bytes()))
    }

    /// Counts only bodies at `path` that contain `needle`.
    pub fn require(&self, path: &str, needle: &str) {
        self.require
            .lock()
            .expect("lock")
            .insert(path.to_string(), needle.to_string());
    }

    /// Requests counted so far.
    pub fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }

    /// Requests answered at `/slow/` paths so far.
    pub fn slow_total(&self) -> u64 {
        self.slow.load(Ordering::Relaxed)
    }

    /// Forgets everything seen.
    pub fn reset(&self) {
        self.total.store(0, Ordering::Relaxed);
        self.slow.store(0, Ordering::Relaxed);
        self.paths.lock().expect("lock").clear();
        *self.fail.lock().expect("lock") = None;
    }

    /// All latencies recorded, in milliseconds, sorted.
    pub fn latencies_ms(&self) -> Vec<f64> {
        let paths = self.paths.lock().expect("lock");
        let mut all: Vec<f64> = paths
            .values()
            .flat_map(|p| p.latencies_ns.iter().map(|n| *n as f64 / 1e6))
            .collect();
        all.sort_by(|a, b| a.total_cmp(b));
        all
    }
}

/// The `q` quantile of sorted values.
pub fn quantile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    Some(sorted[i])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_send_time_from_the_conversation_id() {
        assert_eq!(
            sent_ns(br#"{"data":{"conversation_id":"c12345","text":"x"}}"#),
            Some(12345)
        );
        assert_eq!(sent_ns(br#"{"conversation_id":"other"}"#), None);
        assert_eq!(sent_ns(br#"{"conversation_id": "c42", "x": 1}"#), Some(42));
        assert_eq!(quantile(&[1.0, 2.0, 3.0, 4.0, 5.0], 0.5), Some(3.0));
    }
}
