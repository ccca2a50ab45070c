//! Accounts and their API keys.

use rusqlite::{OptionalExtension, params};

use super::{OptionalRow, SqliteStore, StoreError};
use crate::model::{Account, ApiKeyInfo};
use crate::store::NewApiKey;

fn account_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Account> {
    Ok(Account {
        id: r.get(0)?,
        name: r.get(1)?,
        created_at: r.get(2)?,
    })
}

fn key_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ApiKeyInfo> {
    Ok(ApiKeyInfo {
        id: r.get(0)?,
        account_id: r.get(1)?,
        prefix: r.get(2)?,
        created_at: r.get(3)?,
        revoked_at: r.get(4)?,
    })
}

fn insert_key(
    tx: &rusqlite::Transaction<'_>,
    account_id: &str,
    key: &NewApiKey,
    now: i64,
) -> Result<ApiKeyInfo, StoreError> {
    tx.prepare_cached(
        "INSERT INTO api_keys (id, account_id, key_hash, prefix, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![key.id, account_id, key.hash, key.prefix, now])?;
    Ok(ApiKeyInfo {
        id: key.id.clone(),
        account_id: account_id.to_string(),
        prefix: key.prefix.clone(),
        created_at: now,
        revoked_at: None,
    })
}

impl SqliteStore {
    /// Creates an account together with its first API key.
    pub async fn create_account(
        &self,
        account: Account,
        key: NewApiKey,
    ) -> Result<Account, StoreError> {
        self.write(move |tx| {
            tx.prepare_cached("INSERT INTO accounts (id, name, created_at) VALUES (?1, ?2, ?3)")?
                .execute(params![account.id, account.name, account.created_at])?;
            insert_key(tx, &account.id, &key, account.created_at)?;
            Ok(account)
        })
        .await
    }

    /// Every account, oldest first.
    pub async fn list_accounts(&self) -> Result<Vec<Account>, StoreError> {
        self.read(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT id, name, created_at FROM accounts ORDER BY created_at, id",
            )?;
            let rows = stmt
                .query_map([], account_row)?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
        .await
    }

    /// One account.
    pub async fn get_account(&self, id: String) -> Result<Account, StoreError> {
        self.read(move |c| {
            c.prepare_cached("SELECT id, name, created_at FROM accounts WHERE id = ?1")?
                .query_row([id], account_row)
                .found()
        })
        .await
    }

    /// Issues another key for an existing account.
    pub async fn add_api_key(
        &self,
        account_id: String,
        key: NewApiKey,
        now: i64,
    ) -> Result<ApiKeyInfo, StoreError> {
        self.write(move |tx| {
            let exists: Option<i64> = tx
                .query_row("SELECT 1 FROM accounts WHERE id = ?1", [&account_id], |r| {
                    r.get(0)
                })
                .optional()?;
            if exists.is_none() {
                return Err(StoreError::NotFound);
            }
            insert_key(tx, &account_id, &key, now)
        })
        .await
    }

    /// The account's keys, revoked ones included.
    pub async fn list_api_keys(&self, account_id: String) -> Result<Vec<ApiKeyInfo>, StoreError> {
        self.read(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT id, account_id, prefix, created_at, revoked_at FROM api_keys
                 WHERE account_id = ?1 ORDER BY created_at, id",
            )?;
            let rows = stmt
                .query_map([&account_id], key_row)?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
        .await
    }

    /// Revokes a key; returns its hash so caches can forget it.
    pub async fn revoke_api_key(
        &self,
        account_id: String,
        key_id: String,
        now: i64,
    ) -> Result<[u8; 32], StoreError> {
        self.write(move |tx| {
            let hash: [u8; 32] = tx
                .query_row(
                    "SELECT key_hash FROM api_keys WHERE id = ?1 AND account_id = ?2",
                    params![key_id, account_id],
                    |r| r.get(0),
                )
                .found()?;
            tx.execute(
                "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, ?1) WHERE id = ?2",
                params![now, key_id],
            )?;
            Ok(hash)
        })
        .await
    }

    /// The account a live (unrevoked) key belongs to.
    pub async fn account_for_key(&self, hash: [u8; 32]) -> Result<Option<String>, StoreError> {
        self.read(move |c| {
            Ok(c.prepare_cached(
                "SELECT account_id FROM api_keys WHERE key_hash = ?1 AND revoked_at IS NULL",
            )?
            .query_row([hash], |r| r.get(0))
            .optional()?)
        })
        .await
    }
}
