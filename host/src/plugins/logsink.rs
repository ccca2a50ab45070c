//! Plugin log lines on their way to the database, in batches.
//!
//! Invocations hand their lines over and move on; a background task gathers what arrives
//! within a short window and writes it in one transaction, so logging costs a plugin nothing
//! on its hot path and the database one write per batch instead of one per event. Logs are
//! diagnostics: if the queue is full, lines are dropped (and counted) rather than slowing
//! deliveries.

use std::time::Duration;

use tokio::sync::mpsc;

use crate::model::PluginLogLine;
use crate::store::Store;

/// How long the sink gathers lines before writing them.
const WINDOW: Duration = Duration::from_millis(20);
/// Invocations' worth of lines that may wait.
const QUEUE: usize = 16 * 1024;

/// Where invocations send their log lines.
#[derive(Clone)]
pub struct LogSink {
    tx: mpsc::Sender<(String, Vec<PluginLogLine>)>,
}

impl LogSink {
    /// Starts the writer task.
    pub fn start(store: Store) -> LogSink {
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(run(store, rx));
        LogSink { tx }
    }

    /// Queues one invocation's lines; drops them if the queue is full.
    pub fn send(&self, plugin_id: &str, lines: Vec<PluginLogLine>) {
        if lines.is_empty() {
            return;
        }
        if self.tx.try_send((plugin_id.to_string(), lines)).is_err() {
            tracing::warn!(plugin = plugin_id, "plugin log queue full: lines dropped");
        }
    }
}

async fn run(store: Store, mut rx: mpsc::Receiver<(String, Vec<PluginLogLine>)>) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        let window = tokio::time::sleep(WINDOW);
        tokio::pin!(window);
        loop {
            tokio::select! {
                _ = &mut window => break,
                next = rx.recv() => match next {
                    Some(item) => batch.push(item),
                    None => break,
                },
            }
        }
        if let Err(e) = store.append_plugin_logs(batch).await {
            tracing::warn!(error = %e, "storing plugin logs failed");
        }
    }
}
