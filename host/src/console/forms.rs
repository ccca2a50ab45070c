//! HTML form bodies: `application/x-www-form-urlencoded` pairs, repeated names kept (checkbox
//! groups), read as text.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::response::{IntoResponse, Response};

use super::ConsoleError;
use crate::error::ApiError;

/// The fields of a submitted form, in order.
#[derive(Debug, Default, Clone)]
pub struct Fields(pub Vec<(String, String)>);

impl Fields {
    /// Parses a form body.
    pub fn parse(body: &[u8]) -> Fields {
        Fields(
            url::form_urlencoded::parse(body)
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        )
    }

    /// The first value of `name`.
    pub fn get(&self, name: &str) -> Option<String> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    }

    /// The first value of `name`, trimmed, if not empty.
    pub fn text(&self, name: &str) -> Option<String> {
        self.get(name)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    }

    /// Every value of `name` (a checkbox group).
    pub fn all(&self, name: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// Whether a checkbox named `name` was checked.
    pub fn checked(&self, name: &str) -> bool {
        self.0.iter().any(|(k, _)| k == name)
    }
}

/// A time typed in a form: RFC 3339, or a `datetime-local` value (`2026-11-01T09:30`, seconds
/// optional), read as UTC. Unix ms.
pub fn parse_time(input: &str) -> Option<i64> {
    let input = input.trim();
    if let Some((_, ms)) = crate::clock::parse_rfc3339(input) {
        return Some(ms);
    }
    let with_seconds = match input.len() {
        16 => format!("{input}:00Z"),
        19 => format!("{input}Z"),
        _ => return None,
    };
    crate::clock::parse_rfc3339(&with_seconds).map(|(_, ms)| ms)
}

/// The `datetime-local` text of a time (UTC, to the minute).
pub fn time_input(ms: i64) -> String {
    crate::clock::rfc3339(ms)[..16].to_string()
}

/// The first value of `name` in a form body.
pub fn form_field(body: &[u8], name: &str) -> Option<String> {
    url::form_urlencoded::parse(body)
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

impl<S: Send + Sync> FromRequest<S> for Fields {
    type Rejection = Response;

    async fn from_request(req: Request, state: &S) -> Result<Self, Response> {
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            ConsoleError::Api(ApiError::invalid(format!(
                "the form could not be read: {e}"
            )))
            .into_response()
        })?;
        Ok(Fields::parse(&bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_fields_are_kept_in_order() {
        let f = Fields::parse(b"t=a%3Ab&t=c&csrf=x+y&empty=&on=1");
        assert_eq!(f.all("t"), ["a:b", "c"]);
        assert_eq!(f.get("csrf").as_deref(), Some("x y"));
        assert_eq!(f.text("empty"), None);
        assert!(f.checked("on") && !f.checked("off"));
        assert_eq!(form_field(b"a=1&csrf=tok", "csrf").as_deref(), Some("tok"));
    }

    #[test]
    fn times_are_read_as_utc() {
        let ms = parse_time("2026-11-01T09:30").unwrap();
        assert_eq!(crate::clock::rfc3339(ms), "2026-11-01T09:30:00.000Z");
        assert_eq!(
            parse_time("2026-11-01T09:30:00+01:00"),
            parse_time("2026-11-01T08:30")
        );
        assert_eq!(time_input(ms), "2026-11-01T09:30");
        assert_eq!(parse_time("yesterday"), None);
    }
}
