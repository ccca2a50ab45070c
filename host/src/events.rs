//! The ingest path: validating posted events and storing them with their deliveries.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};
use utoipa::ToSchema;
use utoipa::openapi::{RefOr, Schema};

use crate::clock::{new_id, now_ms, parse_rfc3339, rfc3339};
use crate::error::ApiError;
use crate::model::{Causation, Conversation};
use crate::schema::Str;
use crate::state::AppState;
use crate::store::{Ingested, NewEvent};

/// The largest batch `POST /v1/events/batch` accepts.
pub const MAX_BATCH: usize = 1000;

/// Deepest nesting accepted in a payload: what serde_json (and so plugins and formats) can parse.
pub const MAX_DEPTH: usize = 128;

/// The nesting depth of valid JSON text (brackets outside strings).
///
/// Runs on every event ingested and every payload a plugin returns, so strings, most of a
/// typical payload, are skipped with `memchr` rather than walked byte by byte.
pub fn json_depth(json: &str) -> usize {
    let b = json.as_bytes();
    let (mut depth, mut max, mut i) = (0usize, 0usize, 0usize);
    while let Some(&c) = b.get(i) {
        i += 1;
        match c {
            b'"' => loop {
                let Some(rest) = b.get(i..) else { return max };
                match memchr::memchr2(b'"', b'\\', rest) {
                    // An escape: skip it and the escaped byte.
                    Some(at) if rest[at] == b'\\' => i += at + 2,
                    Some(at) => {
                        i += at + 1;
                        break;
                    }
                    None => return max,
                }
            },
            b'{' | b'[' => {
                depth += 1;
                max = max.max(depth);
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}

/// What [`valid_event_type`] accepts, for error messages and the API document.
pub const EVENT_TYPE_PATTERN: &str = "^[a-z][a-z0-9_.:-]{0,127}$";

/// What `valid_client_id` accepts.
pub const CLIENT_ID_PATTERN: &str = "^[A-Za-z0-9_.:-]{1,128}$";

/// True for [`EVENT_TYPE_PATTERN`].
pub fn valid_event_type(t: &str) -> bool {
    let b = t.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && b[0].is_ascii_lowercase()
        && b[1..]
            .iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || b"_.:-".contains(c))
}

/// True for a client-chosen event id ([`CLIENT_ID_PATTERN`]).
fn valid_client_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"_.:-".contains(&c))
}

/// An event as posted by a client.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EventIn {
    /// Event type, e.g. `message:created` (`event` is accepted too, as Papercups names it).
    #[serde(rename = "type", alias = "event")]
    #[schema(schema_with = event_type_schema)]
    pub event_type: String,
    /// The event's data: a JSON object.
    #[schema(value_type = Object)]
    pub payload: Box<RawValue>,
    /// Your id for the event; posting the same id again returns the first event.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = client_id_schema)]
    pub id: Option<String>,
    /// When it happened (RFC 3339); defaults to now.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(format = DateTime)]
    pub occurred_at: Option<String>,
}

fn event_type_schema() -> RefOr<Schema> {
    Str::new("Event type, e.g. `message:created` (`event` is accepted too, as Papercups names it).")
        .pattern(EVENT_TYPE_PATTERN)
        .build()
}

fn client_id_schema() -> RefOr<Schema> {
    Str::new("Your id for the event; posting the same id again returns the first event.")
        .pattern(CLIENT_ID_PATTERN)
        .nullable()
        .build()
}

/// Turns a posted event into a record to store. `where_` names it in errors (`events[3]`).
pub fn prepare(
    account_id: &str,
    e: EventIn,
    idempotency_key: Option<String>,
    max_bytes: usize,
    where_: &str,
) -> Result<NewEvent, ApiError> {
    if !valid_event_type(&e.event_type) {
        return Err(ApiError::BadRequest {
            code: "invalid_event_type",
            message: format!(
                "{where_}type: {:?} must match {EVENT_TYPE_PATTERN}",
                e.event_type
            ),
        });
    }
    if !e.payload.get().starts_with('{') {
        return Err(ApiError::BadRequest {
            code: "invalid_payload",
            message: format!("{where_}payload: must be a JSON object"),
        });
    }
    if json_depth(e.payload.get()) > MAX_DEPTH {
        return Err(ApiError::BadRequest {
            code: "invalid_payload",
            message: format!("{where_}payload: nested deeper than {MAX_DEPTH} levels"),
        });
    }
    if e.payload.get().len() > max_bytes {
        return Err(ApiError::PayloadTooLarge(format!(
            "{where_}payload: larger than {max_bytes} bytes"
        )));
    }
    if let Some(id) = &e.id
        && !valid_client_id(id)
    {
        return Err(ApiError::invalid(format!(
            "{where_}id: 1 to 128 characters of letters, digits, '_', '.', ':' or '-'"
        )));
    }
    let received_at = now_ms();
    let occurred_at = match &e.occurred_at {
        Some(t) => {
            parse_rfc3339(t)
                .ok_or_else(|| {
                    ApiError::invalid(format!(
                        "{where_}occurred_at: {t:?} is not an RFC 3339 timestamp"
                    ))
                })?
                .0
        }
        None => rfc3339(received_at),
    };
    let mut h = Sha256::new();
    for part in [
        e.event_type.as_str(),
        e.payload.get(),
        e.occurred_at.as_deref().unwrap_or(""),
        e.id.as_deref().unwrap_or(""),
    ] {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part.as_bytes());
    }
    let conversation = conversation_facts(&e.payload);
    let idempotency_key = idempotency_key.or_else(|| e.id.clone());
    Ok(NewEvent {
        id: e.id.unwrap_or_else(|| new_id("evt")),
        account_id: account_id.to_string(),
        event_type: e.event_type,
        payload: e.payload,
        occurred_at,
        received_at,
        idempotency_key,
        body_hash: h.finalize().into(),
        causation: None,
        conversation,
    })
}

/// Refuses new events from a caller while the delivery queue is over its limit (see
/// `crate::backpressure`).
pub fn admit(state: &AppState) -> Result<(), ApiError> {
    state
        .backpressure
        .admit()
        .map_err(|backlogged| ApiError::TooManyRequests {
            message: backlogged.to_string(),
            retry_after: crate::backpressure::SAMPLE_EVERY,
        })
}

/// Stores events (all or none), counts them, publishes them to the live feed and wakes the
/// dispatcher.
pub async fn ingest(state: &AppState, events: Vec<NewEvent>) -> Result<Vec<Ingested>, ApiError> {
    admit(state)?;
    // The stored events do not name their account; keep it for those someone watches live.
    let watched: Vec<Option<String>> = events
        .iter()
        .map(|e| {
            let account = &e.account_id;
            state.live.is_listened_to(account).then(|| account.clone())
        })
        .collect();
    let stored = state.store.ingest(events).await?;
    for (i, account) in stored.iter().zip(&watched) {
        if let (false, Some(account)) = (i.replayed, account) {
            state.live.event(account, &i.event);
        }
    }
    let fresh = stored.iter().filter(|i| !i.replayed).count();
    state.metrics.events_ingested.inc_by(fresh as u64);
    if stored.iter().any(|i| i.deliveries > 0) {
        state.wake_dispatcher();
    }
    Ok(stored)
}

/// A conversation id may be a string or a number in the wild.
#[derive(Deserialize)]
#[serde(untagged)]
enum Id {
    Text(String),
    Number(serde_json::Number),
}

impl Id {
    fn into_string(self) -> String {
        match self {
            Id::Text(s) => s,
            Id::Number(n) => n.to_string(),
        }
    }
}

#[derive(Deserialize)]
struct SenderFacts {
    id: Option<Id>,
    #[serde(rename = "type")]
    sender_type: Option<String>,
}

#[derive(Deserialize)]
struct Facts {
    conversation_id: Option<Id>,
    customer_id: Option<Id>,
    source: Option<String>,
    sender: Option<SenderFacts>,
}

/// What a payload says about its conversation (Papercups `customer_id`, Airy `sender`/`source`).
pub fn conversation_facts(payload: &RawValue) -> Option<(String, Conversation)> {
    if !payload.get().contains("\"conversation_id\"") {
        return None;
    }
    let facts: Facts = serde_json::from_str(payload.get()).ok()?;
    let conversation_id = facts.conversation_id?.into_string();
    if conversation_id.is_empty() || conversation_id.len() > 256 {
        return None;
    }
    let contact = facts
        .sender
        .filter(|s| s.sender_type.as_deref() == Some("source_contact"))
        .and_then(|s| s.id)
        .map(Id::into_string);
    let customer_id = facts.customer_id.map(Id::into_string).or(contact);
    Some((
        conversation_id,
        Conversation {
            customer_id,
            source: facts.source,
        },
    ))
}

/// Marks an event as emitted by a plugin while handling `cause`.
pub fn caused_by(plugin_id: &str, cause_event_id: &str, cause_depth: u32) -> Causation {
    Causation {
        plugin_id: plugin_id.to_string(),
        event_id: cause_event_id.to_string(),
        depth: cause_depth + 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(s: &str) -> Box<RawValue> {
        RawValue::from_string(s.to_string()).unwrap()
    }

    #[test]
    fn depth_counts_brackets_outside_strings() {
        assert_eq!(json_depth(r#"{"a":[1,{"b":"[[[{"}]}"#), 3);
        assert_eq!(json_depth(r#"{"a":"\\\"[["}"#), 1);
        assert_eq!(
            json_depth(&format!("{}{}", "[".repeat(200), "]".repeat(200))),
            200
        );
        assert_eq!(json_depth(r#"[{"k\"":"\\"},["\u005b"]]"#), 2);
        assert_eq!(json_depth(r#"["unterminated\"#), 1);
        assert_eq!(json_depth(""), 0);
    }

    #[test]
    fn event_types_follow_the_pattern() {
        for ok in [
            "message:created",
            "a",
            "conversation.updated-2_x",
            &"a".repeat(128),
        ] {
            assert!(valid_event_type(ok), "{ok}");
        }
        for bad in ["", "Message", "1abc", "a b", "a/b", &"a".repeat(129), "é"] {
            assert!(!valid_event_type(bad), "{bad}");
        }
    }

    #[test]
    fn conversation_facts_read_papercups_and_airy_payloads() {
        let (id, c) = conversation_facts(&raw(
            r#"{"conversation_id":"c1","customer_id":"u1","body":"hi"}"#,
        ))
        .unwrap();
        assert_eq!((id.as_str(), c.customer_id.as_deref()), ("c1", Some("u1")));
        let (id, c) = conversation_facts(&raw(
            r#"{"conversation_id":4242,"sender":{"id":"s1","type":"source_contact"},"source":"facebook"}"#,
        ))
        .unwrap();
        assert_eq!(
            (id.as_str(), c.customer_id.as_deref(), c.source.as_deref()),
            ("4242", Some("s1"), Some("facebook"))
        );
        let (_, c) = conversation_facts(&raw(
            r#"{"conversation_id":"c","sender":{"id":"a","type":"app_user"}}"#,
        ))
        .unwrap();
        assert_eq!(c.customer_id, None);
        assert!(conversation_facts(&raw(r#"{"text":"no conversation"}"#)).is_none());
        assert!(conversation_facts(&raw(r#"{"conversation_id":{"nested":1}}"#)).is_none());
    }

    #[test]
    fn replays_hash_equal_and_changes_do_not() {
        let mk = |p: &str| {
            prepare(
                "acc",
                EventIn {
                    event_type: "t".into(),
                    payload: raw(p),
                    id: Some("x".into()),
                    occurred_at: None,
                },
                None,
                1024,
                "",
            )
            .unwrap()
            .body_hash
        };
        assert_eq!(mk(r#"{"a":1}"#), mk(r#"{"a":1}"#));
        assert_ne!(mk(r#"{"a":1}"#), mk(r#"{"a":2}"#));
    }
}
