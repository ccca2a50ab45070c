//! The claim rules of the outbox: which due deliveries a dispatcher may take now, the lease and
//! token it takes them with, and how an outcome is written back.
//!
//! - **Fair**: subscriptions with due work are visited in rotation from a cursor the dispatcher
//!   keeps, and each gets at most its `max_in_flight` attempts at once, so one slow endpoint
//!   holds only its own slots.
//! - **Circuit breaker**: a tripped subscription is skipped until its pause ends, then allowed
//!   a single probe.
//! - **Ordered**: an ordered subscription's later deliveries of one conversation are *held*
//!   (pending with no due time) until the earlier one leaves `pending`; only the head of each
//!   conversation is ever due, so the claim itself needs no ordering logic.
//! - **Fenced**: a claim moves `next_attempt_at` to the end of its lease and stamps a token; an
//!   outcome or a lease extension counts only with the token of the current claim, so a worker
//!   that lost its lease (paused past it) cannot overwrite the new owner's result.

use std::collections::HashMap;

use rusqlite::{Transaction, params};

use super::writer::Rollback;
use super::{Applied, OptionalRow, SqliteStore, StoreError};
use crate::breaker::Breaker;
use crate::model::{Delivery, DeliveryStatus, Event, Subscription};
use crate::store::{ClaimRequest, Claimed, Claims, Outcome, Settled};

/// Subscriptions looked at per claim at most; the rotation continues from there next time.
const MAX_SCAN: usize = 512;

// The claim runs on every freed slot over a table of millions of settled rows: each query names
// the partial index it must use (SQLite's planner would otherwise prefer an index that matches
// the GROUP BY or the equality and walk settled rows). `claim_queries_use_their_indexes`
// checks the plans.
const IN_FLIGHT: &str =
    "SELECT subscription_seq, COUNT(*) FROM deliveries INDEXED BY deliveries_leased
     WHERE lease_until > ?1 GROUP BY subscription_seq";
const NEXT_SUBSCRIPTION_WITH_PENDING: &str = "SELECT MIN(subscription_seq)
     FROM deliveries INDEXED BY deliveries_subscription_due
     WHERE status = 'pending' AND subscription_seq > ?1";
const SCHEDULING_OF: &str =
    "SELECT status, max_in_flight, breaker_until FROM subscriptions WHERE seq = ?1";
const DUE_OF: &str = "SELECT seq FROM deliveries INDEXED BY deliveries_subscription_due
     WHERE status = 'pending' AND subscription_seq = ?1 AND next_attempt_at <= ?2
     ORDER BY next_attempt_at, seq LIMIT ?3";
const NEXT_DUE_AFTER: &str = "SELECT MIN(next_attempt_at) FROM deliveries INDEXED BY deliveries_due
     WHERE status = 'pending' AND next_attempt_at > ?1";
const TAKE: &str = "UPDATE deliveries SET next_attempt_at = ?2, lease_until = ?2, claim_token = ?3
     WHERE seq = ?1
     RETURNING id, event_seq, subscription_seq, attempts, last_error, created_at, updated_at";
const EXTEND: &str = "UPDATE deliveries SET next_attempt_at = ?3, lease_until = ?3
     WHERE seq = ?1 AND claim_token = ?2 AND status = 'pending'";
const RELEASE: &str =
    "UPDATE deliveries SET next_attempt_at = ?3, lease_until = NULL, claim_token = NULL
     WHERE seq = ?1 AND claim_token = ?2 AND status = 'pending'";
const SETTLE: &str = "UPDATE deliveries SET status = ?3, next_attempt_at = ?4, lease_until = NULL, claim_token = NULL,
        last_error = COALESCE(?5, last_error), attempts = attempts + ?6, updated_at = ?7
     WHERE seq = ?1 AND claim_token = ?2 AND status = 'pending'
     RETURNING subscription_seq, ordering_key";
const INSERT_ATTEMPT: &str =
    "INSERT INTO attempts (delivery_seq, attempted_at, duration_ms, status_code, error_kind,
        error_message, response_body, request_url, request_headers, request_body, request_body_bytes)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)";
/// What an outcome may change on its subscription: the circuit breaker and the start of the
/// failure streak. Read first so that the row is written only when one of them changes: most
/// outcomes (a success after a success) change neither, and a written row costs the writer a
/// rewritten page, in the op's savepoint journal and in the group's WAL frames.
const HEALTH_OF: &str = "SELECT breaker_failures, breaker_trips, breaker_until, failing_since
     FROM subscriptions WHERE seq = ?1";
const SET_FAILING_SINCE: &str = "UPDATE subscriptions SET failing_since = ?2 WHERE seq = ?1";
const SET_BREAKER: &str =
    "UPDATE subscriptions SET breaker_failures = ?2, breaker_trips = ?3, breaker_until = ?4
     WHERE seq = ?1";
const HEAD_ACTIVE: &str = "SELECT EXISTS (SELECT 1 FROM deliveries INDEXED BY deliveries_ordering
     WHERE subscription_seq = ?1 AND ordering_key = ?2 AND status = 'pending' AND next_attempt_at IS NOT NULL)";
const RELEASE_HEAD: &str = "UPDATE deliveries SET next_attempt_at = ?3
     WHERE seq = (SELECT MIN(seq) FROM deliveries INDEXED BY deliveries_ordering
                  WHERE subscription_seq = ?1 AND ordering_key = ?2 AND status = 'pending')";

/// Makes the earliest pending delivery of `(subscription, key)` due at `now`, unless one of
/// them is already active (in flight or waiting for its retry).
pub(crate) fn release_next(
    tx: &Transaction<'_>,
    subscription_seq: i64,
    key: &str,
    now: i64,
) -> Result<(), StoreError> {
    let active: bool = tx
        .prepare_cached(HEAD_ACTIVE)?
        .query_row(params![subscription_seq, key], |r| r.get(0))?;
    if !active {
        tx.prepare_cached(RELEASE_HEAD)?
            .execute(params![subscription_seq, key, now])?;
    }
    Ok(())
}

/// Picks which deliveries to claim: per subscription in rotation, its due ones up to its free
/// slots; then interleaved so that every subscription gets one before any gets a second.
fn pick(tx: &Transaction<'_>, r: &ClaimRequest) -> Result<(Vec<i64>, Claims), StoreError> {
    let in_flight: HashMap<i64, u32> = tx
        .prepare_cached(IN_FLIGHT)?
        .query_map([r.now], |row| Ok((row.get(0)?, row.get(1)?)))?
        .collect::<Result<_, _>>()?;
    let mut next_sub = tx.prepare_cached(NEXT_SUBSCRIPTION_WITH_PENDING)?;
    let mut scheduling = tx.prepare_cached(SCHEDULING_OF)?;
    let mut due_of = tx.prepare_cached(DUE_OF)?;
    let mut out = Claims {
        cursor: r.after_subscription,
        ..Claims::default()
    };
    // Per subscription: its due deliveries, the first `within` of them inside its cap.
    let mut per_sub: Vec<(i64, Vec<i64>, usize)> = Vec::new();
    let (mut at, mut wrapped, mut scanned) = (r.after_subscription, false, 0);
    let mut scan_stopped_after = None;
    loop {
        let Some(sub) = next_sub.query_row([at], |row| row.get::<_, Option<i64>>(0))? else {
            if wrapped || r.after_subscription <= 0 {
                break;
            }
            (at, wrapped) = (0, true);
            continue;
        };
        if wrapped && sub > r.after_subscription {
            break;
        }
        if scanned == MAX_SCAN {
            scan_stopped_after = Some(at);
            break;
        }
        at = sub;
        scanned += 1;
        let (status, cap, breaker_until): (String, Option<u32>, Option<i64>) = scheduling
            .query_row([sub], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
            .found()?;
        if status != "active" {
            continue; // paused (disabled, or waiting for verification): nothing is dropped
        }
        let (cap, allowance) = match breaker_until {
            Some(until) if until > r.now => {
                out.next_due = Some(out.next_due.map_or(until, |d| d.min(until)));
                continue;
            }
            Some(_) => (1, 1), // half-open: one probe
            None => {
                let cap = cap.unwrap_or(r.default_max_in_flight);
                let ahead = r
                    .claim_ahead
                    .binary_search_by_key(&sub, |(s, _)| *s)
                    .map_or(cap, |i| r.claim_ahead[i].1);
                (cap, ahead.max(cap))
            }
        };
        let held = in_flight.get(&sub).copied().unwrap_or(0);
        let free = allowance.saturating_sub(held) as usize;
        if free == 0 {
            continue;
        }
        let within = cap.saturating_sub(held) as usize;
        let wanted = within.min(r.limit) + (free - within).min(r.ahead_limit);
        let due: Vec<i64> = due_of
            .query_map(params![sub, r.now, wanted as i64], |row| row.get(0))?
            .collect::<Result<_, _>>()?;
        if !due.is_empty() {
            per_sub.push((sub, due, within));
        }
    }
    // Round robin: every subscription's first due delivery, then every second one, ...; picks
    // inside a cap count against `limit`, picks ahead of one against `ahead_limit`.
    let mut picked = Vec::new();
    let mut last_served = None;
    let (mut taken_within, mut taken_ahead) = (0, 0);
    for round in 0.. {
        let mut any_left = false;
        for (sub, due, within) in &per_sub {
            let Some(seq) = due.get(round) else { continue };
            any_left = true;
            let taken = if round < *within {
                &mut taken_within
            } else {
                &mut taken_ahead
            };
            if *taken
                == if round < *within {
                    r.limit
                } else {
                    r.ahead_limit
                }
            {
                out.more = true;
                continue;
            }
            *taken += 1;
            picked.push(*seq);
            last_served = Some(*sub);
        }
        if !any_left {
            break;
        }
    }
    if let Some(stopped) = scan_stopped_after {
        out.more = true;
        out.cursor = stopped;
    } else if let Some(sub) = last_served {
        out.cursor = sub;
    }
    let later: Option<i64> = tx
        .prepare_cached(NEXT_DUE_AFTER)?
        .query_row([r.now], |row| row.get(0))?;
    out.next_due = match (out.next_due, later) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    Ok((picked, out))
}

impl SqliteStore {
    /// Claims due deliveries under the scheduling rules (see the module docs).
    ///
    /// Answers once the claim is applied, without waiting for its commit: every later write
    /// sees it, and if the commit fails the claim is simply lost (its outcome will not be
    /// recorded, as with an expired lease, and the delivery is claimed again).
    pub async fn claim_due(&self, r: ClaimRequest) -> Result<Claims, StoreError> {
        let keys = self.keys.clone();
        // Reading an event or a subscription may fail after some claims are taken (a secret
        // that no longer opens): rolled back alone.
        self.submit_applied(Rollback::Alone, move |tx| {
            let (picked, mut out) = pick(tx, &r)?;
            let lease_until = r.now + r.lease_ms;
            let token: i64 = rand::random::<i64>() & i64::MAX;
            let mut take = tx.prepare_cached(TAKE)?;
            // One event fans out to many subscriptions and one subscription gets many events:
            // read each once per claim.
            let mut events: HashMap<i64, Event> = HashMap::new();
            let mut subscriptions: HashMap<i64, Subscription> = HashMap::new();
            for seq in picked {
                let (mut delivery, event_seq, sub_seq) = take
                    .query_row(params![seq, lease_until, token], |row| {
                        Ok((
                            Delivery {
                                seq,
                                id: row.get(0)?,
                                event_id: String::new(),
                                subscription_id: String::new(),
                                status: DeliveryStatus::Pending,
                                attempts: row.get(3)?,
                                next_attempt_at: Some(lease_until),
                                last_error: row.get(4)?,
                                created_at: row.get(5)?,
                                updated_at: row.get(6)?,
                            },
                            row.get::<_, i64>(1)?,
                            row.get::<_, i64>(2)?,
                        ))
                    })
                    .found()?;
                let event = match events.get(&event_seq) {
                    Some(e) => e.clone(),
                    None => events
                        .entry(event_seq)
                        .or_insert(super::events::get_by_seq(tx, event_seq)?)
                        .clone(),
                };
                let subscription = match subscriptions.get(&sub_seq) {
                    Some(s) => s.clone(),
                    None => subscriptions
                        .entry(sub_seq)
                        .or_insert(super::subscriptions::get_by_seq(tx, &keys, sub_seq)?)
                        .clone(),
                };
                delivery.event_id = event.id.clone();
                delivery.subscription_id = subscription.id.clone();
                out.claimed.push(Claimed {
                    delivery,
                    event,
                    subscription,
                    token,
                });
            }
            Ok(out)
        })
        .await?
        .applied()
        .await
    }

    /// Extends a claim's lease to `until`; false when the claim is no longer current.
    pub async fn extend_lease(
        &self,
        delivery_seq: i64,
        token: i64,
        until: i64,
    ) -> Result<bool, StoreError> {
        self.write(move |tx| {
            Ok(tx
                .prepare_cached(EXTEND)?
                .execute(params![delivery_seq, token, until])?
                == 1)
        })
        .await
    }

    /// Writes an attempt's outcome, if its claim is still current.
    pub async fn record_outcome(&self, o: Outcome, now: i64) -> Result<Settled, StoreError> {
        let mut queued = self.queue_outcome(o, now).await?;
        let settled = queued.applied().await?;
        queued.committed().await?;
        Ok(settled)
    }

    /// Queues an attempt's outcome and returns once it is queued: a claim made afterwards sees
    /// it (its slot is free, its conversation's next delivery released). What it recorded is
    /// known once applied, before the disk has it; `committed` says when the disk has it.
    pub async fn queue_outcome(
        &self,
        o: Outcome,
        now: i64,
    ) -> Result<Applied<Settled>, StoreError> {
        // Statements only, none refused for its input: only the database can fail it.
        self.submit_applied(Rollback::WithGroup, move |tx| settle(tx, o, now))
            .await
    }

    /// Extends the leases of claims waiting in a dispatcher's memory to `until`; for each, in
    /// order, whether its claim is still current.
    pub async fn extend_leases(
        &self,
        claims: Vec<(i64, i64)>,
        until: i64,
    ) -> Result<Vec<bool>, StoreError> {
        self.write(move |tx| {
            let mut extend = tx.prepare_cached(EXTEND)?;
            claims
                .iter()
                .map(|(seq, token)| Ok(extend.execute(params![seq, token, until])? == 1))
                .collect()
        })
        .await
    }

    /// Gives back claims that were not attempted (the dispatcher is stopping, or their
    /// subscription's circuit breaker opened meanwhile): each is due again at `due_at`, with no
    /// attempt counted. Claims no longer current are left alone.
    pub async fn release_claims(
        &self,
        claims: Vec<(i64, i64)>,
        due_at: i64,
    ) -> Result<(), StoreError> {
        self.write(move |tx| {
            let mut release = tx.prepare_cached(RELEASE)?;
            for (seq, token) in &claims {
                release.execute(params![seq, token, due_at])?;
            }
            Ok(())
        })
        .await
    }
}

/// Writes an outcome under its claim token (see [`Store::record_outcome`]).
fn settle(tx: &Transaction<'_>, o: Outcome, now: i64) -> Result<Settled, StoreError> {
    let counted = o.attempt.is_some() as i64;
    let settled: Option<(i64, Option<String>)> = tx
        .prepare_cached(SETTLE)?
        .query_row(
            params![
                o.delivery_seq,
                o.token,
                o.status.as_str(),
                o.next_attempt_at,
                o.last_error,
                counted,
                now
            ],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .map(Some)
        .or_else(|e| match e {
            rusqlite::Error::QueryReturnedNoRows => Ok(None),
            e => Err(e),
        })?;
    let Some((sub_seq, key)) = settled else {
        return Ok(Settled::LeaseLost);
    };
    if let (Some(key), true) = (&key, o.status != DeliveryStatus::Pending) {
        release_next(tx, sub_seq, key, now)?;
    }
    if o.breaker.is_none() && o.attempt.is_none() {
        return Ok(Settled::Recorded {
            failing_since: None,
            paused_until: None,
        });
    }
    let (before, failing_since): (Breaker, Option<i64>) =
        tx.prepare_cached(HEALTH_OF)?.query_row([sub_seq], |r| {
            let breaker = Breaker {
                failures: r.get(0)?,
                trips: r.get(1)?,
                until: r.get(2)?,
            };
            Ok((breaker, r.get(3)?))
        })?;
    let mut paused_until = None;
    if let Some((policy, signal)) = o.breaker {
        let after = policy.after(before, signal, now);
        paused_until = after.until.filter(|&until| until > now);
        if after != before {
            tx.prepare_cached(SET_BREAKER)?.execute(params![
                sub_seq,
                after.failures,
                after.trips,
                after.until
            ])?;
        }
    }
    let Some(a) = &o.attempt else {
        return Ok(Settled::Recorded {
            failing_since: None,
            paused_until,
        });
    };
    let request = a.request.as_ref();
    tx.prepare_cached(INSERT_ATTEMPT)?.execute(params![
        o.delivery_seq,
        a.attempted_at,
        a.duration_ms,
        a.status_code,
        a.error_kind,
        a.error_message,
        a.response_body,
        request.and_then(|r| r.url.as_deref()),
        request.map(|r| serde_json::to_string(&r.headers).expect("strings serialize")),
        request.map(|r| r.body.as_str()),
        request.map(|r| r.body_bytes as i64),
    ])?;
    // A success clears the failure streak; a failure starts it if none is running.
    let failed = a.error_kind.is_some();
    let streak = if failed {
        failing_since.or(Some(a.attempted_at))
    } else {
        None
    };
    if streak != failing_since {
        tx.prepare_cached(SET_FAILING_SINCE)?
            .execute(params![sub_seq, streak])?;
    }
    Ok(Settled::Recorded {
        failing_since: streak,
        paused_until,
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::value::RawValue;

    use super::*;
    use crate::breaker::{Policy, Signal};
    use crate::events::{EventIn, prepare};
    use crate::model::{Account, Attempt, AttemptRequest, DeliveryOrdering};
    use crate::store::NewApiKey;
    use crate::store::SyncMode;
    use crate::subscriptions::{CreateSubscription, build};

    const LEASE: i64 = 60_000;

    async fn store() -> (SqliteStore, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(
            dir.path(),
            SyncMode::Normal,
            crate::secrets::Keyring::ephemeral().into(),
        )
        .unwrap();
        let account = Account {
            id: "acc".into(),
            name: "A".into(),
            created_at: 0,
        };
        let key = NewApiKey {
            id: "key".into(),
            hash: [7; 32],
            prefix: "whk_".into(),
        };
        store.create_account(account, key).await.unwrap();
        (store, dir)
    }

    async fn subscribe(store: &SqliteStore, event_type: &str, ordering: DeliveryOrdering) -> i64 {
        let req: CreateSubscription = serde_json::from_value(serde_json::json!({
            "url": "https://example.com/hook",
            "event_types": [event_type],
            "ordering": ordering,
        }))
        .unwrap();
        let sub = build("acc", req, &Default::default()).unwrap();
        store.create_subscription(sub).await.unwrap().seq
    }

    async fn ingest(store: &SqliteStore, event_type: &str, payload: &str) {
        let e = EventIn {
            event_type: event_type.into(),
            payload: RawValue::from_string(payload.into()).unwrap(),
            id: None,
            occurred_at: None,
        };
        let e = prepare("acc", e, None, 1 << 20, "").unwrap();
        store.ingest(vec![e]).await.unwrap();
    }

    fn request(limit: usize, cursor: i64) -> ClaimRequest {
        ClaimRequest {
            now: crate::clock::now_ms() + 1,
            lease_ms: LEASE,
            limit,
            ahead_limit: 0,
            default_max_in_flight: 2,
            after_subscription: cursor,
            claim_ahead: Vec::new(),
        }
    }

    async fn settle(store: &SqliteStore, c: &Claimed, status: DeliveryStatus) -> Settled {
        let o = Outcome {
            delivery_seq: c.delivery.seq,
            token: c.token,
            attempt: None,
            status,
            next_attempt_at: None,
            last_error: None,
            breaker: None,
        };
        store
            .record_outcome(o, crate::clock::now_ms())
            .await
            .unwrap()
    }

    fn payloads(claims: &Claims) -> Vec<String> {
        claims
            .claimed
            .iter()
            .map(|c| c.event.payload.get().to_string())
            .collect()
    }

    /// The attempt log keeps what each attempt sent (the body cut after 16 KiB, with its full
    /// size), and attempts recorded before requests were kept (their request columns are
    /// null, as the migration that added them leaves old rows) still read back, without one.
    #[tokio::test]
    async fn attempts_keep_the_request_sent_and_old_attempts_still_read() {
        let (store, _dir) = store().await;
        subscribe(&store, "message:created", DeliveryOrdering::None).await;
        ingest(&store, "message:created", r#"{"text":"hi"}"#).await;
        let claims = store.claim_due(request(10, 0)).await.unwrap();
        let c = &claims.claimed[0];
        let seq = c.delivery.seq;
        store
            .write(move |tx| {
                tx.execute(
                    "INSERT INTO attempts (delivery_seq, attempted_at, duration_ms, status_code,
                        error_kind, error_message, response_body)
                     VALUES (?1, 1000, 12, 500, 'http_status', 'HTTP 500', 'oops')",
                    [seq],
                )?;
                Ok(())
            })
            .await
            .unwrap();
        let body = format!(
            r#"{{"data":"{}é"}}"#,
            "x".repeat(AttemptRequest::BODY_LIMIT)
        );
        let headers = vec![
            ("content-type".to_string(), "application/json".to_string()),
            ("webhook-signature".to_string(), "v1,abc=".to_string()),
        ];
        let sent = AttemptRequest::new(Some("https://example.com/hook"), &headers, body.as_bytes());
        let o = Outcome {
            delivery_seq: seq,
            token: c.token,
            attempt: Some(Attempt {
                attempted_at: 2000,
                duration_ms: 3,
                status_code: Some(200),
                error_kind: None,
                error_message: None,
                response_body: Some("ok".into()),
                request: Some(sent.clone()),
            }),
            status: DeliveryStatus::Succeeded,
            next_attempt_at: None,
            last_error: None,
            breaker: None,
        };
        store.record_outcome(o, 2003).await.unwrap();
        let (_, attempts) = store
            .get_delivery("acc".into(), c.delivery.id.clone())
            .await
            .unwrap();
        assert_eq!(attempts.len(), 2);
        assert_eq!(attempts[0].status_code, Some(500));
        assert_eq!(attempts[0].request, None, "an old attempt has no request");
        let kept = attempts[1].request.clone().expect("the request sent");
        assert_eq!(kept, sent);
        assert!(kept.body_truncated);
        assert_eq!(kept.body.len(), AttemptRequest::BODY_LIMIT);
        assert_eq!(kept.body_bytes, body.len() as u64);
        assert_eq!(kept.headers["webhook-signature"], "v1,abc=");
        store.close().await;
    }

    #[test]
    fn claim_queries_use_their_indexes() {
        let dir = tempfile::tempdir().unwrap();
        drop(
            SqliteStore::open(
                dir.path(),
                SyncMode::Normal,
                crate::secrets::Keyring::ephemeral().into(),
            )
            .unwrap(),
        );
        let c = rusqlite::Connection::open(dir.path().join("wasmhook.sqlite3")).unwrap();
        let queries = [
            IN_FLIGHT,
            NEXT_SUBSCRIPTION_WITH_PENDING,
            DUE_OF,
            NEXT_DUE_AFTER,
            HEAD_ACTIVE,
            RELEASE_HEAD,
            super::super::deliveries::ANY_PENDING_OF_KEY,
        ];
        for q in queries {
            let n = q.matches('?').count();
            let plan: Vec<String> = c
                .prepare(&format!("EXPLAIN QUERY PLAN {q}"))
                .unwrap()
                .query_map(rusqlite::params_from_iter(vec![1; n]), |r| r.get(3))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            assert!(
                plan.iter().all(|step| !step.starts_with("SCAN deliveries")),
                "{q}: {plan:?}"
            );
        }
    }

    #[tokio::test]
    async fn claims_rotate_among_subscriptions_within_their_caps() {
        let (store, _dir) = store().await;
        let a = subscribe(&store, "a", DeliveryOrdering::None).await;
        let b = subscribe(&store, "b", DeliveryOrdering::None).await;
        for i in 0..10 {
            ingest(&store, "a", &format!(r#"{{"i":{i}}}"#)).await;
        }
        ingest(&store, "b", r#"{"i":0}"#).await;
        // A's ten are older, but B gets its turn in the first round, and A no more than its cap.
        let claims = store.claim_due(request(100, 0)).await.unwrap();
        let subs: Vec<i64> = claims.claimed.iter().map(|c| c.subscription.seq).collect();
        assert_eq!(subs, vec![a, b, a]);
        // A is at its cap: nothing more until one settles.
        let more = store.claim_due(request(100, claims.cursor)).await.unwrap();
        assert!(more.claimed.is_empty());
        assert_eq!(
            settle(&store, &claims.claimed[0], DeliveryStatus::Succeeded).await,
            Settled::Recorded {
                failing_since: None,
                paused_until: None
            }
        );
        let next = store.claim_due(request(100, claims.cursor)).await.unwrap();
        assert_eq!(payloads(&next), vec![r#"{"i":2}"#]);
    }

    /// Two subscriptions, `a` and `b`, with 20 due deliveries each.
    async fn two_backlogs(store: &SqliteStore) -> (i64, i64) {
        let a = subscribe(store, "a", DeliveryOrdering::None).await;
        let b = subscribe(store, "b", DeliveryOrdering::None).await;
        for i in 0..20 {
            ingest(store, "a", &format!(r#"{{"i":{i}}}"#)).await;
            ingest(store, "b", &format!(r#"{{"i":{i}}}"#)).await;
        }
        (a, b)
    }

    fn count_of(claims: &Claims, sub: i64) -> usize {
        claims
            .claimed
            .iter()
            .filter(|c| c.subscription.seq == sub)
            .count()
    }

    #[tokio::test]
    async fn a_subscription_named_to_claim_ahead_may_hold_more_than_its_cap() {
        let (store, _dir) = store().await;
        let (a, b) = two_backlogs(&store).await;
        let mut r = request(100, 0);
        (r.claim_ahead, r.ahead_limit) = (vec![(a, 8)], 100);
        let claims = store.claim_due(r).await.unwrap();
        let count = |sub| count_of(&claims, sub);
        assert_eq!(count(a), 8);
        assert_eq!(count(b), 2, "B is held to its cap");
        // Claimed ahead still counts: A holds its whole allowance.
        let mut r = request(100, claims.cursor);
        (r.claim_ahead, r.ahead_limit) = (vec![(a, 8)], 100);
        assert!(store.claim_due(r).await.unwrap().claimed.is_empty());
    }

    /// Claims ahead of a cap do not use up the room kept for work within caps (so a fast
    /// endpoint refilling its queue never holds back another subscription's first claim), and
    /// have their own bound.
    #[tokio::test]
    async fn claims_ahead_have_their_own_limit() {
        let (store, _dir) = store().await;
        let (a, b) = two_backlogs(&store).await;
        let mut r = request(2, 0);
        (r.claim_ahead, r.ahead_limit) = (vec![(a, 16)], 3);
        let claims = store.claim_due(r).await.unwrap();
        let count = |sub| count_of(&claims, sub);
        assert_eq!(
            count(b),
            1,
            "B's first claim is not crowded out by A's claims ahead"
        );
        assert_eq!(count(a), 1 + 3);
        assert!(claims.more);
    }

    #[tokio::test]
    async fn released_claims_are_due_again_without_an_attempt_counted() {
        let (store, _dir) = store().await;
        subscribe(&store, "a", DeliveryOrdering::None).await;
        ingest(&store, "a", "{}").await;
        let claims = store.claim_due(request(100, 0)).await.unwrap();
        let c = &claims.claimed[0];
        let later = crate::clock::now_ms() + 60_000;
        store
            .release_claims(vec![(c.delivery.seq, c.token)], later)
            .await
            .unwrap();
        // Not due before `later`; then claimable, with a new token, and no attempt counted.
        assert!(
            store
                .claim_due(request(100, 0))
                .await
                .unwrap()
                .claimed
                .is_empty()
        );
        let mut r = request(100, 0);
        r.now = later;
        let again = store.claim_due(r).await.unwrap();
        assert_eq!(again.claimed.len(), 1);
        assert_eq!(again.claimed[0].delivery.attempts, 0);
        assert_ne!(again.claimed[0].token, c.token);
        // The old token can neither extend nor settle it.
        assert_eq!(
            store
                .extend_leases(vec![(c.delivery.seq, c.token)], later + LEASE)
                .await
                .unwrap(),
            vec![false]
        );
        assert_eq!(
            settle(&store, c, DeliveryStatus::Succeeded).await,
            Settled::LeaseLost
        );
    }

    #[tokio::test]
    async fn the_cursor_decides_who_goes_first_when_slots_are_scarce() {
        let (store, _dir) = store().await;
        let a = subscribe(&store, "a", DeliveryOrdering::None).await;
        let b = subscribe(&store, "b", DeliveryOrdering::None).await;
        ingest(&store, "a", "{}").await;
        ingest(&store, "b", "{}").await;
        let first = store.claim_due(request(1, 0)).await.unwrap();
        assert_eq!(first.claimed[0].subscription.seq, a);
        assert!(first.more);
        let second = store.claim_due(request(1, first.cursor)).await.unwrap();
        assert_eq!(second.claimed[0].subscription.seq, b);
    }

    #[tokio::test]
    async fn an_ordered_conversation_goes_one_at_a_time_in_ingest_order() {
        let (store, _dir) = store().await;
        subscribe(&store, "m", DeliveryOrdering::Conversation).await;
        for (c, n) in [("x", 0), ("x", 1), ("y", 0), ("x", 2)] {
            ingest(
                &store,
                "m",
                &format!(r#"{{"conversation_id":"{c}","n":{n}}}"#),
            )
            .await;
        }
        let claims = store.claim_due(request(100, 0)).await.unwrap();
        assert_eq!(
            payloads(&claims),
            vec![
                r#"{"conversation_id":"x","n":0}"#,
                r#"{"conversation_id":"y","n":0}"#
            ]
        );
        // A retry keeps x's head in place; x's next waits.
        let x0 = &claims.claimed[0];
        let retry = Outcome {
            delivery_seq: x0.delivery.seq,
            token: x0.token,
            attempt: None,
            status: DeliveryStatus::Pending,
            next_attempt_at: Some(crate::clock::now_ms()),
            last_error: None,
            breaker: None,
        };
        store
            .record_outcome(retry, crate::clock::now_ms())
            .await
            .unwrap();
        let again = store.claim_due(request(100, 0)).await.unwrap();
        assert_eq!(payloads(&again), vec![r#"{"conversation_id":"x","n":0}"#]);
        // Dead-lettered: the next one of x goes.
        settle(&store, &again.claimed[0], DeliveryStatus::Failed).await;
        let next = store.claim_due(request(100, 0)).await.unwrap();
        assert_eq!(payloads(&next), vec![r#"{"conversation_id":"x","n":1}"#]);
    }

    #[tokio::test]
    async fn an_outcome_counts_only_under_the_current_claim() {
        let (store, _dir) = store().await;
        subscribe(&store, "a", DeliveryOrdering::None).await;
        ingest(&store, "a", "{}").await;
        let mut stale = store.claim_due(request(1, 0)).await.unwrap();
        let stale = stale.claimed.remove(0);
        // Its lease runs out and another worker claims it.
        let mut later = request(1, 0);
        later.now += LEASE + 1;
        let current = store
            .claim_due(later.clone())
            .await
            .unwrap()
            .claimed
            .remove(0);
        assert_ne!(stale.token, current.token);
        assert!(
            !store
                .extend_lease(stale.delivery.seq, stale.token, later.now + LEASE)
                .await
                .unwrap()
        );
        assert_eq!(
            settle(&store, &stale, DeliveryStatus::Succeeded).await,
            Settled::LeaseLost
        );
        assert!(matches!(
            settle(&store, &current, DeliveryStatus::Failed).await,
            Settled::Recorded { .. }
        ));
    }

    #[tokio::test]
    async fn a_tripped_breaker_skips_the_subscription_until_its_probe() {
        let (store, _dir) = store().await;
        subscribe(&store, "a", DeliveryOrdering::None).await;
        for _ in 0..3 {
            ingest(&store, "a", "{}").await;
        }
        let policy = Policy {
            threshold: 1,
            // Shorter than the lease: the straggler below is still in flight at the probe.
            cooldown: Duration::from_secs(10),
            max_cooldown: Duration::from_secs(10),
        };
        let claims = store.claim_due(request(100, 0)).await.unwrap();
        assert_eq!(claims.claimed.len(), 2);
        let failed = Outcome {
            delivery_seq: claims.claimed[0].delivery.seq,
            token: claims.claimed[0].token,
            attempt: None,
            status: DeliveryStatus::Pending,
            next_attempt_at: Some(crate::clock::now_ms()),
            last_error: None,
            breaker: Some((policy, Signal::Failing)),
        };
        store
            .record_outcome(failed, crate::clock::now_ms())
            .await
            .unwrap();
        let paused = store.claim_due(request(100, 0)).await.unwrap();
        assert!(paused.claimed.is_empty(), "open: nothing is claimed");
        let probe_at = paused.next_due.unwrap();
        // At the probe time, exactly one attempt may go (one is still in flight).
        let mut at_probe = request(100, 0);
        at_probe.now = probe_at;
        let probe = store.claim_due(at_probe.clone()).await.unwrap();
        assert_eq!(
            probe.claimed.len(),
            0,
            "the straggler in flight is the probe's slot"
        );
        let succeeded = Outcome {
            delivery_seq: claims.claimed[1].delivery.seq,
            token: claims.claimed[1].token,
            attempt: None,
            status: DeliveryStatus::Succeeded,
            next_attempt_at: None,
            last_error: None,
            breaker: Some((policy, Signal::Healthy)),
        };
        store
            .record_outcome(succeeded, crate::clock::now_ms())
            .await
            .unwrap();
        let closed = store.claim_due(at_probe).await.unwrap();
        assert_eq!(closed.claimed.len(), 2, "a success closed the breaker");
    }
}
