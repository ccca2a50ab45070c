//! Events, written together with their deliveries (the outbox) and the conversation index.

use rusqlite::{Connection, OptionalExtension, Transaction, params};
use serde_json::value::RawValue;

use super::writer::Rollback;
use super::{OptionalRow, Page, SqliteStore, StoreError, unique_violation};
use crate::model::{Causation, Conversation, Event};
use crate::store::{Ingested, NewEvent};

const COLUMNS: &str = "seq, id, type, payload, occurred_at, received_at, cause_plugin_id, cause_event_id, cause_depth";

pub(crate) fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Event> {
    let payload: String = r.get(3)?;
    let cause_plugin: Option<String> = r.get(6)?;
    let cause_event: Option<String> = r.get(7)?;
    Ok(Event {
        seq: r.get(0)?,
        id: r.get(1)?,
        event_type: r.get(2)?,
        payload: RawValue::from_string(payload).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(3, rusqlite::types::Type::Text, Box::new(e))
        })?,
        occurred_at: r.get(4)?,
        received_at: r.get(5)?,
        causation: match (cause_plugin, cause_event) {
            (Some(plugin_id), Some(event_id)) => Some(Causation {
                plugin_id,
                event_id,
                depth: r.get(8)?,
            }),
            _ => None,
        },
    })
}

pub(crate) fn get_by_seq(c: &Connection, seq: i64) -> Result<Event, StoreError> {
    c.prepare_cached(&format!("SELECT {COLUMNS} FROM events WHERE seq = ?1"))?
        .query_row([seq], row)
        .found()
}

/// Stores one event, its deliveries and conversation facts inside the caller's transaction.
pub(crate) fn insert(tx: &Transaction<'_>, e: NewEvent) -> Result<Ingested, StoreError> {
    if let Some(key) = &e.idempotency_key {
        let existing = tx
            .prepare_cached(&format!(
                "SELECT {COLUMNS}, body_hash FROM events WHERE account_id = ?1 AND idempotency_key = ?2"
            ))?
            .query_row(params![e.account_id, key], |r| Ok((row(r)?, r.get::<_, Vec<u8>>(9)?)))
            .optional()?;
        if let Some((event, hash)) = existing {
            if hash != e.body_hash {
                return Err(StoreError::Conflict(format!(
                    "idempotency key {key:?} was already used for a different event"
                )));
            }
            return Ok(Ingested {
                event,
                replayed: true,
                deliveries: 0,
            });
        }
    }
    let (cause_plugin, cause_event, depth) = match &e.causation {
        Some(c) => (
            Some(c.plugin_id.as_str()),
            Some(c.event_id.as_str()),
            c.depth,
        ),
        None => (None, None, 0),
    };
    tx.prepare_cached(
        "INSERT INTO events (id, account_id, type, payload, occurred_at, received_at, idempotency_key,
            body_hash, cause_plugin_id, cause_event_id, cause_depth)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
    )?
    .execute(params![
        e.id,
        e.account_id,
        e.event_type,
        e.payload.get(),
        e.occurred_at,
        e.received_at,
        e.idempotency_key,
        e.body_hash,
        cause_plugin,
        cause_event,
        depth,
    ])
    .map_err(|err| unique_violation(err, &format!("an event with id {:?} already exists", e.id)))?;
    let seq = tx.last_insert_rowid();
    if let Some((conversation_id, conv)) = &e.conversation {
        tx.prepare_cached(
            "INSERT INTO conversations (account_id, conversation_id, customer_id, source, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (account_id, conversation_id) DO UPDATE SET
                customer_id = COALESCE(excluded.customer_id, customer_id),
                source = COALESCE(excluded.source, source),
                updated_at = excluded.updated_at",
        )?
        .execute(params![e.account_id, conversation_id, conv.customer_id, conv.source, e.received_at])?;
    }
    let deliveries = super::deliveries::enqueue_for_event(tx, seq, &e)?;
    let event = Event {
        seq,
        id: e.id,
        event_type: e.event_type,
        payload: e.payload,
        occurred_at: e.occurred_at,
        received_at: e.received_at,
        causation: e.causation,
    };
    Ok(Ingested {
        event,
        replayed: false,
        deliveries,
    })
}

impl SqliteStore {
    /// Stores events all-or-none in one transaction, with one delivery per matching subscription.
    pub async fn ingest(&self, events: Vec<NewEvent>) -> Result<Vec<Ingested>, StoreError> {
        // One event is refused (a reused id or idempotency key) only before its first write:
        // it needs no savepoint. Of several, a later one may be refused after the first wrote.
        let rollback = match events.len() {
            1 => Rollback::WithGroup,
            _ => Rollback::Alone,
        };
        self.write_with(rollback, move |tx| {
            events.into_iter().map(|e| insert(tx, e)).collect()
        })
        .await
    }

    /// One event of the account.
    pub async fn get_event(&self, account_id: String, id: String) -> Result<Event, StoreError> {
        self.read(move |c| {
            c.prepare_cached(&format!(
                "SELECT {COLUMNS} FROM events WHERE account_id = ?1 AND id = ?2"
            ))?
            .query_row(params![account_id, id], row)
            .found()
        })
        .await
    }

    /// The account's events, newest first, optionally of one type (on the type's index: see
    /// [`Store::search_events`]).
    pub async fn list_events(
        &self,
        account_id: String,
        event_type: Option<String>,
        limit: usize,
        cursor: Option<i64>,
    ) -> Result<Page<Event>, StoreError> {
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
        self.read(move |c| {
            c.prepare_cached(
                "SELECT customer_id, source FROM conversations WHERE account_id = ?1 AND conversation_id = ?2",
            )?
            .query_row(params![account_id, conversation_id], |r| {
                Ok(Conversation { customer_id: r.get(0)?, source: r.get(1)? })
            })
            .found()
        })
        .await
    }
}
