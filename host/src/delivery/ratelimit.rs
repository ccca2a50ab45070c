//! Per-subscription rate limits by virtual scheduling: each delivery reserves the next free
//! slot (`1 / rate` apart), and one that finds its slot in the future waits for exactly that
//! slot. Nothing is dropped; excess deliveries are only put off.

use std::collections::HashMap;
use std::sync::Mutex;

/// Slot reservations per subscription.
#[derive(Default)]
pub struct RateLimiter {
    next_free: Mutex<HashMap<i64, f64>>,
}

impl RateLimiter {
    /// Reserves a slot for one delivery to `subscription` at `rate` per second; returns the time
    /// (Unix ms) of the slot, which is `now` or later.
    pub fn reserve(&self, subscription: i64, rate: u32, now: i64) -> i64 {
        let interval = 1000.0 / f64::from(rate.max(1));
        let mut map = self.next_free.lock().expect("rate limiter lock");
        let slot = map.get(&subscription).copied().unwrap_or(0.0).max(now as f64);
        map.insert(subscription, slot + interval);
        if map.len() > 100_000 {
            // Forget subscriptions whose slots are all in the past; they start fresh anyway.
            map.retain(|_, t| *t > now as f64);
        }
        slot.ceil() as i64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spaces_deliveries_at_the_rate() {
        let r = RateLimiter::default();
        let slots: Vec<i64> = (0..5).map(|_| r.reserve(1, 10, 1000)).collect();
        assert_eq!(slots, vec![1000, 1100, 1200, 1300, 1400]);
        assert_eq!(r.reserve(2, 10, 1000), 1000, "subscriptions are independent");
        assert_eq!(r.reserve(1, 10, 5000), 5000, "an idle subscription starts at now");
    }
}
