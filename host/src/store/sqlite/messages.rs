//! Messages sent through the API or by plugins: stored with the event that announces them.

use rusqlite::params;

use super::{OptionalRow, SqliteStore, StoreError};
use crate::model::{Conversation, Message};
use crate::store::{Ingested, NewEvent};

impl SqliteStore {
    /// Looks the conversation up, lets `build` shape the message and its `message:created` event
    /// from what is known of it, and stores both in one transaction. An unknown conversation is
    /// [`StoreError::NotFound`].
    pub async fn send_message<F>(
        &self,
        account_id: String,
        conversation_id: String,
        build: F,
    ) -> Result<(Message, Ingested), StoreError>
    where
        F: FnOnce(&Conversation) -> (Message, NewEvent) + Send + 'static,
    {
        self.write(move |tx| {
            let conv = tx
                .prepare_cached(
                    "SELECT customer_id, source FROM conversations WHERE account_id = ?1 AND conversation_id = ?2",
                )?
                .query_row(params![account_id, conversation_id], |r| {
                    Ok(Conversation { customer_id: r.get(0)?, source: r.get(1)? })
                })
                .found()?;
            let (message, event) = build(&conv);
            let ingested = super::events::insert(tx, event)?;
            tx.prepare_cached(
                "INSERT INTO messages (id, account_id, conversation_id, text, sender_id, sender_type, sent_at, event_seq)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?
            .execute(params![
                message.id,
                account_id,
                message.conversation_id,
                message.text,
                message.sender.id,
                message.sender.sender_type,
                message.sent_at,
                ingested.event.seq,
            ])?;
            Ok((message, ingested))
        })
        .await
    }
}
