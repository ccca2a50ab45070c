//! Accounts and their API keys, on PostgreSQL (the same operations as the SQLite store's).

use deadpool_postgres::GenericClient;
use tokio_postgres::Row;

use super::{PgStore, db};
use crate::model::{Account, ApiKeyInfo};
use crate::store::NewApiKey;
use crate::store::StoreError;

fn account_row(r: &Row) -> Result<Account, StoreError> {
    Ok(Account {
        id: r.try_get(0).map_err(db)?,
        name: r.try_get(1).map_err(db)?,
        created_at: r.try_get(2).map_err(db)?,
    })
}

fn key_row(r: &Row) -> Result<ApiKeyInfo, StoreError> {
    Ok(ApiKeyInfo {
        id: r.try_get(0).map_err(db)?,
        account_id: r.try_get(1).map_err(db)?,
        prefix: r.try_get(2).map_err(db)?,
        created_at: r.try_get(3).map_err(db)?,
        revoked_at: r.try_get(4).map_err(db)?,
    })
}

/// A key hash as stored (BYTEA): exactly 32 bytes, or the row is corrupt.
pub(super) fn hash32(bytes: Vec<u8>) -> Result<[u8; 32], StoreError> {
    bytes
        .try_into()
        .map_err(|_| StoreError::Corrupt("a key hash is not 32 bytes".into()))
}

async fn insert_key(
    c: &impl GenericClient,
    account_id: &str,
    key: &NewApiKey,
    now: i64,
) -> Result<ApiKeyInfo, StoreError> {
    c.execute(
        "INSERT INTO api_keys (id, account_id, key_hash, prefix, created_at) VALUES ($1, $2, $3, $4, $5)",
        &[&key.id, &account_id, &key.hash.as_slice(), &key.prefix, &now],
    )
    .await
    .map_err(db)?;
    Ok(ApiKeyInfo {
        id: key.id.clone(),
        account_id: account_id.to_string(),
        prefix: key.prefix.clone(),
        created_at: now,
        revoked_at: None,
    })
}

impl PgStore {
    /// Creates an account together with its first API key.
    pub async fn create_account(
        &self,
        account: Account,
        key: NewApiKey,
    ) -> Result<Account, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db)?;
        tx.execute(
            "INSERT INTO accounts (id, name, created_at) VALUES ($1, $2, $3)",
            &[&account.id, &account.name, &account.created_at],
        )
        .await
        .map_err(db)?;
        insert_key(&tx, &account.id, &key, account.created_at).await?;
        tx.commit().await.map_err(db)?;
        Ok(account)
    }

    /// Every account, oldest first.
    pub async fn list_accounts(&self) -> Result<Vec<Account>, StoreError> {
        let client = self.client().await?;
        client
            .query(
                "SELECT id, name, created_at FROM accounts ORDER BY created_at, id",
                &[],
            )
            .await
            .map_err(db)?
            .iter()
            .map(account_row)
            .collect()
    }

    /// One account.
    pub async fn get_account(&self, id: String) -> Result<Account, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT id, name, created_at FROM accounts WHERE id = $1",
                &[&id],
            )
            .await
            .map_err(db)?
            .ok_or(StoreError::NotFound)?;
        account_row(&row)
    }

    /// Issues another key for an existing account.
    pub async fn add_api_key(
        &self,
        account_id: String,
        key: NewApiKey,
        now: i64,
    ) -> Result<ApiKeyInfo, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db)?;
        // The account row stays locked (against a concurrent delete) until the key is in.
        tx.query_opt(
            "SELECT 1 FROM accounts WHERE id = $1 FOR KEY SHARE",
            &[&account_id],
        )
        .await
        .map_err(db)?
        .ok_or(StoreError::NotFound)?;
        let info = insert_key(&tx, &account_id, &key, now).await?;
        tx.commit().await.map_err(db)?;
        Ok(info)
    }

    /// The account's keys, revoked ones included.
    pub async fn list_api_keys(&self, account_id: String) -> Result<Vec<ApiKeyInfo>, StoreError> {
        let client = self.client().await?;
        client
            .query(
                "SELECT id, account_id, prefix, created_at, revoked_at FROM api_keys
                 WHERE account_id = $1 ORDER BY created_at, id",
                &[&account_id],
            )
            .await
            .map_err(db)?
            .iter()
            .map(key_row)
            .collect()
    }

    /// Revokes a key; returns its hash so caches can forget it.
    pub async fn revoke_api_key(
        &self,
        account_id: String,
        key_id: String,
        now: i64,
    ) -> Result<[u8; 32], StoreError> {
        // One statement: the first revocation's time stays.
        let client = self.client().await?;
        let row = client
            .query_opt(
                "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, $3)
                 WHERE id = $1 AND account_id = $2 RETURNING key_hash",
                &[&key_id, &account_id, &now],
            )
            .await
            .map_err(db)?
            .ok_or(StoreError::NotFound)?;
        hash32(row.try_get(0).map_err(db)?)
    }

    /// The account a live (unrevoked) key belongs to.
    pub async fn account_for_key(&self, hash: [u8; 32]) -> Result<Option<String>, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT account_id FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL",
                &[&hash.as_slice()],
            )
            .await
            .map_err(db)?;
        row.map(|r| r.try_get(0).map_err(db)).transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::NewConsoleSession;

    #[tokio::test]
    async fn accounts_keys_and_sessions() {
        let Some(store) = super::super::testing::store().await else {
            return;
        };
        let account = |id: &str, at| Account {
            id: id.into(),
            name: id.to_uppercase(),
            created_at: at,
        };
        let (key, stored) = crate::auth::new_api_key();
        let key_id = stored.id.clone();
        store
            .create_account(account("acc_2", 5), stored)
            .await
            .unwrap();
        store
            .create_account(account("acc_1", 5), crate::auth::new_api_key().1)
            .await
            .unwrap();
        let ids: Vec<_> = store
            .list_accounts()
            .await
            .unwrap()
            .into_iter()
            .map(|a| a.id)
            .collect();
        assert_eq!(ids, ["acc_1", "acc_2"], "oldest first, then by id");
        assert_eq!(
            store.get_account("acc_2".into()).await.unwrap().name,
            "ACC_2"
        );
        assert!(matches!(
            store.get_account("acc_x".into()).await,
            Err(StoreError::NotFound)
        ));
        // A second key; none for an unknown account, and nothing half-written then.
        let (_, second) = crate::auth::new_api_key();
        let second_id = second.id.clone();
        store.add_api_key("acc_2".into(), second, 9).await.unwrap();
        assert!(matches!(
            store
                .add_api_key("acc_x".into(), crate::auth::new_api_key().1, 9)
                .await,
            Err(StoreError::NotFound)
        ));
        let keys = store.list_api_keys("acc_2".into()).await.unwrap();
        assert_eq!(
            keys.iter().map(|k| k.id.as_str()).collect::<Vec<_>>(),
            [key_id.as_str(), second_id.as_str()]
        );
        let hash = crate::auth::hash(&key);
        assert_eq!(
            store.account_for_key(hash).await.unwrap().as_deref(),
            Some("acc_2")
        );
        assert_eq!(
            store.api_key_by_hash(hash).await.unwrap(),
            Some((key_id.clone(), "acc_2".to_string()))
        );

        // Sessions: expiry, the admin's, the end of the key that made one, sign-out.
        let new = |hash: [u8; 32], account: Option<&str>, key: Option<&str>| NewConsoleSession {
            token_hash: hash,
            account_id: account.map(str::to_string),
            api_key_id: key.map(str::to_string),
            csrf_token: "csrf".into(),
            created_at: 1_000,
            expires_at: 2_000,
        };
        store
            .create_console_session(new([1; 32], Some("acc_2"), Some(&key_id)))
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
        assert_eq!(
            (
                one.account_id.as_deref(),
                one.csrf_token.as_str(),
                one.expires_at
            ),
            (Some("acc_2"), "csrf", 2_000)
        );
        assert!(
            store
                .console_session([1; 32], 2_000)
                .await
                .unwrap()
                .is_none()
        );
        let admin = store
            .console_session([2; 32], 1_500)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(admin.account_id, None);

        // Revoking is once: the first time stays; another account cannot revoke it.
        assert!(matches!(
            store
                .revoke_api_key("acc_1".into(), key_id.clone(), 1_550)
                .await,
            Err(StoreError::NotFound)
        ));
        assert_eq!(
            store
                .revoke_api_key("acc_2".into(), key_id.clone(), 1_600)
                .await
                .unwrap(),
            hash
        );
        store
            .revoke_api_key("acc_2".into(), key_id.clone(), 1_700)
            .await
            .unwrap();
        let revoked = store.list_api_keys("acc_2".into()).await.unwrap();
        assert_eq!(revoked[0].revoked_at, Some(1_600));
        assert_eq!(store.account_for_key(hash).await.unwrap(), None);
        assert_eq!(store.api_key_by_hash(hash).await.unwrap(), None);
        assert!(
            store
                .console_session([1; 32], 1_700)
                .await
                .unwrap()
                .is_none(),
            "revoking the key ends its sessions"
        );
        store.delete_console_session([2; 32]).await.unwrap();
        store.delete_console_session([2; 32]).await.unwrap();
        assert!(
            store
                .console_session([2; 32], 1_500)
                .await
                .unwrap()
                .is_none()
        );
        // A new session forgets the expired ones.
        store
            .create_console_session(NewConsoleSession {
                created_at: 5_000,
                expires_at: 6_000,
                ..new([3; 32], None, None)
            })
            .await
            .unwrap();
        let c = store.client().await.unwrap();
        let left: i64 = c
            .query_one("SELECT COUNT(*) FROM console_sessions", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(left, 1);
    }
}
