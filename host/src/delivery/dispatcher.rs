//! The dispatcher: claims due deliveries under the store's scheduling rules (fair rotation,
//! per-subscription `max_in_flight`, circuit breakers, conversation order: see
//! `store::sqlite::claims`), runs at most `--delivery-concurrency` at once, holds each claim's lease
//! while its attempt runs, and settles each outcome.
//!
//! It is woken by the ingest path when new deliveries are due now and by every settled
//! attempt (which frees a subscription's slot), and otherwise sleeps until the next retry,
//! lease expiry or breaker probe (capped at one second, so work written by other paths is
//! never waited on for long).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use serde_json::json;
use serde_json::value::RawValue;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::ratelimit::RateLimiter;
use super::schedule::next_delay;
use super::subscriber::{deliver, plugin_of};
use super::{AttemptOutcome, Verdict};
use crate::breaker::{Policy, Signal};
use crate::clock::{new_id, now_ms, rfc3339};
use crate::live::AttemptSettled;
use crate::model::{Attempt, AttemptRequest, DeliveryStatus, Subscription, SubscriptionStatus};
use crate::plugins::budget::Reservation;
use crate::state::AppState;
use crate::store::NewEvent;
use crate::store::StoreError;
use crate::store::{ClaimRequest, Claimed, Claims, Outcome, Settled};

const MAX_CLAIM: usize = 256;
const IDLE_POLL: Duration = Duration::from_secs(1);
/// A subscription whose attempts take less than this (a moving average) and succeed may claim
/// ahead of its `max_in_flight` (see `ClaimRequest::claim_ahead`).
const FAST_ATTEMPT_MS: f64 = 100.0;
/// How much work a fast lane holds claimed beyond its running attempts, in time at its current
/// pace: enough to keep its `max_in_flight` busy across a claim's round trip through the single
/// writer, which waits behind the group commit being synced (a few ms, tens under load).
const AHEAD_WINDOW_MS: f64 = 50.0;
/// The most claims one lane holds, whatever its pace: its queue drains in well under a second
/// at the pace that earns it, far inside the lease, and its events' memory stays small.
const MAX_AHEAD: u32 = 512;

/// Starts the dispatcher; it stops claiming when `stop` is cancelled and returns once the
/// deliveries in flight have settled.
pub fn spawn(state: AppState, stop: CancellationToken) -> JoinHandle<()> {
    tokio::spawn(run(state, stop))
}

/// How long a claim holds before it is extended. An attempt may last longer (a plugin's
/// deadline can exceed the delivery timeout): the lease is extended while it runs, so a
/// delivery is never started again while an attempt is in flight.
fn lease(state: &AppState) -> Duration {
    state.config.delivery_timeout + Duration::from_secs(5)
}

fn breaker_policy(state: &AppState) -> Policy {
    Policy {
        threshold: state.config.circuit_breaker_threshold,
        cooldown: state.config.circuit_breaker_cooldown,
        max_cooldown: state.config.circuit_breaker_max_cooldown,
    }
}

/// What an attempt's task reports back to the dispatcher loop once its outcome is queued for
/// the store (sent on drop, so a task that fails or panics still gives its lane's slot back).
struct Finished {
    subscription_seq: i64,
    /// An attempt was made (not only put off by a rate limit, nor lost to an error).
    attempted: bool,
    duration_ms: f64,
    healthy: bool,
}

/// What attempts' tasks tell the dispatcher loop.
enum Report {
    /// An attempt's lane slot is free.
    Finished(Finished),
    /// Applying an outcome opened (or kept open) the subscription's circuit breaker: its
    /// queued claims go back, due when the pause ends.
    Paused { subscription_seq: i64, until: i64 },
}

struct FinishGuard {
    tx: mpsc::UnboundedSender<Report>,
    report: Option<Finished>,
}

impl FinishGuard {
    /// Reports an attempt that was made and whose outcome is queued.
    fn send(&mut self, duration_ms: f64, healthy: bool) {
        if let Some(mut f) = self.report.take() {
            (f.attempted, f.duration_ms, f.healthy) = (true, duration_ms, healthy);
            let _ = self.tx.send(Report::Finished(f));
        }
    }

    /// Reports that the subscription's breaker is open until `until`.
    fn paused(&self, subscription_seq: i64, until: i64) {
        let _ = self.tx.send(Report::Paused {
            subscription_seq,
            until,
        });
    }
}

impl Drop for FinishGuard {
    fn drop(&mut self) {
        if let Some(f) = self.report.take() {
            let _ = self.tx.send(Report::Finished(f));
        }
    }
}

/// A claimed delivery and this node's configuration epoch when it was claimed: its
/// subscription is read again before the attempt when the epoch moved since (see [`current`]).
struct Work {
    claimed: Claimed,
    epoch: u64,
}

impl std::ops::Deref for Work {
    type Target = Claimed;

    fn deref(&self) -> &Claimed {
        &self.claimed
    }
}

/// One subscription's claimed deliveries waiting to start and its attempts running: at most
/// `cap` (its `max_in_flight`) run at once, whatever was claimed.
struct Lane {
    cap: usize,
    running: usize,
    queue: VecDeque<Work>,
    /// In the ready ring (has queued work and may start some).
    ready: bool,
    /// Moving average of its attempts' durations, once one finished.
    typical_ms: Option<f64>,
    /// Its last attempt said nothing bad about the endpoint.
    healthy: bool,
}

impl Lane {
    /// How many claims this lane may hold in all when its endpoint is fast and healthy: its
    /// cap, plus what its attempts get through in [`AHEAD_WINDOW_MS`] at their moving average.
    fn allowance(&self) -> Option<u32> {
        let typical = self
            .typical_ms
            .filter(|t| self.healthy && *t < FAST_ATTEMPT_MS)?;
        let cap = self.cap as f64;
        let ahead = cap * AHEAD_WINDOW_MS / typical.max(0.01);
        Some((cap + ahead).min(MAX_AHEAD as f64).max(cap) as u32)
    }
}

/// The dispatcher's memory of claimed work, by subscription, and the ring in which lanes with
/// startable work take turns for the global slots.
#[derive(Default)]
struct Lanes {
    by_sub: HashMap<i64, Lane>,
    ring: VecDeque<i64>,
    queued: usize,
}

impl Lanes {
    fn add(&mut self, work: Work, default_cap: u32) {
        let sub = work.subscription.seq;
        let cap = work
            .subscription
            .max_in_flight
            .unwrap_or(default_cap)
            .max(1) as usize;
        let lane = self.by_sub.entry(sub).or_insert_with(|| Lane {
            cap,
            running: 0,
            queue: VecDeque::new(),
            ready: false,
            typical_ms: None,
            healthy: false,
        });
        lane.cap = cap;
        lane.queue.push_back(work);
        self.queued += 1;
        if !lane.ready && lane.running < lane.cap {
            lane.ready = true;
            self.ring.push_back(sub);
        }
    }

    /// The next delivery to start, taking lanes in turn; none when every lane with queued
    /// work is at its cap.
    fn next(&mut self) -> Option<Work> {
        while let Some(sub) = self.ring.pop_front() {
            let Some(lane) = self.by_sub.get_mut(&sub) else {
                continue;
            };
            lane.ready = false;
            if lane.running >= lane.cap {
                continue;
            }
            let Some(work) = lane.queue.pop_front() else {
                continue;
            };
            lane.running += 1;
            self.queued -= 1;
            if !lane.queue.is_empty() && lane.running < lane.cap {
                lane.ready = true;
                self.ring.push_back(sub);
            }
            return Some(work);
        }
        None
    }

    /// Records a finished attempt.
    fn finished(&mut self, f: &Finished) {
        let Some(lane) = self.by_sub.get_mut(&f.subscription_seq) else {
            return;
        };
        lane.running = lane.running.saturating_sub(1);
        if f.attempted {
            lane.typical_ms = Some(match lane.typical_ms {
                Some(t) => 0.8 * t + 0.2 * f.duration_ms,
                None => f.duration_ms,
            });
            lane.healthy = f.healthy;
        }
        if !lane.ready && !lane.queue.is_empty() && lane.running < lane.cap {
            lane.ready = true;
            self.ring.push_back(f.subscription_seq);
        }
        if lane.running == 0 && lane.queue.is_empty() && self.by_sub.len() > 4096 {
            self.by_sub.remove(&f.subscription_seq);
        }
    }

    /// Takes a lane's queued claims, to give back while its circuit breaker is open.
    fn paused(&mut self, subscription_seq: i64) -> Vec<Work> {
        let Some(lane) = self.by_sub.get_mut(&subscription_seq) else {
            return Vec::new();
        };
        self.queued -= lane.queue.len();
        lane.queue.drain(..).collect()
    }

    /// Subscriptions allowed to claim ahead (fast, healthy endpoints) and how many claims each
    /// may hold in all, sorted by subscription.
    fn claim_ahead(&self) -> Vec<(i64, u32)> {
        let mut subs: Vec<(i64, u32)> = self
            .by_sub
            .iter()
            .filter_map(|(sub, l)| l.allowance().map(|a| (*sub, a)))
            .collect();
        subs.sort_unstable();
        subs
    }

    /// Claims wanted to fill the lanes' queues up to their caps (what the global room bounds).
    fn queued_within_caps(&self) -> usize {
        self.by_sub.values().map(|l| l.queue.len().min(l.cap)).sum()
    }

    /// Claims the fast lanes may still take ahead of their caps.
    fn ahead_room(&self) -> usize {
        self.by_sub
            .values()
            .filter_map(|l| {
                let held = l.running + l.queue.len();
                l.allowance()
                    .map(|a| (a as usize).saturating_sub(held.max(l.cap)))
            })
            .sum()
    }

    fn queued_claims(&self) -> Vec<(i64, i64)> {
        self.by_sub
            .values()
            .flat_map(|l| l.queue.iter().map(|w| (w.delivery.seq, w.token)))
            .collect()
    }

    /// Forgets queued claims whose lease could not be extended (claimed again elsewhere).
    fn drop_lost(&mut self, lost: &[i64]) {
        for lane in self.by_sub.values_mut() {
            let before = lane.queue.len();
            lane.queue.retain(|w| !lost.contains(&w.delivery.seq));
            self.queued -= before - lane.queue.len();
        }
    }

    fn drain(&mut self) -> Vec<Work> {
        self.ring.clear();
        self.queued = 0;
        self.by_sub
            .values_mut()
            .flat_map(|l| l.queue.drain(..))
            .collect()
    }
}

/// Gives back claims that will not be attempted now, due again at `due_at`.
fn release(state: &AppState, claims: Vec<Work>, due_at: i64) {
    if claims.is_empty() {
        return;
    }
    let claims: Vec<(i64, i64)> = claims.iter().map(|w| (w.delivery.seq, w.token)).collect();
    let state = state.clone();
    tokio::spawn(async move {
        if let Err(e) = state.store.release_claims(claims, due_at).await {
            tracing::error!(error = %e, "giving back claims failed");
        }
        state.wake_dispatcher();
    });
}

async fn run(state: AppState, stop: CancellationToken) {
    let concurrency = state.config.delivery_concurrency.max(1);
    let slots = Arc::new(Semaphore::new(concurrency));
    let limiter = Arc::new(RateLimiter::default());
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Report>();
    let mut lanes = Lanes::default();
    let lease = lease(&state);
    let mut heartbeat =
        tokio::time::interval_at(tokio::time::Instant::now() + lease / 3, lease / 3);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut cursor = 0;
    let mut claim = true;
    let mut claiming: Option<JoinHandle<Result<Claims, StoreError>>> = None;
    // The configuration epoch before the running claim read its subscriptions.
    let mut claim_epoch = 0;
    let mut wait = Duration::ZERO;
    while !stop.is_cancelled() {
        // Start what may start: lanes take turns for the free slots.
        while slots.available_permits() > 0 {
            let Some(work) = lanes.next() else { break };
            let permit = slots
                .clone()
                .try_acquire_owned()
                .expect("a permit is available");
            let finished = FinishGuard {
                tx: done_tx.clone(),
                report: Some(Finished {
                    subscription_seq: work.subscription.seq,
                    attempted: false,
                    duration_ms: 0.0,
                    healthy: false,
                }),
            };
            let (state, limiter) = (state.clone(), limiter.clone());
            tokio::spawn(async move { settle_one(&state, &limiter, work, permit, finished).await });
        }
        // Claim more while there is room: at most twice the concurrency claimed within caps, so
        // that a slot that frees up finds its next delivery already claimed, plus what fast
        // lanes may hold ahead. One claim at a time, run beside this loop: attempts keep
        // starting and finishing while the writer applies it.
        let running = concurrency - slots.available_permits();
        let room = (2 * concurrency).saturating_sub(running + lanes.queued_within_caps());
        let ahead_room = lanes.ahead_room().min(MAX_CLAIM);
        if claim && claiming.is_none() && (room > 0 || ahead_room > 0) {
            claim = false;
            let request = ClaimRequest {
                now: now_ms(),
                lease_ms: lease.as_millis() as i64,
                limit: room.min(MAX_CLAIM),
                ahead_limit: ahead_room,
                default_max_in_flight: state.config.subscription_max_in_flight,
                after_subscription: cursor,
                claim_ahead: lanes.claim_ahead(),
            };
            claim_epoch = state.store.config_changes().epoch();
            let state = state.clone();
            claiming = Some(tokio::spawn(
                async move { state.store.claim_due(request).await },
            ));
        }
        // Wait for a finished attempt, new work, the next retry, lease expiry or breaker
        // probe (polling at least every second as a backstop), or the heartbeat that keeps
        // the leases of queued claims.
        tokio::select! {
            _ = stop.cancelled() => break,
            taken = async { claiming.as_mut().expect("a claim is running").await },
                if claiming.is_some() =>
            {
                claiming = None;
                match taken.map_err(|e| e.to_string()) {
                    Ok(Ok(claims)) => {
                        cursor = claims.cursor;
                        claim |= claims.more;
                        wait = claims.next_due.map_or(IDLE_POLL, |due| {
                            let ms = (due - now_ms()).clamp(0, IDLE_POLL.as_millis() as i64);
                            Duration::from_millis(ms as u64)
                        });
                        for claimed in claims.claimed {
                            let work = Work { claimed, epoch: claim_epoch };
                            lanes.add(work, state.config.subscription_max_in_flight);
                        }
                    }
                    Ok(Err(e)) => {
                        tracing::error!(error = %e, "claiming deliveries failed");
                        wait = IDLE_POLL;
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "the claim task failed");
                        wait = IDLE_POLL;
                    }
                }
            }
            Some(report) = done_rx.recv() => {
                match report {
                    Report::Finished(f) => lanes.finished(&f),
                    Report::Paused { subscription_seq, until } => {
                        release(&state, lanes.paused(subscription_seq), until);
                    }
                }
                claim = true;
            }
            _ = state.dispatcher_wake.notified() => claim = true,
            _ = tokio::time::sleep(wait), if claiming.is_none() => claim = true,
            _ = heartbeat.tick() => {
                let queued = lanes.queued_claims();
                if !queued.is_empty() {
                    let until = now_ms() + lease.as_millis() as i64;
                    match state.store.extend_leases(queued.clone(), until).await {
                        Ok(kept) => {
                            let lost: Vec<i64> = queued
                                .iter()
                                .zip(kept)
                                .filter(|(_, kept)| !kept)
                                .map(|((seq, _), _)| *seq)
                                .collect();
                            lanes.drop_lost(&lost);
                        }
                        Err(e) => tracing::error!(error = %e, "extending queued claims failed"),
                    }
                }
            }
        }
    }
    // Queued claims, and those of a claim still running, are given back at once (a restart need
    // not wait out their lease); attempts in flight finish and record their outcome, and any
    // cut short keep their lease and are attempted again after a restart.
    if let Some(Ok(Ok(claims))) = match claiming {
        Some(task) => Some(task.await),
        None => None,
    } {
        for claimed in claims.claimed {
            let work = Work {
                claimed,
                epoch: claim_epoch,
            };
            lanes.add(work, state.config.subscription_max_in_flight);
        }
    }
    let queued: Vec<(i64, i64)> = lanes
        .drain()
        .iter()
        .map(|w| (w.delivery.seq, w.token))
        .collect();
    if !queued.is_empty()
        && let Err(e) = state.store.release_claims(queued, now_ms()).await
    {
        tracing::warn!(error = %e, "giving back queued claims on shutdown failed");
    }
    let grace = state.config.delivery_timeout + Duration::from_secs(1);
    let _ = tokio::time::timeout(grace, slots.acquire_many(concurrency as u32)).await;
}

/// Makes one attempt and records it; `permit` is the delivery slot it holds, given back as
/// soon as the outcome is queued for the store.
async fn settle_one(
    state: &AppState,
    limiter: &RateLimiter,
    work: Work,
    permit: OwnedSemaphorePermit,
    finished: FinishGuard,
) {
    // Dropping `finished` gives the lane's slot back without counting an attempt.
    let Some(work) = current(state, work).await else {
        return;
    };
    let work = work.claimed;
    let now = now_ms();
    if let Some(rate) = work.subscription.rate_limit_per_second
        && let Some(slot) = limiter.admit(work.subscription.seq, work.delivery.seq, rate, now)
    {
        let put_off = Outcome {
            delivery_seq: work.delivery.seq,
            token: work.token,
            attempt: None,
            status: DeliveryStatus::Pending,
            next_attempt_at: Some(slot),
            last_error: None,
            breaker: None,
        };
        if let Err(e) = state.store.record_outcome(put_off, now).await {
            tracing::error!(error = %e, "deferring a rate-limited delivery failed");
        }
        // Dropping `finished` gives the lane's slot back without counting an attempt.
        drop(permit);
        return;
    }
    let (timed, permit) = attempt_holding_lease(state, &work, permit).await;
    record(state, &work, timed, permit, finished).await;
}

/// The claimed delivery with its subscription as it is now, when configuration changed since it
/// was claimed (through this node or, on a shared database, another: see `store::changes`): a
/// rotated secret, a new URL or headers, a disabled or deleted subscription take effect for
/// deliveries already claimed, so none is signed or sent under settings replaced more than the
/// epoch's delay ago. `None` when it is not to be attempted now: given back (its subscription no
/// longer active, or unreadable) or gone with its subscription.
async fn current(state: &AppState, mut work: Work) -> Option<Work> {
    let epoch = state.store.config_changes().epoch();
    if work.epoch == epoch {
        return Some(work);
    }
    let sub = &work.subscription;
    let read = state
        .store
        .get_subscription(sub.account_id.clone(), sub.id.clone())
        .await;
    match read {
        Ok(sub) if sub.status == SubscriptionStatus::Active => {
            work.claimed.subscription = sub;
            work.epoch = epoch;
            Some(work)
        }
        // Paused or disabled: given back, the claim skips it while it stays so.
        Ok(_) => {
            release(state, vec![work], now_ms());
            None
        }
        // Deleted, with its deliveries.
        Err(StoreError::NotFound) => None,
        Err(e) => {
            tracing::warn!(error = %e, delivery = %work.delivery.id, "reading a changed subscription failed; the delivery waits");
            release(state, vec![work], now_ms() + IDLE_POLL.as_millis() as i64);
            None
        }
    }
}

/// An attempt's outcome and the request it sent, when it started and how long it took.
struct Timed {
    started_at: i64,
    duration_ms: i64,
    outcome: AttemptOutcome,
    request: Option<AttemptRequest>,
}

/// Reserves the memory of the plugin the attempt runs, if any. When the budget has no room,
/// the delivery slot is given back while waiting (`permit` becomes `None`): waiting instances
/// must not hold the slots other subscriptions' deliveries need. The claim stays leased, so
/// the subscription's own `max_in_flight` still bounds how many of its deliveries wait.
async fn reserve_memory(
    state: &AppState,
    work: &Claimed,
    permit: &mut Option<OwnedSemaphorePermit>,
) -> Option<Reservation> {
    let plugin_id = plugin_of(&work.subscription)?;
    let bytes = state
        .plugins
        .memory_needed(plugin_id, &work.subscription.id)?;
    if let Some(reserved) = state.plugins.memory.try_reserve(bytes) {
        return Some(reserved);
    }
    if permit.take().is_some() {
        state.wake_dispatcher();
    }
    Some(state.plugins.memory.reserve(bytes).await)
}

/// Waits while the plugin the attempt runs has no version that runs yet but one compiling:
/// its event is not failed, no attempt is counted and no breaker hears of it. As while waiting
/// for memory, the delivery slot is given back meanwhile and the claim stays leased.
async fn wait_for_compile(
    state: &AppState,
    work: &Claimed,
    permit: &mut Option<OwnedSemaphorePermit>,
) {
    let Some(plugin_id) = plugin_of(&work.subscription) else {
        return;
    };
    // Created through another node a moment ago: this node may not have heard of it yet.
    state.plugins.ensure_known(&state.store, plugin_id).await;
    if !state.plugins.registry.is_compiling(plugin_id) {
        return;
    }
    if permit.take().is_some() {
        state.wake_dispatcher();
    }
    state.plugins.registry.compiled(plugin_id).await;
}

/// Makes the attempt (after reserving its plugin's memory), extending the claim's lease
/// while it waits and runs. Returns the delivery slot if it was kept.
async fn attempt_holding_lease(
    state: &AppState,
    work: &Claimed,
    permit: OwnedSemaphorePermit,
) -> (Timed, Option<OwnedSemaphorePermit>) {
    let lease = lease(state);
    let every = lease / 3;
    let mut permit = Some(permit);
    let attempt = async {
        wait_for_compile(state, work, &mut permit).await;
        let memory = reserve_memory(state, work, &mut permit).await;
        let started_at = now_ms();
        let started = std::time::Instant::now();
        let (outcome, request) = deliver(state, work, memory).await;
        Timed {
            started_at,
            duration_ms: started.elapsed().as_millis() as i64,
            outcome,
            request,
        }
    };
    let timed = hold_lease(state, work, lease, every, attempt).await;
    (timed, permit)
}

/// Runs `attempt`, extending the claim's lease every `every` until it is done.
async fn hold_lease<T>(
    state: &AppState,
    work: &Claimed,
    lease: Duration,
    every: Duration,
    attempt: impl Future<Output = T>,
) -> T {
    tokio::pin!(attempt);
    let mut beat = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    loop {
        tokio::select! {
            outcome = &mut attempt => return outcome,
            _ = beat.tick() => {
                let until = now_ms() + lease.as_millis() as i64;
                match state.store.extend_lease(work.delivery.seq, work.token, until).await {
                    Ok(true) => {}
                    // Its outcome will not be recorded; the current owner's will.
                    Ok(false) => tracing::warn!(delivery = %work.delivery.id, "lease lost during an attempt"),
                    Err(e) => tracing::error!(error = %e, delivery = %work.delivery.id, "extending a lease failed"),
                }
            }
        }
    }
}

/// What an attempt at a URL says about the endpoint's health, if anything: a plugin's failure
/// or a refused address says nothing about it.
fn breaker_signal(sub: &Subscription, outcome: &AttemptOutcome) -> Option<Signal> {
    sub.url.as_ref()?;
    match &outcome.verdict {
        Verdict::Delivered => Some(Signal::Healthy),
        Verdict::Filtered(_) => None,
        Verdict::Failed { kind, .. } => match kind.as_str() {
            "timeout" | "connect" | "dns" | "tls" => Some(Signal::Failing),
            "http_status" if outcome.status_code.is_some_and(|c| c >= 500) => Some(Signal::Failing),
            "http_status" => Some(Signal::Healthy),
            _ => None,
        },
    }
}

async fn record(
    state: &AppState,
    work: &Claimed,
    timed: Timed,
    permit: Option<OwnedSemaphorePermit>,
    mut finished: FinishGuard,
) {
    let Timed {
        started_at,
        duration_ms,
        outcome,
        request,
    } = timed;
    let attempts = work.delivery.attempts + 1;
    let breaker = breaker_signal(&work.subscription, &outcome).map(|s| (breaker_policy(state), s));
    let healthy = !matches!(outcome.verdict, Verdict::Failed { .. });
    let mut attempt = Attempt {
        attempted_at: started_at,
        duration_ms,
        status_code: outcome.status_code,
        error_kind: None,
        error_message: None,
        response_body: outcome.response_body,
        request,
    };
    let mut disable: Option<String> = None;
    let (status, next_attempt_at, last_error, label) = match outcome.verdict {
        Verdict::Delivered => {
            let latency = (now_ms() - work.event.received_at).max(0) as f64 / 1000.0;
            state.metrics.ingest_to_delivery.observe(latency);
            (DeliveryStatus::Succeeded, None, None, "succeeded")
        }
        Verdict::Filtered(reason) => (DeliveryStatus::Filtered, None, Some(reason), "filtered"),
        Verdict::Failed {
            kind,
            message,
            retryable,
            retry_after,
            gone,
        } => {
            attempt.error_kind = Some(kind);
            attempt.error_message = Some(message.clone());
            if gone {
                disable = Some("the endpoint answered 410 Gone".into());
            }
            let delay = if retryable && !gone {
                let jitter = rand::rng().random_range(-1.0..=1.0);
                next_delay(
                    &state.config.retry_schedule.0,
                    attempts,
                    jitter,
                    retry_after,
                )
            } else {
                None
            };
            match delay {
                Some(d) => (
                    DeliveryStatus::Pending,
                    Some(now_ms() + d.as_millis() as i64),
                    Some(message),
                    "retrying",
                ),
                None => (DeliveryStatus::Failed, None, Some(message), "failed"),
            }
        }
    };
    // Kept for the live feed, only when someone watches this account.
    let account = &work.subscription.account_id;
    let settled = state.live.is_listened_to(account).then(|| AttemptSettled {
        delivery_id: work.delivery.id.clone(),
        event_id: work.event.id.clone(),
        event_type: work.event.event_type.clone(),
        subscription_id: work.subscription.id.clone(),
        attempt: attempts,
        status,
        outcome: label.to_string(),
        status_code: attempt.status_code,
        error_kind: attempt.error_kind.clone(),
        error_message: attempt.error_message.clone(),
        duration_ms,
        attempted_at: started_at,
        next_attempt_at,
    });
    let outcome = Outcome {
        delivery_seq: work.delivery.seq,
        token: work.token,
        attempt: Some(attempt),
        status,
        next_attempt_at,
        last_error,
        breaker,
    };
    let mut queued = match state.store.queue_outcome(outcome, now_ms()).await {
        Ok(queued) => queued,
        Err(e) => {
            tracing::error!(error = %e, delivery = %work.delivery.id, "recording an attempt failed");
            return;
        }
    };
    // Claims queued from now on are applied after this outcome: the attempt's slots (and the
    // next delivery of an ordered conversation) are free now, not once the writer has applied
    // it, nor once the disk has it. A lane that is failing may start a few more attempts before
    // its breaker's pause is known; they are recorded like any other.
    drop(permit);
    finished.send(duration_ms as f64, healthy);
    let applied = queued.applied().await;
    if let Ok(Settled::Recorded {
        paused_until: Some(until),
        ..
    }) = applied
    {
        finished.paused(work.subscription.seq, until);
    }
    let recorded = match queued.committed().await {
        Ok(()) => applied,
        Err(e) => Err(e),
    };
    let failing_since = match recorded {
        Ok(Settled::Recorded { failing_since, .. }) => {
            state.metrics.delivery(label);
            if let Some(settled) = settled {
                let sub = &work.subscription;
                let plugins = [&sub.plugin_id, &sub.transform_plugin_id];
                let plugins = plugins.into_iter().flatten().cloned().collect();
                state.live.attempt(account, &settled, plugins);
            }
            failing_since
        }
        Ok(Settled::LeaseLost) => {
            tracing::warn!(delivery = %work.delivery.id, "attempt finished after its lease was lost; its outcome is not recorded");
            state.metrics.delivery("lease_lost");
            return;
        }
        Err(e) => {
            tracing::error!(error = %e, delivery = %work.delivery.id, "recording an attempt failed");
            return;
        }
    };
    let window = state.config.disable_after.as_millis() as i64;
    if disable.is_none() && failing_since.is_some_and(|since| now_ms() - since >= window) {
        disable = Some(format!(
            "every delivery failed for {}",
            humantime::format_duration(state.config.disable_after)
        ));
    }
    if let Some(reason) = disable {
        disable_subscription(state, &work.subscription, reason).await;
    }
}

/// Disables a subscription and records `subscription:disabled` for its account.
async fn disable_subscription(state: &AppState, sub: &Subscription, reason: String) {
    let now = now_ms();
    let event_reason = reason.clone();
    let build = move |sub: &Subscription| {
        let payload = json!({
            "subscription_id": sub.id,
            "url": sub.url,
            "reason": event_reason,
            "disabled_at": rfc3339(now),
        });
        NewEvent {
            id: new_id("evt"),
            account_id: sub.account_id.clone(),
            event_type: "subscription:disabled".into(),
            payload: RawValue::from_string(payload.to_string())
                .expect("serde_json output is valid JSON"),
            occurred_at: rfc3339(now),
            received_at: now,
            idempotency_key: None,
            body_hash: [0; 32],
            causation: None,
            conversation: None,
        }
    };
    match state
        .store
        .disable_subscription(sub.seq, reason.clone(), build, now)
        .await
    {
        Ok(Some(event)) => {
            tracing::warn!(subscription = %sub.id, %reason, "subscription disabled");
            state.live.event(&sub.account_id, &event);
            state.metrics.events_ingested.inc();
            state.wake_dispatcher();
        }
        Ok(None) => {}
        Err(e) => {
            tracing::error!(error = %e, subscription = %sub.id, "disabling a subscription failed")
        }
    }
}
