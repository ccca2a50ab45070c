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
///
/// Every event delivered and every timestamp in a response goes through here, so the common
/// case (years 1970 to 9999) is formatted by hand into a fixed buffer; anything else takes the
/// general path.
pub fn rfc3339(ms: i64) -> String {
    let mut out = String::with_capacity(24);
    push_rfc3339(ms, &mut out);
    out
}

/// [`rfc3339`] appended to `out` (a plugin instance kept between events refills its event's
/// strings without allocating).
pub fn push_rfc3339(ms: i64, out: &mut String) {
    const MAX_MS: i64 = 253_402_300_799_999; // 9999-12-31T23:59:59.999Z
    if !(0..=MAX_MS).contains(&ms) {
        out.push_str(&rfc3339_general(ms));
        return;
    }
    let (days, ms_of_day) = (ms / 86_400_000, ms % 86_400_000);
    let (year, month, day) = civil_from_days(days);
    let (secs, millis) = (ms_of_day / 1000, ms_of_day % 1000);
    let mut text = *b"0000-00-00T00:00:00.000Z";
    let mut put = |at: usize, width: usize, mut value: i64| {
        for i in (at..at + width).rev() {
            text[i] = b'0' + (value % 10) as u8;
            value /= 10;
        }
    };
    put(0, 4, year);
    put(5, 2, month);
    put(8, 2, day);
    put(11, 2, secs / 3600);
    put(14, 2, secs / 60 % 60);
    put(17, 2, secs % 60);
    put(20, 3, millis);
    out.push_str(std::str::from_utf8(&text).expect("ASCII digits and separators"));
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

fn rfc3339_general(ms: i64) -> String {
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

    /// Deserializes an RFC 3339 string as milliseconds (clients read the API with it).
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
        let text = <std::borrow::Cow<'de, str> as serde::Deserialize>::deserialize(d)?;
        super::parse_rfc3339(&text)
            .map(|(_, ms)| ms)
            .ok_or_else(|| serde::de::Error::custom(format!("not an RFC 3339 time: {text:?}")))
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

    /// Deserializes an RFC 3339 string or null as optional milliseconds.
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
        let text = <Option<std::borrow::Cow<'de, str>> as serde::Deserialize>::deserialize(d)?;
        text.map(|text| {
            super::parse_rfc3339(&text)
                .map(|(_, ms)| ms)
                .ok_or_else(|| serde::de::Error::custom(format!("not an RFC 3339 time: {text:?}")))
        })
        .transpose()
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
    fn hand_formatting_matches_the_general_path() {
        let mut ms: i64 = 0;
        // Steps of five days less a few ms visit every month, leap days and centuries.
        while ms <= 253_402_300_799_999 {
            assert_eq!(rfc3339(ms), rfc3339_general(ms), "at {ms}");
            ms += 431_999_977;
        }
        for ms in [0, 951_782_400_000, 4_107_542_399_999, 253_402_300_799_999] {
            assert_eq!(rfc3339(ms), rfc3339_general(ms));
        }
        assert_eq!(rfc3339(-1), "1969-12-31T23:59:59.999Z");
    }

    #[test]
    fn ids_are_prefixed_and_ordered() {
        let a = new_id("evt");
        let b = new_id("evt");
        assert!(a.starts_with("evt_") && a.len() == 36);
        assert!(a < b);
    }
}
