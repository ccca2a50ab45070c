//! Rules of the store that are not storage, shared by every backend: which deliveries the
//! plugin loop guard filters out, and how many log lines each plugin keeps. (The key-value
//! rules are [`super::kv`].) A backend calls these inside its write and only stores what they
//! decide, so SQLite and PostgreSQL cannot drift apart. Pure: no SQL here.

use std::collections::BTreeSet;

use crate::model::{Causation, PluginLogLine};

/// Plugins are not given events caused deeper than this many plugin hops.
pub const MAX_PLUGIN_DEPTH: u32 = 8;

/// Log lines kept per plugin: the newest ones; older ones are trimmed as new ones come.
pub const KEEP_LOG_LINES: i64 = 1000;

/// Why a subscription must not be given an event, if it must not: its plugin (subscriber or
/// transform) caused the event, or the event is too many plugin hops deep for any plugin. The
/// delivery is then stored `filtered` with this reason, never attempted. Subscriptions without
/// a plugin are always given the event.
pub fn loop_guard(
    causation: Option<&Causation>,
    plugin_id: Option<&str>,
    transform_plugin_id: Option<&str>,
) -> Option<String> {
    let c = causation?;
    let involves_plugin = plugin_id.is_some() || transform_plugin_id.is_some();
    if plugin_id == Some(c.plugin_id.as_str()) || transform_plugin_id == Some(c.plugin_id.as_str())
    {
        Some(format!(
            "not given to plugin {}: it caused this event",
            c.plugin_id
        ))
    } else if involves_plugin && c.depth > MAX_PLUGIN_DEPTH {
        Some(format!(
            "causation depth {} exceeds {MAX_PLUGIN_DEPTH}: not given to plugins",
            c.depth
        ))
    } else {
        None
    }
}

/// The plugins a batch of log lines was appended to, each once: after appending, a backend
/// trims each of these (and only these) to its newest [`KEEP_LOG_LINES`], so every plugin keeps
/// its own lines however busy the others are.
pub fn logs_to_trim(batch: &[(String, Vec<PluginLogLine>)]) -> BTreeSet<&str> {
    batch
        .iter()
        .map(|(plugin_id, _)| plugin_id.as_str())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caused_by(plugin: &str, depth: u32) -> Causation {
        Causation {
            plugin_id: plugin.into(),
            event_id: "evt_cause".into(),
            depth,
        }
    }

    #[test]
    fn a_plugin_is_never_given_an_event_it_caused() {
        let c = caused_by("plg_a", 1);
        assert!(loop_guard(Some(&c), Some("plg_a"), None).is_some());
        assert!(loop_guard(Some(&c), None, Some("plg_a")).is_some());
        assert_eq!(loop_guard(Some(&c), Some("plg_b"), None), None);
        assert_eq!(loop_guard(Some(&c), None, None), None, "a URL subscription");
        assert_eq!(
            loop_guard(None, Some("plg_a"), None),
            None,
            "posted, not caused"
        );
    }

    #[test]
    fn past_the_depth_limit_only_plugins_are_skipped() {
        let deep = caused_by("plg_a", MAX_PLUGIN_DEPTH + 1);
        let reason = loop_guard(Some(&deep), Some("plg_b"), None).expect("too deep");
        assert!(reason.contains("exceeds 8"), "{reason}");
        assert_eq!(
            loop_guard(Some(&deep), None, None),
            None,
            "a URL still gets it"
        );
        let at_limit = caused_by("plg_a", MAX_PLUGIN_DEPTH);
        assert_eq!(loop_guard(Some(&at_limit), Some("plg_b"), None), None);
    }

    #[test]
    fn each_written_plugin_is_trimmed_once() {
        let line = PluginLogLine {
            at: 0,
            level: "info".into(),
            event_id: None,
            message: String::new(),
        };
        let batch = vec![
            ("plg_b".to_string(), vec![line.clone()]),
            ("plg_a".to_string(), vec![line.clone()]),
            ("plg_b".to_string(), vec![line]),
        ];
        assert_eq!(
            logs_to_trim(&batch).into_iter().collect::<Vec<_>>(),
            ["plg_a", "plg_b"]
        );
    }
}
