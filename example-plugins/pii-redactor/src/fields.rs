//! Finding the configured string fields in the payload text, and splicing masked values back.
//!
//! The payload is never parsed into a tree: each object on the way to a field is read one
//! level at a time with its values left unparsed (`RawValue`, which serde_json scans without
//! recursion, so deep payloads cost no stack), and only the target strings are decoded. Every
//! byte outside a masked string is copied through unchanged: key order, numbers and spacing
//! stay as the sender wrote them.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

/// Where a field's value lies in the payload text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    /// Byte offset of the value (its opening quote for a string).
    pub start: usize,
    /// Byte offset just past it.
    pub end: usize,
}

/// A payload whose top level has been read once, for looking up several fields.
pub struct Payload<'a> {
    text: &'a str,
    root: Option<Members<'a>>,
}

impl<'a> Payload<'a> {
    /// Reads the top level of the JSON object `text` (nothing, if it is not one).
    pub fn new(text: &'a str) -> Payload<'a> {
        Payload {
            text,
            root: serde_json::from_str(text).ok(),
        }
    }

    /// The string value at `field`: a top-level key, or a JSON pointer such as
    /// `/message/content` (RFC 6901, array indexes included). `None` if it is missing or is
    /// not a string. The value is borrowed from the payload unless it has escapes to decode.
    pub fn find_string(&self, field: &str) -> Option<(Span, Cow<'a, str>)> {
        let root = self.root.as_ref()?;
        let raw = match field.strip_prefix('/') {
            Some(pointer) => {
                let mut tokens = pointer.split('/').map(unescape);
                let mut at = root.get(&tokens.next()?)?;
                for token in tokens {
                    at = child(at, &token)?;
                }
                at
            }
            None => root.get(field)?,
        };
        let text = raw.get();
        if !text.starts_with('"') {
            return None;
        }
        // A string without escapes is its bytes between the quotes (the whole text was
        // validated as JSON when its top level was read).
        let value = match text[1..text.len() - 1].contains('\\') {
            false => Cow::Borrowed(&text[1..text.len() - 1]),
            true => Cow::Owned(serde_json::from_str(text).ok()?),
        };
        let start = text.as_ptr() as usize - self.text.as_ptr() as usize;
        Some((
            Span {
                start,
                end: start + text.len(),
            },
            value,
        ))
    }
}

fn unescape(token: &str) -> Cow<'_, str> {
    if token.contains('~') {
        Cow::Owned(token.replace("~1", "/").replace("~0", "~"))
    } else {
        Cow::Borrowed(token)
    }
}

/// `payload` with each span replaced by its string, JSON-encoded. Spans must not overlap.
pub fn splice(payload: &str, mut edits: Vec<(Span, String)>) -> String {
    edits.sort_by_key(|(span, _)| span.start);
    let mut out = String::with_capacity(payload.len() + 16 * edits.len());
    let mut copied = 0;
    for (span, value) in edits {
        out.push_str(&payload[copied..span.start]);
        push_json_string(&mut out, &value);
        copied = span.end;
    }
    out.push_str(&payload[copied..]);
    out
}

/// Appends `value` as a JSON string, escaped exactly as `serde_json` escapes it: `"`, `\\`
/// and control characters only (`\b`, `\t`, `\n`, `\f`, `\r`, else `\u00xx`).
fn push_json_string(out: &mut String, value: &str) {
    out.reserve(value.len() + 2);
    out.push('"');
    let mut copied = 0;
    for (i, byte) in value.bytes().enumerate() {
        let escape = match byte {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            0x08 => "\\b",
            b'\t' => "\\t",
            b'\n' => "\\n",
            0x0c => "\\f",
            b'\r' => "\\r",
            0x00..=0x1f => "",
            _ => continue,
        };
        out.push_str(&value[copied..i]);
        if escape.is_empty() {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.push_str("\\u00");
            out.push(char::from(HEX[usize::from(byte >> 4)]));
            out.push(char::from(HEX[usize::from(byte & 0xf)]));
        } else {
            out.push_str(escape);
        }
        copied = i + 1;
    }
    out.push_str(&value[copied..]);
    out.push('"');
}

fn child<'a>(value: &'a RawValue, token: &str) -> Option<&'a RawValue> {
    match value.get().as_bytes().first()? {
        b'{' => serde_json::from_str::<Members<'a>>(value.get())
            .ok()?
            .get(token),
        b'[' => {
            let index: usize = token.parse().ok()?;
            let items: Vec<&'a RawValue> = serde_json::from_str(value.get()).ok()?;
            items.get(index).copied()
        }
        _ => None,
    }
}

/// An object's members in document order, values unparsed.
struct Members<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'a> Members<'a> {
    /// The value of `key` (the last one, as serde_json would keep).
    fn get(&self, key: &str) -> Option<&'a RawValue> {
        self.0
            .iter()
            .rev()
            .find_map(|(k, v)| (k == key).then_some(*v))
    }
}

/// An object key: borrowed from the text unless it had escapes to decode.
struct Key<'a>(Cow<'a, str>);

impl<'de> de::Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object key")
            }
            fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(s)))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(s.to_owned())))
            }
        }
        d.deserialize_str(V)
    }
}

impl<'de> de::Deserialize<'de> for Members<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Members<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Members<'de>, A::Error> {
                let mut members = Vec::with_capacity(map.size_hint().unwrap_or(8));
                while let Some(Key(key)) = map.next_key()? {
                    members.push((key, map.next_value()?));
                }
                Ok(Members(members))
            }
        }
        d.deserialize_map(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(payload: &str, field: &str) -> Option<String> {
        let (span, value) = Payload::new(payload).find_string(field)?;
        assert_eq!(
            serde_json::from_str::<String>(&payload[span.start..span.end]).unwrap(),
            value
        );
        Some(value.into_owned())
    }

    #[test]
    fn strings_are_escaped_as_serde_json_escapes_them() {
        let mut all: String = (0u8..0x80).map(char::from).collect();
        all.push_str("é \u{2028} \u{1F600} \\\" end");
        let mut out = String::new();
        push_json_string(&mut out, &all);
        assert_eq!(out, serde_json::to_string(&all).unwrap());
    }

    #[test]
    fn finds_top_level_keys_and_pointers() {
        let p = r#"{"text":"hi","message":{"content":"deep","list":["a",{"x":"y"}]},"n":1}"#;
        assert_eq!(found(p, "text").as_deref(), Some("hi"));
        assert_eq!(found(p, "/message/content").as_deref(), Some("deep"));
        assert_eq!(found(p, "/message/list/0").as_deref(), Some("a"));
        assert_eq!(found(p, "/message/list/1/x").as_deref(), Some("y"));
        assert_eq!(found(p, "/message/list/2"), None);
        assert_eq!(found(p, "n"), None, "not a string");
        assert_eq!(found(p, "missing"), None);
        assert_eq!(found("[1]", "text"), None);
        assert_eq!(found("not json", "text"), None);
    }

    #[test]
    fn decodes_escapes_in_keys_and_values_and_takes_the_last_duplicate() {
        let p = r#"{"te\u0078t":"a \"quoted\" \u00e9","a/b":{"c~d":"s"},"k":"1","k":"2"}"#;
        assert_eq!(found(p, "text").as_deref(), Some("a \"quoted\" é"));
        assert_eq!(found(p, "/a~1b/c~0d").as_deref(), Some("s"));
        assert_eq!(found(p, "k").as_deref(), Some("2"));
    }

    #[test]
    fn splicing_changes_only_the_spans() {
        let p = "{\"b\": 1.50, \"text\": \"x\",\n \"a\": {\"text\": \"y\"}}";
        let payload = Payload::new(p);
        let edits = vec![
            (
                payload.find_string("/a/text").unwrap().0,
                "new \"y\"".to_string(),
            ),
            (payload.find_string("text").unwrap().0, "new x".to_string()),
        ];
        assert_eq!(
            splice(p, edits),
            "{\"b\": 1.50, \"text\": \"new x\",\n \"a\": {\"text\": \"new \\\"y\\\"\"}}"
        );
    }

    #[test]
    fn deep_payloads_need_no_recursion() {
        let deep = format!(
            "{{\"text\":\"t\",\"d\":{}1{}}}",
            "[".repeat(10_000),
            "]".repeat(10_000)
        );
        assert_eq!(found(&deep, "text").as_deref(), Some("t"));
    }
}
