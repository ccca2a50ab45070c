//! Per-key token buckets: per account for endpoints that make the server do work on the
//! caller's behalf (a webhook check sends a request to a URL of the caller's choosing), per
//! client address for failed authentications.
//!
//! Each account has a bucket of `capacity` tokens refilled continuously at `capacity` per
//! `period`; a request takes one token or is refused with the time until the next one. Pure
//! bookkeeping over times passed in, so the rules are unit-tested without waiting.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

/// Token buckets keyed by account (or client address).
pub struct TokenBuckets {
    capacity: f64,
    /// Tokens added per millisecond.
    refill_per_ms: f64,
    buckets: Mutex<HashMap<String, Bucket>>,
}

#[derive(Clone, Copy)]
struct Bucket {
    tokens: f64,
    at_ms: i64,
}

/// With this many buckets, the full ones (idle long enough to refill) are forgotten: a
/// forgotten bucket starts full again, so nothing changes for its account but memory.
const SWEEP_AT: usize = 10_000;

impl TokenBuckets {
    /// `capacity` requests at once, refilled at `capacity` per `period` (at least 1 token).
    pub fn new(capacity: u32, period: Duration) -> TokenBuckets {
        let capacity = f64::from(capacity.max(1));
        TokenBuckets {
            capacity,
            refill_per_ms: capacity / (period.as_millis().max(1) as f64),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes a token of `account` at `now_ms`: `Ok` when granted, else how long until one is.
    pub fn take(&self, account: &str, now_ms: i64) -> Result<(), Duration> {
        self.settle(account, now_ms, true)
    }

    /// Whether `take` would grant a token now, without taking it: for limits on failures,
    /// checked before the attempt and taken only when it fails.
    pub fn check(&self, account: &str, now_ms: i64) -> Result<(), Duration> {
        self.settle(account, now_ms, false)
    }

    fn settle(&self, account: &str, now_ms: i64, take: bool) -> Result<(), Duration> {
        let mut buckets = self.buckets.lock().expect("token bucket lock");
        if buckets.len() >= SWEEP_AT {
            let (capacity, rate) = (self.capacity, self.refill_per_ms);
            buckets.retain(|_, b| b.tokens + (now_ms - b.at_ms) as f64 * rate < capacity);
        }
        let full = Bucket {
            tokens: self.capacity,
            at_ms: now_ms,
        };
        let bucket = buckets.entry(account.to_string()).or_insert(full);
        let elapsed = (now_ms - bucket.at_ms).max(0) as f64;
        bucket.tokens = (bucket.tokens + elapsed * self.refill_per_ms).min(self.capacity);
        bucket.at_ms = now_ms.max(bucket.at_ms);
        if bucket.tokens >= 1.0 {
            if take {
                bucket.tokens -= 1.0;
            }
            return Ok(());
        }
        let wait_ms = ((1.0 - bucket.tokens) / self.refill_per_ms).ceil();
        Err(Duration::from_millis(wait_ms as u64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grants_a_burst_then_one_token_per_refill_interval() {
        let b = TokenBuckets::new(3, Duration::from_secs(60));
        for _ in 0..3 {
            assert!(b.take("a", 1_000).is_ok());
        }
        // One token comes back every 20 s.
        assert_eq!(b.take("a", 1_000), Err(Duration::from_secs(20)));
        assert_eq!(b.take("a", 16_000), Err(Duration::from_secs(5)));
        assert!(b.take("a", 21_000).is_ok());
        assert!(b.take("a", 21_000).is_err());
    }

    #[test]
    fn checking_takes_nothing() {
        let b = TokenBuckets::new(1, Duration::from_secs(60));
        assert!(b.check("a", 0).is_ok());
        assert!(b.check("a", 0).is_ok());
        assert!(b.take("a", 0).is_ok());
        assert_eq!(b.check("a", 0), Err(Duration::from_secs(60)));
    }

    #[test]
    fn accounts_have_their_own_buckets() {
        let b = TokenBuckets::new(1, Duration::from_secs(60));
        assert!(b.take("a", 0).is_ok());
        assert!(b.take("a", 0).is_err());
        assert!(b.take("b", 0).is_ok());
    }

    #[test]
    fn an_idle_bucket_refills_only_to_its_capacity() {
        let b = TokenBuckets::new(2, Duration::from_secs(60));
        assert!(b.take("a", 0).is_ok());
        for _ in 0..2 {
            assert!(b.take("a", 3_600_000).is_ok());
        }
        assert!(b.take("a", 3_600_000).is_err());
    }
}
