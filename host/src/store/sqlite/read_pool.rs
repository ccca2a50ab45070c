//! A fixed pool of read-only connections used from blocking threads.

use std::sync::Mutex;

use rusqlite::Connection;
use tokio::sync::Semaphore;

use super::StoreError;

pub(crate) struct ReadPool {
    idle: Mutex<Vec<Connection>>,
    available: Semaphore,
}

impl ReadPool {
    pub(crate) fn new(conns: Vec<Connection>) -> ReadPool {
        let n = conns.len();
        ReadPool {
            idle: Mutex::new(conns),
            available: Semaphore::new(n),
        }
    }

    pub(crate) async fn read<F, R>(&self, work: F) -> Result<R, StoreError>
    where
        F: FnOnce(&Connection) -> Result<R, StoreError> + Send + 'static,
        R: Send + 'static,
    {
        let permit = self
            .available
            .acquire()
            .await
            .map_err(|_| StoreError::Closed)?;
        let conn = self
            .idle
            .lock()
            .expect("read pool lock")
            .pop()
            .expect("a permit implies an idle connection");
        let joined = tokio::task::spawn_blocking(move || {
            let result = work(&conn);
            (conn, result)
        })
        .await;
        match joined {
            Ok((conn, result)) => {
                self.idle.lock().expect("read pool lock").push(conn);
                drop(permit);
                result
            }
            Err(e) => {
                // The connection died with the task: shrink the pool rather than hand out a
                // permit that has no connection behind it.
                permit.forget();
                Err(StoreError::Corrupt(format!("read task failed: {e}")))
            }
        }
    }
}
