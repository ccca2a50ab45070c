//! Backpressure on ingest: once more than `--max-queue-depth` deliveries are pending, new
//! events are refused (429 with `Retry-After`) until delivery catches up, instead of building a
//! backlog of minutes that every later event waits behind.
//!
//! The depth is sampled every [`SAMPLE_EVERY`] by a background task (one indexed count), not
//! counted per request: the check on the ingest path is one atomic load. The price is that the
//! queue may overshoot the limit by what is ingested within one sample interval, and that a
//! refusal lasts at least until the next sample, which is what `Retry-After` says.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::state::AppState;

/// How often the queue depth is sampled.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(1);

/// The ingest gate.
#[derive(Debug)]
pub struct Backpressure {
    /// Pending deliveries at the last sample.
    depth: AtomicI64,
    /// Refuse new events above this many pending deliveries (`None`: never).
    limit: Option<u64>,
}

/// Why an ingest was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backlogged {
    /// Pending deliveries at the last sample.
    pub depth: i64,
    /// The configured limit.
    pub limit: u64,
}

impl std::fmt::Display for Backlogged {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the delivery queue holds {} pending deliveries, more than this server's limit of {} \
             (--max-queue-depth): retry after delivery catches up",
            self.depth, self.limit
        )
    }
}

impl Backpressure {
    /// A gate refusing events above `limit` pending deliveries (0: never refuses).
    pub fn new(limit: u64) -> Self {
        Backpressure {
            depth: AtomicI64::new(0),
            limit: (limit > 0).then_some(limit),
        }
    }

    /// Records a sampled depth.
    pub fn observe(&self, depth: i64) {
        self.depth.store(depth, Ordering::Relaxed);
    }

    /// Whether new events may be ingested now.
    pub fn admit(&self) -> Result<(), Backlogged> {
        let depth = self.depth.load(Ordering::Relaxed);
        match self.limit {
            Some(limit) if depth > limit as i64 => Err(Backlogged { depth, limit }),
            _ => Ok(()),
        }
    }
}

/// Samples the queue depth until `stop`: feeds the gate and the `delivery_queue_depth` gauge.
pub fn spawn_sampler(state: AppState, stop: CancellationToken) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut every = tokio::time::interval(SAMPLE_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = every.tick() => {}
            }
            match state.store.queue_depth().await {
                Ok(depth) => {
                    state.backpressure.observe(depth);
                    state.metrics.queue_depth.set(depth);
                }
                Err(e) => tracing::warn!(error = %e, "sampling the queue depth failed"),
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_only_above_the_limit() {
        let gate = Backpressure::new(100);
        gate.observe(100);
        assert_eq!(gate.admit(), Ok(()));
        gate.observe(101);
        assert_eq!(
            gate.admit(),
            Err(Backlogged {
                depth: 101,
                limit: 100
            })
        );
        gate.observe(3);
        assert_eq!(gate.admit(), Ok(()));
    }

    #[test]
    fn zero_means_no_limit() {
        let gate = Backpressure::new(0);
        gate.observe(i64::MAX);
        assert_eq!(gate.admit(), Ok(()));
    }
}
