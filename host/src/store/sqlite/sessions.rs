//! Web console sessions: what a sign-in cookie stands for.
//!
//! Only the SHA-256 of a session token is stored, like API keys. A session made with an API key
//! names that key and ends when it is revoked; an admin session has no account.

use rusqlite::{OptionalExtension, params};

use super::{SqliteStore, StoreError};
use crate::store::{ConsoleSession, NewConsoleSession};

const FIND: &str = "SELECT s.account_id, s.csrf_token, s.expires_at FROM console_sessions s
     LEFT JOIN api_keys k ON k.id = s.api_key_id
     WHERE s.token_hash = ?1 AND s.expires_at > ?2
       AND (s.api_key_id IS NULL OR k.revoked_at IS NULL)";

impl SqliteStore {
    /// The key id and account of a live (unrevoked) API key.
    pub async fn api_key_by_hash(
        &self,
        hash: [u8; 32],
    ) -> Result<Option<(String, String)>, StoreError> {
        self.read(move |c| {
            Ok(c.prepare_cached(
                "SELECT id, account_id FROM api_keys WHERE key_hash = ?1 AND revoked_at IS NULL",
            )?
            .query_row([hash], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?)
        })
        .await
    }

    /// Stores a session, and forgets sessions that expired.
    pub async fn create_console_session(&self, s: NewConsoleSession) -> Result<(), StoreError> {
        self.write(move |tx| {
            tx.prepare_cached("DELETE FROM console_sessions WHERE expires_at <= ?1")?
                .execute([s.created_at])?;
            tx.prepare_cached(
                "INSERT INTO console_sessions
                    (token_hash, account_id, api_key_id, csrf_token, created_at, expires_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![
                s.token_hash,
                s.account_id,
                s.api_key_id,
                s.csrf_token,
                s.created_at,
                s.expires_at
            ])?;
            Ok(())
        })
        .await
    }

    /// The live session of a token hash at `now`: not expired, its key not revoked.
    pub async fn console_session(
        &self,
        token_hash: [u8; 32],
        now: i64,
    ) -> Result<Option<ConsoleSession>, StoreError> {
        self.read(move |c| {
            Ok(c.prepare_cached(FIND)?
                .query_row(params![token_hash, now], |r| {
                    Ok(ConsoleSession {
                        account_id: r.get(0)?,
                        csrf_token: r.get(1)?,
                        expires_at: r.get(2)?,
                    })
                })
                .optional()?)
        })
        .await
    }

    /// Ends a session (signing out); ending one that does not exist is not an error.
    pub async fn delete_console_session(&self, token_hash: [u8; 32]) -> Result<(), StoreError> {
        self.write(move |tx| {
            tx.prepare_cached("DELETE FROM console_sessions WHERE token_hash = ?1")?
                .execute([token_hash])?;
            Ok(())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Account;
    use crate::store::{Store, SyncMode};

    #[tokio::test]
    async fn sessions_expire_end_and_follow_their_key() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(
            dir.path(),
            SyncMode::Normal,
            crate::secrets::Keyring::ephemeral().into(),
        )
        .unwrap();
        let (key, stored) = crate::auth::new_api_key();
        let key_id = stored.id.clone();
        let account = Account {
            id: "acc_1".into(),
            name: "A".into(),
            created_at: 0,
        };
        store.create_account(account, stored).await.unwrap();
        let (found_key, found_account) = store
            .api_key_by_hash(crate::auth::hash(&key))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (found_key.as_str(), found_account.as_str()),
            (key_id.as_str(), "acc_1")
        );
        let new = |hash: [u8; 32], account: Option<&str>, key: Option<&str>| NewConsoleSession {
            token_hash: hash,
            account_id: account.map(str::to_string),
            api_key_id: key.map(str::to_string),
            csrf_token: "csrf".into(),
            created_at: 1_000,
            expires_at: 2_000,
        };
        store
            .create_console_session(new([1; 32], Some("acc_1"), Some(&key_id)))
            .await
            .unwrap();
        store
            .create_console_session(new([2; 32], None, None))
            .await
            .unwrap();
        let one = store
            .console_session([1; 32], 1_500)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(one.account_id.as_deref(), Some("acc_1"));
        assert_eq!(one.csrf_token, "csrf");
        assert!(
            store
                .console_session([1; 32], 2_000)
                .await
                .unwrap()
                .is_none(),
            "expired"
        );
        let admin = store
            .console_session([2; 32], 1_500)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(admin.account_id, None);
        store
            .revoke_api_key("acc_1".into(), key_id, 1_600)
            .await
            .unwrap();
        assert!(
            store
                .console_session([1; 32], 1_700)
                .await
                .unwrap()
                .is_none(),
            "revoking the key ends its sessions"
        );
        store.delete_console_session([2; 32]).await.unwrap();
        assert!(
            store
                .console_session([2; 32], 1_500)
                .await
                .unwrap()
                .is_none()
        );
        store.close().await;
    }
}
