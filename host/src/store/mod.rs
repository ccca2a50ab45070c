//! Durable storage in SQLite: the only module that imports `rusqlite`.
//!
//! One writer thread (see `writer`) owns the write connection; a small pool of read-only
//! connections serves queries. Both run on blocking threads, never on the async runtime.
//! Typed functions, not SQL, leave this module: each submodule adds methods to [`Store`].
//! Secret fields are sealed on their way in and opened on their way out (`sealing`), so the
//! rest of the server only ever sees clear values and the database file only sealed ones.

mod migrations;
mod read_pool;
mod sealing;
mod writer;

pub mod accounts;
pub mod claims;
pub mod deliveries;
pub mod delivery_lists;
pub mod events;
pub mod kv;
pub mod messages;
pub mod plugins;
pub mod sessions;
pub mod subscriptions;
pub mod summaries;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use rusqlite::{Connection, OpenFlags, Transaction};

use crate::secrets::{Keyring, SecretsError};

use crate::quotas::{QuotaExceeded, Quotas};
use read_pool::ReadPool;
pub use writer::Applied;
use writer::Writer;

pub use migrations::migrations;
pub use sealing::KeyUse;

/// Errors of the storage layer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The row asked for does not exist (or belongs to another account).
    #[error("not found")]
    NotFound,
    /// A uniqueness rule was broken; the message says which.
    #[error("{0}")]
    Conflict(String),
    /// SQLite failed.
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// Applying migrations failed.
    #[error("migration failed: {0}")]
    Migration(#[from] rusqlite_migration::Error),
    /// The group transaction this write belonged to could not commit.
    #[error("commit failed: {0}")]
    Commit(String),
    /// A stored value could not be decoded (corruption or a bug, never the caller's input).
    #[error("stored data is invalid: {0}")]
    Corrupt(String),
    /// The store is shutting down.
    #[error("the store is closed")]
    Closed,
    /// A secret could not be sealed or opened (wrong or missing key file, altered value).
    #[error(transparent)]
    Secrets(#[from] SecretsError),
    /// The write would take the account past a quota (checked in its own transaction).
    #[error(transparent)]
    Quota(#[from] QuotaExceeded),
}

/// Whether a commit waits for the disk (`full`) or only for the OS (`normal`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum SyncMode {
    /// fsync on every group commit: survives power loss.
    #[default]
    Full,
    /// WAL without fsync per commit: survives a process crash, may lose the last commits on power loss.
    Normal,
}

/// Handle to the database. Cheap to clone.
#[derive(Clone)]
pub struct Store {
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

impl Store {
    /// Opens (creating if needed) the database in `dir`, applies pending migrations, then
    /// brings every secret to rest under the current key of `keys` (see
    /// `sealing::reseal_all`): values stored in clear by an earlier version are sealed,
    /// values under an older key are re-sealed, and a value that does not open is an error
    /// naming the key file, before anything is served.
    pub fn open(dir: &Path, sync: SyncMode, keys: Arc<Keyring>) -> Result<Store, StoreError> {
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
        sealing::reseal_all(&mut conn, &keys)?;
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
        Ok(Store {
            writer,
            readers: Arc::new(ReadPool::new(readers)),
            writer_thread: Arc::new(Mutex::new(Some(handle))),
            keys,
            quotas: Quotas::UNLIMITED,
        })
    }

    /// This store, refusing writes past `quotas` (a newly opened one has none).
    pub fn with_quotas(mut self, quotas: Quotas) -> Store {
        self.quotas = quotas;
        self
    }

    pub(crate) async fn write<F, R>(&self, work: F) -> Result<R, StoreError>
    where
        F: FnOnce(&Transaction<'_>) -> Result<R, StoreError> + Send + 'static,
        R: Send + 'static,
    {
        self.writer.write(work).await
    }

    /// Queues `work` and hands back its result as soon as it is applied, before COMMIT (see
    /// [`writer::Writer::submit_applied`] for when that is allowed).
    pub(crate) async fn submit_applied<F, R>(&self, work: F) -> Result<Applied<R>, StoreError>
    where
        F: FnOnce(&Transaction<'_>) -> Result<R, StoreError> + Send + 'static,
        R: Send + 'static,
    {
        self.writer.submit_applied(work).await
    }

    pub(crate) async fn read<F, R>(&self, work: F) -> Result<R, StoreError>
    where
        F: FnOnce(&Connection) -> Result<R, StoreError> + Send + 'static,
        R: Send + 'static,
    {
        self.readers.read(work).await
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
        sealing::key_use(&conn)
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
        _ => StoreError::Sqlite(e),
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
            Err(e) => Err(StoreError::Sqlite(e)),
        }
    }
}

/// One page of a listing, newest first, with the cursor for the next page.
#[derive(Debug, Clone)]
pub struct Page<T> {
    /// The items of this page.
    pub items: Vec<T>,
    /// Pass as `cursor` to get the next page; `None` on the last page.
    pub next_cursor: Option<i64>,
}

impl<T> Page<T> {
    /// Builds a page from `limit + 1` fetched rows, using `seq` of the last kept row as the cursor.
    pub(crate) fn from_rows(mut rows: Vec<(i64, T)>, limit: usize) -> Page<T> {
        let more = rows.len() > limit;
        rows.truncate(limit);
        let next_cursor = if more {
            rows.last().map(|(seq, _)| *seq)
        } else {
            None
        };
        Page {
            items: rows.into_iter().map(|(_, t)| t).collect(),
            next_cursor,
        }
    }
}
