//! Rules and their matching: pure functions of the event type and payload.

use std::fmt;
use std::str::FromStr;

use serde::Deserialize;
use serde_json::Value;

/// What to do with a matching event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Deliver it.
    Keep,
    /// Filter it out.
    Drop,
}

impl FromStr for Action {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "keep" => Ok(Action::Keep),
            "drop" => Ok(Action::Drop),
            other => Err(format!("expected `keep` or `drop`, got `{other}`")),
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Action::Keep => "keep",
            Action::Drop => "drop",
        })
    }
}

/// One rule, as written in the configuration.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Event type pattern, `*` as wildcard.
    #[serde(rename = "type")]
    pub event_type: Option<String>,
    /// JSON pointer into the payload.
    pub field: Option<String>,
    /// The field equals this value.
    pub equals: Option<Value>,
    /// The field equals one of these values.
    pub one_of: Option<Vec<Value>>,
    /// The field is a string containing this.
    pub contains: Option<String>,
    /// The field exists (or not).
    pub exists: Option<bool>,
    /// The action when the rule matches.
    pub action: Action,
}

/// An ordered list of rules.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Rules(Vec<Rule>);

impl Rules {
    /// Parses and validates the `rules` configuration value.
    pub fn parse(raw: &str) -> Result<Rules, String> {
        let rules: Vec<Rule> = serde_json::from_str(raw).map_err(|e| e.to_string())?;
        for (i, rule) in rules.iter().enumerate() {
            rule.validate().map_err(|e| format!("rule {i}: {e}"))?;
        }
        Ok(Rules(rules))
    }

    /// The index and action of the first rule matching the event, if any.
    pub fn first_match(&self, event_type: &str, payload: &Value) -> Option<(usize, Action)> {
        self.0
            .iter()
            .enumerate()
            .find(|(_, r)| r.matches(event_type, payload))
            .map(|(i, r)| (i, r.action))
    }
}

impl Rule {
    fn tests(&self) -> usize {
        [
            self.equals.is_some(),
            self.one_of.is_some(),
            self.contains.is_some(),
            self.exists.is_some(),
        ]
        .into_iter()
        .filter(|t| *t)
        .count()
    }

    fn validate(&self) -> Result<(), String> {
        if let Some(field) = &self.field {
            if !field.is_empty() && !field.starts_with('/') {
                return Err(format!(
                    "`field` must be a JSON pointer starting with `/`, got `{field}`"
                ));
            }
        } else if self.tests() > 0 {
            return Err("`equals`, `one_of`, `contains` and `exists` need a `field`".into());
        }
        if self.tests() > 1 {
            return Err("use one of `equals`, `one_of`, `contains`, `exists` per rule".into());
        }
        Ok(())
    }

    /// Whether the rule matches the event.
    pub fn matches(&self, event_type: &str, payload: &Value) -> bool {
        if let Some(pattern) = &self.event_type
            && !glob_matches(pattern, event_type)
        {
            return false;
        }
        let Some(pointer) = &self.field else {
            return true;
        };
        let value = payload.pointer(pointer);
        if let Some(expected) = &self.equals {
            return value == Some(expected);
        }
        if let Some(options) = &self.one_of {
            return value.is_some_and(|v| options.contains(v));
        }
        if let Some(needle) = &self.contains {
            return value
                .and_then(Value::as_str)
                .is_some_and(|s| s.contains(needle.as_str()));
        }
        value.is_some() == self.exists.unwrap_or(true)
    }
}

/// Matches `text` against `pattern`, where `*` matches any run of characters (even empty).
pub fn glob_matches(pattern: &str, text: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or("");
    let Some(mut rest) = text.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        return rest.is_empty(); // no `*` at all: exact match
    };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn globs() {
        assert!(glob_matches("message:*", "message:created"));
        assert!(glob_matches("*:created", "message:created"));
        assert!(glob_matches("*", ""));
        assert!(glob_matches("m*s*d", "message:created"));
        assert!(glob_matches("message:created", "message:created"));
        assert!(!glob_matches("message:created", "message:created2"));
        assert!(!glob_matches("message:*", "conversation:updated"));
        assert!(!glob_matches("a*a", "a"));
    }

    #[test]
    fn first_match_wins() {
        let rules = Rules::parse(
            r#"[{"field":"/sender/type","equals":"app","action":"drop"},
                {"type":"message:*","action":"keep"},
                {"action":"drop"}]"#,
        )
        .unwrap();
        let app = json!({"sender": {"type": "app"}});
        let contact = json!({"sender": {"type": "source_contact"}});
        assert_eq!(
            rules.first_match("message:created", &app),
            Some((0, Action::Drop))
        );
        assert_eq!(
            rules.first_match("message:created", &contact),
            Some((1, Action::Keep))
        );
        assert_eq!(
            rules.first_match("contact:updated", &contact),
            Some((2, Action::Drop))
        );
    }

    #[test]
    fn field_tests() {
        let p = json!({"source": "facebook", "n": 3, "text": "refund please", "nothing": null});
        let m = |rule: &str| {
            let rules = Rules::parse(&format!("[{rule}]")).unwrap();
            rules.first_match("t", &p).is_some()
        };
        assert!(m(r#"{"field":"/n","equals":3,"action":"drop"}"#));
        assert!(!m(r#"{"field":"/n","equals":"3","action":"drop"}"#));
        assert!(m(
            r#"{"field":"/source","one_of":["google","facebook"],"action":"drop"}"#
        ));
        assert!(m(
            r#"{"field":"/text","contains":"refund","action":"drop"}"#
        ));
        assert!(!m(r#"{"field":"/n","contains":"3","action":"drop"}"#));
        assert!(m(r#"{"field":"/nothing","equals":null,"action":"drop"}"#));
        assert!(m(r#"{"field":"/missing","exists":false,"action":"drop"}"#));
        assert!(m(r#"{"field":"/source","action":"drop"}"#));
        assert!(!m(r#"{"field":"/missing","action":"drop"}"#));
    }

    #[test]
    fn invalid_rules_are_rejected_with_their_index() {
        for (raw, needle) in [
            (
                r#"[{"action":"keep"},{"equals":1,"action":"drop"}]"#,
                "rule 1",
            ),
            (r#"[{"field":"source","action":"drop"}]"#, "JSON pointer"),
            (
                r#"[{"field":"/a","equals":1,"exists":true,"action":"drop"}]"#,
                "one of",
            ),
            (r#"[{"typ":"x","action":"drop"}]"#, "unknown field"),
            (r#"[{"type":"x"}]"#, "action"),
            (r#"{"type":"x"}"#, "sequence"),
        ] {
            let err = Rules::parse(raw).unwrap_err();
            assert!(err.contains(needle), "{raw}: {err}");
        }
    }
}
