//! The server-wide memory budget of plugin instances: a weighted semaphore in MiB.
//!
//! Before an instance starts it reserves its plugin's memory limit (the most its linear
//! memories may grow to, enforced by [`super::limits::MemoryLimiter`]), and gives it back when
//! the invocation ends. An instance that does not fit waits, in arrival order, instead of
//! starting: the sum of running instances' ceilings never exceeds the budget, so a burst of
//! memory-hungry events cannot take the machine's memory together. A plugin whose limit is
//! larger than the whole budget reserves the whole budget, so it still runs, alone.
//!
//! Idle instances kept for reuse (`super::reuse`) hold reservations too; a [`Reclaim`] hook
//! throws them away, least recently used first, before anyone is refused room or made to wait.
//!
//! What it does not do: decide who waits where. The dispatcher reserves before an attempt and
//! gives its delivery slot back while it waits, so waiting instances never hold the slots URL
//! deliveries need.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

pub use crate::metrics::BudgetGauges;

const MIB: u64 = 1 << 20;

/// Whoever holds reservations it can give up on demand (idle instances).
pub trait Reclaim: Send + Sync {
    /// Gives up one reservation; false when there is none to give.
    fn reclaim_one(&self) -> bool;
}

/// The budget. Cheap to share: reservations hold an `Arc` of it.
pub struct MemoryBudget {
    semaphore: Arc<Semaphore>,
    total_mib: u32,
    gauges: BudgetGauges,
    reclaim: std::sync::OnceLock<Arc<dyn Reclaim>>,
}

/// Memory reserved for one instance; given back when dropped.
pub struct Reservation {
    mib: u32,
    gauges: BudgetGauges,
    // Dropped after `Drop::drop` ran: the gauge goes down before the room is given back, so
    // the reserved gauge never shows more than the budget.
    _permit: OwnedSemaphorePermit,
}

impl std::fmt::Debug for Reservation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Reservation({} MiB)", self.mib)
    }
}

impl Reservation {
    /// Bytes reserved.
    pub fn bytes(&self) -> u64 {
        u64::from(self.mib) * MIB
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.gauges.reserved.dec_by(self.bytes() as i64);
    }
}

/// Removes itself from the waiting gauge however the wait ends (reserved or cancelled).
struct Waiting<'a>(&'a BudgetGauges);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.waiting.dec();
    }
}

impl MemoryBudget {
    /// A budget of `bytes` (rounded down to whole MiB, at least 1 MiB), shown in `gauges`.
    pub fn new(bytes: u64, gauges: BudgetGauges) -> MemoryBudget {
        // The semaphore holds at most `usize::MAX >> 3` permits; MiB units keep any real
        // machine's memory far below that.
        let total_mib = (bytes / MIB).clamp(1, u64::from(u32::MAX >> 3)) as u32;
        gauges.budget.set(i64::from(total_mib) * MIB as i64);
        MemoryBudget {
            semaphore: Arc::new(Semaphore::new(total_mib as usize)),
            total_mib,
            gauges,
            reclaim: std::sync::OnceLock::new(),
        }
    }

    /// Sets who gives reservations up when room is short (once; later calls are ignored).
    pub fn set_reclaim(&self, reclaim: Arc<dyn Reclaim>) {
        let _ = self.reclaim.set(reclaim);
    }

    /// Whether anyone waits for room: an idle instance is then not kept.
    pub fn has_waiters(&self) -> bool {
        self.gauges.waiting.get() > 0
    }

    /// The budget in bytes.
    pub fn total_bytes(&self) -> u64 {
        u64::from(self.total_mib) * MIB
    }

    /// MiB to reserve for an instance that may use `bytes`: rounded up, at most the budget.
    fn mib_for(&self, bytes: usize) -> u32 {
        let mib = (bytes as u64).div_ceil(MIB).max(1);
        mib.min(u64::from(self.total_mib)) as u32
    }

    fn granted(&self, mib: u32, permit: OwnedSemaphorePermit) -> Reservation {
        let bytes = i64::from(mib) * MIB as i64;
        let now = self.gauges.reserved.inc_by(bytes) + bytes;
        self.gauges
            .reserved_peak
            .inner()
            .fetch_max(now, Ordering::Relaxed);
        Reservation {
            mib,
            gauges: self.gauges.clone(),
            _permit: permit,
        }
    }

    /// Reserves room for an instance that may use `bytes`, if there is room now (and nobody
    /// is waiting ahead), giving up idle instances for it, least recently used first.
    pub fn try_reserve(&self, bytes: usize) -> Option<Reservation> {
        let mib = self.mib_for(bytes);
        loop {
            if let Ok(permit) = self.semaphore.clone().try_acquire_many_owned(mib) {
                return Some(self.granted(mib, permit));
            }
            if !self.reclaim.get().is_some_and(|r| r.reclaim_one()) {
                return None;
            }
        }
    }

    /// Reserves room for an instance that may use `bytes`, waiting (first come, first
    /// served) until running instances have given enough back.
    pub async fn reserve(&self, bytes: usize) -> Reservation {
        if let Some(r) = self.try_reserve(bytes) {
            return r;
        }
        let mib = self.mib_for(bytes);
        self.gauges.waits.inc();
        self.gauges.waiting.inc();
        let _waiting = Waiting(&self.gauges);
        let permit = self
            .semaphore
            .clone()
            .acquire_many_owned(mib)
            .await
            .expect("the budget's semaphore is never closed");
        self.granted(mib, permit)
    }

    /// `reservation` if it covers `bytes`, else one that does (a plugin's limit may have been
    /// raised since it was made).
    pub async fn cover(&self, reservation: Option<Reservation>, bytes: usize) -> Reservation {
        match reservation {
            Some(r) if r.mib >= self.mib_for(bytes) => r,
            other => {
                drop(other);
                self.reserve(bytes).await
            }
        }
    }
}

/// Half of the machine's memory (`MemTotal` in `/proc/meminfo`), or 4 GiB where that cannot
/// be read: the default budget.
pub fn default_budget() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| mem_total(&text))
        .map_or(4 << 30, |total| total / 2)
}

/// `MemTotal` of a `/proc/meminfo` text, in bytes.
fn mem_total(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let mut parts = line["MemTotal:".len()..].split_whitespace();
    let kib: u64 = parts.next()?.parse().ok()?;
    (parts.next() == Some("kB")).then_some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(mib: u64) -> (MemoryBudget, BudgetGauges) {
        let gauges = BudgetGauges::default();
        (MemoryBudget::new(mib * MIB, gauges.clone()), gauges)
    }

    #[tokio::test]
    async fn reservations_never_exceed_the_budget_and_waiters_go_in_order() {
        let (b, g) = budget(1024);
        let b = Arc::new(b);
        let first = b.reserve(512 << 20).await;
        let second = b.try_reserve(512 << 20).expect("room for two");
        assert!(b.try_reserve(1).is_none(), "the budget is full");
        assert_eq!(g.reserved.get(), 1024 << 20);
        let waiter = {
            let b = b.clone();
            tokio::spawn(async move { b.reserve(512 << 20).await })
        };
        while g.waiting.get() == 0 {
            tokio::task::yield_now().await;
        }
        assert_eq!(g.waits.get(), 1);
        drop(first);
        let third = waiter.await.unwrap();
        assert_eq!(g.waiting.get(), 0);
        assert_eq!(g.reserved.get(), 1024 << 20);
        assert_eq!(g.reserved_peak.get(), 1024 << 20);
        drop((second, third));
        assert_eq!(g.reserved.get(), 0);
    }

    #[tokio::test]
    async fn a_limit_above_the_budget_reserves_the_whole_budget() {
        let (b, g) = budget(256);
        let r = b.reserve(512 << 20).await;
        assert_eq!(r.bytes(), 256 << 20);
        assert_eq!(g.budget.get(), 256 << 20);
        assert!(b.try_reserve(1 << 20).is_none());
    }

    #[tokio::test]
    async fn a_cancelled_wait_leaves_the_waiting_gauge() {
        let (b, g) = budget(64);
        let _all = b.reserve(64 << 20).await;
        let wait = tokio::time::timeout(std::time::Duration::from_millis(1), b.reserve(1 << 20));
        assert!(wait.await.is_err());
        assert_eq!(g.waiting.get(), 0);
    }

    #[tokio::test]
    async fn cover_keeps_a_big_enough_reservation_and_replaces_a_small_one() {
        let (b, _) = budget(1024);
        let r = b.reserve(64 << 20).await;
        assert_eq!(b.cover(Some(r), 32 << 20).await.bytes(), 64 << 20);
        let r = b.reserve(64 << 20).await;
        assert_eq!(b.cover(Some(r), 128 << 20).await.bytes(), 128 << 20);
        assert_eq!(b.cover(None, 1).await.bytes(), 1 << 20);
    }

    #[test]
    fn the_default_is_half_of_mem_total() {
        let meminfo = "MemTotal:       24684092 kB\nMemFree:        21266960 kB\n";
        assert_eq!(mem_total(meminfo), Some(24_684_092 * 1024));
        assert_eq!(mem_total("nothing"), None);
        assert!(default_budget() >= 1 << 20);
    }
}
