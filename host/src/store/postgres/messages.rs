//! Messages sent through the API or by plugins, on PostgreSQL: stored with the event that
//! announces them, in one transaction.

use super::decode::get;
use super::events::{Retry, write_in};
use super::{PgStore, db};
use crate::model::{Conversation, Message};
use crate::store::{Ingested, NewEvent, StoreError};

/// A message's transaction is written again at most this many times when it races another
/// node's insert of the same event or deadlocks with it (as ingest does).
const MAX_PASSES: usize = 4;

impl PgStore {
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
        let mut client = self.client().await?;
        let conv = client
            .query_opt(
                "SELECT customer_id, source FROM conversations
                 WHERE account_id = $1 AND conversation_id = $2",
                &[&account_id, &conversation_id],
            )
            .await
            .map_err(db)?
            .ok_or(StoreError::NotFound)?;
        let conv = Conversation {
            customer_id: get(&conv, 0)?,
            source: get(&conv, 1)?,
        };
        let (message, event) = build(&conv);
        let events = [event];
        for pass in 1.. {
            let attempt = async {
                let tx = client.transaction().await?;
                let mut answers = write_in(&tx, &[&events[..]]).await?;
                let ingested = match answers.pop() {
                    Some(Ok(mut one)) if one.len() == 1 => one.pop().expect("one event"),
                    Some(Err(e)) => return Err(Retry::Fail(e)),
                    _ => {
                        return Err(Retry::Fail(StoreError::Corrupt(
                            "ingest answered a message's event with nothing".into(),
                        )));
                    }
                };
                tx.execute(
                    "INSERT INTO messages (id, account_id, conversation_id, text, sender_id,
                        sender_type, sent_at, event_seq)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                    &[
                        &message.id,
                        &account_id,
                        &message.conversation_id,
                        &message.text,
                        &message.sender.id,
                        &message.sender.sender_type,
                        &message.sent_at,
                        &ingested.event.seq,
                    ],
                )
                .await?;
                tx.commit().await?;
                Ok(ingested)
            };
            match attempt.await {
                Err(Retry::Again) | Err(Retry::Db(_)) if pass < MAX_PASSES => continue,
                Err(Retry::Again) => {
                    return Err(StoreError::Database(
                        "the message's event kept racing other nodes' inserts".into(),
                    ));
                }
                Err(Retry::Db(e)) | Err(Retry::Fail(e)) => return Err(e),
                Ok(ingested) => {
                    // Other nodes learn of the new deliveries after the commit, never inside it.
                    if ingested.deliveries > 0 {
                        self.notify_due().await;
                    }
                    return Ok((message, ingested));
                }
            }
        }
        unreachable!("the loop returns")
    }
}
