//! The claim rules of the outbox on PostgreSQL, the same as SQLite's (`store::claims`: fair
//! rotation, `max_in_flight`, claims ahead, circuit breaker, conversation order, fencing),
//! made safe for several nodes claiming from one table at once:
//!
//! - The subscriptions a claim serves are locked (`FOR NO KEY UPDATE`, in seq order) before
//!   their in-flight counts are read, so two nodes never both fill one subscription's free
//!   slots: `max_in_flight` holds across nodes. A claim waits for another node's claim or
//!   settle on the same subscription (both are short) rather than skip it: skipping would
//!   leave a busy subscription's free slots unclaimed until the next poll. No cycle of waits
//!   is possible: a claim waits only on subscription rows, taken in order, and takes due
//!   delivery rows with `SKIP LOCKED`; ingest only takes key-share locks on subscriptions.
//! - Due rows are taken with `FOR UPDATE SKIP LOCKED`; the lease is `next_attempt_at` (a
//!   delivery whose node died is simply due again when it runs out), and each claim stamps a
//!   fresh token: outcomes and lease extensions count only `WHERE claim_token = $token`, so a
//!   node paused past its lease cannot overwrite the new owner's result.
//! - Releasing an ordered conversation's next delivery takes the conversation's advisory lock
//!   (see `events`), as ingest does.
//!
//! - Claims and outcomes commit with `synchronous_commit = off` (for their transaction only):
//!   they do not wait for the WAL flush. A PostgreSQL crash can then forget the last moments of
//!   claims and outcomes (never a hole: what is lost is a suffix of the WAL), and a delivery
//!   whose outcome was forgotten is sent again once its lease runs out: at least once, as when
//!   a node dies mid-attempt. Events stay durable before their 202 (ingest commits
//!   synchronously), and so does everything else. Waiting for a flush per claim and per
//!   outcome held one subscription's deliveries to a few hundred a second, its `max_in_flight`
//!   attempts each waiting for two fsyncs.
//!
//! Finding the subscriptions with pending work walks the `deliveries_subscription_due` index
//! one subscription at a time (a recursive query: PostgreSQL has no skip scan), so a claim
//! costs the same with one pending delivery or a million.

use std::collections::HashMap;

use tokio_postgres::error::SqlState;

use super::events::{EVENT_COLUMNS, event_row, lock_conversations};
use super::{PgStore, db};
use crate::breaker::{Breaker, Policy};
use crate::model::{Delivery, DeliveryStatus, Event, Subscription};
use crate::store::StoreError;
use crate::store::{Applied, ClaimRequest, Claimed, Claims, Outcome, Settled};

/// Claims and outcomes do not wait for the WAL flush (see the module docs).
const NO_FLUSH_WAIT: &str = "SET LOCAL synchronous_commit = off";

/// Subscriptions looked at per claim at most; the rotation continues from there next time.
const MAX_SCAN: i64 = 512;

/// Subscriptions with pending deliveries in `($1, $2]`, in order, at most `$3`.
const WALK: &str = "WITH RECURSIVE walk(seq, n) AS (
        (SELECT subscription_seq, 1::bigint FROM deliveries
         WHERE status = 'pending' AND subscription_seq > $1 AND subscription_seq <= $2
         ORDER BY subscription_seq LIMIT 1)
        UNION ALL
        SELECT (SELECT d.subscription_seq FROM deliveries d
                WHERE d.status = 'pending' AND d.subscription_seq > w.seq AND d.subscription_seq <= $2
                ORDER BY d.subscription_seq LIMIT 1), w.n + 1
        FROM walk w WHERE w.seq IS NOT NULL AND w.n < $3
    )
    SELECT seq FROM walk WHERE seq IS NOT NULL ORDER BY seq";
const LOCK_SUBSCRIPTIONS: &str =
    "SELECT seq, status, max_in_flight, breaker_until FROM subscriptions
     WHERE seq = ANY($1) ORDER BY seq FOR NO KEY UPDATE";
const IN_FLIGHT: &str = "SELECT subscription_seq, COUNT(*) FROM deliveries
     WHERE lease_until > $1 AND subscription_seq = ANY($2) GROUP BY subscription_seq";
const DUE: &str = "SELECT k.sub, d.seq
     FROM unnest($1::bigint[], $2::bigint[]) WITH ORDINALITY AS k(sub, wanted, ord)
     CROSS JOIN LATERAL (
        SELECT seq, next_attempt_at FROM deliveries
        WHERE status = 'pending' AND subscription_seq = k.sub AND next_attempt_at <= $3
        ORDER BY next_attempt_at, seq LIMIT k.wanted
        FOR UPDATE SKIP LOCKED) d
     ORDER BY k.ord, d.next_attempt_at, d.seq";
const NEXT_DUE_AFTER: &str =
    "SELECT MIN(next_attempt_at) FROM deliveries WHERE status = 'pending' AND next_attempt_at > $1";
const TAKE: &str =
    "UPDATE deliveries d SET next_attempt_at = $2, lease_until = $2, claim_token = $3
     FROM unnest($1::bigint[]) WITH ORDINALITY AS p(seq, ord)
     WHERE d.seq = p.seq
     RETURNING p.ord, d.seq, d.id, d.event_seq, d.subscription_seq, d.attempts, d.last_error,
        d.created_at, d.updated_at";
const EXTEND: &str = "UPDATE deliveries d SET next_attempt_at = $3, lease_until = $3
     FROM unnest($1::bigint[], $2::bigint[]) WITH ORDINALITY AS c(seq, token, ord)
     WHERE d.seq = c.seq AND d.claim_token = c.token AND d.status = 'pending'
     RETURNING c.ord";
const RELEASE: &str =
    "UPDATE deliveries d SET next_attempt_at = $3, lease_until = NULL, claim_token = NULL
     FROM unnest($1::bigint[], $2::bigint[]) AS c(seq, token)
     WHERE d.seq = c.seq AND d.claim_token = c.token AND d.status = 'pending'";
const KEY_OF: &str = "SELECT subscription_seq, ordering_key FROM deliveries WHERE seq = $1";
const SETTLE: &str = "UPDATE deliveries SET status = $3, next_attempt_at = $4, lease_until = NULL,
        claim_token = NULL, last_error = COALESCE($5, last_error), attempts = attempts + $6,
        updated_at = $7
     WHERE seq = $1 AND claim_token = $2 AND status = 'pending'
     RETURNING subscription_seq";
const INSERT_ATTEMPT: &str =
    "INSERT INTO attempts (delivery_seq, attempted_at, duration_ms, status_code, error_kind,
        error_message, response_body, request_url, request_headers, request_body, request_body_bytes)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)";
/// Starts the failure streak (`$2`, a failure, at `$3`) or ends it (a success), writing the
/// subscription only when that changes it; answers the streak's start either way. Most
/// outcomes change nothing, and an outcome that writes the subscription row holds its lock
/// until commit: every outcome of one subscription would queue behind the others.
const FAILURE_STREAK: &str = "WITH changed AS (
        UPDATE subscriptions SET failing_since = CASE WHEN $2::boolean THEN $3::bigint ELSE NULL END
        WHERE seq = $1 AND (failing_since IS NULL) = $2::boolean
        RETURNING failing_since)
     SELECT failing_since FROM changed
     UNION ALL
     SELECT failing_since FROM subscriptions WHERE seq = $1 AND NOT EXISTS (SELECT 1 FROM changed)";
/// The breaker's state, read without a lock: an outcome that leaves it as it is (most of
/// them) takes no lock on the subscription (see [`FAILURE_STREAK`]).
const BREAKER_PEEK: &str =
    "SELECT breaker_failures, breaker_trips, breaker_until FROM subscriptions
     WHERE seq = $1";
/// The breaker's state, locked for the change the peek saw coming.
const BREAKER_OF: &str = "SELECT breaker_failures, breaker_trips, breaker_until FROM subscriptions
     WHERE seq = $1 FOR NO KEY UPDATE";
const SET_BREAKER: &str =
    "UPDATE subscriptions SET breaker_failures = $2, breaker_trips = $3, breaker_until = $4
     WHERE seq = $1";
/// Makes the earliest pending delivery of `($1, $2)` due at `$3`, unless one of them is
/// already active (in flight or waiting for its retry). The caller holds the conversation's
/// advisory lock.
const RELEASE_NEXT: &str = "UPDATE deliveries SET next_attempt_at = $3
     WHERE seq = (SELECT MIN(seq) FROM deliveries
                  WHERE subscription_seq = $1 AND ordering_key = $2 AND status = 'pending')
       AND NOT EXISTS (SELECT 1 FROM deliveries
                  WHERE subscription_seq = $1 AND ordering_key = $2 AND status = 'pending'
                    AND next_attempt_at IS NOT NULL)";

/// Releases the next delivery of an ordered conversation (see [`RELEASE_NEXT`]), taking its
/// advisory lock first; true when one became due.
pub(in crate::store) async fn release_next(
    tx: &deadpool_postgres::Transaction<'_>,
    subscription_seq: i64,
    key: &str,
    now: i64,
) -> Result<bool, StoreError> {
    lock_conversations(tx, &[(subscription_seq, key.to_string())])
        .await
        .map_err(db)?;
    let stmt = tx.prepare_cached(RELEASE_NEXT).await.map_err(db)?;
    Ok(tx
        .execute(&stmt, &[&subscription_seq, &key, &now])
        .await
        .map_err(db)?
        == 1)
}

/// The scheduling columns of one subscription.
struct Scheduling {
    active: bool,
    max_in_flight: Option<i64>,
    breaker_until: Option<i64>,
}

impl PgStore {
    /// Claims due deliveries under the scheduling rules (see the module docs and
    /// `store::claims`). Answers once committed.
    pub async fn claim_due(&self, r: ClaimRequest) -> Result<Claims, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db)?;
        tx.batch_execute(NO_FLUSH_WAIT).await.map_err(db)?;
        let mut out = Claims {
            cursor: r.after_subscription,
            ..Claims::default()
        };

        // 1. Subscriptions with pending work, in rotation from the cursor (wrapping once).
        let walk = tx.prepare_cached(WALK).await.map_err(db)?;
        let mut order: Vec<i64> = tx
            .query(&walk, &[&r.after_subscription, &i64::MAX, &(MAX_SCAN + 1)])
            .await
            .map_err(db)?
            .iter()
            .map(|row| row.get(0))
            .collect();
        if (order.len() as i64) <= MAX_SCAN && r.after_subscription > 0 {
            let left = MAX_SCAN + 1 - order.len() as i64;
            let wrapped = tx
                .query(&walk, &[&0i64, &r.after_subscription, &left])
                .await
                .map_err(db)?;
            order.extend(wrapped.iter().map(|row| row.get::<_, i64>(0)));
        }
        let mut scan_stopped_after = None;
        if order.len() as i64 > MAX_SCAN {
            order.truncate(MAX_SCAN as usize);
            scan_stopped_after = order.last().copied();
        }

        // 2. Lock them, then count what each has in flight: the counts include every node's
        //    committed claims. (A subscription deleted meanwhile is simply not there.)
        let stmt = tx.prepare_cached(LOCK_SUBSCRIPTIONS).await.map_err(db)?;
        let mut scheduling: HashMap<i64, Scheduling> = HashMap::new();
        for row in tx.query(&stmt, &[&order]).await.map_err(db)? {
            let status: String = row.get(1);
            scheduling.insert(
                row.get(0),
                Scheduling {
                    active: status == "active",
                    max_in_flight: row.get(2),
                    breaker_until: row.get(3),
                },
            );
        }
        let locked: Vec<i64> = order
            .iter()
            .copied()
            .filter(|s| scheduling.contains_key(s))
            .collect();
        let stmt = tx.prepare_cached(IN_FLIGHT).await.map_err(db)?;
        let in_flight: HashMap<i64, i64> = tx
            .query(&stmt, &[&r.now, &locked])
            .await
            .map_err(db)?
            .iter()
            .map(|row| (row.get(0), row.get(1)))
            .collect();

        // 3. How many each may take: its free slots within its cap, and ahead of it.
        let (mut subs, mut wanted, mut within_of) = (Vec::new(), Vec::new(), HashMap::new());
        for sub in locked {
            let s = &scheduling[&sub];
            if !s.active {
                continue; // paused (disabled, or waiting for verification): nothing is dropped
            }
            let (cap, allowance) = match s.breaker_until {
                Some(until) if until > r.now => {
                    out.next_due = Some(out.next_due.map_or(until, |d| d.min(until)));
                    continue;
                }
                Some(_) => (1, 1), // half-open: one probe
                None => {
                    let cap = s.max_in_flight.map_or(r.default_max_in_flight, |c| {
                        c.clamp(0, u32::MAX as i64) as u32
                    });
                    let ahead = r
                        .claim_ahead
                        .binary_search_by_key(&sub, |(s, _)| *s)
                        .map_or(cap, |i| r.claim_ahead[i].1);
                    (cap, ahead.max(cap))
                }
            };
            let held = in_flight
                .get(&sub)
                .copied()
                .unwrap_or(0)
                .clamp(0, u32::MAX as i64) as u32;
            let free = allowance.saturating_sub(held) as usize;
            if free == 0 {
                continue;
            }
            let within = cap.saturating_sub(held) as usize;
            let n = within.min(r.limit) + (free - within).min(r.ahead_limit);
            if n > 0 {
                subs.push(sub);
                wanted.push(n as i64);
                within_of.insert(sub, within);
            }
        }

        // 4. Their due deliveries, oldest first, locked (rows another transaction holds, e.g.
        //    being settled or retried, are left to it).
        let mut per_sub: Vec<(i64, Vec<i64>, usize)> = Vec::new();
        if !subs.is_empty() {
            let stmt = tx.prepare_cached(DUE).await.map_err(db)?;
            for row in tx
                .query(&stmt, &[&subs, &wanted, &r.now])
                .await
                .map_err(db)?
            {
                let (sub, seq): (i64, i64) = (row.get(0), row.get(1));
                match per_sub.last_mut() {
                    Some((s, due, _)) if *s == sub => due.push(seq),
                    _ => per_sub.push((sub, vec![seq], within_of[&sub])),
                }
            }
        }

        // 5. Round robin, exactly as SQLite's claim: every subscription's first due delivery,
        //    then every second one, ...; picks inside a cap count against `limit`, picks ahead
        //    of one against `ahead_limit`.
        let mut picked = Vec::new();
        let mut last_served = None;
        let (mut taken_within, mut taken_ahead) = (0, 0);
        for round in 0.. {
            let mut any_left = false;
            for (sub, due, within) in &per_sub {
                let Some(seq) = due.get(round) else { continue };
                any_left = true;
                let (taken, limit) = if round < *within {
                    (&mut taken_within, r.limit)
                } else {
                    (&mut taken_ahead, r.ahead_limit)
                };
                if *taken == limit {
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
        let stmt = tx.prepare_cached(NEXT_DUE_AFTER).await.map_err(db)?;
        let later: Option<i64> = tx.query_one(&stmt, &[&r.now]).await.map_err(db)?.get(0);
        out.next_due = match (out.next_due, later) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };

        // 6. Take them: the lease in `next_attempt_at`, one fresh token for the claim.
        if !picked.is_empty() {
            let lease_until = r.now + r.lease_ms;
            let token: i64 = rand::random::<i64>() & i64::MAX;
            let stmt = tx.prepare_cached(TAKE).await.map_err(db)?;
            let mut rows = tx
                .query(&stmt, &[&picked, &lease_until, &token])
                .await
                .map_err(db)?;
            rows.sort_by_key(|row| row.get::<_, i64>(0));
            // One event fans out to many subscriptions and one subscription gets many
            // events: read each once per claim.
            let mut event_seqs: Vec<i64> = rows.iter().map(|row| row.get(3)).collect();
            event_seqs.sort_unstable();
            event_seqs.dedup();
            let stmt = tx
                .prepare_cached(&format!(
                    "SELECT {EVENT_COLUMNS} FROM events WHERE seq = ANY($1)"
                ))
                .await
                .map_err(db)?;
            let mut events: HashMap<i64, Event> = HashMap::new();
            for row in tx.query(&stmt, &[&event_seqs]).await.map_err(db)? {
                let e = event_row(&row)?;
                events.insert(e.seq, e);
            }
            let mut subscriptions: HashMap<i64, Subscription> = HashMap::new();
            for row in rows {
                let (seq, event_seq, sub_seq): (i64, i64, i64) =
                    (row.get(1), row.get(3), row.get(4));
                let attempts: i64 = row.get(5);
                let event = events
                    .get(&event_seq)
                    .cloned()
                    .ok_or_else(|| StoreError::Corrupt(format!("delivery {seq}: no event")))?;
                let subscription = match subscriptions.get(&sub_seq) {
                    Some(s) => s.clone(),
                    None => {
                        let s = super::deliveries::subscription_by_seq(&tx, &self.keys, sub_seq)
                            .await?;
                        subscriptions.insert(sub_seq, s.clone());
                        s
                    }
                };
                out.claimed.push(Claimed {
                    delivery: Delivery {
                        seq,
                        id: row.get(2),
                        event_id: event.id.clone(),
                        subscription_id: subscription.id.clone(),
                        status: DeliveryStatus::Pending,
                        attempts: u32::try_from(attempts)
                            .map_err(|_| StoreError::Corrupt("attempts".into()))?,
                        next_attempt_at: Some(lease_until),
                        last_error: row.get(6),
                        created_at: row.get(7),
                        updated_at: row.get(8),
                    },
                    event,
                    subscription,
                    token,
                });
            }
        }
        tx.commit().await.map_err(db)?;
        Ok(out)
    }

    /// Extends a claim's lease to `until`; false when the claim is no longer current.
    pub async fn extend_lease(
        &self,
        delivery_seq: i64,
        token: i64,
        until: i64,
    ) -> Result<bool, StoreError> {
        Ok(self
            .extend_leases(vec![(delivery_seq, token)], until)
            .await?
            .into_iter()
            .next()
            .unwrap_or(false))
    }

    /// Extends the leases of claims to `until`; for each, in order, whether its claim is
    /// still current.
    pub async fn extend_leases(
        &self,
        claims: Vec<(i64, i64)>,
        until: i64,
    ) -> Result<Vec<bool>, StoreError> {
        let (seqs, tokens): (Vec<i64>, Vec<i64>) = claims.iter().copied().unzip();
        let client = self.client().await?;
        let stmt = client.prepare_cached(EXTEND).await.map_err(db)?;
        let mut current = vec![false; claims.len()];
        for row in client
            .query(&stmt, &[&seqs, &tokens, &until])
            .await
            .map_err(db)?
        {
            let ord: i64 = row.get(0);
            current[ord as usize - 1] = true;
        }
        Ok(current)
    }

    /// Gives back claims that were not attempted: each is due again at `due_at`, with no
    /// attempt counted. Claims no longer current are left alone.
    pub async fn release_claims(
        &self,
        claims: Vec<(i64, i64)>,
        due_at: i64,
    ) -> Result<(), StoreError> {
        let (seqs, tokens): (Vec<i64>, Vec<i64>) = claims.iter().copied().unzip();
        let client = self.client().await?;
        let stmt = client.prepare_cached(RELEASE).await.map_err(db)?;
        let released = client
            .execute(&stmt, &[&seqs, &tokens, &due_at])
            .await
            .map_err(db)?;
        drop(client);
        if released > 0 {
            self.notify_due().await;
        }
        Ok(())
    }

    /// Writes an attempt's outcome, if its claim is still current (see `store::claims`).
    pub async fn record_outcome(&self, o: Outcome, now: i64) -> Result<Settled, StoreError> {
        let mut client = self.client().await?;
        // A deadlock (two nodes settling deliveries of one subscription against each other's
        // conversation locks) is retried: nothing of the failed pass was kept.
        let mut pass = 0;
        let (settled, released) = loop {
            pass += 1;
            match settle(&mut client, &o, now).await {
                Err(Deadlock(_)) if pass < 4 => continue,
                Err(Deadlock(e)) => return Err(e),
                Ok(result) => break result?,
            }
        };
        drop(client);
        if released {
            self.notify_due().await;
        }
        Ok(settled)
    }
}

impl PgStore {
    /// Records an outcome (see [`PgStore::record_outcome`]) and answers with both replies
    /// at once: on PostgreSQL a write is answered once committed.
    pub async fn queue_outcome(
        &self,
        o: Outcome,
        now: i64,
    ) -> Result<Applied<Settled>, StoreError> {
        let settled = self.record_outcome(o, now).await;
        let (applied_tx, applied) = tokio::sync::oneshot::channel();
        let (committed_tx, committed) = tokio::sync::oneshot::channel();
        let commit = match &settled {
            Ok(_) => Ok(()),
            Err(e) => Err(StoreError::Commit(e.to_string())),
        };
        let _ = applied_tx.send(settled);
        let _ = committed_tx.send(commit);
        Ok(Applied::new(applied, committed))
    }
}

/// A deadlock or serialization failure: the transaction may be run again.
struct Deadlock(StoreError);

async fn settle(
    client: &mut deadpool_postgres::Object,
    o: &Outcome,
    now: i64,
) -> Result<Result<(Settled, bool), StoreError>, Deadlock> {
    let result = settle_once(client, o, now).await;
    match result {
        Err(e)
            if e.code() == Some(&SqlState::T_R_DEADLOCK_DETECTED)
                || e.code() == Some(&SqlState::T_R_SERIALIZATION_FAILURE) =>
        {
            Err(Deadlock(db(e)))
        }
        Err(e) => Ok(Err(db(e))),
        Ok(r) => Ok(r),
    }
}

async fn settle_once(
    client: &mut deadpool_postgres::Object,
    o: &Outcome,
    now: i64,
) -> Result<Result<(Settled, bool), StoreError>, tokio_postgres::Error> {
    let tx = client.transaction().await?;
    tx.batch_execute(NO_FLUSH_WAIT).await?;
    // The conversation's lock comes before the row's, as in ingest and retry (the ordering
    // key never changes, so it may be read first without a lock).
    let key: Option<(i64, Option<String>)> = {
        let stmt = tx.prepare_cached(KEY_OF).await?;
        tx.query_opt(&stmt, &[&o.delivery_seq])
            .await?
            .map(|r| (r.get(0), r.get(1)))
    };
    let Some((sub_seq, key)) = key else {
        return Ok(Ok((Settled::LeaseLost, false)));
    };
    let key = key.filter(|_| o.status != DeliveryStatus::Pending);
    if let Some(key) = &key {
        lock_conversations(&tx, &[(sub_seq, key.clone())]).await?;
    }
    let counted = o.attempt.is_some() as i64;
    let stmt = tx.prepare_cached(SETTLE).await?;
    let updated = tx
        .query_opt(
            &stmt,
            &[
                &o.delivery_seq,
                &o.token,
                &o.status.as_str(),
                &o.next_attempt_at,
                &o.last_error,
                &counted,
                &now,
            ],
        )
        .await?;
    if updated.is_none() {
        return Ok(Ok((Settled::LeaseLost, false)));
    }
    let mut released = false;
    if let Some(key) = &key {
        let stmt = tx.prepare_cached(RELEASE_NEXT).await?;
        released = tx.execute(&stmt, &[&sub_seq, key, &now]).await? == 1;
    }
    let mut paused_until = None;
    if let Some((policy, signal)) = o.breaker {
        let breaker = async |query: &str| {
            let stmt = tx.prepare_cached(query).await?;
            let row = tx.query_one(&stmt, &[&sub_seq]).await?;
            let (failures, trips, until): (i64, i64, Option<i64>) =
                (row.get(0), row.get(1), row.get(2));
            let before = Breaker {
                failures: failures.clamp(0, u32::MAX as i64) as u32,
                trips: trips.clamp(0, u32::MAX as i64) as u32,
                until,
            };
            Ok::<_, tokio_postgres::Error>((before, Policy::after(&policy, before, signal, now)))
        };
        let (mut before, mut after) = breaker(BREAKER_PEEK).await?;
        if after != before {
            // Read again under the lock: another outcome may have moved it since the peek.
            (before, after) = breaker(BREAKER_OF).await?;
        }
        paused_until = after.until.filter(|&until| until > now);
        if after != before {
            let stmt = tx.prepare_cached(SET_BREAKER).await?;
            tx.execute(
                &stmt,
                &[
                    &sub_seq,
                    &i64::from(after.failures),
                    &i64::from(after.trips),
                    &after.until,
                ],
            )
            .await?;
        }
    }
    let Some(a) = &o.attempt else {
        tx.commit().await?;
        return Ok(Ok((
            Settled::Recorded {
                failing_since: None,
                paused_until,
            },
            released,
        )));
    };
    let request = a.request.as_ref();
    let stmt = tx.prepare_cached(INSERT_ATTEMPT).await?;
    tx.execute(
        &stmt,
        &[
            &o.delivery_seq,
            &a.attempted_at,
            &a.duration_ms,
            &a.status_code.map(i64::from),
            &a.error_kind,
            &a.error_message,
            &a.response_body,
            &request.and_then(|r| r.url.as_deref()),
            &request.map(|r| serde_json::to_string(&r.headers).expect("strings serialize")),
            &request.map(|r| r.body.as_str()),
            &request.map(|r| r.body_bytes as i64),
        ],
    )
    .await?;
    // A success clears the failure streak; a failure starts it if none is running.
    let failed = a.error_kind.is_some();
    let stmt = tx.prepare_cached(FAILURE_STREAK).await?;
    let failing_since: Option<i64> = tx
        .query_one(&stmt, &[&sub_seq, &failed, &a.attempted_at])
        .await?
        .get(0);
    tx.commit().await?;
    Ok(Ok((
        Settled::Recorded {
            failing_since,
            paused_until,
        },
        released,
    )))
}

#[cfg(test)]
mod tests {
    //! Several nodes on one database: each test connects two stores (two pools, as two
    //! processes would) to the same fresh database.

    use std::collections::HashSet;
    use std::time::Duration;

    use super::*;
    use crate::store::postgres::events::tests::{event, seed};
    use crate::store::postgres::testing;

    const LEASE: i64 = 60_000;

    fn request(now: i64, limit: usize) -> ClaimRequest {
        ClaimRequest {
            now,
            lease_ms: LEASE,
            limit,
            ahead_limit: 0,
            default_max_in_flight: 4,
            after_subscription: 0,
            claim_ahead: Vec::new(),
        }
    }

    fn done(c: &Claimed, status: DeliveryStatus) -> Outcome {
        Outcome {
            delivery_seq: c.delivery.seq,
            token: c.token,
            attempt: None,
            status,
            next_attempt_at: None,
            last_error: None,
            breaker: None,
        }
    }

    #[tokio::test]
    async fn two_nodes_never_take_one_delivery_and_share_the_cap() {
        let Some((a, b)) = testing::two_nodes().await else {
            return;
        };
        seed(&a, "e", "none").await;
        for i in 0..30 {
            a.ingest(vec![event("e", &format!(r#"{{"i":{i}}}"#), None)])
                .await
                .unwrap();
        }
        let now = crate::clock::now_ms() + 1;
        let mut seen = HashSet::new();
        let mut settled = 0;
        // Both nodes claim at once, again and again: together they hold at most the cap (4),
        // and every delivery is claimed exactly once until all are settled.
        while settled < 30 {
            let (ca, cb) = tokio::join!(
                a.claim_due(request(now, 100)),
                b.claim_due(request(now, 100))
            );
            let (ca, cb) = (ca.unwrap(), cb.unwrap());
            let held = ca.claimed.len() + cb.claimed.len();
            assert!(held <= 4, "{held} claimed at once with max_in_flight 4");
            assert!(held > 0, "due work but nothing claimed");
            for (node, c) in ca
                .claimed
                .iter()
                .map(|c| (&a, c))
                .chain(cb.claimed.iter().map(|c| (&b, c)))
            {
                assert!(seen.insert(c.delivery.seq), "claimed twice");
                let s = node
                    .record_outcome(done(c, DeliveryStatus::Succeeded), now)
                    .await
                    .unwrap();
                assert!(matches!(s, Settled::Recorded { .. }));
                settled += 1;
            }
        }
        assert_eq!(a.queue_depth().await.unwrap(), 0);
    }

    /// A node paused past its lease (here: its clock says the lease is long over when the other
    /// node claims) cannot record its outcome over the new owner's.
    #[tokio::test]
    async fn a_node_that_lost_its_lease_cannot_settle() {
        let Some((a, b)) = testing::two_nodes().await else {
            return;
        };
        seed(&a, "e", "none").await;
        a.ingest(vec![event("e", "{}", None)]).await.unwrap();
        let now = crate::clock::now_ms() + 1;
        let stale = a
            .claim_due(request(now, 1))
            .await
            .unwrap()
            .claimed
            .remove(0);
        assert!(
            b.claim_due(request(now, 1))
                .await
                .unwrap()
                .claimed
                .is_empty()
        );
        let later = now + LEASE + 1;
        let current = b
            .claim_due(request(later, 1))
            .await
            .unwrap()
            .claimed
            .remove(0);
        assert_eq!(stale.delivery.seq, current.delivery.seq);
        assert_ne!(stale.token, current.token);
        assert!(
            !a.extend_lease(stale.delivery.seq, stale.token, later + LEASE)
                .await
                .unwrap()
        );
        assert_eq!(
            a.record_outcome(done(&stale, DeliveryStatus::Succeeded), later)
                .await
                .unwrap(),
            Settled::LeaseLost
        );
        assert!(matches!(
            b.record_outcome(done(&current, DeliveryStatus::Failed), later)
                .await
                .unwrap(),
            Settled::Recorded { .. }
        ));
        let (d, _) = a
            .get_delivery("acc".into(), current.delivery.id.clone())
            .await
            .unwrap();
        assert_eq!(
            d.status,
            DeliveryStatus::Failed,
            "the new owner's outcome stands"
        );
    }

    #[tokio::test]
    async fn new_work_on_one_node_wakes_the_other() {
        let Some((a, b)) = testing::two_nodes().await else {
            return;
        };
        seed(&a, "e", "none").await;
        let wake = b.wake();
        // The listener wakes once when it starts listening (notifications sent before are
        // lost): wait for that, so the wake-up below can only come from the notification.
        tokio::time::timeout(Duration::from_secs(10), wake.notified())
            .await
            .expect("the listener starts");
        let woken = wake.notified();
        a.ingest(vec![event("e", "{}", None)]).await.unwrap();
        tokio::time::timeout(Duration::from_secs(10), woken)
            .await
            .expect("node b is woken by node a's ingest");
    }

    #[tokio::test]
    async fn the_same_key_posted_to_two_nodes_at_once_is_one_event() {
        let Some((a, b)) = testing::two_nodes().await else {
            return;
        };
        seed(&a, "e", "none").await;
        let mut calls = Vec::new();
        for i in 0..20 {
            let node = if i % 2 == 0 { a.clone() } else { b.clone() };
            calls.push(tokio::spawn(async move {
                node.ingest(vec![event("e", r#"{"x":1}"#, Some("same-key"))])
                    .await
            }));
        }
        let mut seqs = HashSet::new();
        let mut fresh = 0;
        for call in calls {
            let ingested = call.await.unwrap().unwrap().remove(0);
            seqs.insert(ingested.event.seq);
            fresh += usize::from(!ingested.replayed);
        }
        assert_eq!(seqs.len(), 1, "one event");
        assert_eq!(fresh, 1, "one was stored, the others replayed it");
        assert_eq!(a.queue_depth().await.unwrap(), 1, "one delivery");
    }
}
