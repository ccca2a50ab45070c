//! The records wasmhook keeps, shared by storage, services and the API.
//!
//! Times are Unix milliseconds inside the server and RFC 3339 on the wire; fields that must
//! never leave the server (internal sequence numbers, secrets) are skipped when serializing.
//! The records deserialize too, from what the API sends: the command line (`crate::cli`) reads
//! responses into these same types, so it cannot drift from the API.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use utoipa::ToSchema;

use crate::clock::{ms_as_rfc3339, opt_ms_as_rfc3339};

/// A tenant: everything else belongs to exactly one account.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Account {
    /// Account id (`acc_...`).
    pub id: String,
    /// Display name.
    pub name: String,
    /// Creation time.
    #[serde(with = "ms_as_rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: i64,
}

/// An API key's metadata; the key itself is only ever shown when issued.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ApiKeyInfo {
    /// Key id (`key_...`), used to revoke it.
    pub id: String,
    /// The account the key acts for.
    pub account_id: String,
    /// The first characters of the key, to recognise it.
    pub prefix: String,
    /// Creation time.
    #[serde(with = "ms_as_rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: i64,
    /// When it was revoked, if it was.
    #[serde(with = "opt_ms_as_rfc3339")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub revoked_at: Option<i64>,
}

/// The body shape a delivery uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// Standard Webhooks: `{"type", "timestamp", "data"}`.
    #[default]
    Standard,
    /// Papercups: `{"event", "payload"}`.
    Papercups,
    /// Airy: the flat message object.
    Airy,
}

/// Whether a subscription receives events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SubscriptionStatus {
    /// Receives events.
    Active,
    /// Waits for the verification handshake to succeed.
    PendingVerification,
    /// Receives nothing; `status_reason` says why.
    Disabled,
}

macro_rules! str_enum {
    ($ty:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        impl $ty {
            /// Every value, in declaration order.
            pub const ALL: &'static [$ty] = &[$($ty::$variant),+];
            /// The wire and storage name.
            pub fn as_str(self) -> &'static str {
                match self { $($ty::$variant => $text),+ }
            }
            /// Parses the wire and storage name.
            pub fn parse(s: &str) -> Option<$ty> {
                match s { $($text => Some($ty::$variant),)+ _ => None }
            }
        }
    };
}

str_enum!(Format { Standard => "standard", Papercups => "papercups", Airy => "airy" });
str_enum!(DeliveryOrdering { None => "none", Conversation => "conversation" });
str_enum!(SubscriptionStatus {
    Active => "active",
    PendingVerification => "pending_verification",
    Disabled => "disabled",
});
str_enum!(VersionStatus { Compiling => "compiling", Ready => "ready", Failed => "failed" });
str_enum!(DeliveryStatus {
    Pending => "pending",
    Succeeded => "succeeded",
    Failed => "failed",
    Filtered => "filtered",
});

/// Whether a subscription's deliveries keep the order of their conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryOrdering {
    /// Deliveries are attempted independently, in parallel (the default for URL subscriptions).
    #[default]
    None,
    /// Deliveries of one conversation (the payload's `conversation_id`) are attempted one at a
    /// time, in the order the events were ingested (the default for plugin subscribers).
    Conversation,
}

/// Where a subscription's circuit breaker stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CircuitState {
    /// Deliveries flow.
    Closed,
    /// The endpoint failed repeatedly: deliveries are paused until `next_probe_at`.
    Open,
    /// The pause is over: one probe attempt decides whether deliveries flow again.
    HalfOpen,
}

/// A subscription's circuit breaker: after a run of endpoint failures (timeouts, connection
/// errors, 5xx) its deliveries pause for a growing interval, so a dead endpoint stops using
/// delivery slots. Nothing is dropped: paused deliveries go out once the endpoint recovers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Circuit {
    /// `closed`, `open` or `half_open`.
    pub state: CircuitState,
    /// Endpoint failures in a row (reset by a success).
    pub consecutive_failures: u32,
    /// While tripped: when the next probe attempt may go.
    #[serde(with = "opt_ms_as_rfc3339")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub next_probe_at: Option<i64>,
}

impl Circuit {
    /// The breaker as stored (`breaker_until` is set while tripped), seen at `now`.
    pub fn at(consecutive_failures: u32, breaker_until: Option<i64>, now: i64) -> Circuit {
        let state = match breaker_until {
            None => CircuitState::Closed,
            Some(until) if until > now => CircuitState::Open,
            Some(_) => CircuitState::HalfOpen,
        };
        Circuit {
            state,
            consecutive_failures,
            next_probe_at: breaker_until,
        }
    }
}

/// A subscriber: a URL webhook or a plugin, with the events it wants.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Subscription {
    #[serde(skip)]
    pub(crate) seq: i64,
    /// Subscription id (`sub_...`).
    pub id: String,
    #[serde(skip)]
    pub(crate) account_id: String,
    /// Where deliveries are POSTed (absent for plugin subscribers).
    pub url: Option<String>,
    /// The plugin that receives the events instead of a URL.
    pub plugin_id: Option<String>,
    /// A plugin every event passes through before it is sent to `url`.
    pub transform_plugin_id: Option<String>,
    /// Free text.
    pub description: String,
    /// Event types delivered, or `["*"]` for all.
    pub event_types: Vec<String>,
    /// Extra request headers sent with each delivery.
    pub headers: BTreeMap<String, String>,
    /// Body shape of deliveries.
    pub format: Format,
    /// Whether it receives events.
    pub status: SubscriptionStatus,
    /// Why it is disabled or why verification failed.
    pub status_reason: Option<String>,
    /// Whether the verification handshake is required.
    pub verify: bool,
    /// At most this many deliveries a second (excess ones wait).
    pub rate_limit_per_second: Option<u32>,
    /// At most this many attempts at once; `null` means the server's default
    /// (`--subscription-max-in-flight`).
    pub max_in_flight: Option<u32>,
    /// `conversation`: one delivery at a time per conversation, in ingest order; `none`: no order.
    pub ordering: DeliveryOrdering,
    /// The circuit breaker's state.
    pub circuit: Circuit,
    /// Set for a `wasmhook listen` subscription: its deliveries are handed to the command line
    /// connected to `GET /v1/listeners/{id}/stream`, and it is deleted when this time passes
    /// with none connected.
    #[serde(
        default,
        with = "opt_ms_as_rfc3339",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub listen_expires_at: Option<i64>,
    #[serde(skip)]
    pub(crate) secret: String,
    #[serde(skip)]
    pub(crate) previous_secret: Option<String>,
    #[serde(skip)]
    pub(crate) previous_secret_expires_at: Option<i64>,
    #[serde(skip)]
    pub(crate) airy_api_secret: Option<String>,
    #[serde(skip)]
    pub(crate) failing_since: Option<i64>,
    /// Creation time.
    #[serde(with = "ms_as_rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: i64,
    /// Last change.
    #[serde(with = "ms_as_rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: i64,
}

impl Subscription {
    /// The signing secrets in force at `now`: the current one, then the previous one during
    /// a rotation's grace period.
    pub fn signing_secrets(&self, now: i64) -> Vec<&str> {
        let mut keys = vec![self.secret.as_str()];
        if let (Some(prev), Some(until)) = (&self.previous_secret, self.previous_secret_expires_at)
            && now < until
        {
            keys.push(prev);
        }
        keys
    }
}

/// Which plugin emitted an event, when one did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Causation {
    /// The plugin that emitted the event.
    pub plugin_id: String,
    /// The event it was handling.
    pub event_id: String,
    /// Plugin hops between this event and a client's (1 = direct).
    pub depth: u32,
}

/// A stored event.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Event {
    #[serde(skip)]
    pub(crate) seq: i64,
    /// Event id: the client's `id` when it gave one, else `evt_...`.
    pub id: String,
    /// Event type such as `message:created`.
    #[serde(rename = "type")]
    pub event_type: String,
    /// The JSON object posted.
    #[schema(value_type = Object)]
    pub payload: Box<RawValue>,
    /// When it happened (RFC 3339, UTC).
    pub occurred_at: String,
    /// When wasmhook stored it.
    #[serde(with = "ms_as_rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub received_at: i64,
    /// Set when a plugin emitted it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub causation: Option<Causation>,
}

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    /// Waiting for its next attempt.
    Pending,
    /// A 2xx was received (or the plugin ran).
    Succeeded,
    /// Every attempt failed (dead letter); can be retried by hand.
    Failed,
    /// A transform plugin dropped it; nothing was sent.
    Filtered,
}

/// One event on its way to one subscription.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Delivery {
    #[serde(skip)]
    pub(crate) seq: i64,
    /// Delivery id (`msg_...`), sent as `webhook-id`: the same on every retry.
    pub id: String,
    /// The event delivered.
    pub event_id: String,
    /// The subscription it goes to.
    pub subscription_id: String,
    /// Where it stands.
    pub status: DeliveryStatus,
    /// Attempts made so far.
    pub attempts: u32,
    /// When the next attempt is due, while pending.
    #[serde(with = "opt_ms_as_rfc3339")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub next_attempt_at: Option<i64>,
    /// The last failure, if any.
    pub last_error: Option<String>,
    /// Creation time.
    #[serde(with = "ms_as_rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: i64,
    /// Last change.
    #[serde(with = "ms_as_rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: i64,
}

/// One try at a delivery.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Attempt {
    /// When it started.
    #[serde(with = "ms_as_rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub attempted_at: i64,
    /// How long it took, in milliseconds.
    pub duration_ms: i64,
    /// The HTTP status received, if a response came.
    pub status_code: Option<u16>,
    /// What went wrong: `timeout`, `connect`, `dns`, `tls`, `network_policy`, `http_status`, `plugin`, ...
    pub error_kind: Option<String>,
    /// A human-readable reason.
    pub error_message: Option<String>,
    /// The first 4 KiB of the response body.
    pub response_body: Option<String>,
    /// The request this attempt sent, as sent (or as it was to be sent, when no connection
    /// was made): null when there was none (a plugin subscriber, a transform that dropped or
    /// failed on the event) and for attempts recorded before wasmhook kept requests.
    #[serde(default)]
    pub request: Option<AttemptRequest>,
}

/// The request one attempt sent, byte for byte up to [`AttemptRequest::BODY_LIMIT`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AttemptRequest {
    /// Where it was sent; null for a `wasmhook listen` subscription, whose command line posts
    /// it to its own local receiver.
    pub url: Option<String>,
    /// Every header sent: `content-type`, `user-agent`, the custom headers, `webhook-id`,
    /// `webhook-timestamp`, `webhook-signature` (and `x-airy-content-signature` for Airy).
    pub headers: BTreeMap<String, String>,
    /// The body sent (after any transform plugin), cut after 16 KiB: see `body_truncated`.
    pub body: String,
    /// Whether `body` is only the start of what was sent.
    pub body_truncated: bool,
    /// The size of the whole body sent, in bytes.
    pub body_bytes: u64,
}

impl AttemptRequest {
    /// How much of a request body the attempt log keeps.
    pub const BODY_LIMIT: usize = 16 * 1024;

    /// The record of a request: `body` is kept up to [`Self::BODY_LIMIT`] bytes, cut at a
    /// character boundary (lossily decoded: bodies are JSON text).
    pub fn new(url: Option<&str>, headers: &[(String, String)], body: &[u8]) -> AttemptRequest {
        let mut cut = body.len().min(Self::BODY_LIMIT);
        let text = loop {
            match std::str::from_utf8(&body[..cut]) {
                Ok(text) => break text.to_string(),
                // A character split by the cut is left out; anything else invalid is replaced.
                Err(e) if e.error_len().is_none() && cut < body.len() => cut = e.valid_up_to(),
                Err(_) => break String::from_utf8_lossy(&body[..cut]).into_owned(),
            }
        };
        AttemptRequest {
            url: url.map(str::to_string),
            headers: headers.iter().cloned().collect(),
            body: text,
            body_truncated: cut < body.len(),
            body_bytes: body.len() as u64,
        }
    }
}

/// Who sent a message.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Sender {
    /// Sender id.
    pub id: String,
    /// `source_contact` for customers, `app_user` for messages sent through this API or by plugins.
    #[serde(rename = "type")]
    pub sender_type: String,
}

/// A message sent through the API or by a plugin.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Message {
    /// Message id (a UUID, as Airy uses).
    pub id: String,
    /// The conversation it belongs to.
    pub conversation_id: String,
    /// Message text.
    pub text: String,
    /// Who sent it.
    pub sender: Sender,
    /// The conversation's source (for example `facebook`), when known.
    pub source: Option<String>,
    /// When it was sent.
    #[serde(with = "ms_as_rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub sent_at: i64,
    /// The `message:created` event emitted for it.
    pub event_id: String,
}

/// What wasmhook knows about a conversation, learnt from ingested events.
#[derive(Debug, Clone)]
pub struct Conversation {
    /// The customer (contact) in the conversation.
    pub customer_id: Option<String>,
    /// The channel, such as `facebook`.
    pub source: Option<String>,
}

/// Per-invocation limits of a plugin. Each field overrides the server default when set.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PluginLimits {
    /// Linear memory, in MiB (default 64).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_mb: Option<u32>,
    /// Wall-clock deadline of one invocation, in milliseconds (default 1000).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deadline_ms: Option<u32>,
    /// `send-message` calls per invocation (default 5).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub send_messages: Option<u32>,
    /// Largest key-value value, in bytes (default 65536).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kv_value_bytes: Option<u32>,
    /// Keys the plugin may store (default 10000).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kv_keys: Option<u32>,
    /// Log bytes kept per invocation (default 65536).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_bytes: Option<u32>,
    /// Largest `replace` payload, in bytes (default 262144).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replace_bytes: Option<u32>,
}

/// How severe a plugin log line is; a plugin keeps lines at its `log_level` and above.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    /// Very detailed diagnostics.
    Trace,
    /// Diagnostics.
    Debug,
    /// Normal operation (the default level kept).
    #[default]
    Info,
    /// Something unexpected.
    Warn,
    /// A failure.
    Error,
}

str_enum!(LogLevel { Trace => "trace", Debug => "debug", Info => "info", Warn => "warn", Error => "error" });

/// How a plugin's instances are used: a fresh one per event (the default), or one kept for
/// further events of the same account and subscription (see the README's "Instance reuse").
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum InstanceMode {
    /// A fresh instance for every event: nothing survives an event.
    #[default]
    PerEvent,
    /// An instance serves further events of the same plugin version, configuration, account
    /// and subscription, one at a time, until a discard rule throws it away; its globals and
    /// heap persist between those events.
    Reuse,
}

str_enum!(InstanceMode { PerEvent => "per_event", Reuse => "reuse" });

/// An uploaded plugin. It serializes with the values of its secret config keys masked
/// (`crate::plugin_config::MASK`): a secret value never leaves the server once set.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct Plugin {
    /// Plugin id (`plg_...`).
    pub id: String,
    /// The owning account (never serialized).
    #[serde(skip)]
    pub account_id: String,
    /// Display name.
    pub name: String,
    /// Configuration the plugin reads with `config-get`. The values of `secret_keys` show as
    /// `"********"`; the plugin gets the real value.
    pub config: BTreeMap<String, String>,
    /// Config keys whose values are secret: encrypted at rest and never shown again once set.
    #[serde(default)]
    pub secret_keys: BTreeSet<String>,
    /// Hosts the plugin may reach with outgoing `wasi:http` (none by default).
    pub allowed_hosts: Vec<String>,
    /// Limit overrides.
    pub limits: PluginLimits,
    /// Lines below this level are not kept (default `info`).
    pub log_level: LogLevel,
    /// `per_event` (default): a fresh instance per event; `reuse`: instances kept between
    /// events of one subscription.
    #[serde(default)]
    pub instances: InstanceMode,
    /// The version new events run on: the newest `ready` one; until one is ready, the first
    /// upload's (events wait while it compiles).
    pub version: u32,
    /// The newest uploaded version: `version` once it is ready.
    #[serde(default)]
    pub latest_version: u32,
    /// The newest version's status: `compiling`, then `ready` (it becomes `version`) or
    /// `failed` (`version` stays the one that runs).
    #[serde(default)]
    pub status: VersionStatus,
    /// Why the newest version failed (`status: "failed"`), else null.
    #[serde(default)]
    pub failure: Option<String>,
    /// Creation time.
    #[serde(with = "ms_as_rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: i64,
    /// Last change.
    #[serde(with = "ms_as_rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: i64,
}

impl Serialize for Plugin {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        /// The wire form: the derived one, with the config masked.
        #[derive(Serialize)]
        struct Wire<'a> {
            id: &'a str,
            name: &'a str,
            config: BTreeMap<&'a str, &'a str>,
            secret_keys: &'a BTreeSet<String>,
            allowed_hosts: &'a [String],
            limits: &'a PluginLimits,
            log_level: LogLevel,
            instances: InstanceMode,
            version: u32,
            latest_version: u32,
            status: VersionStatus,
            failure: Option<&'a str>,
            #[serde(with = "ms_as_rfc3339")]
            created_at: i64,
            #[serde(with = "ms_as_rfc3339")]
            updated_at: i64,
        }
        Wire {
            id: &self.id,
            name: &self.name,
            config: crate::plugin_config::masked(&self.config, &self.secret_keys),
            secret_keys: &self.secret_keys,
            allowed_hosts: &self.allowed_hosts,
            limits: &self.limits,
            log_level: self.log_level,
            instances: self.instances,
            version: self.version,
            latest_version: self.latest_version,
            status: self.status,
            failure: self.failure.as_deref(),
            created_at: self.created_at,
            updated_at: self.updated_at,
        }
        .serialize(serializer)
    }
}

/// Where an uploaded version stands: uploads are validated in their request and compiled after
/// it, one at a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum VersionStatus {
    /// Waiting for or being compiled; events for a plugin with no ready version wait for it.
    Compiling,
    /// Compiled: it runs (the newest ready version is the plugin's active one).
    #[default]
    Ready,
    /// It did not compile or does not fit the host (`failure` says why); it never runs.
    Failed,
}

/// One uploaded version of a plugin's component.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PluginVersion {
    /// Version number, from 1.
    pub version: u32,
    /// SHA-256 of the component, hex.
    pub sha256: String,
    /// Size of the component in bytes.
    pub size_bytes: u64,
    #[serde(skip)]
    pub(crate) wasm_path: String,
    #[serde(skip)]
    pub(crate) cwasm_path: String,
    #[serde(skip)]
    pub(crate) engine_hash: String,
    /// Upload time.
    #[serde(with = "ms_as_rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: i64,
    /// `compiling`, then `ready` or `failed`.
    #[serde(default)]
    pub status: VersionStatus,
    /// Why it failed (`status: "failed"`), e.g. an import the host does not provide.
    #[serde(default)]
    pub failure: Option<String>,
}

/// A line of a plugin's log.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PluginLogLine {
    /// When it was written.
    #[serde(with = "ms_as_rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub at: i64,
    /// `trace`, `debug`, `info`, `warn`, `error`.
    pub level: String,
    /// The event the plugin was handling.
    pub event_id: Option<String>,
    /// The text (from `log`, stdout, stderr, or a failure).
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::AttemptRequest;

    #[test]
    fn a_request_body_is_kept_up_to_the_limit_at_a_character_boundary() {
        let short = AttemptRequest::new(None, &[], br#"{"a":1}"#);
        assert_eq!(short.body, r#"{"a":1}"#);
        assert!(!short.body_truncated);
        assert_eq!(short.body_bytes, 7);
        // A two-byte character straddling the limit is left out whole.
        let mut long = "x".repeat(AttemptRequest::BODY_LIMIT - 1);
        long.push('é');
        long.push_str("tail");
        let cut = AttemptRequest::new(Some("https://h/"), &[], long.as_bytes());
        assert!(cut.body_truncated);
        assert_eq!(cut.body.len(), AttemptRequest::BODY_LIMIT - 1);
        assert_eq!(cut.body_bytes, long.len() as u64);
    }
}
