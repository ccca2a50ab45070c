//! The dispatcher: claims due deliveries under the store's scheduling rules (fair rotation,
//! per-subscription `max_in_flight`, circuit breakers, conversation order: see
//! `store::claims`), runs at most `--delivery-concurrency` at once, holds each claim's lease
//! while its attempt runs, and settles each outcome.
//!
//! It is woken by the ingest path when new deliveries are due now and by every settled
//! attempt (which frees a subscription's slot), and otherwise sleeps until the next retry,
//! lease expiry or breaker probe (capped at one second, so work written by other paths is
//! never waited on for long).

use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use serde_json::json;
use serde_json::value::RawValue;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::ratelimit::RateLimiter;
use super::schedule::next_delay;
use super::subscriber::{deliver, plugin_of};
use super::{AttemptOutcome, Verdict};
use crate::breaker::{Policy, Signal};
use crate::clock::{new_id, now_ms, rfc3339};
use crate::live::AttemptSettled;
use crate::model::{Attempt, AttemptRequest, DeliveryStatus, Subscription};
use crate::plugins::budget::Reservation;
use crate::state::AppState;
use crate::store::claims::{ClaimRequest, Claimed, Outcome, Settled};
use crate::store::events::NewEvent;

const MAX_CLAIM: usize = 256;
const IDLE_POLL: Duration = Duration::from_secs(1);

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

async fn run(state: AppState, stop: CancellationToken) {
    let concurrency = state.config.delivery_concurrency.max(1);
    let slots = Arc::new(Semaphore::new(concurrency));
    let limiter = Arc::new(RateLimiter::default());
    let mut cursor = 0;
    while !stop.is_cancelled() {
        let free = slots.available_permits();
        if free == 0 {
            tokio::select! {
                _ = stop.cancelled() => break,
                permit = slots.clone().acquire_owned() => drop(permit),
            }
            continue;
        }
        let now = now_ms();
        let request = ClaimRequest {
            now,
            lease_ms: lease(&state).as_millis() as i64,
            limit: free.min(MAX_CLAIM),
            default_max_in_flight: state.config.subscription_max_in_flight,
            after_subscription: cursor,
        };
        let claims = match state.store.claim_due(request).await {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "claiming deliveries failed");
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep(IDLE_POLL) => continue,
                }
            }
        };
        cursor = claims.cursor;
        for work in claims.claimed {
            let permit = slots
                .clone()
                .acquire_owned()
                .await
                .expect("the semaphore is never closed");
            let state = state.clone();
            let limiter = limiter.clone();
            tokio::spawn(async move { settle_one(&state, &limiter, work, permit).await });
        }
        if claims.more {
            continue;
        }
        // Nothing more is claimable now: wait for new work, a settled attempt, or the next
        // retry, lease expiry or breaker probe (polling at least every second as a backstop).
        let wait = claims.next_due.map_or(IDLE_POLL, |due| {
            Duration::from_millis((due - now_ms()).clamp(0, IDLE_POLL.as_millis() as i64) as u64)
        });
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = state.dispatcher_wake.notified() => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }
    // Let attempts in flight finish and record their outcome; any cut short keep their lease
    // and are attempted again after a restart.
    let grace = state.config.delivery_timeout + Duration::from_secs(1);
    let _ = tokio::time::timeout(grace, slots.acquire_many(concurrency as u32)).await;
}

/// Makes one attempt and records it; `permit` is the delivery slot it holds, given back as
/// soon as the outcome is queued for the store.
async fn settle_one(
    state: &AppState,
    limiter: &RateLimiter,
    work: Claimed,
    permit: OwnedSemaphorePermit,
) {
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
        drop(permit);
        state.wake_dispatcher();
        return;
    }
    let (timed, permit) = attempt_holding_lease(state, &work, permit).await;
    record(state, &work, timed, permit).await;
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
    let bytes = state.plugins.memory_needed(plugin_id)?;
    if let Some(reserved) = state.plugins.memory.try_reserve(bytes) {
        return Some(reserved);
    }
    if permit.take().is_some() {
        state.wake_dispatcher();
    }
    Some(state.plugins.memory.reserve(bytes).await)
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
) {
    let Timed {
        started_at,
        duration_ms,
        outcome,
        request,
    } = timed;
    let attempts = work.delivery.attempts + 1;
    let breaker = breaker_signal(&work.subscription, &outcome).map(|s| (breaker_policy(state), s));
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
    let committed = match state.store.queue_outcome(outcome, now_ms()).await {
        Ok(committed) => committed,
        Err(e) => {
            tracing::error!(error = %e, delivery = %work.delivery.id, "recording an attempt failed");
            return;
        }
    };
    // Claims queued from now on see this outcome: the subscription's slot (and the next
    // delivery of an ordered conversation) is free now, not once the disk has it.
    drop(permit);
    state.wake_dispatcher();
    let failing_since = match committed.await {
        Ok(Settled::Recorded { failing_since }) => {
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
