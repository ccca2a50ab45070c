//! The store's contract: what every backend must do, checked the same way on each.
//!
//! Every test here runs against every backend [`backends`] returns, through the public
//! [`Store`] only (no SQL, no backend's types), so a behaviour one backend gets wrong fails
//! with that backend's name in the message. Backend-specific checks (query plans, on-disk
//! encryption, the writer's grouping) stay in the backend's own module.
//!
//! Times are chosen by the tests, not read from a clock: a claim's `now` is the caller's, so
//! lease expiry and retry times are exact without sleeping.

use std::sync::Arc;

use serde_json::value::RawValue;

use super::{
    ClaimRequest, Claimed, DeliveryFilter, DeliveryScope, EventSearch, KvLimits, KvRefusal,
    NewApiKey, NewConsoleSession, NewEvent, Outcome, Settled, Store, StoreError, SyncMode,
};
use crate::events::{EventIn, prepare};
use crate::model::{
    Account, Attempt, Causation, Delivery, DeliveryStatus, LogLevel, Plugin, PluginLogLine,
    PluginVersion, VersionStatus,
};
use crate::secrets::Keyring;
use crate::subscriptions::{CreateSubscription, build};

/// The account every test works in.
const ACCOUNT: &str = "acc_contract";
/// A claim's lease in these tests.
const LEASE: i64 = 60_000;

/// One backend under test: a fresh, empty store holding [`ACCOUNT`].
struct Fixture {
    /// Named in every assertion message.
    name: &'static str,
    store: Store,
    /// Whatever must live as long as the store (a temp dir, a throwaway database).
    _keep: Box<dyn std::any::Any + Send>,
}

/// Every backend available in this run, each a fresh store.
///
/// SQLite always. A server-based backend joins here when its test server is configured:
/// PostgreSQL when `WASMHOOK_TEST_DATABASE_URL` names one (the test command starts a private
/// cluster and sets it) — one more function building a [`Fixture`] over a fresh database on
/// that server, pushed onto this list. Nothing else in this file changes.
async fn backends() -> Vec<Fixture> {
    let mut all = vec![sqlite()];
    if let Some(pg) = postgres().await {
        all.push(pg);
    }
    for f in &all {
        create_account(f).await;
    }
    all
}

fn sqlite() -> Fixture {
    let dir = tempfile::tempdir().expect("a temp dir");
    let store = Store::open(dir.path(), SyncMode::Normal, Arc::new(Keyring::ephemeral()))
        .expect("opening SQLite");
    Fixture {
        name: "sqlite",
        store,
        _keep: Box::new(dir),
    }
}

/// A fresh database on the test cluster (`WASMHOOK_TEST_DATABASE_URL`), when one is set.
async fn postgres() -> Option<Fixture> {
    let base = super::postgres::testing::url()?;
    let url = super::postgres::testing::fresh_database(&base).await;
    let store = Store::connect(
        &url,
        Arc::new(Keyring::ephemeral()),
        super::postgres::PgOptions::default(),
    )
    .await
    .expect("connecting to PostgreSQL");
    Some(Fixture {
        name: "postgres",
        store,
        _keep: Box::new(()),
    })
}

async fn create_account(f: &Fixture) {
    let account = Account {
        id: ACCOUNT.into(),
        name: "Contract".into(),
        created_at: 0,
    };
    let key = NewApiKey {
        id: "key_contract".into(),
        hash: [9; 32],
        prefix: "whk_c".into(),
    };
    f.store.create_account(account, key).await.unwrap();
}

/// A URL subscription to `event_type`; returns its id.
async fn subscribe_url(store: &Store, event_type: &str) -> String {
    subscribe(
        store,
        serde_json::json!({"url": "https://example.com/hook", "event_types": [event_type]}),
    )
    .await
}

async fn subscribe(store: &Store, req: serde_json::Value) -> String {
    let req: CreateSubscription = serde_json::from_value(req).unwrap();
    let sub = build(ACCOUNT, req, &Default::default()).unwrap();
    store.create_subscription(sub).await.unwrap().id
}

/// An event as the API prepares it, received at `received_at`.
fn event(event_type: &str, payload: &str, id: Option<&str>, received_at: i64) -> NewEvent {
    let e = EventIn {
        event_type: event_type.into(),
        payload: RawValue::from_string(payload.into()).unwrap(),
        id: id.map(String::from),
        occurred_at: None,
    };
    let mut e = prepare(ACCOUNT, e, None, 1 << 20, "").unwrap();
    e.received_at = received_at;
    e
}

fn claim_at(now: i64) -> ClaimRequest {
    ClaimRequest {
        now,
        lease_ms: LEASE,
        limit: 100,
        ahead_limit: 0,
        default_max_in_flight: 100,
        after_subscription: 0,
        claim_ahead: Vec::new(),
    }
}

fn attempt(at: i64, status_code: u16) -> Attempt {
    Attempt {
        attempted_at: at,
        duration_ms: 5,
        status_code: Some(status_code),
        error_kind: (status_code >= 300).then(|| "http_status".into()),
        error_message: (status_code >= 300).then(|| format!("HTTP {status_code}")),
        response_body: None,
        request: None,
    }
}

/// The outcome of an attempt made under claim `c` that answered `status_code`.
fn outcome(
    c: &Claimed,
    status: DeliveryStatus,
    status_code: u16,
    at: i64,
    next: Option<i64>,
) -> Outcome {
    Outcome {
        delivery_seq: c.delivery.seq,
        token: c.token,
        attempt: Some(attempt(at, status_code)),
        status,
        next_attempt_at: next,
        last_error: (status_code >= 300).then(|| format!("HTTP {status_code}")),
        breaker: None,
    }
}

async fn delivery(store: &Store, id: &str) -> (Delivery, Vec<Attempt>) {
    store.get_delivery(ACCOUNT.into(), id.into()).await.unwrap()
}

/// The deliveries of one event, oldest first.
async fn deliveries_of(store: &Store, event_id: &str) -> Vec<Delivery> {
    let filter = DeliveryFilter {
        scope: DeliveryScope::Event(event_id.into()),
        status: None,
    };
    let mut items = store
        .list_deliveries(ACCOUNT.into(), filter, 100, None)
        .await
        .unwrap()
        .items;
    items.reverse();
    items
}

fn plugin(id: &str) -> Plugin {
    Plugin {
        id: id.into(),
        account_id: ACCOUNT.into(),
        name: id.into(),
        config: Default::default(),
        secret_keys: Default::default(),
        allowed_hosts: vec![],
        limits: Default::default(),
        log_level: LogLevel::Info,
        instances: Default::default(),
        version: 1,
        latest_version: 1,
        status: VersionStatus::Ready,
        failure: None,
        created_at: 0,
        updated_at: 0,
    }
}

fn version(n: u32, status: VersionStatus) -> PluginVersion {
    PluginVersion {
        version: n,
        sha256: format!("{n:064x}"),
        size_bytes: 100 * u64::from(n),
        wasm_path: String::new(),
        cwasm_path: String::new(),
        engine_hash: String::new(),
        created_at: i64::from(n),
        status,
        failure: None,
    }
}

#[tokio::test]
async fn ingest_with_the_same_id_or_key_stores_one_event() {
    for f in backends().await {
        let (store, on) = (&f.store, f.name);
        subscribe_url(store, "order:paid").await;
        let first = event("order:paid", r#"{"n":1}"#, Some("evt_client_1"), 1_000);
        let stored = store.ingest(vec![first.clone()]).await.unwrap();
        assert!(!stored[0].replayed, "{on}");
        assert_eq!(stored[0].deliveries, 1, "{on}");

        // The same event again, alone and twice within one batch: the first one comes back.
        let again = store
            .ingest(vec![first.clone(), first.clone()])
            .await
            .unwrap();
        for i in &again {
            assert!(i.replayed, "{on}: a replay is reported as one");
            assert_eq!(i.event.seq, stored[0].event.seq, "{on}");
            assert_eq!(i.deliveries, 0, "{on}: a replay creates no deliveries");
        }
        // A new key twice in one batch: stored once.
        let fresh = event("order:paid", r#"{"n":2}"#, Some("evt_client_2"), 1_001);
        let both = store
            .ingest(vec![fresh.clone(), fresh.clone()])
            .await
            .unwrap();
        assert_eq!((both[0].replayed, both[1].replayed), (false, true), "{on}");
        assert_eq!(both[0].event.seq, both[1].event.seq, "{on}");

        // The same key for a different body is refused, and nothing of its batch is stored.
        let clash = event("order:paid", r#"{"n":3}"#, Some("evt_client_1"), 1_002);
        let other = event("order:paid", r#"{"n":4}"#, None, 1_002);
        match store.ingest(vec![other.clone(), clash]).await {
            Err(StoreError::Conflict(m)) => assert!(m.contains("evt_client_1"), "{on}: {m}"),
            r => panic!("{on}: a conflicting reuse of a key is refused, got {r:?}"),
        }
        assert!(
            matches!(
                store.get_event(ACCOUNT.into(), other.id.clone()).await,
                Err(StoreError::NotFound)
            ),
            "{on}: a batch is stored all or none"
        );

        let events = store
            .list_events(ACCOUNT.into(), None, 100, None)
            .await
            .unwrap()
            .items;
        assert_eq!(events.len(), 2, "{on}: one event per key");
        assert_eq!(store.queue_depth().await.unwrap(), 2, "{on}");
        store.close().await;
    }
}

#[tokio::test]
async fn a_claim_holds_its_lease_and_a_lost_lease_cannot_settle() {
    for f in backends().await {
        let (store, on) = (&f.store, f.name);
        subscribe_url(store, "order:paid").await;
        let now = 10_000;
        store
            .ingest(vec![event("order:paid", "{}", None, now)])
            .await
            .unwrap();

        let first = store.claim_due(claim_at(now)).await.unwrap();
        assert_eq!(first.claimed.len(), 1, "{on}");
        let old = first.claimed[0].clone();
        assert_eq!(old.delivery.attempts, 0, "{on}");
        assert_eq!(old.event.payload.get(), "{}", "{on}");

        let held = store.claim_due(claim_at(now + 1)).await.unwrap();
        assert!(
            held.claimed.is_empty(),
            "{on}: a leased delivery is not claimed twice"
        );
        assert_eq!(
            held.next_due,
            Some(now + LEASE),
            "{on}: due again when its lease ends"
        );

        assert!(
            store
                .extend_lease(old.delivery.seq, old.token, now + 2 * LEASE)
                .await
                .unwrap(),
            "{on}: the holder extends its lease"
        );
        assert!(
            !store
                .extend_lease(old.delivery.seq, old.token ^ 1, now + 3 * LEASE)
                .await
                .unwrap(),
            "{on}: another token does not"
        );
        let still = store.claim_due(claim_at(now + LEASE + 1)).await.unwrap();
        assert!(still.claimed.is_empty(), "{on}: the extended lease holds");

        // The lease runs out: the delivery is claimed again, under a new token.
        let later = now + 2 * LEASE;
        let again = store.claim_due(claim_at(later)).await.unwrap();
        assert_eq!(
            again.claimed.len(),
            1,
            "{on}: due again once its lease ended"
        );
        let new = again.claimed[0].clone();
        assert_eq!(new.delivery.seq, old.delivery.seq, "{on}");
        assert_ne!(new.token, old.token, "{on}: a new claim, a new token");

        let stale = store
            .record_outcome(
                outcome(&old, DeliveryStatus::Failed, 500, later, None),
                later,
            )
            .await
            .unwrap();
        assert_eq!(
            stale,
            Settled::LeaseLost,
            "{on}: the old holder writes nothing"
        );
        assert!(
            !store
                .extend_lease(old.delivery.seq, old.token, later + LEASE)
                .await
                .unwrap(),
            "{on}: nor extends the new owner's lease"
        );
        let settled = store
            .record_outcome(
                outcome(&new, DeliveryStatus::Succeeded, 200, later, None),
                later,
            )
            .await
            .unwrap();
        assert!(matches!(settled, Settled::Recorded { .. }), "{on}");
        let (d, attempts) = delivery(store, &new.delivery.id).await;
        assert_eq!(d.status, DeliveryStatus::Succeeded, "{on}");
        assert_eq!(
            (d.attempts, attempts.len()),
            (1, 1),
            "{on}: only the holder's attempt"
        );
        assert_eq!(attempts[0].status_code, Some(200), "{on}");

        // Claims given back unattempted are due again at once, with no attempt counted.
        store
            .ingest(vec![event("order:paid", "{}", None, later)])
            .await
            .unwrap();
        let taken = store.claim_due(claim_at(later)).await.unwrap();
        let c = taken.claimed[0].clone();
        store
            .release_claims(vec![(c.delivery.seq, c.token)], later + 5)
            .await
            .unwrap();
        let back = store.claim_due(claim_at(later + 5)).await.unwrap();
        assert_eq!(back.claimed.len(), 1, "{on}: a released claim is due again");
        assert_eq!(back.claimed[0].delivery.attempts, 0, "{on}");
        store.close().await;
    }
}

#[tokio::test]
async fn settling_succeeds_retries_later_or_dead_letters() {
    for f in backends().await {
        let (store, on) = (&f.store, f.name);
        subscribe_url(store, "order:paid").await;
        let now = 20_000;
        let evs: Vec<_> = (0..3)
            .map(|i| event("order:paid", &format!(r#"{{"i":{i}}}"#), None, now))
            .collect();
        store.ingest(evs).await.unwrap();
        let claims = store.claim_due(claim_at(now)).await.unwrap();
        assert_eq!(claims.claimed.len(), 3, "{on}");
        let [ok, retry, dead] = [0, 1, 2].map(|i| claims.claimed[i].clone());

        store
            .record_outcome(outcome(&ok, DeliveryStatus::Succeeded, 204, now, None), now)
            .await
            .unwrap();
        let retry_at = now + 30_000;
        store
            .record_outcome(
                outcome(&retry, DeliveryStatus::Pending, 503, now, Some(retry_at)),
                now,
            )
            .await
            .unwrap();
        store
            .record_outcome(outcome(&dead, DeliveryStatus::Failed, 500, now, None), now)
            .await
            .unwrap();

        let (d, _) = delivery(store, &ok.delivery.id).await;
        assert_eq!(
            (d.status, d.attempts),
            (DeliveryStatus::Succeeded, 1),
            "{on}"
        );
        let (d, attempts) = delivery(store, &retry.delivery.id).await;
        assert_eq!((d.status, d.attempts), (DeliveryStatus::Pending, 1), "{on}");
        assert_eq!(d.next_attempt_at, Some(retry_at), "{on}");
        assert_eq!(d.last_error.as_deref(), Some("HTTP 503"), "{on}");
        assert_eq!(attempts[0].status_code, Some(503), "{on}");
        let (d, _) = delivery(store, &dead.delivery.id).await;
        assert_eq!((d.status, d.attempts), (DeliveryStatus::Failed, 1), "{on}");
        assert_eq!(d.next_attempt_at, None, "{on}: a dead letter is never due");

        // The retry waits for its time, then comes back with its attempts counted.
        let early = store.claim_due(claim_at(retry_at - 1)).await.unwrap();
        assert!(early.claimed.is_empty(), "{on}: not before its time");
        assert_eq!(early.next_due, Some(retry_at), "{on}");
        let due = store.claim_due(claim_at(retry_at)).await.unwrap();
        assert_eq!(due.claimed.len(), 1, "{on}");
        let second = due.claimed[0].clone();
        assert_eq!(second.delivery.id, retry.delivery.id, "{on}");
        assert_eq!(second.delivery.attempts, 1, "{on}");
        store
            .record_outcome(
                outcome(&second, DeliveryStatus::Succeeded, 200, retry_at, None),
                retry_at,
            )
            .await
            .unwrap();
        let (d, attempts) = delivery(store, &retry.delivery.id).await;
        assert_eq!(
            (d.status, d.attempts),
            (DeliveryStatus::Succeeded, 2),
            "{on}"
        );
        let codes: Vec<_> = attempts.iter().map(|a| a.status_code).collect();
        assert_eq!(codes, [Some(503), Some(200)], "{on}: attempts in order");
        assert_eq!(store.queue_depth().await.unwrap(), 0, "{on}");
        store.close().await;
    }
}

/// A subscription to every type (`*`) and to the event's own type gets one delivery of it.
#[tokio::test]
async fn a_subscription_matching_twice_gets_one_delivery() {
    for f in backends().await {
        let (store, on) = (&f.store, f.name);
        subscribe(
            store,
            serde_json::json!({"url": "https://example.com/hook", "event_types": ["*", "order:paid"]}),
        )
        .await;
        let stored = store
            .ingest(vec![event("order:paid", r#"{"i":1}"#, None, 1_000)])
            .await
            .unwrap();
        assert_eq!(stored[0].deliveries, 1, "{on}");
        assert_eq!(
            deliveries_of(store, &stored[0].event.id).await.len(),
            1,
            "{on}"
        );
        store.close().await;
    }
}

/// The failure streak an outcome reports (what `--disable-after` counts from): it starts at the
/// first failed attempt, keeps that start through later failures, and a success ends it; an
/// outcome that changes nothing (a success after a success) reports no streak.
#[tokio::test]
async fn a_failure_streak_starts_at_the_first_failure_and_a_success_ends_it() {
    for f in backends().await {
        let (store, on) = (&f.store, f.name);
        subscribe_url(store, "order:paid").await;
        let now = 50_000;
        let evs: Vec<_> = (0..5)
            .map(|i| event("order:paid", &format!(r#"{{"i":{i}}}"#), None, now))
            .collect();
        store.ingest(evs).await.unwrap();
        let claims = store.claim_due(claim_at(now)).await.unwrap();
        assert_eq!(claims.claimed.len(), 5, "{on}");
        let streaks = [
            (DeliveryStatus::Succeeded, 200, now, None),
            (DeliveryStatus::Failed, 500, now + 10, Some(now + 10)),
            (DeliveryStatus::Failed, 502, now + 20, Some(now + 10)),
            (DeliveryStatus::Succeeded, 204, now + 30, None),
            (DeliveryStatus::Failed, 503, now + 40, Some(now + 40)),
        ];
        for (c, (status, code, at, streak)) in claims.claimed.iter().zip(streaks) {
            let settled = store
                .record_outcome(outcome(c, status, code, at, None), at)
                .await
                .unwrap();
            assert_eq!(
                settled,
                Settled::Recorded {
                    failing_since: streak,
                    paused_until: None
                },
                "{on}: HTTP {code} at {at}"
            );
        }
        store.close().await;
    }
}

#[tokio::test]
async fn retry_and_recover_requeue_dead_letters() {
    for f in backends().await {
        let (store, on) = (&f.store, f.name);
        let sub = subscribe_url(store, "order:paid").await;
        let now = 30_000;
        let evs: Vec<_> = (0..3)
            .map(|i| event("order:paid", &format!(r#"{{"i":{i}}}"#), None, now + i))
            .collect();
        store.ingest(evs).await.unwrap();
        let claims = store.claim_due(claim_at(now + 10)).await.unwrap();
        assert_eq!(claims.claimed.len(), 3, "{on}");
        for c in &claims.claimed {
            store
                .record_outcome(outcome(c, DeliveryStatus::Failed, 500, now, None), now)
                .await
                .unwrap();
        }
        assert!(
            store
                .claim_due(claim_at(now + 100))
                .await
                .unwrap()
                .claimed
                .is_empty(),
            "{on}: dead letters are not claimed"
        );

        // A retry of one: due at once, its attempts kept.
        let one = &claims.claimed[0].delivery.id;
        let retried = store
            .retry_delivery(ACCOUNT.into(), one.clone(), now + 200)
            .await
            .unwrap();
        assert_eq!(retried.status, DeliveryStatus::Pending, "{on}");
        let got = store.claim_due(claim_at(now + 200)).await.unwrap();
        assert_eq!(got.claimed.len(), 1, "{on}");
        assert_eq!(&got.claimed[0].delivery.id, one, "{on}");
        assert_eq!(got.claimed[0].delivery.attempts, 1, "{on}");
        store
            .record_outcome(
                outcome(&got.claimed[0], DeliveryStatus::Succeeded, 200, now, None),
                now + 200,
            )
            .await
            .unwrap();

        // Recover the rest: only failed ones created since the given time.
        let none = store
            .recover_deliveries(ACCOUNT.into(), sub.clone(), now + 1_000, now + 300)
            .await
            .unwrap();
        assert_eq!(none, 0, "{on}: nothing failed since then");
        let recovered = store
            .recover_deliveries(ACCOUNT.into(), sub.clone(), now, now + 300)
            .await
            .unwrap();
        assert_eq!(recovered, 2, "{on}: the two still failed");
        let back = store.claim_due(claim_at(now + 300)).await.unwrap();
        let mut ids: Vec<_> = back.claimed.iter().map(|c| c.delivery.id.clone()).collect();
        ids.sort();
        let mut want: Vec<_> = claims.claimed[1..]
            .iter()
            .map(|c| c.delivery.id.clone())
            .collect();
        want.sort();
        assert_eq!(ids, want, "{on}");
        assert!(
            matches!(
                store
                    .recover_deliveries(ACCOUNT.into(), "sub_missing".into(), 0, now)
                    .await,
                Err(StoreError::NotFound)
            ),
            "{on}"
        );
        store.close().await;
    }
}

#[tokio::test]
async fn the_loop_guard_filters_what_a_plugin_caused() {
    for f in backends().await {
        let (store, on) = (&f.store, f.name);
        subscribe_url(store, "message:created").await;
        let own = subscribe(
            store,
            serde_json::json!({"plugin_id": "plg_a", "event_types": ["message:created"]}),
        )
        .await;
        let other = subscribe(
            store,
            serde_json::json!({"plugin_id": "plg_b", "event_types": ["message:created"]}),
        )
        .await;
        let caused = |depth, id: &str| {
            let mut e = event("message:created", "{}", Some(id), 40_000);
            e.causation = Some(Causation {
                plugin_id: "plg_a".into(),
                event_id: "evt_cause".into(),
                depth,
            });
            e
        };
        let shallow = store.ingest(vec![caused(1, "evt_1")]).await.unwrap();
        assert_eq!(
            shallow[0].deliveries, 2,
            "{on}: the URL and the other plugin"
        );
        let deep = store
            .ingest(vec![caused(super::policy::MAX_PLUGIN_DEPTH + 1, "evt_2")])
            .await
            .unwrap();
        assert_eq!(deep[0].deliveries, 1, "{on}: past the depth, only the URL");

        for (event_id, filtered) in [("evt_1", vec![&own]), ("evt_2", vec![&own, &other])] {
            for d in deliveries_of(store, event_id).await {
                let want = if filtered.contains(&&d.subscription_id) {
                    DeliveryStatus::Filtered
                } else {
                    DeliveryStatus::Pending
                };
                assert_eq!(d.status, want, "{on}: {event_id} to {}", d.subscription_id);
                if want == DeliveryStatus::Filtered {
                    assert!(d.last_error.is_some(), "{on}: a filtered delivery says why");
                }
            }
        }
        assert_eq!(deliveries_of(store, "evt_1").await.len(), 3, "{on}");
        store.close().await;
    }
}

#[tokio::test]
async fn kv_reads_writes_counts_and_refuses_past_its_limits() {
    for f in backends().await {
        let (store, on) = (&f.store, f.name);
        store
            .create_plugin(plugin("plg_kv"), version(1, VersionStatus::Ready))
            .await
            .unwrap();
        let p = || "plg_kv".to_string();
        let limits = KvLimits {
            value_bytes: 8,
            keys: 2,
        };
        assert_eq!(store.kv_get(p(), "a".into()).await.unwrap(), None, "{on}");
        store
            .kv_set(p(), "a".into(), b"x".to_vec(), limits)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            store.kv_get(p(), "a".into()).await.unwrap().as_deref(),
            Some(&b"x"[..]),
            "{on}"
        );
        assert_eq!(
            store
                .kv_increment(p(), "n".into(), 5, limits)
                .await
                .unwrap(),
            Ok(5),
            "{on}: a missing counter counts as 0"
        );
        assert_eq!(
            store
                .kv_increment(p(), "n".into(), -7, limits)
                .await
                .unwrap(),
            Ok(-2),
            "{on}"
        );
        assert_eq!(store.kv_key_count(p()).await.unwrap(), 2, "{on}");

        // At the key limit: a new key is refused whichever way it is written, an existing one
        // may change.
        let full = KvRefusal::TooManyKeys(2);
        assert_eq!(
            store
                .kv_set(p(), "c".into(), b"1".to_vec(), limits)
                .await
                .unwrap(),
            Err(full.clone()),
            "{on}"
        );
        assert_eq!(
            store
                .kv_increment(p(), "c".into(), 1, limits)
                .await
                .unwrap(),
            Err(full.clone()),
            "{on}"
        );
        assert_eq!(
            store
                .kv_set_if(p(), "c".into(), None, b"1".to_vec(), limits)
                .await
                .unwrap(),
            Err(full.clone()),
            "{on}"
        );
        store
            .kv_set(p(), "a".into(), b"y".to_vec(), limits)
            .await
            .unwrap()
            .unwrap();

        // Counters are decimal text and never wrap or outgrow the value limit.
        assert_eq!(
            store
                .kv_increment(p(), "a".into(), 1, limits)
                .await
                .unwrap(),
            Err(KvRefusal::NotANumber),
            "{on}"
        );
        store
            .kv_set(p(), "n".into(), b"99999999".to_vec(), limits)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            store
                .kv_increment(p(), "n".into(), 1, limits)
                .await
                .unwrap(),
            Err(KvRefusal::ValueTooLarge(8)),
            "{on}"
        );
        assert_eq!(
            store.kv_get(p(), "n".into()).await.unwrap().as_deref(),
            Some(&b"99999999"[..]),
            "{on}: a refused write changes nothing"
        );

        // Compare and set.
        assert_eq!(
            store
                .kv_set_if(p(), "a".into(), Some(b"y".to_vec()), b"z".to_vec(), limits)
                .await
                .unwrap(),
            Ok(true),
            "{on}"
        );
        assert_eq!(
            store
                .kv_set_if(p(), "a".into(), Some(b"y".to_vec()), b"w".to_vec(), limits)
                .await
                .unwrap(),
            Ok(false),
            "{on}: the value moved on"
        );
        assert_eq!(
            store
                .kv_set_if(p(), "a".into(), None, b"w".to_vec(), limits)
                .await
                .unwrap(),
            Ok(false),
            "{on}: expected absent, but present"
        );
        assert_eq!(
            store.kv_get(p(), "a".into()).await.unwrap().as_deref(),
            Some(&b"z"[..]),
            "{on}"
        );

        // Deleting frees a key.
        store.kv_delete(p(), "a".into()).await.unwrap();
        store.kv_delete(p(), "never".into()).await.unwrap();
        assert_eq!(store.kv_get(p(), "a".into()).await.unwrap(), None, "{on}");
        assert_eq!(store.kv_key_count(p()).await.unwrap(), 1, "{on}");
        assert_eq!(
            store
                .kv_set_if(p(), "c".into(), None, b"1".to_vec(), limits)
                .await
                .unwrap(),
            Ok(true),
            "{on}: room again"
        );

        // Concurrent increments lose no update.
        store.kv_delete(p(), "c".into()).await.unwrap();
        let wide = KvLimits {
            value_bytes: 8,
            keys: 10,
        };
        let tasks: Vec<_> = (0..20)
            .map(|_| {
                let store = store.clone();
                tokio::spawn(async move { store.kv_increment(p(), "hits".into(), 1, wide).await })
            })
            .collect();
        for t in tasks {
            t.await.unwrap().unwrap().unwrap();
        }
        assert_eq!(
            store.kv_get(p(), "hits".into()).await.unwrap().as_deref(),
            Some(&b"20"[..]),
            "{on}"
        );
        store.close().await;
    }
}

#[tokio::test]
async fn plugin_versions_become_current_once_ready() {
    for f in backends().await {
        let (store, on) = (&f.store, f.name);
        let first = store
            .create_plugin(plugin("plg_v"), version(1, VersionStatus::Ready))
            .await
            .unwrap();
        assert_eq!((first.version, first.latest_version), (1, 1), "{on}");
        assert_eq!(
            store
                .next_plugin_version(ACCOUNT.into(), "plg_v".into())
                .await
                .unwrap(),
            2,
            "{on}"
        );

        // An upload is stored compiling; the running version stays until it is ready.
        let p = store
            .add_plugin_version(
                ACCOUNT.into(),
                "plg_v".into(),
                version(2, VersionStatus::Compiling),
            )
            .await
            .unwrap();
        assert_eq!((p.version, p.latest_version), (1, 2), "{on}");
        assert_eq!(p.status, VersionStatus::Compiling, "{on}");
        let (id, next) = store
            .next_compiling_version()
            .await
            .unwrap()
            .expect("the compiler's next job");
        assert_eq!((id.as_str(), next.version), ("plg_v", 2), "{on}");
        let current = store
            .plugin_version_ready("plg_v".into(), 2, "engine-1".into())
            .await
            .unwrap()
            .expect("the newer version becomes current");
        assert_eq!(current.version, 2, "{on}");
        assert!(
            store.next_compiling_version().await.unwrap().is_none(),
            "{on}"
        );

        // A version that fails never runs.
        store
            .add_plugin_version(
                ACCOUNT.into(),
                "plg_v".into(),
                version(3, VersionStatus::Compiling),
            )
            .await
            .unwrap();
        store
            .plugin_version_failed("plg_v".into(), 3, "missing import".into())
            .await
            .unwrap();
        let p = store
            .get_plugin(ACCOUNT.into(), "plg_v".into())
            .await
            .unwrap();
        assert_eq!((p.version, p.latest_version), (2, 3), "{on}");
        assert_eq!(p.status, VersionStatus::Failed, "{on}");
        assert_eq!(p.failure.as_deref(), Some("missing import"), "{on}");

        let versions = store
            .plugin_versions(ACCOUNT.into(), "plg_v".into())
            .await
            .unwrap();
        let mut seen: Vec<_> = versions.iter().map(|v| (v.version, v.status)).collect();
        seen.sort_by_key(|(n, _)| *n);
        assert_eq!(
            seen,
            [
                (1, VersionStatus::Ready),
                (2, VersionStatus::Ready),
                (3, VersionStatus::Failed)
            ],
            "{on}"
        );
        let v2 = versions.iter().find(|v| v.version == 2).unwrap();
        assert_eq!(v2.sha256, format!("{:064x}", 2), "{on}");
        assert_eq!(
            v2.engine_hash, "engine-1",
            "{on}: the engine that compiled it"
        );

        let loaded = store.all_current_plugins().await.unwrap();
        assert_eq!(loaded.len(), 1, "{on}");
        assert_eq!(
            (loaded[0].0.id.as_str(), loaded[0].1.version),
            ("plg_v", 2),
            "{on}"
        );
        assert!(
            matches!(
                store
                    .plugin_version_ready("plg_gone".into(), 1, "h".into())
                    .await,
                Err(StoreError::NotFound)
            ),
            "{on}"
        );
        store.close().await;
    }
}

#[tokio::test]
async fn each_plugin_keeps_its_own_newest_log_lines() {
    use super::policy::KEEP_LOG_LINES;
    let keep = KEEP_LOG_LINES as usize;
    for f in backends().await {
        let (store, on) = (&f.store, f.name);
        for id in ["plg_busy", "plg_quiet"] {
            store
                .create_plugin(plugin(id), version(1, VersionStatus::Ready))
                .await
                .unwrap();
        }
        let line = |i: usize| PluginLogLine {
            at: i as i64,
            level: "info".into(),
            event_id: None,
            message: format!("line {i}"),
        };
        store
            .append_plugin_logs(vec![("plg_quiet".into(), (0..10).map(line).collect())])
            .await
            .unwrap();
        // The busy plugin writes more than it keeps, in batches shared with the quiet one.
        for batch in 0..3 {
            let lines = (batch * keep..(batch + 1) * keep).map(line).collect();
            store
                .append_plugin_logs(vec![
                    ("plg_busy".into(), lines),
                    ("plg_quiet".into(), vec![line(100 + batch)]),
                ])
                .await
                .unwrap();
        }
        let busy = store
            .plugin_logs(ACCOUNT.into(), "plg_busy".into(), 5 * keep)
            .await
            .unwrap();
        assert_eq!(busy.len(), keep, "{on}");
        assert_eq!(
            busy[0].message,
            format!("line {}", 3 * keep - 1),
            "{on}: newest first"
        );
        assert_eq!(busy[keep - 1].message, format!("line {}", 2 * keep), "{on}");
        let quiet = store
            .plugin_logs(ACCOUNT.into(), "plg_quiet".into(), 5 * keep)
            .await
            .unwrap();
        assert_eq!(
            quiet.len(),
            13,
            "{on}: the quiet plugin's lines are its own"
        );
        assert_eq!(quiet[0].message, "line 102", "{on}");
        let few = store
            .plugin_logs(ACCOUNT.into(), "plg_quiet".into(), 2)
            .await
            .unwrap();
        assert_eq!(few.len(), 2, "{on}: at most the limit asked");
        store.close().await;
    }
}

#[tokio::test]
async fn accounts_keys_and_console_sessions() {
    for f in backends().await {
        let (store, on) = (&f.store, f.name);
        let other = Account {
            id: "acc_other".into(),
            name: "Other".into(),
            created_at: 5,
        };
        store
            .create_account(
                other,
                NewApiKey {
                    id: "key_other".into(),
                    hash: [7; 32],
                    prefix: "whk_o".into(),
                },
            )
            .await
            .unwrap();
        let ids: Vec<_> = store
            .list_accounts()
            .await
            .unwrap()
            .into_iter()
            .map(|a| a.id)
            .collect();
        assert_eq!(ids, [ACCOUNT, "acc_other"], "{on}: oldest first");
        assert_eq!(
            store.get_account("acc_other".into()).await.unwrap().name,
            "Other",
            "{on}"
        );
        let second = NewApiKey {
            id: "key_second".into(),
            hash: [8; 32],
            prefix: "whk_s".into(),
        };
        store.add_api_key(ACCOUNT.into(), second, 10).await.unwrap();
        let missing = NewApiKey {
            id: "key_missing".into(),
            hash: [6; 32],
            prefix: "whk_m".into(),
        };
        assert!(
            matches!(
                store.add_api_key("acc_missing".into(), missing, 10).await,
                Err(StoreError::NotFound)
            ),
            "{on}"
        );
        let keys: Vec<_> = store
            .list_api_keys(ACCOUNT.into())
            .await
            .unwrap()
            .into_iter()
            .map(|k| k.id)
            .collect();
        assert_eq!(keys, ["key_contract", "key_second"], "{on}");
        assert_eq!(
            store.account_for_key([8; 32]).await.unwrap().as_deref(),
            Some(ACCOUNT),
            "{on}"
        );

        let session = |hash: [u8; 32], key: Option<&str>| NewConsoleSession {
            token_hash: hash,
            account_id: key.map(|_| ACCOUNT.to_string()),
            api_key_id: key.map(str::to_string),
            csrf_token: "csrf".into(),
            created_at: 1_000,
            expires_at: 2_000,
        };
        store
            .create_console_session(session([1; 32], Some("key_second")))
            .await
            .unwrap();
        store
            .create_console_session(session([2; 32], None))
            .await
            .unwrap();
        let live = store.console_session([1; 32], 1_500).await.unwrap();
        assert_eq!(
            live.map(|s| s.account_id),
            Some(Some(ACCOUNT.to_string())),
            "{on}"
        );
        assert!(
            store
                .console_session([1; 32], 2_000)
                .await
                .unwrap()
                .is_none(),
            "{on}: expired"
        );
        // Another account cannot revoke the key; its owner can, once.
        assert!(
            matches!(
                store
                    .revoke_api_key("acc_other".into(), "key_second".into(), 1_600)
                    .await,
                Err(StoreError::NotFound)
            ),
            "{on}"
        );
        let hash = store
            .revoke_api_key(ACCOUNT.into(), "key_second".into(), 1_600)
            .await
            .unwrap();
        assert_eq!(hash, [8; 32], "{on}");
        store
            .revoke_api_key(ACCOUNT.into(), "key_second".into(), 1_700)
            .await
            .unwrap();
        let revoked = store.list_api_keys(ACCOUNT.into()).await.unwrap();
        assert_eq!(
            revoked[1].revoked_at,
            Some(1_600),
            "{on}: the first time stays"
        );
        assert_eq!(store.account_for_key([8; 32]).await.unwrap(), None, "{on}");
        assert_eq!(store.api_key_by_hash([8; 32]).await.unwrap(), None, "{on}");
        assert!(
            store
                .console_session([1; 32], 1_700)
                .await
                .unwrap()
                .is_none(),
            "{on}: revoking the key ends its sessions"
        );
        assert!(
            store
                .console_session([2; 32], 1_700)
                .await
                .unwrap()
                .is_some(),
            "{on}: the admin's session stays"
        );
        store.delete_console_session([2; 32]).await.unwrap();
        assert!(
            store
                .console_session([2; 32], 1_700)
                .await
                .unwrap()
                .is_none(),
            "{on}"
        );
        store.close().await;
    }
}

#[tokio::test]
async fn subscriptions_keep_their_secrets_page_newest_first_and_change_atomically() {
    for f in backends().await {
        let (store, on) = (&f.store, f.name);
        let mut ids = Vec::new();
        for _ in 0..5 {
            ids.push(subscribe_url(store, "order:paid").await);
        }
        let first = store
            .get_subscription(ACCOUNT.into(), ids[0].clone())
            .await
            .unwrap();
        assert!(first.secret.starts_with("whsec_"), "{on}: clear when read");
        let (mut seen, mut cursor) = (Vec::new(), None);
        loop {
            let page = store
                .list_subscriptions(ACCOUNT.into(), 2, cursor)
                .await
                .unwrap();
            assert!(page.items.len() <= 2, "{on}");
            seen.extend(page.items.iter().map(|s| s.id.clone()));
            match page.next_cursor {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
        let newest_first: Vec<_> = ids.iter().rev().cloned().collect();
        assert_eq!(seen, newest_first, "{on}");

        let tasks: Vec<_> = (0..10)
            .map(|i| {
                let store = store.clone();
                let id = ids[0].clone();
                tokio::spawn(async move {
                    store
                        .update_subscription(ACCOUNT.into(), id, move |s| {
                            s.description.push('x');
                            s.secret = format!("whsec_rotated{i}");
                            Ok(())
                        })
                        .await
                        .unwrap()
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        let changed = store
            .get_subscription(ACCOUNT.into(), ids[0].clone())
            .await
            .unwrap();
        assert_eq!(changed.description, "x".repeat(10), "{on}: no change lost");
        assert!(changed.secret.starts_with("whsec_rotated"), "{on}");
        let refused = store
            .update_subscription(ACCOUNT.into(), ids[0].clone(), |s| {
                s.description = "lost".into();
                Err::<(), _>(StoreError::Conflict("refused".into()))
            })
            .await;
        assert!(matches!(refused, Err(StoreError::Conflict(_))), "{on}");
        assert_eq!(
            store
                .get_subscription(ACCOUNT.into(), ids[0].clone())
                .await
                .unwrap()
                .description,
            changed.description,
            "{on}: a refused change writes nothing"
        );
        assert!(
            matches!(
                store
                    .get_subscription("acc_other".into(), ids[0].clone())
                    .await,
                Err(StoreError::NotFound)
            ),
            "{on}: another account's is not found"
        );

        // The Airy webhook: made once, then changed.
        let build_airy = || {
            let req: CreateSubscription = serde_json::from_value(
                serde_json::json!({"url": "https://example.com/airy", "event_types": ["*"]}),
            )
            .unwrap();
            let mut sub = build(ACCOUNT, req, &Default::default()).unwrap();
            sub.airy_api_secret = Some("airy".into());
            sub
        };
        let made = store
            .upsert_airy_webhook(build_airy(), |s| s.description = "one".into())
            .await
            .unwrap();
        let again = store
            .upsert_airy_webhook(build_airy(), |s| s.description.push_str(" two"))
            .await
            .unwrap();
        assert_eq!(made.id, again.id, "{on}");
        let airy = store.airy_webhook(ACCOUNT.into()).await.unwrap().unwrap();
        assert_eq!(
            (airy.description.as_str(), airy.airy_api_secret.as_deref()),
            ("one two", Some("airy")),
            "{on}"
        );

        store
            .delete_subscription(ACCOUNT.into(), ids[1].clone())
            .await
            .unwrap();
        assert!(
            matches!(
                store
                    .delete_subscription(ACCOUNT.into(), ids[1].clone())
                    .await,
                Err(StoreError::NotFound)
            ),
            "{on}"
        );
        store.close().await;
    }
}

#[tokio::test]
async fn delivery_pages_searches_and_summaries() {
    for f in backends().await {
        let (store, on) = (&f.store, f.name);
        let (a, b) = (
            subscribe_url(store, "*").await,
            subscribe_url(store, "*").await,
        );
        let now = 40_000;
        let evs: Vec<_> = (0..12)
            .map(|i| {
                let t = if i % 2 == 0 {
                    "order:paid"
                } else {
                    "order:sent"
                };
                let payload = format!(r#"{{"i":{i},"conversation_id":"c{}"}}"#, i % 3);
                event(t, &payload, None, now + i)
            })
            .collect();
        let events: Vec<String> = store
            .ingest(evs)
            .await
            .unwrap()
            .into_iter()
            .map(|i| i.event.id)
            .collect();
        // Settle by position: succeeded, failed, or left pending (still claimed).
        let claims = store.claim_due(claim_at(now + 100)).await.unwrap();
        assert_eq!(claims.claimed.len(), 24, "{on}");
        for c in &claims.claimed {
            let (status, code) = match c.delivery.seq % 3 {
                0 => (DeliveryStatus::Succeeded, 200),
                1 => (DeliveryStatus::Failed, 500),
                _ => continue,
            };
            store
                .record_outcome(outcome(c, status, code, now + 200, None), now + 200)
                .await
                .unwrap();
        }

        let pages = |filter: DeliveryFilter, limit: usize| async move {
            let (mut out, mut cursor) = (Vec::new(), None);
            loop {
                let page = store
                    .list_deliveries(ACCOUNT.into(), filter.clone(), limit, cursor)
                    .await
                    .unwrap();
                out.extend(page.items.iter().map(|d| (d.seq, d.status)));
                match page.next_cursor {
                    Some(c) => cursor = Some(c),
                    None => return out,
                }
            }
        };
        let all = pages(DeliveryFilter::default(), 5).await;
        assert_eq!(all.len(), 24, "{on}");
        assert!(
            all.windows(2).all(|w| w[0].0 > w[1].0),
            "{on}: newest first"
        );
        for status in [
            DeliveryStatus::Pending,
            DeliveryStatus::Succeeded,
            DeliveryStatus::Failed,
        ] {
            let only = pages(
                DeliveryFilter {
                    status: Some(status),
                    ..Default::default()
                },
                2,
            )
            .await;
            let expected: Vec<_> = all.iter().filter(|(_, s)| *s == status).cloned().collect();
            assert!(!expected.is_empty(), "{on}");
            assert_eq!(only, expected, "{on}: {status:?}");
        }
        let of_a = pages(
            DeliveryFilter {
                scope: DeliveryScope::Subscription(a.clone()),
                status: None,
            },
            4,
        )
        .await;
        assert_eq!(of_a.len(), 12, "{on}");

        // By last change: the settled ones (changed later) first, then by seq.
        let (changed, next) = store
            .account_deliveries(ACCOUNT.into(), None, None, 100, None)
            .await
            .unwrap();
        assert!(next.is_none(), "{on}");
        let keys: Vec<_> = changed.iter().map(|d| (d.updated_at, d.seq)).collect();
        let mut sorted = keys.clone();
        sorted.sort_unstable_by(|x, y| y.cmp(x));
        assert_eq!(keys, sorted, "{on}");
        let (first_page, cursor) = store
            .account_deliveries(ACCOUNT.into(), None, None, 5, None)
            .await
            .unwrap();
        let (second_page, _) = store
            .account_deliveries(ACCOUNT.into(), None, None, 5, cursor)
            .await
            .unwrap();
        let both: Vec<_> = first_page
            .iter()
            .chain(&second_page)
            .map(|d| d.seq)
            .collect();
        assert_eq!(
            both,
            changed.iter().take(10).map(|d| d.seq).collect::<Vec<_>>(),
            "{on}"
        );

        let latest = store
            .latest_deliveries(ACCOUNT.into(), vec![a.clone(), b.clone()])
            .await
            .unwrap();
        assert_eq!(latest[&b].event_id, events[11], "{on}");
        let targets = store
            .event_deliveries(ACCOUNT.into(), events[4].clone())
            .await
            .unwrap();
        assert_eq!(targets.len(), 2, "{on}");
        assert!(
            targets
                .iter()
                .all(|(_, t)| t.url.as_deref() == Some("https://example.com/hook")),
            "{on}"
        );

        let search = |s: EventSearch| async move {
            let (mut out, mut cursor) = (Vec::new(), None);
            loop {
                let page = store
                    .search_events(ACCOUNT.into(), s.clone(), 2, cursor)
                    .await
                    .unwrap();
                out.extend(page.items.iter().map(|e| e.id.clone()));
                match page.next_cursor {
                    Some(c) => cursor = Some(c),
                    None => return out,
                }
            }
        };
        let expect = |keep: &dyn Fn(usize) -> bool| -> Vec<String> {
            (0..12)
                .rev()
                .filter(|i| keep(*i))
                .map(|i| events[i].clone())
                .collect()
        };
        let by_conversation = EventSearch {
            conversation_id: Some("c2".into()),
            ..Default::default()
        };
        assert_eq!(
            search(by_conversation).await,
            expect(&|i| i % 3 == 2),
            "{on}"
        );
        let typed_window = EventSearch {
            event_type: Some("order:sent".into()),
            from: Some(now + 3),
            to: Some(now + 9),
            ..Default::default()
        };
        assert_eq!(
            search(typed_window).await,
            expect(&|i| i % 2 == 1 && (3..9).contains(&i)),
            "{on}"
        );

        let overview = store
            .overview(ACCOUNT.into(), now + 1_000, 0)
            .await
            .unwrap();
        let pending = all
            .iter()
            .filter(|(_, s)| *s == DeliveryStatus::Pending)
            .count() as i64;
        assert_eq!(overview.queue_depth, pending, "{on}");
        let total: i64 = overview.last_hour.iter().map(|(_, n)| n).sum();
        assert_eq!(total, 24, "{on}");
        let failed = all
            .iter()
            .filter(|(_, s)| *s == DeliveryStatus::Failed)
            .count() as i64;
        let counted = store
            .count_failed_since(ACCOUNT.into(), a.clone(), 0)
            .await
            .unwrap()
            + store
                .count_failed_since(ACCOUNT.into(), b.clone(), 0)
                .await
                .unwrap();
        assert_eq!(counted, failed, "{on}");
        store.close().await;
    }
}

#[tokio::test]
async fn a_versions_component_is_kept_until_it_fails() {
    for f in backends().await {
        let (store, on) = (&f.store, f.name);
        let dir = tempfile::tempdir().unwrap();
        let upload = |n: u32, bytes: &[u8]| {
            let path = dir.path().join(format!("v{n}.wasm"));
            std::fs::write(&path, bytes).unwrap();
            PluginVersion {
                wasm_path: path.display().to_string(),
                ..version(n, VersionStatus::Compiling)
            }
        };
        store
            .create_plugin(plugin("plg_bytes"), upload(1, b"\0asm-one"))
            .await
            .unwrap();
        store
            .add_plugin_version(ACCOUNT.into(), "plg_bytes".into(), upload(2, b"\0asm-two"))
            .await
            .unwrap();
        let read = |n| store.plugin_component("plg_bytes".into(), n);
        assert_eq!(
            read(1).await.unwrap().as_deref(),
            Some(&b"\0asm-one"[..]),
            "{on}"
        );
        assert_eq!(
            read(2).await.unwrap().as_deref(),
            Some(&b"\0asm-two"[..]),
            "{on}"
        );
        store
            .plugin_version_failed("plg_bytes".into(), 2, "no handler".into())
            .await
            .unwrap();
        assert_eq!(
            read(2).await.unwrap(),
            None,
            "{on}: a failed version's is not kept"
        );
        assert!(
            matches!(read(3).await, Err(StoreError::NotFound)),
            "{on}: no such version"
        );
        store.close().await;
    }
}

#[tokio::test]
async fn retention_deletes_only_old_settled_rows_in_batches() {
    for f in backends().await {
        let (store, on) = (&f.store, f.name);
        subscribe_url(store, "order:paid").await;
        let (old, cutoff, recent) = (10_000, 500_000, 1_000_000);
        // Five old events, their deliveries settled long ago: three succeeded, one dead
        // letter, and one retrying (pending: it and its event must stay).
        let evs: Vec<_> = (0..5)
            .map(|i| event("order:paid", &format!(r#"{{"i":{i}}}"#), None, old))
            .collect();
        let ingested = store.ingest(evs).await.unwrap();
        let claims = store.claim_due(claim_at(old)).await.unwrap();
        assert_eq!(claims.claimed.len(), 5, "{on}");
        let mut settled = Vec::new();
        for (i, c) in claims.claimed.iter().enumerate() {
            let o = match i {
                0..=2 => outcome(c, DeliveryStatus::Succeeded, 204, old, None),
                3 => outcome(c, DeliveryStatus::Failed, 500, old, None),
                _ => outcome(c, DeliveryStatus::Pending, 503, old, Some(recent + LEASE)),
            };
            store.record_outcome(o, old).await.unwrap();
            if i < 4 {
                settled.push(c.delivery.id.clone());
            }
        }
        let pending = claims.claimed[4].delivery.id.clone();
        let pending_event = claims.claimed[4].event.id.clone();
        // An old event nobody subscribed to (no delivery at all).
        let nobody = store
            .ingest(vec![event("nobody:cares", "{}", None, old)])
            .await
            .unwrap();
        // An old event whose delivery settled after the cutoff, and a recent one.
        let late = store
            .ingest(vec![event("order:paid", r#"{"late":1}"#, None, old)])
            .await
            .unwrap();
        let c = store.claim_due(claim_at(old + 1)).await.unwrap().claimed;
        assert_eq!(c.len(), 1, "{on}");
        let late_delivery = c[0].delivery.id.clone();
        store
            .record_outcome(
                outcome(&c[0], DeliveryStatus::Succeeded, 200, recent, None),
                recent,
            )
            .await
            .unwrap();
        let fresh = store
            .ingest(vec![event("order:paid", r#"{"fresh":1}"#, None, recent)])
            .await
            .unwrap();

        let purged = store.purge_older_than(cutoff, 2).await.unwrap();
        let expected = super::Purged {
            deliveries: 4,
            attempts: 4,
            events: 5,
            // Deliveries 2 + 2 + 0, events 2 + 2 + 1: each batch its own transaction.
            batches: 6,
        };
        assert_eq!(purged, Some(expected), "{on}");

        for id in &settled {
            let gone = store.get_delivery(ACCOUNT.into(), id.clone()).await;
            assert!(matches!(gone, Err(StoreError::NotFound)), "{on}: {id}");
        }
        let settled_events = ingested[..5]
            .iter()
            .map(|e| e.event.id.clone())
            .filter(|id| *id != pending_event);
        for id in settled_events.chain([nobody[0].event.id.clone()]) {
            let gone = store.get_event(ACCOUNT.into(), id.clone()).await;
            assert!(matches!(gone, Err(StoreError::NotFound)), "{on}: {id}");
        }
        // What stays: the pending delivery with its attempt and event, the late-settled
        // delivery and its old event, the recent event.
        let (d, attempts) = delivery(store, &pending).await;
        assert_eq!(
            (d.status, attempts.len()),
            (DeliveryStatus::Pending, 1),
            "{on}"
        );
        store
            .get_event(ACCOUNT.into(), pending_event.clone())
            .await
            .unwrap();
        let (d, _) = delivery(store, &late_delivery).await;
        assert_eq!(d.status, DeliveryStatus::Succeeded, "{on}");
        for e in [&late[0], &fresh[0]] {
            store
                .get_event(ACCOUNT.into(), e.event.id.clone())
                .await
                .unwrap();
        }
        assert_eq!(
            store.queue_depth().await.unwrap(),
            2,
            "{on}: pending + fresh"
        );

        // Nothing left to delete: one empty batch per table.
        let again = store.purge_older_than(cutoff, 2).await.unwrap();
        let nothing = super::Purged {
            batches: 2,
            ..Default::default()
        };
        assert_eq!(again, Some(nothing), "{on}");
        store.close().await;
    }
}

// ---- Moving an installation (export, import)

/// A fresh, empty store of every backend, each with a key file of its own: import targets.
async fn empty_targets() -> Vec<Fixture> {
    let mut all = vec![sqlite()];
    if let Some(pg) = postgres().await {
        all.push(pg);
    }
    all
}

/// Everything `store` exports.
async fn export_all(store: &Store) -> Vec<super::transfer::Row> {
    let (tx, mut rx) = tokio::sync::mpsc::channel(4);
    let reading = {
        let store = store.clone();
        tokio::spawn(async move { store.export(tx).await })
    };
    let mut rows = Vec::new();
    while let Some(row) = rx.recv().await {
        rows.push(row);
    }
    reading.await.unwrap().unwrap();
    rows
}

/// Imports `rows` into `store` as `wasmhook import` does (components written to `dir` first),
/// ending the input with `End` when `complete`.
async fn import_rows(
    store: &Store,
    rows: Vec<super::transfer::Row>,
    dir: &std::path::Path,
    complete: bool,
) -> Result<(), super::transfer::ImportError> {
    use super::transfer::{COMPONENT, Cell, ImportItem};
    let files = dir.to_path_buf();
    let paths: super::transfer::ComponentPaths =
        Arc::new(move |id, v| files.join(format!("{id}-v{v}.wasm")).display().to_string());
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let writing = {
        let store = store.clone();
        let paths = paths.clone();
        tokio::spawn(async move { store.import(rx, paths).await })
    };
    for (i, row) in rows.into_iter().enumerate() {
        if row.table.name == "plugin_versions"
            && let Cell::Bytes(b) = row.get(COMPONENT)
        {
            let wasm = paths(row.text("plugin_id").unwrap(), row.int("version").unwrap());
            std::fs::write(wasm, b).unwrap();
        }
        if tx.send(ImportItem::Row(i as u64 + 2, row)).await.is_err() {
            break;
        }
    }
    if complete {
        let _ = tx.send(ImportItem::End).await;
    }
    drop(tx);
    writing.await.unwrap()
}

/// Fills a store with one of everything a transfer carries; returns the subscription's id, the
/// pending delivery's, and the dir of the plugin's component.
async fn fill_for_transfer(store: &Store) -> (String, String, tempfile::TempDir) {
    let sub = subscribe_url(store, "order:paid").await;
    store
        .update_subscription(ACCOUNT.into(), sub.clone(), |s| {
            s.previous_secret = Some("whsec_previous".into());
            s.previous_secret_expires_at = Some(5_000);
            Ok(())
        })
        .await
        .unwrap();
    let ingested = store
        .ingest(vec![event(
            "order:paid",
            r#"{"conversation_id":"c1","n":1}"#,
            Some("evt_a"),
            1_000,
        )])
        .await
        .unwrap();
    assert_eq!(ingested[0].deliveries, 1);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v1.wasm");
    std::fs::write(&path, b"\0asm-transfer").unwrap();
    let mut p = plugin("plg_moved");
    p.config.insert("token".into(), "sk_secret_value".into());
    p.config.insert("region".into(), "eu".into());
    p.secret_keys.insert("token".into());
    store
        .create_plugin(
            p,
            PluginVersion {
                wasm_path: path.display().to_string(),
                ..version(1, VersionStatus::Ready)
            },
        )
        .await
        .unwrap();
    store
        .add_plugin_version(
            ACCOUNT.into(),
            "plg_moved".into(),
            version(2, VersionStatus::Compiling),
        )
        .await
        .unwrap();
    let limits = KvLimits {
        value_bytes: 1024,
        keys: 10,
    };
    store
        .kv_set(
            "plg_moved".into(),
            "greeted/c1".into(),
            vec![0, 1, 2],
            limits,
        )
        .await
        .unwrap()
        .unwrap();
    store
        .append_plugin_logs(vec![(
            "plg_moved".into(),
            vec![PluginLogLine {
                at: 2_000,
                level: "info".into(),
                event_id: Some("evt_a".into()),
                message: "hello".into(),
            }],
        )])
        .await
        .unwrap();
    let delivery = store
        .list_deliveries(ACCOUNT.into(), DeliveryFilter::default(), 10, None)
        .await
        .unwrap()
        .items[0]
        .id
        .clone();
    (sub, delivery, dir)
}

#[tokio::test]
async fn an_export_imports_into_every_backend_as_it_was() {
    for source in backends().await {
        let (sub, delivery, _files) = fill_for_transfer(&source.store).await;
        let rows = export_all(&source.store).await;
        let tables: std::collections::BTreeSet<_> = rows.iter().map(|r| r.table.name).collect();
        for t in super::transfer::TABLES {
            if t.name != "messages" && t.name != "attempts" {
                assert!(
                    tables.contains(t.name),
                    "{}: {} exported",
                    source.name,
                    t.name
                );
            }
        }
        for target in empty_targets().await {
            let on = format!("{} to {}", source.name, target.name);
            let dir = tempfile::tempdir().unwrap();
            import_rows(&target.store, rows.clone(), dir.path(), true)
                .await
                .unwrap_or_else(|e| panic!("{on}: {e}"));
            // Row for row what the source had, secrets opened with the target's own keys.
            assert_eq!(export_all(&target.store).await, rows, "{on}");
            let s = &target.store;
            assert_eq!(
                s.account_for_key([9; 32]).await.unwrap().as_deref(),
                Some(ACCOUNT),
                "{on}"
            );
            let moved = s
                .get_subscription(ACCOUNT.into(), sub.clone())
                .await
                .unwrap();
            let original = source
                .store
                .get_subscription(ACCOUNT.into(), sub.clone())
                .await
                .unwrap();
            assert_eq!(moved.secret, original.secret, "{on}");
            assert_eq!(
                moved.previous_secret.as_deref(),
                Some("whsec_previous"),
                "{on}"
            );
            let p = s
                .get_plugin(ACCOUNT.into(), "plg_moved".into())
                .await
                .unwrap();
            assert_eq!(p.config["token"], "sk_secret_value", "{on}");
            assert_eq!(
                s.plugin_component("plg_moved".into(), 1)
                    .await
                    .unwrap()
                    .as_deref(),
                Some(&b"\0asm-transfer"[..]),
                "{on}"
            );
            assert_eq!(
                s.kv_get("plg_moved".into(), "greeted/c1".into())
                    .await
                    .unwrap(),
                Some(vec![0, 1, 2]),
                "{on}"
            );
            // The pending delivery is claimable on the target, matching rebuilt from the types.
            let claims = s.claim_due(claim_at(10_000)).await.unwrap();
            assert_eq!(claims.claimed.len(), 1, "{on}");
            assert_eq!(claims.claimed[0].delivery.id, delivery, "{on}");
            let more = s
                .ingest(vec![event("order:paid", r#"{"n":2}"#, None, 11_000)])
                .await
                .unwrap();
            assert_eq!(
                more[0].deliveries, 1,
                "{on}: the subscription still matches"
            );
            // New rows get ids after the imported ones.
            let page = s.list_events(ACCOUNT.into(), None, 10, None).await.unwrap();
            assert_eq!(page.items.len(), 2, "{on}");
            assert_eq!(page.items[1].id, "evt_a", "{on}: newest first");
            target.store.close().await;
        }
        source.store.close().await;
    }
}

#[tokio::test]
async fn an_import_writes_nothing_unless_complete_and_into_an_empty_store() {
    use super::transfer::ImportError;
    for source in backends().await {
        let _files = fill_for_transfer(&source.store).await;
        let rows = export_all(&source.store).await;
        for target in empty_targets().await {
            let on = format!("{} to {}", source.name, target.name);
            let dir = tempfile::tempdir().unwrap();
            // Input that stops before its end: nothing stays.
            let cut = import_rows(&target.store, rows.clone(), dir.path(), false).await;
            assert!(matches!(cut, Err(ImportError::Incomplete)), "{on}: {cut:?}");
            assert!(export_all(&target.store).await.is_empty(), "{on}");
            // A row that refers to nothing (a delivery without its event): named, nothing stays.
            let mut broken = rows.clone();
            let at = broken
                .iter()
                .position(|r| r.table.name == "events")
                .unwrap();
            broken.remove(at);
            let first_delivery = broken
                .iter()
                .position(|r| r.table.name == "deliveries")
                .unwrap() as u64
                + 2;
            let refused = import_rows(&target.store, broken, dir.path(), true).await;
            match refused {
                Err(ImportError::Row { table, line, .. }) => {
                    assert_eq!((table, line), ("deliveries", first_delivery), "{on}")
                }
                other => panic!("{on}: {other:?}"),
            }
            assert!(export_all(&target.store).await.is_empty(), "{on}");
            // A target with data is refused.
            import_rows(&target.store, rows.clone(), dir.path(), true)
                .await
                .unwrap();
            let again = import_rows(&target.store, rows.clone(), dir.path(), true).await;
            assert!(
                matches!(again, Err(ImportError::NotEmpty("accounts"))),
                "{on}: {again:?}"
            );
            assert_eq!(export_all(&target.store).await, rows, "{on}: as it was");
            target.store.close().await;
        }
        source.store.close().await;
    }
}
