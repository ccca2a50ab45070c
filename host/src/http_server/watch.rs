//! Per-connection deadlines: how long a connection may take to send a request's headers, and
//! how long it may stay idle between requests. A request in flight has no deadline here.
//!
//! The connection's socket is wrapped ([`Watched`]) so the first byte of a request is seen
//! even before hyper has parsed anything; the service marks when a request starts and its
//! response ends ([`InFlight`]).

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;
use tokio::time::Instant;

/// Where a connection is between requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Receiving a request's headers: since the connection opened, or since the first byte
    /// after the previous response.
    Headers { since: Instant },
    /// Waiting for the next request after a response.
    Idle { since: Instant },
    /// This many requests are being answered (HTTP/2 may have several).
    Busy(usize),
}

/// A connection's phase and its deadlines.
pub struct Watch {
    phase: Mutex<Phase>,
    changed: Notify,
    header_timeout: Duration,
    idle_timeout: Duration,
}

impl Watch {
    /// A new connection: its headers are due within `header_timeout`.
    pub fn new(header_timeout: Duration, idle_timeout: Duration) -> Watch {
        Watch {
            phase: Mutex::new(Phase::Headers {
                since: Instant::now(),
            }),
            changed: Notify::new(),
            header_timeout,
            idle_timeout,
        }
    }

    fn set(&self, update: impl FnOnce(Phase) -> Phase) {
        let mut phase = self.phase.lock().expect("connection phase lock");
        let next = update(*phase);
        if next != *phase {
            *phase = next;
            // A stored permit if the watcher is not waiting yet: no change is missed.
            self.changed.notify_one();
        }
    }

    /// Bytes arrived: an idle connection starts a request.
    fn received(&self) {
        self.set(|phase| match phase {
            Phase::Idle { .. } => Phase::Headers {
                since: Instant::now(),
            },
            other => other,
        });
    }

    /// A request's headers are in: no deadline here until its response has been sent.
    pub fn request_started(self: &Arc<Self>) -> InFlight {
        self.set(|phase| match phase {
            Phase::Busy(n) => Phase::Busy(n + 1),
            _ => Phase::Busy(1),
        });
        InFlight(self.clone())
    }

    fn request_finished(&self) {
        self.set(|phase| match phase {
            Phase::Busy(n) if n > 1 => Phase::Busy(n - 1),
            _ => Phase::Idle {
                since: Instant::now(),
            },
        });
    }

    /// Whether a request is being answered.
    pub fn busy(&self) -> bool {
        matches!(
            *self.phase.lock().expect("connection phase lock"),
            Phase::Busy(_)
        )
    }

    /// The connection's current deadline and what it is waiting for; none while busy.
    fn deadline(&self) -> (Phase, Option<(Instant, &'static str)>) {
        let phase = *self.phase.lock().expect("connection phase lock");
        let deadline = match phase {
            Phase::Headers { since } => Some((
                since + self.header_timeout,
                "request headers not received in time",
            )),
            Phase::Idle { since } => Some((since + self.idle_timeout, "idle")),
            Phase::Busy(_) => None,
        };
        (phase, deadline)
    }

    /// Resolves when the connection is past its deadline, with what it was waiting for.
    pub async fn expired(&self) -> &'static str {
        loop {
            let (phase, deadline) = self.deadline();
            match deadline {
                None => self.changed.notified().await,
                Some((at, why)) => tokio::select! {
                    () = tokio::time::sleep_until(at) => {
                        // Only if nothing moved meanwhile (the notification may be pending).
                        if *self.phase.lock().expect("connection phase lock") == phase {
                            return why;
                        }
                    }
                    () = self.changed.notified() => {}
                },
            }
        }
    }
}

/// A request being answered; dropping it (when the response's body has been sent, or the
/// request was abandoned) makes the connection idle again.
pub struct InFlight(Arc<Watch>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.request_finished();
    }
}

/// A connection's socket, reporting the bytes it receives to the [`Watch`].
pub struct Watched<T> {
    inner: T,
    watch: Arc<Watch>,
}

impl<T> Watched<T> {
    /// Wraps `inner`.
    pub fn new(inner: T, watch: Arc<Watch>) -> Watched<T> {
        Watched { inner, watch }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.watch.received();
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADERS: Duration = Duration::from_secs(10);
    const IDLE: Duration = Duration::from_secs(60);

    fn deadline(w: &Watch) -> Option<(Instant, &'static str)> {
        w.deadline().1
    }

    #[test]
    fn a_new_connection_must_send_its_headers_in_time() {
        let before = Instant::now();
        let w = Watch::new(HEADERS, IDLE);
        let (at, why) = deadline(&w).unwrap();
        assert_eq!(why, "request headers not received in time");
        assert!(at >= before + HEADERS && at <= Instant::now() + HEADERS);
    }

    #[test]
    fn a_request_in_flight_has_no_deadline_and_idleness_follows_it() {
        let w = Arc::new(Watch::new(HEADERS, IDLE));
        let first = w.request_started();
        let second = w.request_started();
        assert_eq!(deadline(&w), None);
        assert!(w.busy());
        drop(first);
        assert_eq!(deadline(&w), None, "one request is still in flight");
        let before = Instant::now();
        drop(second);
        let (at, why) = deadline(&w).unwrap();
        assert_eq!(why, "idle");
        assert!(at >= before + IDLE && at <= Instant::now() + IDLE);
    }

    #[test]
    fn the_first_byte_after_idling_starts_the_header_clock_and_later_bytes_do_not_move_it() {
        let w = Arc::new(Watch::new(HEADERS, IDLE));
        drop(w.request_started());
        let before = Instant::now();
        w.received();
        let (at, why) = deadline(&w).unwrap();
        assert_eq!(why, "request headers not received in time");
        assert!(at >= before + HEADERS && at <= Instant::now() + HEADERS);
        // A drip-fed header does not push its deadline back.
        w.received();
        assert_eq!(deadline(&w), Some((at, why)));
    }

    #[tokio::test]
    async fn the_watcher_wakes_on_changes() {
        let w = Arc::new(Watch::new(Duration::ZERO, Duration::from_secs(3600)));
        // Past the header deadline at once.
        assert_eq!(w.expired().await, "request headers not received in time");
        let in_flight = w.request_started();
        let watcher = tokio::spawn({
            let w = w.clone();
            async move { w.expired().await }
        });
        drop(in_flight);
        w.received();
        // Headers again, with a zero timeout: the watcher, waiting while busy, is woken.
        assert_eq!(
            watcher.await.unwrap(),
            "request headers not received in time"
        );
    }
}
