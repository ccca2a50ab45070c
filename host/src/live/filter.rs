//! Which live messages a stream wants: pure rules over a message's [`Keys`](super::Keys).

use std::collections::BTreeSet;

use super::{Kind, Message};

/// Which messages a stream wants (`types`, `subscription_id`, `plugin_id`).
///
/// Each filter covers some kinds: `types` covers events and attempts (by the event's type),
/// `subscription_id` covers attempts, `plugin_id` covers log lines (its own), attempts (of a
/// subscription it serves as subscriber or transform) and events (it emitted). Without filters
/// everything is sent; otherwise a message is sent when some given filter covers its kind and
/// it passes every given filter that does.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Event types.
    pub types: Option<BTreeSet<String>>,
    /// A subscription id.
    pub subscription_id: Option<String>,
    /// A plugin id.
    pub plugin_id: Option<String>,
}

impl Filter {
    /// Whether the stream wants `m`.
    pub fn admits(&self, m: &Message) -> bool {
        let k = &m.keys;
        let types = self.types.as_ref().map(|types| {
            (
                matches!(m.kind, Kind::Event | Kind::Attempt),
                k.event_type.as_ref().is_some_and(|t| types.contains(t)),
            )
        });
        let subscription = self.subscription_id.as_ref().map(|id| {
            (
                m.kind == Kind::Attempt,
                k.subscription_id.as_ref() == Some(id),
            )
        });
        let plugin = self
            .plugin_id
            .as_ref()
            .map(|id| (true, k.plugin_ids.contains(id)));
        let given = [types, subscription, plugin];
        if given.iter().all(Option::is_none) {
            return true;
        }
        let covering = given.iter().flatten().filter(|(covers, _)| *covers);
        let mut any = false;
        for (_, passes) in covering {
            if !passes {
                return false;
            }
            any = true;
        }
        any
    }
}

#[cfg(test)]
mod tests {
    use super::super::Keys;
    use super::*;

    fn message(
        kind: Kind,
        event_type: Option<&str>,
        sub: Option<&str>,
        plugins: &[&str],
    ) -> Message {
        Message {
            id: 1,
            kind,
            data: "{}".into(),
            keys: Keys {
                event_type: event_type.map(str::to_string),
                subscription_id: sub.map(str::to_string),
                plugin_ids: plugins.iter().map(|p| p.to_string()).collect(),
            },
        }
    }

    fn filter(types: &[&str], sub: Option<&str>, plugin: Option<&str>) -> Filter {
        Filter {
            types: (!types.is_empty()).then(|| types.iter().map(|t| t.to_string()).collect()),
            subscription_id: sub.map(str::to_string),
            plugin_id: plugin.map(str::to_string),
        }
    }

    #[test]
    fn each_filter_selects_within_the_kinds_it_covers() {
        let event = message(Kind::Event, Some("a"), None, &[]);
        let emitted = message(Kind::Event, Some("a"), None, &["p"]);
        let attempt = message(Kind::Attempt, Some("a"), Some("s"), &[]);
        let via_plugin = message(Kind::Attempt, Some("b"), Some("t"), &["p"]);
        let log = message(Kind::Log, None, None, &["p"]);
        let other_log = message(Kind::Log, None, None, &["q"]);
        let all = [&event, &emitted, &attempt, &via_plugin, &log, &other_log];
        let sent = |f: Filter| all.iter().map(|m| f.admits(m)).collect::<Vec<_>>();

        assert_eq!(sent(filter(&[], None, None)), [true; 6]);
        assert_eq!(
            sent(filter(&["a"], None, None)),
            [true, true, true, false, false, false]
        );
        assert_eq!(
            sent(filter(&[], Some("s"), None)),
            [false, false, true, false, false, false]
        );
        assert_eq!(
            sent(filter(&[], None, Some("p"))),
            [false, true, false, true, true, false]
        );
        // Filters covering the same kind must all pass; others add their own kinds.
        assert_eq!(
            sent(filter(&["a"], Some("t"), None)),
            [true, true, false, false, false, false]
        );
        assert_eq!(
            sent(filter(&["b"], None, Some("p"))),
            [false, false, false, true, true, false]
        );
    }
}
