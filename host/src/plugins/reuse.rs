//! Instances kept between events, for plugins in `reuse` mode: which idle instance an event
//! may take, and every rule that throws one away.
//!
//! An idle instance is keyed by (loaded generation, subscription): a generation belongs to one
//! loaded plugin, hence one account, and changes with every version swap and settings change
//! (see `super::registry`), so an instance only ever serves events of one account and one
//! subscription, under the version and configuration it started with. Whoever takes an instance has it alone, so it serves one
//! event at a time; events of the same key that arrive together take other idle instances or
//! start fresh ones. An event starts a fresh instance only when none of its key is idle, so a
//! key never has more instances than it has had events running at once (a subscription's
//! `max_in_flight` bounds that): every instance that served an event is kept for the next one,
//! and only [`ReuseSettings::max_idle`] across all keys bounds how many wait.
//!
//! An idle instance still holds what it ran with: its instance slot in the pooling allocator
//! and its memory reservation in `super::budget`. It gives both back when it is thrown away:
//! the least recently used one first whenever the budget or the pool is short, and in any case
//! after [`ReuseSettings::idle_timeout`] without an event (a sweeper thread checks).
//!
//! What this module does not do: run events. `super::invoke` takes an instance, prepares its
//! per-event state, runs the event, and hands it back with [`IdleInstances::park`] or drops it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use super::budget::Reclaim;
pub use super::instance::Kept;
use super::invoke::FailureKind;
use super::registry::LoadedPlugin;
pub use crate::metrics::ReuseMetrics;

/// When a reused instance is thrown away (server flags; see the README's "Instance reuse").
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ReuseSettings {
    /// Events one instance serves at most.
    pub max_events: u32,
    /// How long after its instantiation an instance is still reused.
    pub max_age: Duration,
    /// How long an instance is kept without an event.
    pub idle_timeout: Duration,
    /// How many times its linear memory after its first event an instance may grow to.
    pub max_memory_growth: f64,
    /// Idle instances kept across all plugins at most.
    pub max_idle: usize,
}

impl Default for ReuseSettings {
    fn default() -> ReuseSettings {
        ReuseSettings {
            max_events: 10_000,
            max_age: Duration::from_secs(300),
            idle_timeout: Duration::from_secs(30),
            max_memory_growth: 2.0,
            max_idle: 64,
        }
    }
}

/// Why an instance was not reused (the `reason` label of
/// `wasmhook_plugin_instance_discards_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Discard {
    /// It served `max_events` events.
    MaxEvents,
    /// It is older than `max_age`.
    MaxAge,
    /// It went `idle_timeout` without an event.
    IdleTimeout,
    /// The plugin trapped.
    Trap,
    /// The event ran past its deadline.
    Deadline,
    /// A limit was breached: memory, the replacement payload's size, `send-message`s.
    Limit,
    /// Its replacement payload was not a JSON object.
    InvalidOutput,
    /// Its linear memory grew past `max_memory_growth` times its size after its first event.
    MemoryGrowth,
    /// The plugin's settings (configuration, limits, ...) changed.
    Settings,
    /// Another version of the plugin was swapped in.
    Version,
    /// The plugin was set back to `per_event`.
    PerEvent,
    /// The plugin was deleted.
    Deleted,
    /// Another instance needed room in the memory budget.
    Budget,
    /// Another instance needed a slot in the instance pool.
    Pool,
    /// Enough idle instances are kept already (`max_idle`).
    Full,
}

impl Discard {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Discard::MaxEvents => "max_events",
            Discard::MaxAge => "max_age",
            Discard::IdleTimeout => "idle_timeout",
            Discard::Trap => "trap",
            Discard::Deadline => "deadline",
            Discard::Limit => "limit",
            Discard::InvalidOutput => "invalid_output",
            Discard::MemoryGrowth => "memory_growth",
            Discard::Settings => "settings",
            Discard::Version => "version",
            Discard::PerEvent => "per_event",
            Discard::Deleted => "deleted",
            Discard::Budget => "budget",
            Discard::Pool => "pool",
            Discard::Full => "full",
        }
    }
}

/// Which events an instance may serve: nothing of another account, subscription, version or
/// configuration.
///
/// The generation stands for the plugin, its account, its version and its settings at once:
/// it is unique in the process and belongs to one loaded plugin, which belongs to one account
/// (see `super::registry`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Key {
    generation: u64,
    subscription_id: String,
}

impl Key {
    /// The key of `plugin`'s events through `subscription_id`.
    pub fn new(plugin: &LoadedPlugin, subscription_id: &str) -> Key {
        Key {
            generation: plugin.generation,
            subscription_id: subscription_id.to_string(),
        }
    }
}

/// What an event left of its instance, for the discard rules.
#[derive(Debug, Clone, Copy)]
pub struct AfterEvent {
    /// Events served, this one included.
    pub events: u32,
    /// Time since instantiation.
    pub age: Duration,
    /// Linear memory after its first event.
    pub baseline: usize,
    /// Linear memory now.
    pub memory: usize,
}

impl ReuseSettings {
    /// Why `kept` may not serve another event after one that ended with `failure` and left
    /// `memory` bytes of linear memory, if it may not; counts the event. The rules that depend
    /// on the instance alone: settings and room are checked elsewhere.
    pub fn after_event(
        &self,
        kept: &mut Kept,
        failure: Option<FailureKind>,
        memory: usize,
    ) -> Option<Discard> {
        // A handler's own error leaves the instance as sound as a success does; anything else
        // may have left it anywhere (a trap mid-way, a call cut at its deadline).
        let failed = match failure {
            None | Some(FailureKind::Handler) | Some(FailureKind::NotLoaded) => None,
            Some(FailureKind::Trap) => Some(Discard::Trap),
            Some(FailureKind::Deadline) => Some(Discard::Deadline),
            Some(FailureKind::Limit) => Some(Discard::Limit),
            Some(FailureKind::InvalidOutput) => Some(Discard::InvalidOutput),
        };
        if failed.is_some() {
            return failed;
        }
        kept.events += 1;
        let baseline = *kept.baseline.get_or_insert(memory);
        self.worn_out(AfterEvent {
            events: kept.events,
            age: kept.born.elapsed(),
            baseline,
            memory,
        })
    }

    /// Whether an instance that served an event without failing is worn out.
    pub fn worn_out(&self, after: AfterEvent) -> Option<Discard> {
        if after.memory as f64 > after.baseline as f64 * self.max_memory_growth {
            Some(Discard::MemoryGrowth)
        } else if after.events >= self.max_events {
            Some(Discard::MaxEvents)
        } else if after.age >= self.max_age {
            Some(Discard::MaxAge)
        } else {
            None
        }
    }
}

struct Parked {
    key: Key,
    /// Boxed: an instance with its store and WIT event is large, and it moves into and out of
    /// the map on every event.
    kept: Box<Kept>,
    since: Instant,
}

#[derive(Default)]
struct Idle {
    /// Parked instances by park order: the first is the least recently used.
    parked: BTreeMap<u64, Parked>,
    /// Key → its parked instances' numbers, oldest first.
    by_key: HashMap<Key, Vec<u64>>,
    /// Plugin id → the generation new events run on.
    current: HashMap<String, u64>,
    /// The generations of `current`: an instance of any other is not parked.
    live: HashSet<u64>,
    next: u64,
}

impl Idle {
    fn remove(&mut self, n: u64) -> Option<Parked> {
        let parked = self.parked.remove(&n)?;
        if let Some(list) = self.by_key.get_mut(&parked.key) {
            list.retain(|&m| m != n);
            if list.is_empty() {
                self.by_key.remove(&parked.key);
            }
        }
        Some(parked)
    }
}

/// The idle instances of every plugin in `reuse` mode.
pub struct IdleInstances {
    settings: std::sync::RwLock<ReuseSettings>,
    idle: Mutex<Idle>,
    metrics: ReuseMetrics,
}

impl IdleInstances {
    /// An empty set under `settings`; a sweeper thread throws away instances past their idle
    /// timeout or age for as long as the set exists.
    pub fn new(settings: ReuseSettings, metrics: ReuseMetrics) -> Arc<IdleInstances> {
        let idle = Arc::new(IdleInstances {
            settings: std::sync::RwLock::new(settings),
            idle: Mutex::default(),
            metrics,
        });
        start_sweeper(Arc::downgrade(&idle));
        idle
    }

    /// The settings in force.
    pub fn settings(&self) -> ReuseSettings {
        *self.settings.read().expect("reuse settings lock")
    }

    /// Replaces the settings (the server's flags, at start-up).
    pub fn set_settings(&self, settings: ReuseSettings) {
        *self.settings.write().expect("reuse settings lock") = settings;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Idle> {
        self.idle.lock().expect("idle instances lock")
    }

    /// Counts an instance thrown away for `reason`.
    pub fn discarded(&self, reason: Discard) {
        self.metrics.discarded(reason.as_str());
    }

    /// Throws away `dropped` (outside the lock: dropping a store returns its slot to the pool).
    fn throw_away(&self, dropped: Vec<Parked>, reason: Discard) {
        if dropped.is_empty() {
            return;
        }
        self.metrics.idle.dec_by(dropped.len() as i64);
        for _ in &dropped {
            self.discarded(reason);
        }
        drop(dropped);
    }

    /// The most recently used idle instance of `key`, if one is still young enough.
    pub fn take(&self, key: &Key) -> Option<Box<Kept>> {
        let (taken, old) = {
            let mut idle = self.lock();
            let n = *idle.by_key.get(key)?.last()?;
            let parked = idle.remove(n)?;
            if parked.kept.born.elapsed() >= self.settings().max_age {
                (None, vec![parked])
            } else {
                (Some(parked.kept), Vec::new())
            }
        };
        if taken.is_some() {
            self.metrics.idle.dec();
        }
        self.throw_away(old, Discard::MaxAge);
        taken
    }

    /// Keeps `kept` for the next event of `key`, unless its plugin moved on to another
    /// generation meanwhile; makes room by throwing away the least recently used instance
    /// when `max_idle` are kept.
    pub fn park(&self, key: Key, kept: Box<Kept>) {
        let max_idle = self.settings().max_idle;
        let mut evicted = Vec::new();
        let refused = {
            let mut idle = self.lock();
            let refused = if !idle.live.contains(&key.generation) {
                Some(Discard::Settings)
            } else if max_idle == 0 {
                Some(Discard::Full)
            } else {
                None
            };
            if refused.is_none() {
                while idle.parked.len() >= max_idle {
                    let Some(&oldest) = idle.parked.keys().next() else {
                        break;
                    };
                    evicted.extend(idle.remove(oldest));
                }
                let n = idle.next;
                idle.next += 1;
                idle.by_key.entry(key.clone()).or_default().push(n);
                idle.parked.insert(
                    n,
                    Parked {
                        key,
                        kept,
                        since: Instant::now(),
                    },
                );
                self.metrics.idle.inc();
                None
            } else {
                Some((refused, kept))
            }
        };
        self.throw_away(evicted, Discard::Full);
        if let Some((Some(reason), kept)) = refused {
            self.discarded(reason);
            drop(kept);
        }
    }

    /// Whether an instance of `key` is idle now.
    pub fn has(&self, key: &Key) -> bool {
        self.lock().by_key.contains_key(key)
    }

    /// Records the generation `plugin_id` runs on from now on (`None`: deleted) and throws
    /// away its idle instances of any other, for `reason`.
    pub fn retire(&self, plugin_id: &str, current: Option<u64>, reason: Discard) {
        let dropped = {
            let mut idle = self.lock();
            let old = match current {
                Some(generation) => idle.current.insert(plugin_id.to_string(), generation),
                None => idle.current.remove(plugin_id),
            };
            if let Some(old) = old {
                idle.live.remove(&old);
            }
            if let Some(generation) = current {
                idle.live.insert(generation);
            }
            // Only instances of a live generation are parked: the plugin's are of `old`.
            let stale: Vec<u64> = idle
                .parked
                .iter()
                .filter(|(_, p)| old.is_some_and(|g| g == p.key.generation))
                .map(|(&n, _)| n)
                .collect();
            stale
                .into_iter()
                .filter_map(|n| idle.remove(n))
                .collect::<Vec<_>>()
        };
        self.throw_away(dropped, reason);
    }

    /// Throws away the least recently used idle instance, if any, for `reason`.
    pub fn evict_one(&self, reason: Discard) -> bool {
        let oldest = {
            let mut idle = self.lock();
            let oldest = idle.parked.keys().next().copied();
            oldest.and_then(|n| idle.remove(n))
        };
        let found = oldest.is_some();
        self.throw_away(oldest.into_iter().collect(), reason);
        found
    }

    /// Throws away the instances idle for longer than the idle timeout, or older than the
    /// maximum age.
    pub fn sweep(&self) {
        let settings = self.settings();
        let (expired, aged) = {
            let mut idle = self.lock();
            let (mut expired, mut aged) = (Vec::new(), Vec::new());
            let due: Vec<(u64, bool)> = idle
                .parked
                .iter()
                .filter_map(|(&n, p)| {
                    if p.kept.born.elapsed() >= settings.max_age {
                        Some((n, true))
                    } else if p.since.elapsed() >= settings.idle_timeout {
                        Some((n, false))
                    } else {
                        None
                    }
                })
                .collect();
            for (n, too_old) in due {
                if let Some(p) = idle.remove(n) {
                    if too_old { &mut aged } else { &mut expired }.push(p);
                }
            }
            (expired, aged)
        };
        self.throw_away(expired, Discard::IdleTimeout);
        self.throw_away(aged, Discard::MaxAge);
    }

    /// Idle instances now.
    pub fn len(&self) -> usize {
        self.lock().parked.len()
    }

    /// True when none is idle.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Reclaim for IdleInstances {
    fn reclaim_one(&self) -> bool {
        self.evict_one(Discard::Budget)
    }
}

/// Sweeps every quarter of the idle timeout (at least every second, at most every 10 ms);
/// holds only a weak reference, so the set can be dropped.
fn start_sweeper(idle: Weak<IdleInstances>) {
    std::thread::Builder::new()
        .name("wasmhook-idle-sweeper".into())
        .spawn(move || {
            while let Some(idle) = idle.upgrade() {
                idle.sweep();
                let every = (idle.settings().idle_timeout / 4)
                    .clamp(Duration::from_millis(10), Duration::from_secs(1));
                drop(idle);
                std::thread::sleep(every);
            }
        })
        .expect("spawning the idle instance sweeper");
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::delivery::netpolicy::NetPolicy;
    use crate::metrics::{DiscardLabels, Metrics};
    use crate::model::{Event, InstanceMode, Plugin};
    use crate::plugins::dry_run::{DryRun, MemoryKv};
    use crate::plugins::host::CallContext;
    use crate::plugins::invoke::Input;
    use crate::plugins::{Decision, PluginRuntime};

    fn after(events: u32, age_s: u64, baseline: usize, memory: usize) -> AfterEvent {
        AfterEvent {
            events,
            age: Duration::from_secs(age_s),
            baseline,
            memory,
        }
    }

    #[test]
    fn an_instance_is_worn_out_by_events_age_or_memory_growth() {
        let s = ReuseSettings {
            max_events: 3,
            max_age: Duration::from_secs(60),
            max_memory_growth: 2.0,
            ..Default::default()
        };
        assert_eq!(s.worn_out(after(1, 0, 128, 128)), None);
        assert_eq!(s.worn_out(after(2, 59, 128, 256)), None, "2x is allowed");
        assert_eq!(
            s.worn_out(after(2, 0, 128, 257)),
            Some(Discard::MemoryGrowth)
        );
        assert_eq!(s.worn_out(after(3, 0, 128, 128)), Some(Discard::MaxEvents));
        assert_eq!(s.worn_out(after(2, 60, 128, 128)), Some(Discard::MaxAge));
    }

    /// The count the hostile fixture in `counter` mode delivered for an event of `sub`.
    async fn count(runtime: &PluginRuntime, sub: &str) -> u64 {
        let event = Event {
            seq: 0,
            id: "evt_1".into(),
            event_type: "x".into(),
            payload: serde_json::value::RawValue::from_string("{}".into()).unwrap(),
            occurred_at: "2026-11-28T00:00:00Z".into(),
            received_at: 0,
            causation: None,
        };
        let input = Input {
            event: &event,
            subscription_id: sub,
            attempt: 1,
        };
        let services = Arc::new(DryRun::new(Arc::new(MemoryKv::new(BTreeMap::new()))));
        match runtime.invoke(services, "plg_1", input).await.unwrap() {
            Decision::Replace(p) => {
                let p: serde_json::Value = serde_json::from_str(p.get()).unwrap();
                assert_eq!(p["subscription_id"], sub, "{p}");
                p["count"].as_u64().unwrap()
            }
            other => panic!("expected replace, got {other:?}"),
        }
    }

    /// A runtime with `slots` instance slots and the hostile fixture loaded as `plg_1` (in
    /// `counter` mode, instances reused).
    fn counter_runtime(dir: &std::path::Path, slots: u32, metrics: Arc<Metrics>) -> PluginRuntime {
        let runtime = PluginRuntime::new(
            dir,
            slots,
            crate::plugins::budget::default_budget(),
            metrics,
            Arc::new(NetPolicy::new(vec![])),
        )
        .unwrap();
        let plugin = Plugin {
            id: "plg_1".into(),
            account_id: "acc_1".into(),
            name: "counter".into(),
            config: BTreeMap::from([("mode".to_string(), "counter".to_string())]),
            secret_keys: Default::default(),
            allowed_hosts: vec![],
            limits: Default::default(),
            log_level: Default::default(),
            instances: InstanceMode::Reuse,
            version: 1,
            latest_version: 1,
            status: Default::default(),
            failure: None,
            created_at: 0,
            updated_at: 0,
        };
        let wasm = std::fs::read(wasmhook_plugin_artifacts::HOSTILE).unwrap();
        runtime
            .registry
            .put(runtime.load_local(&plugin, &wasm).unwrap());
        runtime
    }

    /// The count of discards for `reason`.
    fn discards(metrics: &Metrics, reason: &str) -> u64 {
        let labels = DiscardLabels {
            reason: reason.into(),
        };
        metrics
            .plugin_instances
            .discards
            .get_or_create(&labels)
            .get()
    }

    /// With every slot of the instance pool held by an idle instance, a new instance takes the
    /// slot of the least recently used one instead of failing.
    #[tokio::test]
    async fn idle_instances_give_their_pool_slots_up() {
        let dir = tempfile::tempdir().unwrap();
        let metrics = Arc::new(Metrics::default());
        let runtime = counter_runtime(dir.path(), 2, metrics.clone());
        let pool = || discards(&metrics, "pool");

        assert_eq!(
            (count(&runtime, "s1").await, count(&runtime, "s2").await),
            (1, 1)
        );
        assert_eq!(runtime.registry.idle.len(), 2, "both slots held idle");
        // A third subscription's instance: s1's (the least recently used) gives its slot up.
        assert_eq!(count(&runtime, "s3").await, 1);
        assert_eq!(pool(), 1);
        assert_eq!(count(&runtime, "s2").await, 2, "s2's instance was kept");
        assert_eq!(count(&runtime, "s1").await, 1, "s1's was not");
        assert_eq!(pool(), 2);
    }

    /// Every instance a subscription's events ran on at once is kept for its next events:
    /// none is thrown away for want of room while `max_idle` has some.
    #[tokio::test]
    async fn a_subscription_keeps_every_instance_its_events_ran_on_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let metrics = Arc::new(Metrics::default());
        let runtime = counter_runtime(dir.path(), 32, metrics.clone());
        let plugin = runtime.registry.get("plg_1").unwrap();
        let idle = &runtime.registry.idle;
        let key = || Key::new(&plugin, "s1");
        // Eight events of s1 at once: none finds an idle instance, each starts a fresh one.
        let mut fresh = Vec::new();
        for _ in 0..8 {
            assert!(idle.take(&key()).is_none());
            let services = Arc::new(DryRun::new(Arc::new(MemoryKv::new(BTreeMap::new()))));
            let call = CallContext::new(services, plugin.clone(), 0, "evt_1");
            let reservation = runtime.memory.cover(None, plugin.limits.memory_bytes).await;
            fresh.push(Box::new(runtime.fresh(&plugin, call, reservation)));
        }
        for kept in fresh {
            idle.park(key(), kept);
        }
        assert_eq!((idle.len(), discards(&metrics, "full")), (8, 0));
        // The next eight at once all find one.
        let taken: Vec<_> = (0..8).map(|_| idle.take(&key())).collect();
        assert!(taken.iter().all(Option::is_some));
        assert!(idle.is_empty());
    }
}
