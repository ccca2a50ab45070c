//! Web console sessions on PostgreSQL: only the SHA-256 of a session token is stored.

use deadpool_postgres::GenericClient;

use super::{PgStore, db};
use crate::store::StoreError;
use crate::store::{ConsoleSession, NewConsoleSession};

impl PgStore {
    /// The key id and account of a live (unrevoked) API key.
    pub async fn api_key_by_hash(
        &self,
        hash: [u8; 32],
    ) -> Result<Option<(String, String)>, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT id, account_id FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL",
                &[&hash.as_slice()],
            )
            .await
            .map_err(db)?;
        row.map(|r| Ok((r.try_get(0).map_err(db)?, r.try_get(1).map_err(db)?)))
            .transpose()
    }

    /// Stores a session, and forgets sessions that expired.
    pub async fn create_console_session(&self, s: NewConsoleSession) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db)?;
        tx.execute(
            "DELETE FROM console_sessions WHERE expires_at <= $1",
            &[&s.created_at],
        )
        .await
        .map_err(db)?;
        tx.execute(
            "INSERT INTO console_sessions
                (token_hash, account_id, api_key_id, csrf_token, created_at, expires_at)
             VALUES ($1, $2, $3, $4, $5, $6)",
            &[
                &s.token_hash.as_slice(),
                &s.account_id,
                &s.api_key_id,
                &s.csrf_token,
                &s.created_at,
                &s.expires_at,
            ],
        )
        .await
        .map_err(db)?;
        tx.commit().await.map_err(db)
    }

    /// The live session of a token hash at `now`: not expired, its key not revoked.
    pub async fn console_session(
        &self,
        token_hash: [u8; 32],
        now: i64,
    ) -> Result<Option<ConsoleSession>, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT s.account_id, s.csrf_token, s.expires_at FROM console_sessions s
                 LEFT JOIN api_keys k ON k.id = s.api_key_id
                 WHERE s.token_hash = $1 AND s.expires_at > $2
                   AND (s.api_key_id IS NULL OR k.revoked_at IS NULL)",
                &[&token_hash.as_slice(), &now],
            )
            .await
            .map_err(db)?;
        row.map(|r| {
            Ok(ConsoleSession {
                account_id: r.try_get(0).map_err(db)?,
                csrf_token: r.try_get(1).map_err(db)?,
                expires_at: r.try_get(2).map_err(db)?,
            })
        })
        .transpose()
    }

    /// Ends a session (signing out); ending one that does not exist is not an error.
    pub async fn delete_console_session(&self, token_hash: [u8; 32]) -> Result<(), StoreError> {
        let client = self.client().await?;
        client
            .execute(
                "DELETE FROM console_sessions WHERE token_hash = $1",
                &[&token_hash.as_slice()],
            )
            .await
            .map_err(db)?;
        Ok(())
    }
}
