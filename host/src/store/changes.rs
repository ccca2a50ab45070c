//! The configuration epoch a node has seen: a counter that moves whenever configuration that
//! nodes cache changed (a subscription's URL, secret, status or settings; a plugin, its
//! versions or its settings). It says *that* something changed, not what: whoever caches
//! re-reads what it holds (the plugin registry re-reads the plugins, a claimed delivery its
//! subscription).
//!
//! It moves after every configuration write through this node's [`super::Store`] (once the
//! write is committed) and, on a database shared by several nodes, whenever another node's
//! write is seen (see `postgres::changes`): at once through a notification, or at the latest
//! at the next poll ([`POLL`]). So a node acts on another node's change within a second.

use std::time::Duration;

use tokio::sync::watch;

/// How often a node sharing its database polls the database's epoch, in case a notification
/// was lost: what bounds how long a change made through another node goes unseen.
pub const POLL: Duration = Duration::from_millis(500);

/// The epoch this node has seen, and who waits for it to move.
#[derive(Debug)]
pub struct ConfigChanges {
    epoch: watch::Sender<u64>,
}

impl Default for ConfigChanges {
    fn default() -> ConfigChanges {
        ConfigChanges {
            epoch: watch::channel(0).0,
        }
    }
}

impl ConfigChanges {
    /// Records that configuration changed (committed): everything cached before is suspect.
    pub fn bump(&self) {
        self.epoch.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// The current epoch: a value read before a cache was filled, compared later, says
    /// whether the cache may be stale.
    pub fn epoch(&self) -> u64 {
        *self.epoch.borrow()
    }

    /// Resolves on each move of the epoch (moves that happen while the receiver is busy are
    /// folded into one).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.epoch.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_bump_moves_the_epoch_and_wakes_subscribers() {
        let changes = ConfigChanges::default();
        let before = changes.epoch();
        let mut rx = changes.subscribe();
        rx.mark_unchanged();
        changes.bump();
        rx.changed().await.unwrap();
        assert_ne!(changes.epoch(), before);
    }
}
