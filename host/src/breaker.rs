//! The circuit breaker's rules: how an endpoint's health signals move a subscription's
//! breaker, and how long a tripped one pauses. Pure functions; the store applies them inside
//! the settling transaction, so concurrent outcomes of one subscription cannot interleave, and
//! the dispatcher decides which attempts give which signal.

use std::time::Duration;

/// What an attempt says about the endpoint's health.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// The endpoint answered (anything but a 5xx): close the breaker.
    Healthy,
    /// Timeout, connection, DNS or TLS failure, or a 5xx.
    Failing,
}

/// When a breaker trips and how long it pauses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Failures in a row that trip it.
    pub threshold: u32,
    /// The first pause.
    pub cooldown: Duration,
    /// The longest pause.
    pub max_cooldown: Duration,
}

/// A breaker as stored: failures in a row, times tripped since the last success, and the end
/// of the current pause while tripped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Breaker {
    /// Endpoint failures in a row.
    pub failures: u32,
    /// Times tripped since the last success (the pause doubles each time).
    pub trips: u32,
    /// While tripped: the end of the pause (Unix ms).
    pub until: Option<i64>,
}

impl Policy {
    /// The breaker after an attempt that gave `signal`, settled at `now`.
    pub fn after(&self, b: Breaker, signal: Signal, now: i64) -> Breaker {
        match signal {
            Signal::Healthy => Breaker::default(),
            Signal::Failing => {
                let failures = b.failures.saturating_add(1);
                let paused = b.until.is_some_and(|until| until > now);
                // Attempts that were already in flight when it tripped do not lengthen the pause;
                // a failed probe (the pause is over) or a new run of failures trips it again.
                let trip = !paused && (b.until.is_some() || failures >= self.threshold);
                if !trip {
                    return Breaker { failures, ..b };
                }
                let pause = self
                    .cooldown
                    .saturating_mul(1u32 << b.trips.min(20))
                    .min(self.max_cooldown);
                Breaker {
                    failures,
                    trips: b.trips.saturating_add(1),
                    until: Some(now + pause.as_millis() as i64),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: Policy = Policy {
        threshold: 3,
        cooldown: Duration::from_secs(10),
        max_cooldown: Duration::from_secs(60),
    };

    fn fail(b: Breaker, now: i64) -> Breaker {
        POLICY.after(b, Signal::Failing, now)
    }

    #[test]
    fn trips_after_the_threshold_and_doubles_the_pause_per_failed_probe() {
        let mut b = Breaker::default();
        b = fail(b, 0);
        b = fail(b, 1);
        assert_eq!(b.until, None, "two failures are below the threshold");
        b = fail(b, 2);
        assert_eq!(b.until, Some(10_002));
        // Stragglers that were in flight do not move the probe time.
        b = fail(b, 3);
        assert_eq!((b.until, b.failures), (Some(10_002), 4));
        // The probe fails: 20 s, then 40 s, then the 60 s ceiling.
        b = fail(b, 10_002);
        assert_eq!(b.until, Some(30_002));
        b = fail(b, 30_002);
        assert_eq!(b.until, Some(70_002));
        b = fail(b, 70_002);
        assert_eq!(b.until, Some(130_002));
    }

    #[test]
    fn a_success_closes_it() {
        let b = fail(fail(fail(Breaker::default(), 0), 0), 0);
        assert!(b.until.is_some());
        assert_eq!(POLICY.after(b, Signal::Healthy, 20_000), Breaker::default());
    }
}
