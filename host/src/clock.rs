//! Identifiers and timestamps: time-ordered ids and the one RFC 3339 format the API speaks.

use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::{OffsetDateTime, UtcOffset};

/// A new public id such as `evt_01926f...`: a prefix naming the kind, then a UUIDv7 (time-ordered).
pub fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::now_v7().simple())
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    (OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

/// Formats Unix milliseconds as RFC 3339 in UTC with millisecond precision.
pub fn rfc3339(ms: i64) -> String {
    let t = OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
    t.format(format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    ))
    .expect("a fixed format always formats")
}

/// Parses an RFC 3339 timestamp and returns it normalised to UTC, as text, plus Unix milliseconds.
pub fn parse_rfc3339(s: &str) -> Option<(String, i64)> {
    let t = OffsetDateTime::parse(s, &Rfc3339)
        .ok()?
        .to_offset(UtcOffset::UTC);
    let ms = (t.unix_timestamp_nanos() / 1_000_000) as i64;
    Some((t.format(&Rfc3339).ok()?, ms))
}

/// Serde helper: Unix milliseconds as RFC 3339.
pub mod ms_as_rfc3339 {
    /// Serializes milliseconds as an RFC 3339 string.
    pub fn serialize<S: serde::Serializer>(ms: &i64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::rfc3339(*ms))
    }
}

/// Serde helper: optional Unix milliseconds as RFC 3339 or null.
pub mod opt_ms_as_rfc3339 {
    /// Serializes optional milliseconds as an RFC 3339 string or null.
    pub fn serialize<S: serde::Serializer>(ms: &Option<i64>, s: S) -> Result<S::Ok, S::Error> {
        match ms {
            Some(ms) => s.serialize_str(&super::rfc3339(*ms)),
            None => s.serialize_none(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_and_parses_round_trip() {
        assert_eq!(rfc3339(1_614_265_330_123), "2021-02-25T15:02:10.123Z");
        let (text, ms) = parse_rfc3339("2021-02-25T16:02:10.123+01:00").unwrap();
        assert_eq!(ms, 1_614_265_330_123);
        assert_eq!(text, "2021-02-25T15:02:10.123Z");
        assert!(parse_rfc3339("yesterday").is_none());
    }

    #[test]
    fn ids_are_prefixed_and_ordered() {
        let a = new_id("evt");
        let b = new_id("evt");
        assert!(a.starts_with("evt_") && a.len() == 36);
        assert!(a < b);
    }
}
