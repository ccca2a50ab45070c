//! Plugin log lines on their way to the database, in batches.
//!
//! Invocations hand their lines over and move on; a background task gathers what arrives
//! within a short window and writes it in one transaction, so logging costs a plugin nothing
//! on its hot path and the database one write per batch instead of one per event. Logs are
//! diagnostics: if the queue is full, lines are dropped (and counted) rather than slowing
//! deliveries. Once written, lines go to the live feed too (`/v1/stream`).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use crate::live::LiveFeed;
use crate::model::PluginLogLine;
use crate::store::Store;

/// How long the sink gathers lines before writing them.
const WINDOW: Duration = Duration::from_millis(20);
/// Invocations' worth of lines that may wait.
const QUEUE: usize = 16 * 1024;

/// One invocation's lines: account, plugin, lines.
type Lines = (String, String, Vec<PluginLogLine>);

/// Where invocations send their log lines.
#[derive(Clone)]
pub struct LogSink {
    tx: mpsc::Sender<Lines>,
}

impl LogSink {
    /// Starts the writer task.
    pub fn start(store: Store, live: Arc<LiveFeed>) -> LogSink {
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(run(store, live, rx));
        LogSink { tx }
    }

    /// Queues one invocation's lines; drops them if the queue is full.
    pub fn send(&self, account_id: &str, plugin_id: &str, lines: Vec<PluginLogLine>) {
        if lines.is_empty() {
            return;
        }
        let item = (account_id.to_string(), plugin_id.to_string(), lines);
        if self.tx.try_send(item).is_err() {
            tracing::warn!(plugin = plugin_id, "plugin log queue full: lines dropped");
        }
    }
}

async fn run(store: Store, live: Arc<LiveFeed>, mut rx: mpsc::Receiver<Lines>) {
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
        // Copies are kept only of lines someone is watching live, to publish once stored.
        let mut watched = Vec::new();
        let stored = batch
            .into_iter()
            .map(|(account, plugin, lines)| {
                if live.is_listened_to(&account) {
                    watched.push((account, plugin.clone(), lines.clone()));
                }
                (plugin, lines)
            })
            .collect();
        match store.append_plugin_logs(stored).await {
            Ok(()) => {
                for (account, plugin, lines) in &watched {
                    live.logs(account, plugin, lines);
                }
            }
            Err(e) => tracing::warn!(error = %e, "storing plugin logs failed"),
        }
    }
}
