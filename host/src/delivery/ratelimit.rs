//! Per-subscription rate limits by virtual scheduling: each delivery reserves the next free
//! slot (`1 / rate` apart) once, and one whose slot is in the future is put off until exactly
//! that slot. Nothing is dropped, and a put-off delivery keeps its place when it comes back.

use std::collections::HashMap;
use std::sync::Mutex;

#[derive(Default)]
struct Slots {
    /// Subscription → the next free slot (Unix ms, fractional).
    next_free: HashMap<i64, f64>,
    /// Delivery → the slot it reserved.
    reserved: HashMap<i64, i64>,
}

/// Slot reservations per subscription.
#[derive(Default)]
pub struct RateLimiter {
    slots: Mutex<Slots>,
}

impl RateLimiter {
    /// Admits `delivery` to `subscription` at `rate` per second: `None` to go now, or the
    /// time (Unix ms) to put it off until.
    pub fn admit(&self, subscription: i64, delivery: i64, rate: u32, now: i64) -> Option<i64> {
        let mut s = self.slots.lock().expect("rate limiter lock");
        if let Some(slot) = s.reserved.get(&delivery).copied() {
            if slot <= now {
                s.reserved.remove(&delivery);
                return None;
            }
            return Some(slot);
        }
        let interval = 1000.0 / f64::from(rate.max(1));
        let slot = s
            .next_free
            .get(&subscription)
            .copied()
            .unwrap_or(0.0)
            .max(now as f64);
        s.next_free.insert(subscription, slot + interval);
        let slot = slot.ceil() as i64;
        if slot <= now {
            return None;
        }
        if s.reserved.len() > 100_000 {
            // Reservations of deliveries that never came back (deleted meanwhile).
            s.reserved.retain(|_, t| *t > now - 60_000);
        }
        s.reserved.insert(delivery, slot);
        Some(slot)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spaces_deliveries_at_the_rate_and_keeps_their_place() {
        let r = RateLimiter::default();
        let put_off: Vec<Option<i64>> = (0..4).map(|d| r.admit(1, d, 10, 1000)).collect();
        assert_eq!(put_off, vec![None, Some(1100), Some(1200), Some(1300)]);
        assert_eq!(
            r.admit(2, 10, 10, 1000),
            None,
            "subscriptions are independent"
        );
        // Coming back early keeps the slot; at the slot it goes.
        assert_eq!(r.admit(1, 2, 10, 1150), Some(1200));
        assert_eq!(r.admit(1, 2, 10, 1200), None);
        assert_eq!(r.admit(1, 1, 10, 1250), None);
        // A new delivery queues after the reserved ones.
        assert_eq!(r.admit(1, 9, 10, 1250), Some(1400));
    }
}
