//! Ingest on PostgreSQL: events with their deliveries and conversation facts, in groups.
//!
//! **Group commit.** Concurrent `ingest` calls queue up while a group is being written and go
//! together in the next one, as multi-row inserts (`UNNEST` of one array per column): a burst
//! of N requests costs two round trips and one commit, not N of each. The reads (idempotency
//! keys, matching subscriptions) are sent together; the write is one statement with the
//! events, the conversation index and the deliveries, atomic on its own, so it needs no
//! transaction around it unless an ordered conversation has to be locked first. Each request
//! stays all-or-none: a request that breaks a rule is answered alone while the rest of its
//! group commits.
//!
//! **Idempotency across nodes** rests on the unique indexes alone (`events_public_id`,
//! `events_idempotency`). A group's first pass looks its idempotency keys up but not its event
//! ids (almost always fresh ones the server made); an id or key that is stored already, by
//! this node before or by another meanwhile, fails the write as a whole, and the second pass
//! looks everything up and answers with the stored event (a replay) or with a conflict.
//!
//! **Ordered conversations.** Whether a new delivery is due or held behind an earlier one of
//! its conversation is decided under a transaction-scoped advisory lock per (subscription,
//! conversation), taken in a fixed order; settling a conversation's head takes the same lock
//! before releasing the next one, so two nodes never both make a conversation's delivery due.
//!
//! **Wake-ups** are sent after the commit (never inside the transaction, where a NOTIFY would
//! serialise commits), once per group.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use serde_json::value::RawValue;
use tokio::sync::{Notify, mpsc, oneshot};
use tokio_postgres::Row;
use tokio_postgres::error::SqlState;

use deadpool_postgres::{GenericClient, Pool};

use super::{PgStore, db};
use crate::clock::new_id;
use crate::model::{Causation, Conversation, DeliveryOrdering, DeliveryStatus, Event};
use crate::store::StoreError;
use crate::store::{Ingested, NewEvent};

/// The channel other nodes' dispatchers listen on for new due work.
pub(in crate::store) const WAKE_CHANNEL: &str = "wasmhook_due";

/// At most this many events are folded into one transaction.
const MAX_GROUP_EVENTS: usize = 2048;
/// A group whose rows raced another node's is written again at most this many times.
const MAX_PASSES: usize = 4;

/// The event columns, in the order [`event_row`] reads them.
pub(in crate::store) const EVENT_COLUMNS: &str = "seq, id, type, payload, occurred_at, received_at, cause_plugin_id, cause_event_id, cause_depth";

/// Reads [`EVENT_COLUMNS`] (the first nine columns of the row).
pub(in crate::store) fn event_row(r: &Row) -> Result<Event, StoreError> {
    let payload: String = r.try_get(3).map_err(db)?;
    let cause_plugin: Option<String> = r.try_get(6).map_err(db)?;
    let cause_event: Option<String> = r.try_get(7).map_err(db)?;
    let depth: i64 = r.try_get(8).map_err(db)?;
    Ok(Event {
        seq: r.try_get(0).map_err(db)?,
        id: r.try_get(1).map_err(db)?,
        event_type: r.try_get(2).map_err(db)?,
        payload: RawValue::from_string(payload)
            .map_err(|e| StoreError::Corrupt(format!("event payload: {e}")))?,
        occurred_at: r.try_get(4).map_err(db)?,
        received_at: r.try_get(5).map_err(db)?,
        causation: match (cause_plugin, cause_event) {
            (Some(plugin_id), Some(event_id)) => Some(Causation {
                plugin_id,
                event_id,
                depth: u32::try_from(depth)
                    .map_err(|_| StoreError::Corrupt("cause_depth".into()))?,
            }),
            _ => None,
        },
    })
}

/// One `ingest` call waiting for its group.
pub(in crate::store) struct IngestRequest {
    events: Vec<NewEvent>,
    reply: oneshot::Sender<Result<Vec<Ingested>, StoreError>>,
}

/// Starts the group committer; ingest requests go to the returned sender.
pub(super) fn start(pool: Pool) -> mpsc::Sender<IngestRequest> {
    let (tx, rx) = mpsc::channel(4096);
    let wake = Arc::new(Notify::new());
    tokio::spawn(wake_others(pool.clone(), wake.clone()));
    tokio::spawn(group_commit(pool, rx, wake));
    tx
}

/// Sends the wake-ups the group committer asks for, so that the next group does not wait for
/// one; requests made while one is being sent are answered by a single next one.
async fn wake_others(pool: Pool, wake: Arc<Notify>) {
    loop {
        wake.notified().await;
        notify_due(&pool).await;
    }
}

async fn group_commit(store: Pool, mut rx: mpsc::Receiver<IngestRequest>, wake: Arc<Notify>) {
    while let Some(first) = rx.recv().await {
        let mut size = first.events.len();
        let mut group = vec![first];
        while size < MAX_GROUP_EVENTS {
            match rx.try_recv() {
                Ok(more) => {
                    size += more.events.len();
                    group.push(more);
                }
                Err(_) => break,
            }
        }
        let answers = match write_group(&store, &group).await {
            Ok(answers) => answers,
            // A failure of the whole group that is not the database going away: write each
            // request alone, so one request's bad row cannot fail the others.
            Err(e) if group.len() > 1 && !matches!(e, StoreError::Unavailable(_)) => {
                let mut answers = Vec::with_capacity(group.len());
                for request in &group {
                    let alone = std::slice::from_ref(request);
                    answers.push(match write_group(&store, alone).await {
                        Ok(mut a) => a.pop().expect("one answer per request"),
                        Err(e) => Err(e),
                    });
                }
                answers
            }
            // A lone request's own mistake (a value the database cannot hold) is answered as
            // such: a 400, not a failed commit.
            Err(e @ StoreError::Invalid(_)) => vec![Err(e)],
            Err(e) => {
                let message = e.to_string();
                let unavailable = matches!(e, StoreError::Unavailable(_));
                group
                    .iter()
                    .map(|_| {
                        Err(if unavailable {
                            StoreError::Unavailable(message.clone())
                        } else {
                            StoreError::Commit(message.clone())
                        })
                    })
                    .collect()
            }
        };
        let due = answers.iter().any(|a| {
            a.as_ref()
                .is_ok_and(|ingested| ingested.iter().any(|i| i.deliveries > 0))
        });
        for (request, answer) in group.into_iter().zip(answers) {
            // The caller may have gone away (request cancelled); the write stands regardless.
            let _ = request.reply.send(answer);
        }
        if due {
            wake.notify_one();
        }
    }
}

/// What one request's event became once checked against the stored events and the group.
enum Plan {
    /// Inserted as the group's `n`th new event.
    New(usize),
    /// Already stored (by an earlier request, a node, or earlier in this group): a replay.
    Replay(Replayed),
}

enum Replayed {
    Stored(Event),
    InGroup(usize),
}

/// Writes one group; one answer per request, in order.
///
/// The first pass trusts the unique indexes to catch an event id used before: it does not look
/// the group's ids up, and a clash rolls the write back and starts a second pass that does.
async fn write_group(
    store: &Pool,
    group: &[IngestRequest],
) -> Result<Vec<Result<Vec<Ingested>, StoreError>>, StoreError> {
    let mut client = store.get().await.map_err(super::pool_error)?;
    let requests: Vec<&[NewEvent]> = group.iter().map(|r| r.events.as_slice()).collect();
    for pass in 1.. {
        let checks = if pass == 1 { Checks::Keys } else { Checks::All };
        match write_once(&mut client, &requests, checks).await {
            Err(Retry::Again) | Err(Retry::Db(_)) if pass < MAX_PASSES => continue,
            Err(Retry::Again) => {
                return Err(StoreError::Database(
                    "events kept racing other nodes' inserts".into(),
                ));
            }
            Err(Retry::Db(e)) | Err(Retry::Fail(e)) => return Err(e),
            Ok(answers) => return Ok(answers),
        }
    }
    unreachable!("the loop returns")
}

/// One pass of [`write_group`]: the reads, then the write as one statement (atomic on its
/// own), inside a transaction only when an ordered conversation has to be locked first.
async fn write_once(
    client: &mut deadpool_postgres::Client,
    requests: &[&[NewEvent]],
    checks: Checks,
) -> Result<Vec<Result<Vec<Ingested>, StoreError>>, Retry> {
    let reads = read(&*client, requests, checks).await?;
    let planned = plan(requests, &reads);
    let ordered = planned.ordered(&reads);
    if ordered.is_empty() {
        let seqs = write(&*client, &planned, &reads, HashSet::new()).await?;
        return Ok(planned.answers(seqs));
    }
    let tx = client.transaction().await?;
    let busy = lock_busy(&tx, &ordered).await?;
    let seqs = write(&tx, &planned, &reads, busy).await?;
    tx.commit().await?;
    Ok(planned.answers(seqs))
}

pub(in crate::store) enum Retry {
    /// Another node's rows got in between the check and the insert: write the group again.
    Again,
    /// A serialization failure or deadlock (another node's group): write the group again.
    Db(StoreError),
    /// Anything else.
    Fail(StoreError),
}

impl From<tokio_postgres::Error> for Retry {
    fn from(e: tokio_postgres::Error) -> Retry {
        match e.code() {
            Some(c)
                if *c == SqlState::T_R_DEADLOCK_DETECTED
                    || *c == SqlState::T_R_SERIALIZATION_FAILURE =>
            {
                Retry::Db(db(e))
            }
            // An event id or idempotency key stored meanwhile (or, on a first pass, before:
            // see `Checks`), or a subscription deleted since it was read: read again.
            Some(c)
                if *c == SqlState::UNIQUE_VIOLATION || *c == SqlState::FOREIGN_KEY_VIOLATION =>
            {
                Retry::Again
            }
            _ => Retry::Fail(db(e)),
        }
    }
}

impl From<StoreError> for Retry {
    fn from(e: StoreError) -> Retry {
        Retry::Fail(e)
    }
}

/// A 64-bit advisory lock key for one ordered conversation of one subscription.
pub(in crate::store) fn conversation_lock(subscription_seq: i64, key: &str) -> i64 {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    h.update(subscription_seq.to_be_bytes());
    h.update(key.as_bytes());
    let d = h.finalize();
    i64::from_be_bytes(d[..8].try_into().expect("8 bytes"))
}

/// Takes the advisory locks of these conversations for the rest of the transaction, in
/// ascending key order (so two transactions never wait for each other in a cycle).
pub(in crate::store) async fn lock_conversations(
    tx: &deadpool_postgres::Transaction<'_>,
    conversations: &[(i64, String)],
) -> Result<(), tokio_postgres::Error> {
    if conversations.is_empty() {
        return Ok(());
    }
    let mut locks: Vec<i64> = conversations
        .iter()
        .map(|(s, k)| conversation_lock(*s, k))
        .collect();
    locks.sort_unstable();
    locks.dedup();
    tx.execute(
        "SELECT pg_advisory_xact_lock(k) FROM unnest($1::bigint[]) WITH ORDINALITY AS l(k, n) ORDER BY n",
        &[&locks],
    )
    .await?;
    Ok(())
}

/// Locks these ordered conversations, then reads which of them already have a delivery
/// pending (a new one waits behind it). One after the other, never pipelined: the read must
/// start after the locks are granted, to see every delivery their previous holders committed
/// (a pipelined read whose statement is prepared already could run before the lock's).
async fn lock_busy(
    tx: &deadpool_postgres::Transaction<'_>,
    ordered: &[(i64, String)],
) -> Result<HashSet<(i64, String)>, Retry> {
    lock_conversations(tx, ordered).await?;
    let subs: Vec<i64> = ordered.iter().map(|o| o.0).collect();
    let keys: Vec<&str> = ordered.iter().map(|o| o.1.as_str()).collect();
    let stmt = tx
        .prepare_cached(
            "SELECT DISTINCT d.subscription_seq, d.ordering_key
             FROM unnest($1::bigint[], $2::text[]) AS k(subscription_seq, ordering_key)
             JOIN deliveries d ON d.subscription_seq = k.subscription_seq
                AND d.ordering_key = k.ordering_key AND d.status = 'pending'",
        )
        .await?;
    let busy = tx.query(&stmt, &[&subs, &keys]).await?;
    Ok(busy.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// What a pass looks up before it writes.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(in crate::store) enum Checks {
    /// Idempotency keys only: an event id stored before is left to the unique index.
    Keys,
    /// Idempotency keys and event ids.
    All,
}

/// What the stored rows say about a group, read before anything is written.
struct Reads {
    /// Stored events by (account, idempotency key).
    stored_by_key: HashMap<(String, String), StoredEvent>,
    /// Stored (account, event id) pairs ([`Checks::All`] only).
    stored_ids: HashSet<(String, String)>,
    /// The active subscriptions wanting each (account, event type) of the group.
    matches: HashMap<(String, String), Vec<Match>>,
}

/// Reads what the group's events clash with and which subscriptions they match, the
/// statements sent together (one round trip).
async fn read<C: GenericClient>(
    c: &C,
    group: &[&[NewEvent]],
    checks: Checks,
) -> Result<Reads, Retry> {
    let (mut key_accounts, mut keys, mut id_accounts, mut ids) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut pairs: Vec<(&str, &str)> = Vec::new();
    for e in group.iter().flat_map(|r| r.iter()) {
        if let Some(key) = &e.idempotency_key {
            key_accounts.push(e.account_id.as_str());
            keys.push(key.as_str());
        }
        id_accounts.push(e.account_id.as_str());
        ids.push(e.id.as_str());
        pairs.push((e.account_id.as_str(), e.event_type.as_str()));
    }
    pairs.sort_unstable();
    pairs.dedup();
    let by_key = async {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let stmt = c
            .prepare_cached(&format!(
                "SELECT {EVENT_COLUMNS}, body_hash, account_id, idempotency_key FROM events
                 WHERE (account_id, idempotency_key) IN
                    (SELECT * FROM unnest($1::text[], $2::text[]))"
            ))
            .await?;
        c.query(&stmt, &[&key_accounts, &keys]).await
    };
    let by_id = async {
        if checks == Checks::Keys {
            return Ok(Vec::new());
        }
        let stmt = c
            .prepare_cached(
                "SELECT account_id, id FROM events
                 WHERE (account_id, id) IN (SELECT * FROM unnest($1::text[], $2::text[]))",
            )
            .await?;
        c.query(&stmt, &[&id_accounts, &ids]).await
    };
    let accounts: Vec<&str> = pairs.iter().map(|p| p.0).collect();
    let types: Vec<&str> = pairs.iter().map(|p| p.1).collect();
    let matching = async {
        let stmt = c
            .prepare_cached(
                "SELECT DISTINCT k.account_id, k.event_type, s.seq, s.plugin_id,
                    s.transform_plugin_id, s.ordering
                 FROM unnest($1::text[], $2::text[]) AS k(account_id, event_type)
                 JOIN subscription_event_types t
                    ON t.account_id = k.account_id AND t.event_type IN (k.event_type, '*')
                 JOIN subscriptions s ON s.seq = t.subscription_seq
                 WHERE s.status = 'active'
                 ORDER BY s.seq",
            )
            .await?;
        c.query(&stmt, &[&accounts, &types]).await
    };
    let (by_key, by_id, matching) = tokio::join!(by_key, by_id, matching);
    let mut stored_by_key = HashMap::new();
    for r in by_key? {
        let event = event_row(&r)?;
        let hash: Option<Vec<u8>> = r.try_get(9).map_err(db)?;
        let account: String = r.try_get(10).map_err(db)?;
        let key: String = r.try_get(11).map_err(db)?;
        stored_by_key.insert((account, key), (event, hash));
    }
    let stored_ids = by_id?.iter().map(|r| (r.get(0), r.get(1))).collect();
    let mut matches: HashMap<(String, String), Vec<Match>> = HashMap::new();
    for r in matching? {
        let ordering: String = r.get(5);
        matches
            .entry((r.get(0), r.get(1)))
            .or_default()
            .push(Match {
                seq: r.get(2),
                plugin_id: r.get(3),
                transform_plugin_id: r.get(4),
                ordering: DeliveryOrdering::parse(&ordering)
                    .ok_or_else(|| StoreError::Corrupt("subscription ordering".into()))?,
            });
    }
    Ok(Reads {
        stored_by_key,
        stored_ids,
        matches,
    })
}

/// A group checked against what is stored: the events to insert, and what each request
/// gets.
struct Planned<'a> {
    new: Vec<&'a NewEvent>,
    plans: Vec<Result<Vec<Plan>, StoreError>>,
}

/// Decides, request by request in order, which events are new, which are replays and which
/// request fails (a conflict fails its whole request, and nothing of it is written).
fn plan<'a>(group: &[&'a [NewEvent]], reads: &Reads) -> Planned<'a> {
    let Reads {
        stored_by_key,
        stored_ids,
        ..
    } = reads;
    let mut new: Vec<&NewEvent> = Vec::new();
    let mut group_keys: HashMap<(&str, &str), usize> = HashMap::new();
    let mut group_ids: HashSet<(&str, &str)> = HashSet::new();
    let mut plans: Vec<Result<Vec<Plan>, StoreError>> = Vec::with_capacity(group.len());
    for request in group {
        let mut plan = Vec::with_capacity(request.len());
        // This request's keys (account, key, index among the new events) and ids.
        let mut own_keys: Vec<(&str, &str, usize)> = Vec::new();
        let mut own_ids: Vec<(&str, &str)> = Vec::new();
        let start = new.len();
        let mut failed = None;
        for e in request.iter() {
            let account = e.account_id.as_str();
            if let Some(key) = e.idempotency_key.as_deref() {
                if let Some((event, hash)) =
                    stored_by_key.get(&(e.account_id.clone(), key.to_string()))
                {
                    if hash.as_deref() != Some(&e.body_hash[..]) {
                        failed = Some(reused_key(key));
                        break;
                    }
                    plan.push(Plan::Replay(Replayed::Stored(event.clone())));
                    continue;
                }
                let earlier = group_keys.get(&(account, key)).copied().or_else(|| {
                    own_keys
                        .iter()
                        .find(|(a, k, _)| *a == account && *k == key)
                        .map(|(_, _, n)| *n)
                });
                if let Some(n) = earlier {
                    let first: &NewEvent = new[n];
                    if first.body_hash != e.body_hash {
                        failed = Some(reused_key(key));
                        break;
                    }
                    plan.push(Plan::Replay(Replayed::InGroup(n)));
                    continue;
                }
            }
            let id = e.id.as_str();
            if stored_ids.contains(&(e.account_id.clone(), e.id.clone()))
                || group_ids.contains(&(account, id))
                || own_ids.contains(&(account, id))
            {
                failed = Some(StoreError::Conflict(format!(
                    "an event with id {id:?} already exists"
                )));
                break;
            }
            if let Some(key) = e.idempotency_key.as_deref() {
                own_keys.push((account, key, new.len()));
            }
            own_ids.push((account, id));
            plan.push(Plan::New(new.len()));
            new.push(e);
        }
        match failed {
            Some(e) => {
                new.truncate(start);
                plans.push(Err(e));
            }
            None => {
                for (account, key, n) in own_keys {
                    group_keys.insert((account, key), n);
                }
                group_ids.extend(own_ids);
                plans.push(Ok(plan));
            }
        }
    }
    Planned { new, plans }
}

impl Planned<'_> {
    /// The (subscription, conversation) pairs of the new events' ordered deliveries, sorted.
    fn ordered(&self, reads: &Reads) -> Vec<(i64, String)> {
        let mut ordered: Vec<(i64, String)> = Vec::new();
        for e in &self.new {
            let Some((conversation_id, _)) = &e.conversation else {
                continue;
            };
            for m in reads.matches_of(e) {
                if m.ordering == DeliveryOrdering::Conversation {
                    ordered.push((m.seq, conversation_id.clone()));
                }
            }
        }
        ordered.sort_unstable();
        ordered.dedup();
        ordered
    }

    /// The answers, from the plans and the new events' sequence numbers.
    fn answers(self, written: Written) -> Vec<Result<Vec<Ingested>, StoreError>> {
        let Planned { new, plans } = self;
        let stored_event = |n: usize| -> Event {
            let e = new[n];
            Event {
                seq: written.seqs[n],
                id: e.id.clone(),
                event_type: e.event_type.clone(),
                payload: e.payload.clone(),
                occurred_at: e.occurred_at.clone(),
                received_at: e.received_at,
                causation: e.causation.clone(),
            }
        };
        plans
            .into_iter()
            .map(|plan| {
                Ok(plan?
                    .into_iter()
                    .map(|p| match p {
                        Plan::New(n) => Ingested {
                            event: stored_event(n),
                            replayed: false,
                            deliveries: written.deliveries[n],
                        },
                        Plan::Replay(Replayed::Stored(event)) => Ingested {
                            event,
                            replayed: true,
                            deliveries: 0,
                        },
                        Plan::Replay(Replayed::InGroup(n)) => Ingested {
                            event: stored_event(n),
                            replayed: true,
                            deliveries: 0,
                        },
                    })
                    .collect())
            })
            .collect()
    }
}

impl Reads {
    fn matches_of(&self, e: &NewEvent) -> impl Iterator<Item = &Match> {
        self.matches
            .get(&(e.account_id.clone(), e.event_type.clone()))
            .into_iter()
            .flatten()
    }
}

/// What the write stored for each new event: its sequence number and its number of due or
/// held deliveries.
struct Written {
    seqs: Vec<i64>,
    deliveries: Vec<usize>,
}

/// The group's rows in one statement: the new events, the conversation index (one row per
/// conversation, the group's latest facts winning, in key order so that concurrent groups
/// lock rows in the same order) and one delivery per matching active subscription (the
/// outbox). `busy` holds the ordered conversations that already have a pending delivery: a
/// new one waits behind it (and behind an earlier one of the same group).
///
/// One statement is atomic on its own: outside a transaction it commits everything or
/// nothing. An event id or key stored meanwhile fails it as a whole ([`Retry::Again`]).
async fn write<C: GenericClient>(
    c: &C,
    planned: &Planned<'_>,
    reads: &Reads,
    mut busy: HashSet<(i64, String)>,
) -> Result<Written, Retry> {
    let new = &planned.new;
    let mut deliveries = vec![0usize; new.len()];
    if new.is_empty() {
        return Ok(Written {
            seqs: Vec::new(),
            deliveries,
        });
    }
    let col = |f: fn(&NewEvent) -> Option<String>| new.iter().map(|e| f(e)).collect::<Vec<_>>();
    let ids: Vec<&str> = new.iter().map(|e| e.id.as_str()).collect();
    let accounts: Vec<&str> = new.iter().map(|e| e.account_id.as_str()).collect();
    let types: Vec<&str> = new.iter().map(|e| e.event_type.as_str()).collect();
    let payloads: Vec<&str> = new.iter().map(|e| e.payload.get()).collect();
    let occurred: Vec<&str> = new.iter().map(|e| e.occurred_at.as_str()).collect();
    let received: Vec<i64> = new.iter().map(|e| e.received_at).collect();
    let keys = col(|e| e.idempotency_key.clone());
    let hashes: Vec<&[u8]> = new.iter().map(|e| &e.body_hash[..]).collect();
    let cause_plugins = col(|e| e.causation.as_ref().map(|c| c.plugin_id.clone()));
    let cause_events = col(|e| e.causation.as_ref().map(|c| c.event_id.clone()));
    let depths: Vec<i64> = new
        .iter()
        .map(|e| e.causation.as_ref().map_or(0, |c| i64::from(c.depth)))
        .collect();

    // (account, conversation) -> (customer, source, updated_at)
    type Facts<'a> = (Option<&'a str>, Option<&'a str>, i64);
    let mut conversations: HashMap<(&str, &str), Facts<'_>> = HashMap::new();
    for e in new {
        if let Some((conversation_id, c)) = &e.conversation {
            let slot = conversations
                .entry((e.account_id.as_str(), conversation_id.as_str()))
                .or_insert((None, None, e.received_at));
            slot.0 = c.customer_id.as_deref().or(slot.0);
            slot.1 = c.source.as_deref().or(slot.1);
            slot.2 = e.received_at;
        }
    }
    let mut conversations: Vec<_> = conversations.into_iter().collect();
    conversations.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    let c_accounts: Vec<&str> = conversations.iter().map(|r| r.0.0).collect();
    let c_ids: Vec<&str> = conversations.iter().map(|r| r.0.1).collect();
    let c_customers: Vec<Option<&str>> = conversations.iter().map(|r| r.1.0).collect();
    let c_sources: Vec<Option<&str>> = conversations.iter().map(|r| r.1.1).collect();
    let c_at: Vec<i64> = conversations.iter().map(|r| r.1.2).collect();

    let mut d_ids = Vec::new();
    let mut d_accounts = Vec::new();
    let mut d_events = Vec::new();
    let mut d_subs = Vec::new();
    let mut d_status = Vec::new();
    let mut d_due: Vec<Option<i64>> = Vec::new();
    let mut d_error: Vec<Option<String>> = Vec::new();
    let mut d_created = Vec::new();
    let mut d_keys: Vec<Option<&str>> = Vec::new();
    for (n, e) in new.iter().enumerate() {
        for m in reads.matches_of(e) {
            let skip = crate::store::policy::loop_guard(
                e.causation.as_ref(),
                m.plugin_id.as_deref(),
                m.transform_plugin_id.as_deref(),
            );
            let key = match (m.ordering, &e.conversation) {
                (DeliveryOrdering::Conversation, Some((conversation_id, _))) => {
                    Some(conversation_id.as_str())
                }
                _ => None,
            };
            let (status, due) = match &skip {
                Some(_) => (DeliveryStatus::Filtered, None),
                None => {
                    deliveries[n] += 1;
                    // Behind an earlier pending delivery of its conversation (stored, or
                    // earlier in this group), it waits its turn.
                    let held = match key {
                        Some(key) => !busy.insert((m.seq, key.to_string())),
                        None => false,
                    };
                    (DeliveryStatus::Pending, (!held).then_some(e.received_at))
                }
            };
            d_ids.push(new_id("msg"));
            d_accounts.push(e.account_id.as_str());
            d_events.push(e.id.as_str());
            d_subs.push(m.seq);
            d_status.push(status.as_str());
            d_due.push(due);
            d_error.push(skip);
            d_created.push(e.received_at);
            d_keys.push(key);
        }
    }
    let stmt = c
        .prepare_cached(
            "WITH ev AS (
                INSERT INTO events (id, account_id, type, payload, occurred_at, received_at,
                    idempotency_key, body_hash, cause_plugin_id, cause_event_id, cause_depth)
                SELECT id, account_id, type, payload, occurred_at, received_at, idempotency_key,
                    body_hash, cause_plugin_id, cause_event_id, cause_depth
                FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
                    $6::bigint[], $7::text[], $8::bytea[], $9::text[], $10::text[], $11::bigint[])
                    WITH ORDINALITY AS n(id, account_id, type, payload, occurred_at, received_at,
                        idempotency_key, body_hash, cause_plugin_id, cause_event_id, cause_depth,
                        ord)
                ORDER BY ord
                RETURNING seq, account_id, id
             ), cv AS (
                INSERT INTO conversations (account_id, conversation_id, customer_id, source,
                    updated_at)
                SELECT * FROM unnest($12::text[], $13::text[], $14::text[], $15::text[],
                    $16::bigint[])
                ON CONFLICT (account_id, conversation_id) DO UPDATE SET
                    customer_id = COALESCE(excluded.customer_id, conversations.customer_id),
                    source = COALESCE(excluded.source, conversations.source),
                    updated_at = excluded.updated_at
             ), dv AS (
                INSERT INTO deliveries (id, account_id, event_seq, subscription_seq, status,
                    next_attempt_at, last_error, created_at, updated_at, ordering_key)
                SELECT d.id, d.account_id, ev.seq, d.subscription_seq, d.status,
                    d.next_attempt_at, d.last_error, d.created_at, d.created_at, d.ordering_key
                FROM unnest($17::text[], $18::text[], $19::text[], $20::bigint[], $21::text[],
                    $22::bigint[], $23::text[], $24::bigint[], $25::text[])
                    WITH ORDINALITY AS d(id, account_id, event_id, subscription_seq, status,
                        next_attempt_at, last_error, created_at, ordering_key, ord)
                JOIN ev ON ev.account_id = d.account_id AND ev.id = d.event_id
                ORDER BY d.ord
             )
             SELECT seq, account_id, id FROM ev",
        )
        .await?;
    let rows = c
        .query(
            &stmt,
            &[
                &ids,
                &accounts,
                &types,
                &payloads,
                &occurred,
                &received,
                &keys,
                &hashes,
                &cause_plugins,
                &cause_events,
                &depths,
                &c_accounts,
                &c_ids,
                &c_customers,
                &c_sources,
                &c_at,
                &d_ids,
                &d_accounts,
                &d_events,
                &d_subs,
                &d_status,
                &d_due,
                &d_error,
                &d_created,
                &d_keys,
            ],
        )
        .await?;
    let by_id: HashMap<(String, String), i64> = rows
        .iter()
        .map(|r| ((r.get(1), r.get(2)), r.get(0)))
        .collect();
    let mut seqs = Vec::with_capacity(new.len());
    for e in new {
        let seq = by_id
            .get(&(e.account_id.clone(), e.id.clone()))
            .ok_or_else(|| StoreError::Corrupt("an inserted event was not returned".into()))?;
        seqs.push(*seq);
    }
    Ok(Written { seqs, deliveries })
}

/// Writes the requests' events inside `tx` (which the caller commits); one answer per
/// request, in order. [`Retry::Again`] or [`Retry::Db`]: roll back and call again.
pub(in crate::store) async fn write_in(
    tx: &deadpool_postgres::Transaction<'_>,
    group: &[&[NewEvent]],
) -> Result<Vec<Result<Vec<Ingested>, StoreError>>, Retry> {
    let reads = read(tx, group, Checks::All).await?;
    let planned = plan(group, &reads);
    let ordered = planned.ordered(&reads);
    let busy = if ordered.is_empty() {
        HashSet::new()
    } else {
        lock_busy(tx, &ordered).await?
    };
    let written = write(tx, &planned, &reads, busy).await?;
    Ok(planned.answers(written))
}

async fn notify_due(pool: &Pool) {
    if let Ok(client) = pool.get().await {
        let _ = client
            .execute("SELECT pg_notify($1, '')", &[&WAKE_CHANNEL])
            .await;
    }
}

/// An active subscription that wants an event.
struct Match {
    seq: i64,
    plugin_id: Option<String>,
    transform_plugin_id: Option<String>,
    ordering: DeliveryOrdering,
}

/// An event stored before, with the hash of the body it was sent with.
type StoredEvent = (Event, Option<Vec<u8>>);

fn reused_key(key: &str) -> StoreError {
    StoreError::Conflict(format!(
        "idempotency key {key:?} was already used for a different event"
    ))
}

impl PgStore {
    /// Stores events all-or-none, with one delivery per matching subscription; concurrent calls
    /// share a transaction (see the module docs).
    pub async fn ingest(&self, events: Vec<NewEvent>) -> Result<Vec<Ingested>, StoreError> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let (reply, answer) = oneshot::channel();
        self.ingest
            .send(IngestRequest { events, reply })
            .await
            .map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    /// Tells every node's dispatcher (this one's too) that deliveries became due. Sent after
    /// the commit that made them due; a lost notification only delays them to the next poll.
    pub(in crate::store) async fn notify_due(&self) {
        notify_due(&self.pool).await;
    }

    /// One event of the account.
    pub async fn get_event(&self, account_id: String, id: String) -> Result<Event, StoreError> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(&format!(
                "SELECT {EVENT_COLUMNS} FROM events WHERE account_id = $1 AND id = $2"
            ))
            .await
            .map_err(db)?;
        match client
            .query_opt(&stmt, &[&account_id, &id])
            .await
            .map_err(db)?
        {
            Some(r) => event_row(&r),
            None => Err(StoreError::NotFound),
        }
    }

    /// The account's events, newest first, optionally of one type (see
    /// [`PgStore::search_events`]).
    pub async fn list_events(
        &self,
        account_id: String,
        event_type: Option<String>,
        limit: usize,
        cursor: Option<i64>,
    ) -> Result<crate::store::Page<Event>, StoreError> {
        let search = crate::store::EventSearch {
            event_type,
            ..Default::default()
        };
        self.search_events(account_id, search, limit, cursor).await
    }

    /// What the conversation index knows of a conversation.
    pub async fn conversation(
        &self,
        account_id: String,
        conversation_id: String,
    ) -> Result<Conversation, StoreError> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "SELECT customer_id, source FROM conversations
                 WHERE account_id = $1 AND conversation_id = $2",
            )
            .await
            .map_err(db)?;
        match client
            .query_opt(&stmt, &[&account_id, &conversation_id])
            .await
            .map_err(db)?
        {
            Some(r) => Ok(Conversation {
                customer_id: r.get(0),
                source: r.get(1),
            }),
            None => Err(StoreError::NotFound),
        }
    }
}

#[cfg(test)]
pub(in crate::store) mod tests {
    use serde_json::value::RawValue;

    use super::*;
    use crate::events::{EventIn, prepare};
    use crate::store::postgres::testing;

    /// An account `acc` (made once) with one more active subscription to `event_type`, made
    /// through the store as the API would; returns its seq.
    pub(in crate::store) async fn seed(store: &PgStore, event_type: &str, ordering: &str) -> i64 {
        let account = crate::model::Account {
            id: "acc".into(),
            name: "A".into(),
            created_at: 0,
        };
        let key = crate::store::NewApiKey {
            id: "key".into(),
            hash: [7; 32],
            prefix: "whk_".into(),
        };
        match store.create_account(account, key).await {
            Ok(_) | Err(StoreError::Conflict(_)) => {}
            Err(e) => panic!("creating the account: {e}"),
        }
        let req: crate::subscriptions::CreateSubscription =
            serde_json::from_value(serde_json::json!({
                "url": "https://example.com/hook",
                "event_types": [event_type],
                "ordering": ordering,
            }))
            .unwrap();
        let sub = crate::subscriptions::build("acc", req, &Default::default()).unwrap();
        store.create_subscription(sub).await.unwrap().seq
    }

    pub(in crate::store) fn event(event_type: &str, payload: &str, key: Option<&str>) -> NewEvent {
        let e = EventIn {
            event_type: event_type.into(),
            payload: RawValue::from_string(payload.into()).unwrap(),
            id: None,
            occurred_at: None,
        };
        prepare("acc", e, key.map(String::from), 1 << 20, "").unwrap()
    }

    async fn pending(store: &PgStore) -> Vec<(String, Option<i64>)> {
        let c = store.client().await.unwrap();
        c.query(
            "SELECT e.payload, d.next_attempt_at FROM deliveries d JOIN events e ON e.seq = d.event_seq
             WHERE d.status = 'pending' ORDER BY d.seq",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
    }

    #[tokio::test]
    async fn concurrent_requests_share_a_group_and_keep_idempotency() {
        let Some(store) = testing::store().await else {
            return;
        };
        seed(&store, "a", "none").await;
        // Many requests at once, half of them with the same key and body: one event for those.
        let mut calls = Vec::new();
        for i in 0..40 {
            let store = store.clone();
            let (payload, key) = if i % 2 == 0 {
                (r#"{"same":true}"#.to_string(), Some("k1"))
            } else {
                (format!(r#"{{"i":{i}}}"#), None)
            };
            calls.push(tokio::spawn(async move {
                store.ingest(vec![event("a", &payload, key)]).await
            }));
        }
        let mut fresh = 0;
        let mut replayed = 0;
        let mut stored_seq = None;
        for call in calls {
            let ingested = call.await.unwrap().unwrap().remove(0);
            if ingested.event.payload.get() == r#"{"same":true}"# {
                assert_eq!(
                    *stored_seq.get_or_insert(ingested.event.seq),
                    ingested.event.seq
                );
                if ingested.replayed {
                    replayed += 1;
                } else {
                    fresh += 1;
                    assert_eq!(ingested.deliveries, 1);
                }
            }
        }
        assert_eq!((fresh, replayed), (1, 19));
        assert_eq!(pending(&store).await.len(), 21);
        // The same key with another body is a conflict, and nothing of that request is stored.
        let e = store
            .ingest(vec![
                event("a", r#"{"new":1}"#, None),
                event("a", r#"{"same":false}"#, Some("k1")),
            ])
            .await
            .unwrap_err();
        assert!(matches!(e, StoreError::Conflict(_)), "{e}");
        assert_eq!(pending(&store).await.len(), 21);
    }

    #[tokio::test]
    async fn an_id_stored_before_fails_its_request_alone_and_the_group_commits() {
        let Some(store) = testing::store().await else {
            return;
        };
        seed(&store, "b", "none").await;
        let taken = |payload: &str| NewEvent {
            id: "evt_taken".into(),
            ..event("b", payload, None)
        };
        store.ingest(vec![taken(r#"{"n":1}"#)]).await.unwrap();
        // One group, written directly: the first pass does not look ids up, so the stored id
        // is found by the unique index, and the second pass answers that request alone.
        let request = |events| IngestRequest {
            events,
            reply: oneshot::channel().0,
        };
        let group = [
            request(vec![event("b", r#"{"n":2}"#, None)]),
            request(vec![taken(r#"{"n":3}"#), event("b", r#"{"n":4}"#, None)]),
            request(vec![event("b", r#"{"n":5}"#, None)]),
        ];
        let answers = write_group(&store.pool, &group).await.unwrap();
        assert!(
            matches!(&answers[1], Err(StoreError::Conflict(_))),
            "{:?}",
            answers[1].as_ref().err()
        );
        for n in [0, 2] {
            let ingested = answers[n].as_ref().unwrap();
            assert_eq!((ingested[0].replayed, ingested[0].deliveries), (false, 1));
        }
        let payloads: Vec<String> = pending(&store).await.into_iter().map(|p| p.0).collect();
        assert_eq!(payloads, [r#"{"n":1}"#, r#"{"n":2}"#, r#"{"n":5}"#]);
    }

    #[tokio::test]
    async fn an_ordered_conversation_holds_all_but_its_head() {
        let Some(store) = testing::store().await else {
            return;
        };
        seed(&store, "m", "conversation").await;
        let batch = vec![
            event("m", r#"{"conversation_id":"x","n":0}"#, None),
            event("m", r#"{"conversation_id":"x","n":1}"#, None),
            event("m", r#"{"conversation_id":"y","n":0}"#, None),
        ];
        store.ingest(batch).await.unwrap();
        store
            .ingest(vec![event("m", r#"{"conversation_id":"y","n":1}"#, None)])
            .await
            .unwrap();
        let due: Vec<bool> = pending(&store)
            .await
            .iter()
            .map(|p| p.1.is_some())
            .collect();
        assert_eq!(due, vec![true, false, true, false]);
        let conv = store.conversation("acc".into(), "x".into()).await.unwrap();
        assert_eq!(conv.customer_id, None);
    }
}
