//! The embedded SQLite backend: the only module that imports `rusqlite`.
//!
//! One writer thread (see `writer`) owns the write connection; a small pool of read-only
//! connections serves queries. Both run on blocking threads, never on the async runtime.
//! Typed functions, not SQL, leave this module: each submodule adds methods to
//! [`SqliteStore`], which the façade ([`crate::store::Store`]) calls. Secret fields are sealed
//! on their way in and opened on their way out (`sealing`), so the rest of the server only ever
//! sees clear values and the database file only sealed ones. `rusqlite`'s errors become
//! [`StoreError`]s here (the `From` impls below), so none of its types leave this module.

mod migrations;
mod read_pool;
mod reseal;
mod retention;
mod writer;

mod accounts;
mod claims;
mod deliveries;
mod delivery_lists;
mod events;
mod messages;
mod plugins;
mod sessions;
mod subscriptions;
mod summaries;
mod transfer;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use rusqlite::{Connection, OpenFlags, Transaction};

use super::{Applied, KeyUse, Page, StoreError, SyncMode};
use crate::quotas::Quotas;
use crate::secrets::Keyring;
use read_pool::ReadPool;
use writer::{Rollback, Writer};

pub use migrations::migrations;

/// Handle to the SQLite database. Cheap to clone.
#[derive(Clone)]
pub struct SqliteStore {
    writer: Writer,
    readers: Arc<ReadPool>,
    writer_thread: Arc<Mutex<Option<JoinHandle<()>>>>,
    /// Seals and opens the secret fields; the key material never touches the database.
    keys: Arc<Keyring>,
    /// Checked by every write that adds a plugin, a plugin version or a subscription.
    quotas: Quotas,
}

const READERS: usize = 4;
/// The database file's name in the data dir.
const DB_FILE: &str = "wasmhook.sqlite3";

impl SqliteStore {
    /// Opens (creating if needed) the database in `dir`, applies pending migrations, then
    /// brings every secret to rest under the current key of `keys` (see
    /// `reseal::reseal_all`): values stored in clear by an earlier version are sealed,
    /// values under an older key are re-sealed, and a value that does not open is an error
    /// naming the key file, before anything is served.
    pub fn open(dir: &Path, sync: SyncMode, keys: Arc<Keyring>) -> Result<SqliteStore, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| StoreError::Corrupt(format!("data dir: {e}")))?;
        let path = dir.join(DB_FILE);
        let mut conn = Connection::open(&path)?;
        configure(&conn)?;
        conn.pragma_update(
            None,
            "synchronous",
            match sync {
                SyncMode::Full => "FULL",
                SyncMode::Normal => "NORMAL",
            },
        )?;
        // Every write runs in its own SAVEPOINT inside the group transaction (see `writer`), so
        // SQLite keeps a sub-journal of each page an op changes. With temporary files on disk
        // that is one `pwrite` of a whole page per page per op: nine tenths of the writer's
        // write calls under load, more than the WAL itself. In memory it is a copy, dropped at
        // commit; nothing durable depends on it.
        conn.pragma_update(None, "temp_store", "MEMORY")?;
        migrations().to_latest(&mut conn)?;
        reseal::reseal_all(&mut conn, &keys)?;
        let mut readers = Vec::with_capacity(READERS);
        for _ in 0..READERS {
            let reader = Connection::open_with_flags(
                &path,
                OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )?;
            configure(&reader)?;
            readers.push(reader);
        }
        let (writer, handle) = Writer::start(conn);
        Ok(SqliteStore {
            writer,
            readers: Arc::new(ReadPool::new(readers)),
            writer_thread: Arc::new(Mutex::new(Some(handle))),
            keys,
            quotas: Quotas::UNLIMITED,
        })
    }

    /// This store, refusing writes past `quotas` (a newly opened one has none).
    pub fn with_quotas(mut self, quotas: Quotas) -> SqliteStore {
        self.quotas = quotas;
        self
    }

    async fn write<F, R>(&self, work: F) -> Result<R, StoreError>
    where
        F: FnOnce(&Transaction<'_>) -> Result<R, StoreError> + Send + 'static,
        R: Send + 'static,
    {
        self.writer.write(work).await
    }

    /// [`Self::write`], undone as `rollback` says if it fails.
    async fn write_with<F, R>(&self, rollback: Rollback, work: F) -> Result<R, StoreError>
    where
        F: FnOnce(&Transaction<'_>) -> Result<R, StoreError> + Send + 'static,
        R: Send + 'static,
    {
        self.writer.write_with(rollback, work).await
    }

    /// Queues `work` and hands back its result as soon as it is applied, before COMMIT (see
    /// [`writer::Writer::submit_applied`] for when that is allowed).
    async fn submit_applied<F, R>(
        &self,
        rollback: Rollback,
        work: F,
    ) -> Result<Applied<R>, StoreError>
    where
        F: FnOnce(&Transaction<'_>) -> Result<R, StoreError> + Send + 'static,
        R: Send + 'static,
    {
        self.writer.submit_applied(rollback, work).await
    }

    async fn read<F, R>(&self, work: F) -> Result<R, StoreError>
    where
        F: FnOnce(&Connection) -> Result<R, StoreError> + Send + 'static,
        R: Send + 'static,
    {
        self.readers.read(work).await
    }

    /// The database file of the data dir `dir`.
    pub fn file(dir: &Path) -> std::path::PathBuf {
        dir.join(DB_FILE)
    }

    /// Which encryption keys the secrets in the database in `dir` are sealed with, read
    /// without starting a store (`wasmhook keys prune` runs beside a server, or without one).
    pub fn key_use(dir: &Path) -> Result<KeyUse, StoreError> {
        let path = dir.join(DB_FILE);
        let conn = Connection::open_with_flags(
            &path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| StoreError::Corrupt(format!("{}: {e}", path.display())))?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        reseal::key_use(&conn)
    }

    /// True when a read connection answers a trivial query.
    pub async fn ping(&self) -> bool {
        self.read(|c| Ok(c.query_row("SELECT 1", [], |r| r.get::<_, i64>(0))?))
            .await
            .is_ok()
    }

    /// Commits the writes queued so far, stops the writer thread and checkpoints the WAL.
    /// Writes attempted afterwards, through any clone, fail with [`StoreError::Closed`].
    pub async fn close(&self) {
        self.writer.close().await;
        let handle = self
            .writer_thread
            .lock()
            .expect("writer handle lock")
            .take();
        if let Some(handle) = handle {
            let _ = tokio::task::spawn_blocking(move || handle.join()).await;
        }
    }
}

fn configure(conn: &Connection) -> Result<(), StoreError> {
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(())
}

/// Maps a UNIQUE violation to [`StoreError::Conflict`] with `what` as its message.
pub(crate) fn unique_violation(e: rusqlite::Error, what: &str) -> StoreError {
    match &e {
        rusqlite::Error::SqliteFailure(f, _)
            if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                || f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY =>
        {
            StoreError::Conflict(what.to_string())
        }
        _ => e.into(),
    }
}

/// Turns "no rows" into [`StoreError::NotFound`].
pub(crate) trait OptionalRow<T> {
    fn found(self) -> Result<T, StoreError>;
}

impl<T> OptionalRow<T> for Result<T, rusqlite::Error> {
    fn found(self) -> Result<T, StoreError> {
        match self {
            Ok(v) => Ok(v),
            Err(rusqlite::Error::QueryReturnedNoRows) => Err(StoreError::NotFound),
            Err(e) => Err(e.into()),
        }
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> StoreError {
        StoreError::Database(e.to_string())
    }
}

impl From<rusqlite_migration::Error> for StoreError {
    fn from(e: rusqlite_migration::Error) -> StoreError {
        StoreError::Migration(e.to_string())
    }
}
