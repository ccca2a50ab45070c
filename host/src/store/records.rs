//! The records that cross the store's seam: what callers hand to a backend and what they get
//! back. Every backend reads and writes exactly these, so nothing here knows SQL or a driver.

use serde_json::value::RawValue;
use tokio::sync::oneshot;

use super::StoreError;
use crate::breaker::{Policy, Signal};
use crate::model::{
    Attempt, Causation, Conversation, Delivery, DeliveryStatus, Event, Subscription,
};

// ---- Listings and commits

/// Whether a commit waits for the disk (`full`) or only for the OS (`normal`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum SyncMode {
    /// fsync on every group commit: survives power loss.
    #[default]
    Full,
    /// WAL without fsync per commit: survives a process crash, may lose the last commits on power loss.
    Normal,
}

/// One page of a listing, newest first, with the cursor for the next page.
#[derive(Debug, Clone)]
pub struct Page<T> {
    /// The items of this page.
    pub items: Vec<T>,
    /// Pass as `cursor` to get the next page; `None` on the last page.
    pub next_cursor: Option<i64>,
}

impl<T> Page<T> {
    /// Builds a page from `limit + 1` fetched rows, using `seq` of the last kept row as the cursor.
    pub(crate) fn from_rows(mut rows: Vec<(i64, T)>, limit: usize) -> Page<T> {
        let more = rows.len() > limit;
        rows.truncate(limit);
        let next_cursor = if more {
            rows.last().map(|(seq, _)| *seq)
        } else {
            None
        };
        Page {
            items: rows.into_iter().map(|(_, t)| t).collect(),
            next_cursor,
        }
    }
}

// ---- Accounts and console sessions

/// A freshly issued key, as the store keeps it: never the key itself.
pub struct NewApiKey {
    /// Key id.
    pub id: String,
    /// SHA-256 of the key.
    pub hash: [u8; 32],
    /// Visible prefix.
    pub prefix: String,
}

/// A session to store.
#[derive(Debug, Clone)]
pub struct NewConsoleSession {
    /// SHA-256 of the cookie's token.
    pub token_hash: [u8; 32],
    /// The account signed in, or `None` for the admin.
    pub account_id: Option<String>,
    /// The API key used to sign in (absent for the admin).
    pub api_key_id: Option<String>,
    /// The token every form of this session must carry.
    pub csrf_token: String,
    /// Unix ms.
    pub created_at: i64,
    /// Unix ms; the session is refused from then on.
    pub expires_at: i64,
}

/// A live session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsoleSession {
    /// The account signed in, or `None` for the admin.
    pub account_id: Option<String>,
    /// The session's CSRF token.
    pub csrf_token: String,
    /// Unix ms.
    pub expires_at: i64,
}

// ---- Events

/// An event to store.
#[derive(Debug, Clone)]
pub struct NewEvent {
    /// Public id.
    pub id: String,
    /// Owner.
    pub account_id: String,
    /// Event type.
    pub event_type: String,
    /// JSON object.
    pub payload: Box<RawValue>,
    /// RFC 3339, UTC.
    pub occurred_at: String,
    /// Unix ms.
    pub received_at: i64,
    /// Client id or `Idempotency-Key`.
    pub idempotency_key: Option<String>,
    /// Hash of what the client sent, to tell a replay from a conflicting reuse of a key.
    pub body_hash: [u8; 32],
    /// Set for events emitted by plugins.
    pub causation: Option<Causation>,
    /// Conversation facts found in the payload, for the conversation index.
    pub conversation: Option<(String, Conversation)>,
}

/// The outcome of storing one event.
#[derive(Debug, Clone)]
pub struct Ingested {
    /// The stored event (the first one, for a replay).
    pub event: Event,
    /// True when the event was already stored under the same idempotency key.
    pub replayed: bool,
    /// Deliveries created for it.
    pub deliveries: usize,
}

// ---- Claims and outcomes (the dispatcher's side of the outbox)

/// A delivery claimed for one attempt, with everything needed to make it.
#[derive(Debug, Clone)]
pub struct Claimed {
    /// The delivery (its `attempts` counts attempts before this one).
    pub delivery: Delivery,
    /// The event to deliver.
    pub event: Event,
    /// Where it goes.
    pub subscription: Subscription,
    /// The claim's token: outcomes and lease extensions must present it.
    pub token: i64,
}

/// What a dispatcher asks of one claim.
#[derive(Debug, Clone)]
pub struct ClaimRequest {
    /// The current time (Unix ms).
    pub now: i64,
    /// How long the claim holds (extended while the attempt runs).
    pub lease_ms: i64,
    /// At most this many deliveries within the subscriptions' `max_in_flight`.
    pub limit: usize,
    /// At most this many more, claimed ahead of their cap by the subscriptions in
    /// [`ClaimRequest::claim_ahead`].
    pub ahead_limit: usize,
    /// `max_in_flight` of subscriptions that do not set one.
    pub default_max_in_flight: u32,
    /// Rotation cursor: start with the subscriptions after this one.
    pub after_subscription: i64,
    /// Subscriptions (sorted by seq) that may hold more claims than their `max_in_flight`, with
    /// how many in all: those whose attempts the dispatcher has seen finish quickly. It still
    /// runs at most `max_in_flight` of their attempts at once; the rest wait in its memory, so a
    /// fast endpoint's next attempt never waits for a claim round trip through the writer.
    pub claim_ahead: Vec<(i64, u32)>,
}

/// What one claim took, and when to look again.
#[derive(Debug, Default)]
pub struct Claims {
    /// The deliveries claimed.
    pub claimed: Vec<Claimed>,
    /// Where the next claim's rotation starts.
    pub cursor: i64,
    /// More may be claimable right now (the scan stopped early).
    pub more: bool,
    /// The earliest time something not claimable now becomes due by itself (a retry, a lease
    /// running out, a breaker's pause ending). Work held by `max_in_flight` becomes claimable
    /// when an attempt settles instead.
    pub next_due: Option<i64>,
}

/// How one attempt ended, to be written back.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The delivery.
    pub delivery_seq: i64,
    /// The token of the claim the attempt was made under.
    pub token: i64,
    /// The attempt made (none when the delivery was only put off, e.g. by a rate limit).
    pub attempt: Option<Attempt>,
    /// The delivery's new status.
    pub status: DeliveryStatus,
    /// When to try next, for a pending delivery.
    pub next_attempt_at: Option<i64>,
    /// The failure, if the attempt failed.
    pub last_error: Option<String>,
    /// What the attempt said about the endpoint, for the circuit breaker.
    pub breaker: Option<(Policy, Signal)>,
}

/// What recording an outcome did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settled {
    /// Recorded; the subscription's `failing_since` afterwards.
    Recorded {
        /// Start of the subscription's current failure streak, if one is running.
        failing_since: Option<i64>,
        /// The end of the pause this outcome's circuit breaker started or kept (none when
        /// the breaker is closed or the attempt said nothing about the endpoint).
        paused_until: Option<i64>,
    },
    /// The claim was no longer current (its lease ran out and the delivery was claimed again,
    /// or it was settled otherwise): nothing was written.
    LeaseLost,
}

// ---- Plugin key-value stores

/// A key-value operation's limits, checked inside the write.
#[derive(Debug, Clone, Copy)]
pub struct KvLimits {
    /// Largest value.
    pub value_bytes: usize,
    /// Most keys.
    pub keys: u32,
}

/// Why a key-value write was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvRefusal {
    /// The plugin already has this many keys.
    TooManyKeys(u32),
    /// The value to write is larger than this limit (in bytes).
    ValueTooLarge(usize),
    /// `increment` found a value that is not the decimal text of an `i64`.
    NotANumber,
    /// `increment`'s result does not fit in an `i64`.
    Overflow,
}

impl std::fmt::Display for KvRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KvRefusal::TooManyKeys(n) => write!(f, "already storing the maximum of {n} keys"),
            KvRefusal::ValueTooLarge(n) => write!(f, "value larger than {n} bytes"),
            KvRefusal::NotANumber => f.write_str("the value to increment is not an integer"),
            KvRefusal::Overflow => f.write_str("the increment overflows a 64-bit integer"),
        }
    }
}

// ---- Reading deliveries and events

/// Whose deliveries a page shows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum DeliveryScope {
    /// The whole account's.
    #[default]
    Account,
    /// One subscription's (by id).
    Subscription(String),
    /// One event's (by id).
    Event(String),
}

/// Which deliveries a listing shows.
#[derive(Debug, Clone, Default)]
pub struct DeliveryFilter {
    /// Whose.
    pub scope: DeliveryScope,
    /// Only in this status.
    pub status: Option<DeliveryStatus>,
}

/// What the event list filters on; every field is optional.
#[derive(Debug, Clone, Default)]
pub struct EventSearch {
    /// Only this type.
    pub event_type: Option<String>,
    /// Only this event id.
    pub event_id: Option<String>,
    /// Only events whose payload's `conversation_id` is this.
    pub conversation_id: Option<String>,
    /// Received at or after (Unix ms).
    pub from: Option<i64>,
    /// Received before (Unix ms).
    pub to: Option<i64>,
}

/// Who a delivery goes to, for a list of deliveries of one event.
#[derive(Debug, Clone)]
pub struct Target {
    /// The subscription's URL, if a URL subscription.
    pub url: Option<String>,
    /// Its subscriber plugin, if a plugin subscription.
    pub plugin_id: Option<String>,
    /// Its transform plugin.
    pub transform_plugin_id: Option<String>,
}

/// What the overview shows of an account.
#[derive(Debug, Clone, Default)]
pub struct Overview {
    /// Deliveries waiting for an attempt.
    pub queue_depth: i64,
    /// Deliveries changed in the last hour, by status.
    pub last_hour: Vec<(DeliveryStatus, i64)>,
    /// Subscriptions whose deliveries all fail: (id, url or plugin, failing since).
    pub failing: Vec<(String, String, i64)>,
    /// Plugins with error lines since the window's start: (id, name, count).
    pub plugin_errors: Vec<(String, String, i64)>,
}

/// A plugin's place in the account: subscriptions that use it and its recent error lines.
#[derive(Debug, Clone, Default)]
pub struct PluginUse {
    /// Subscriptions with it as subscriber: ids.
    pub subscriber_of: Vec<String>,
    /// Subscriptions with it as transform: ids.
    pub transform_of: Vec<String>,
    /// Error lines (failures included) since the window's start.
    pub errors: i64,
}

// ---- Writes answered before their commit

/// The two replies of a write answered as soon as it is applied, before its group commits
/// ([`crate::store::Store::queue_outcome`]): what it did, then whether the disk has it.
pub struct Applied<R> {
    applied: oneshot::Receiver<Result<R, StoreError>>,
    committed: oneshot::Receiver<Result<(), StoreError>>,
}

impl<R> Applied<R> {
    /// Wraps a backend's two replies: the op's result once applied, the commit's outcome.
    pub(crate) fn new(
        applied: oneshot::Receiver<Result<R, StoreError>>,
        committed: oneshot::Receiver<Result<(), StoreError>>,
    ) -> Applied<R> {
        Applied { applied, committed }
    }

    /// The op's result, once applied (not yet committed).
    pub async fn applied(&mut self) -> Result<R, StoreError> {
        (&mut self.applied).await.map_err(|_| StoreError::Closed)?
    }

    /// Whether the op's group committed.
    pub async fn committed(self) -> Result<(), StoreError> {
        self.committed.await.map_err(|_| StoreError::Closed)?
    }
}

// ---- Retention

/// What one retention run deleted (see [`crate::store::Store::purge_older_than`]).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Purged {
    /// Settled deliveries (succeeded, failed, filtered).
    pub deliveries: u64,
    /// Their attempts.
    pub attempts: u64,
    /// Events left without any delivery.
    pub events: u64,
    /// Transactions it took (each deletes at most one batch of rows of one table).
    pub batches: u64,
}
