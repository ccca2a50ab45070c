//! The single writer: one thread owns the write connection and commits in groups.
//!
//! Every mutation of the database goes through here. Requests arriving while a transaction
//! is being written queue up and are applied together in the next transaction, so a burst of
//! N requests costs one fsync instead of N. Each request runs inside its own SAVEPOINT: a
//! request that fails is rolled back alone and the others in its group still commit, so no
//! request ever sees half of another's work. Replies are sent only after COMMIT returns,
//! which is what makes an HTTP 202 mean "durable".
//!
//! The exception is work that can only be refused before it writes anything
//! ([`Rollback::WithGroup`]): it runs without a savepoint. Refused before its first write, it
//! fails alone with nothing to undo (SQLite undoes a failed statement itself); failing after
//! a write (only the database itself can do that to it), its whole group is rolled back and
//! answered as a failed commit would be. A savepoint is not free: SQLite copies every page a
//! request changes into the savepoint's journal first, and an ingested event or an attempt's
//! outcome changes a dozen or more (a row and its indexes in two tables).

use std::thread::JoinHandle;

use rusqlite::{Connection, Transaction};
use tokio::sync::{mpsc, oneshot};

use super::{Applied, StoreError};

/// The largest number of requests folded into one transaction.
const MAX_GROUP: usize = 1024;

/// How a failed request is undone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rollback {
    /// Alone, to a savepoint taken before it: any request that may fail after it wrote
    /// something (bad input, a conflict, a quota), so that the rest of its group commits.
    Alone,
    /// No savepoint: for requests refused (bad input, a conflict) only before their first
    /// write, which fail alone since there is nothing to undo. One that fails after writing
    /// (only the database itself can make it: I/O, a full disk, which would most likely fail
    /// the commit too) is undone with its whole group, as if the commit had failed.
    WithGroup,
}

trait Op: Send {
    /// How the op is undone if it fails.
    fn rollback(&self) -> Rollback {
        Rollback::Alone
    }
    /// Applies the operation; returns whether it succeeded (its savepoint is kept).
    fn apply(&mut self, tx: &Transaction<'_>) -> bool;
    /// Delivers the result once the group's commit is known.
    fn finish(self: Box<Self>, commit: Result<(), &StoreError>);
}

struct TypedOp<F, R> {
    rollback: Rollback,
    work: Option<F>,
    result: Option<Result<R, StoreError>>,
    reply: oneshot::Sender<Result<R, StoreError>>,
}

impl<F, R> Op for TypedOp<F, R>
where
    F: FnOnce(&Transaction<'_>) -> Result<R, StoreError> + Send,
    R: Send,
{
    fn rollback(&self) -> Rollback {
        self.rollback
    }

    fn apply(&mut self, tx: &Transaction<'_>) -> bool {
        let work = self.work.take().expect("an op is applied once");
        let result = work(tx);
        let ok = result.is_ok();
        self.result = Some(result);
        ok
    }

    fn finish(self: Box<Self>, commit: Result<(), &StoreError>) {
        let result = match (commit, self.result) {
            (Ok(()), Some(result)) => result,
            // An op that failed on its own keeps its own error, commit or not.
            (Err(_), Some(Err(own))) => Err(own),
            (Err(e), _) => Err(StoreError::Commit(e.to_string())),
            (Ok(()), None) => Err(StoreError::Closed),
        };
        // The caller may have gone away (request cancelled); the write stands regardless.
        let _ = self.reply.send(result);
    }
}

/// An op whose result is handed back as soon as it is applied, before its group commits, and
/// whose commit is reported separately.
struct AppliedOp<F, R> {
    rollback: Rollback,
    work: Option<F>,
    applied: Option<oneshot::Sender<Result<R, StoreError>>>,
    committed: Option<oneshot::Sender<Result<(), StoreError>>>,
}

impl<F, R> Op for AppliedOp<F, R>
where
    F: FnOnce(&Transaction<'_>) -> Result<R, StoreError> + Send,
    R: Send,
{
    fn rollback(&self) -> Rollback {
        self.rollback
    }

    fn apply(&mut self, tx: &Transaction<'_>) -> bool {
        let work = self.work.take().expect("an op is applied once");
        let result = work(tx);
        let ok = result.is_ok();
        if let Some(reply) = self.applied.take() {
            let _ = reply.send(result);
        }
        ok
    }

    fn finish(mut self: Box<Self>, commit: Result<(), &StoreError>) {
        // Not applied: its group was rolled back before its turn.
        if let (Some(reply), Err(e)) = (self.applied.take(), commit) {
            let _ = reply.send(Err(StoreError::Commit(e.to_string())));
        }
        if let Some(reply) = self.committed.take() {
            let _ = reply.send(commit.map_err(|e| StoreError::Commit(e.to_string())));
        }
    }
}

/// Handle to the writer thread. Cloning shares the same thread.
enum Msg {
    Op(Box<dyn Op>),
    /// Finish what is queued before this, then stop: later writes get `StoreError::Closed`.
    Close,
}

#[derive(Clone)]
pub(crate) struct Writer {
    ops: mpsc::Sender<Msg>,
}

impl Writer {
    pub(crate) fn start(conn: Connection) -> (Writer, JoinHandle<()>) {
        let (ops, rx) = mpsc::channel(16 * MAX_GROUP);
        let handle = std::thread::Builder::new()
            .name("wasmhook-writer".into())
            .spawn(move || run(conn, rx))
            .expect("spawning the writer thread");
        (Writer { ops }, handle)
    }

    /// Runs `work` inside the next group transaction and returns its result after COMMIT.
    pub(crate) async fn write<F, R>(&self, work: F) -> Result<R, StoreError>
    where
        F: FnOnce(&Transaction<'_>) -> Result<R, StoreError> + Send + 'static,
        R: Send + 'static,
    {
        self.submit(work).await?.await
    }

    /// [`Self::write`], undone as `rollback` says if it fails.
    pub(crate) async fn write_with<F, R>(
        &self,
        rollback: Rollback,
        work: F,
    ) -> Result<R, StoreError>
    where
        F: FnOnce(&Transaction<'_>) -> Result<R, StoreError> + Send + 'static,
        R: Send + 'static,
    {
        self.submit_with(rollback, work).await?.await
    }

    /// Queues `work` for the next group transaction and returns once it is queued: every write
    /// queued later is applied after it (in the same or a later transaction). The returned
    /// future gives its result after COMMIT.
    pub(crate) async fn submit<F, R>(
        &self,
        work: F,
    ) -> Result<impl Future<Output = Result<R, StoreError>> + use<F, R>, StoreError>
    where
        F: FnOnce(&Transaction<'_>) -> Result<R, StoreError> + Send + 'static,
        R: Send + 'static,
    {
        self.submit_with(Rollback::Alone, work).await
    }

    /// [`Self::submit`], undone as `rollback` says if it fails.
    async fn submit_with<F, R>(
        &self,
        rollback: Rollback,
        work: F,
    ) -> Result<impl Future<Output = Result<R, StoreError>> + use<F, R>, StoreError>
    where
        F: FnOnce(&Transaction<'_>) -> Result<R, StoreError> + Send + 'static,
        R: Send + 'static,
    {
        let (reply, rx) = oneshot::channel();
        let op = Box::new(TypedOp {
            rollback,
            work: Some(work),
            result: None,
            reply,
        });
        self.ops
            .send(Msg::Op(op))
            .await
            .map_err(|_| StoreError::Closed)?;
        Ok(async move { rx.await.map_err(|_| StoreError::Closed)? })
    }

    /// Queues `work`; the first future gives its result as soon as it is applied, before its
    /// group commits, the second the commit's outcome. Only for work whose effect may be lost
    /// and redone if the commit fails (a claim, the bookkeeping of a settled attempt): later
    /// writes still see it, since they are applied after it on the same connection. If it
    /// fails, it is undone as `rollback` says.
    pub(crate) async fn submit_applied<F, R>(
        &self,
        rollback: Rollback,
        work: F,
    ) -> Result<Applied<R>, StoreError>
    where
        F: FnOnce(&Transaction<'_>) -> Result<R, StoreError> + Send + 'static,
        R: Send + 'static,
    {
        let (applied, applied_rx) = oneshot::channel();
        let (committed, committed_rx) = oneshot::channel();
        let op = Box::new(AppliedOp {
            rollback,
            work: Some(work),
            applied: Some(applied),
            committed: Some(committed),
        });
        self.ops
            .send(Msg::Op(op))
            .await
            .map_err(|_| StoreError::Closed)?;
        Ok(Applied::new(applied_rx, committed_rx))
    }

    /// Asks the thread to stop once the writes queued so far are committed.
    pub(crate) async fn close(&self) {
        let _ = self.ops.send(Msg::Close).await;
    }
}

fn run(mut conn: Connection, mut rx: mpsc::Receiver<Msg>) {
    let mut group: Vec<Box<dyn Op>> = Vec::with_capacity(MAX_GROUP);
    let mut closing = false;
    while !closing {
        match rx.blocking_recv() {
            Some(Msg::Op(op)) => group.push(op),
            Some(Msg::Close) | None => break,
        }
        while group.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(Msg::Op(op)) => group.push(op),
                Ok(Msg::Close) => {
                    closing = true;
                    break;
                }
                Err(_) => break,
            }
        }
        let commit = apply_group(&mut conn, &mut group);
        for op in group.drain(..) {
            op.finish(commit.as_ref().map(|_| ()));
        }
    }
    rx.close();
    // The store is closing. Fold the WAL back into the main file.
    if let Err(e) = conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);") {
        tracing::warn!(error = %e, "checkpoint on close failed");
    }
    tracing::debug!("writer thread stopped");
}

fn apply_group(conn: &mut Connection, group: &mut [Box<dyn Op>]) -> Result<(), StoreError> {
    let tx = conn.transaction()?;
    // Prepared once per connection: thousands of ops a second each open and close one.
    let savepoint = |sql: &str| tx.prepare_cached(sql)?.execute([]).map(drop);
    for op in group.iter_mut() {
        if op.rollback() == Rollback::WithGroup {
            let before = tx.total_changes();
            // Failed after a write (nothing can undo it alone), or failed so badly that
            // SQLite ended the transaction: dropping `tx` rolls the group back.
            if !op.apply(&tx) && (tx.total_changes() != before || tx.is_autocommit()) {
                return Err(StoreError::Commit(
                    "a write in the same transaction failed in the database".into(),
                ));
            }
            continue;
        }
        savepoint("SAVEPOINT op")?;
        if !op.apply(&tx) {
            savepoint("ROLLBACK TO op")?;
        }
        savepoint("RELEASE op")?;
    }
    tx.commit()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(conn: &Connection) -> Vec<String> {
        let mut stmt = conn.prepare("SELECT name FROM t ORDER BY name").unwrap();
        stmt.query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    }

    fn insert(tx: &Transaction<'_>, name: &str) -> Result<(), StoreError> {
        tx.execute("INSERT INTO t (name) VALUES (?1)", [name])?;
        Ok(())
    }

    /// A writer over a new database with one table `t` of unique names.
    fn start() -> (tempfile::TempDir, Writer, JoinHandle<()>) {
        let dir = tempfile::tempdir().unwrap();
        let conn = Connection::open(dir.path().join("db.sqlite")).unwrap();
        conn.execute_batch("CREATE TABLE t (name TEXT PRIMARY KEY)")
            .unwrap();
        let (writer, thread) = Writer::start(conn);
        (dir, writer, thread)
    }

    /// Holds the writer inside a first request (inserting "a", a group of its own) until the
    /// sender is used, so that the requests queued meanwhile are applied together, in one
    /// transaction. Returns the first request's result and the sender that lets it go on.
    async fn held_in_a_first_request(
        writer: &Writer,
    ) -> (
        impl Future<Output = Result<(), StoreError>> + use<>,
        std::sync::mpsc::Sender<()>,
    ) {
        let (entered, wait_entered) = std::sync::mpsc::channel();
        let (release, wait_release) = std::sync::mpsc::channel::<()>();
        let first = writer
            .submit(move |tx| {
                entered.send(()).unwrap();
                wait_release.recv().unwrap();
                insert(tx, "a")
            })
            .await
            .unwrap();
        tokio::task::spawn_blocking(move || wait_entered.recv().unwrap())
            .await
            .unwrap();
        (first, release)
    }

    /// Stops the writer once its queue is committed; the names then in `t`.
    async fn stop(writer: Writer, thread: JoinHandle<()>, dir: &tempfile::TempDir) -> Vec<String> {
        writer.close().await;
        tokio::task::spawn_blocking(move || thread.join().unwrap())
            .await
            .unwrap();
        names(&Connection::open(dir.path().join("db.sqlite")).unwrap())
    }

    #[tokio::test]
    async fn a_failing_request_rolls_back_alone_and_its_group_commits() {
        let (dir, writer, thread) = start();

        // The next three are applied together, in one transaction.
        let (first, release) = held_in_a_first_request(&writer).await;
        let ok_before = writer.submit(|tx| insert(tx, "b")).await.unwrap();
        // Writes, then fails: its write must not survive.
        let failing = writer
            .submit(|tx| {
                insert(tx, "c")?;
                Err::<(), _>(StoreError::Conflict("refused after writing".into()))
            })
            .await
            .unwrap();
        // Sees the group's earlier work, not the failed request's.
        let ok_after = writer
            .submit(|tx| {
                let seen: i64 =
                    tx.query_row("SELECT count(*) FROM t WHERE name = 'c'", [], |r| r.get(0))?;
                assert_eq!(seen, 0, "the failed request's write is rolled back at once");
                insert(tx, "d")
            })
            .await
            .unwrap();
        release.send(()).unwrap();

        first.await.unwrap();
        ok_before.await.unwrap();
        match failing.await {
            Err(StoreError::Conflict(m)) => assert_eq!(m, "refused after writing"),
            other => panic!("the failing request keeps its own error: {other:?}"),
        }
        ok_after.await.unwrap();
        assert_eq!(
            stop(writer, thread, &dir).await,
            ["a", "b", "d"],
            "the rest of the group is committed"
        );
    }

    /// Work that skips its savepoint commits with its group when it succeeds, and fails alone
    /// when refused before writing; when it fails after a write, the whole group is rolled
    /// back and every request in it is answered as if the commit had failed (those applied
    /// before it, and those never applied).
    #[tokio::test]
    async fn work_without_a_savepoint_fails_its_whole_group() {
        let (dir, writer, thread) = start();

        let mut fine = writer
            .submit_applied(Rollback::WithGroup, |tx| insert(tx, "kept"))
            .await
            .unwrap();
        fine.applied().await.unwrap();
        fine.committed().await.unwrap();
        // Refused at its first write (SQLite undid the statement): it fails alone.
        let refused = writer.write_with(Rollback::WithGroup, |tx| insert(tx, "kept"));
        assert!(matches!(refused.await, Err(StoreError::Database(_))));
        let refused = writer.write_with(Rollback::WithGroup, |_| {
            Err::<(), _>(StoreError::Conflict("refused before writing".into()))
        });
        match refused.await {
            Err(StoreError::Conflict(m)) => assert_eq!(m, "refused before writing"),
            other => panic!("the refusal is its own: {other:?}"),
        }

        // One group: a guarded request, the failing unguarded one, one after it.
        let (first, release) = held_in_a_first_request(&writer).await;
        let before = writer.submit(|tx| insert(tx, "b0")).await.unwrap();
        let mut failing = writer
            .submit_applied(Rollback::WithGroup, |tx| {
                insert(tx, "b")?;
                insert(tx, "a")
            })
            .await
            .unwrap();
        let mut after = writer
            .submit_applied(Rollback::WithGroup, |tx| insert(tx, "c"))
            .await
            .unwrap();
        release.send(()).unwrap();

        first.await.unwrap();
        assert!(matches!(before.await, Err(StoreError::Commit(_))));
        assert!(
            matches!(failing.applied().await, Err(StoreError::Database(_))),
            "the failing work gets its own error"
        );
        assert!(matches!(
            failing.committed().await,
            Err(StoreError::Commit(_))
        ));
        assert!(matches!(after.applied().await, Err(StoreError::Commit(_))));
        assert_eq!(
            stop(writer, thread, &dir).await,
            ["a", "kept"],
            "nothing of the failed group is committed"
        );
    }
}
