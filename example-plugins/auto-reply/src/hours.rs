//! Office hours: parsing `HH:MM-HH:MM`, day lists and UTC offsets, and placing an RFC 3339
//! timestamp in local time. Hand-written (no date crate) to keep the component small; only
//! the few formats the configuration accepts are understood.

const MINUTES_PER_DAY: i64 = 24 * 60;
const DAY_NAMES: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
const FULL_DAY_NAMES: [&str; 7] = [
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
    "sunday",
];

/// A moment in local time: the weekday and the minute of the day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalTime {
    /// 0 = Monday … 6 = Sunday.
    pub weekday: u8,
    /// 0 ..= 1439.
    pub minute_of_day: u16,
}

impl LocalTime {
    /// `timestamp` (RFC 3339, such as `2025-01-06T10:30:00.123+01:00`) seen at `utc_offset`
    /// minutes east of UTC. `None` if the timestamp is malformed.
    pub fn from_rfc3339(timestamp: &str, utc_offset: i32) -> Option<LocalTime> {
        let utc_minutes = parse_rfc3339_minutes(timestamp)?;
        let local = utc_minutes + i64::from(utc_offset);
        let day = local.div_euclid(MINUTES_PER_DAY);
        Some(LocalTime {
            weekday: (day + 3).rem_euclid(7) as u8, // 1970-01-01 was a Thursday
            minute_of_day: local.rem_euclid(MINUTES_PER_DAY) as u16,
        })
    }
}

/// Opening hours on some days of the week.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OfficeHours {
    /// Opening minute of the day.
    pub start: u16,
    /// Closing minute of the day (exclusive); less than `start` when the hours wrap midnight.
    pub end: u16,
    /// Which weekdays (Monday first) the hours start on.
    pub days: [bool; 7],
}

impl OfficeHours {
    /// Parses `HH:MM-HH:MM` (`24:00` allowed as an end) for the given days.
    pub fn parse(raw: &str, days: [bool; 7]) -> Option<OfficeHours> {
        let (start, end) = raw.split_once('-')?;
        let (start, end) = (parse_hh_mm(start.trim())?, parse_hh_mm(end.trim())?);
        if start == end || start >= 24 * 60 {
            return None;
        }
        Some(OfficeHours { start, end, days })
    }

    /// Whether `t` falls inside the hours. Hours that wrap midnight belong to the day they
    /// start on: `22:00-06:00` on Mondays covers Monday night and early Tuesday.
    pub fn contains(&self, t: LocalTime) -> bool {
        let m = t.minute_of_day;
        let today = self.days[usize::from(t.weekday)];
        if self.start < self.end {
            return today && self.start <= m && m < self.end;
        }
        let yesterday = self.days[usize::from((t.weekday + 6) % 7)];
        (today && m >= self.start) || (yesterday && m < self.end)
    }
}

/// Parses `mon-fri`, `mon,wed,fri`, `fri-mon` (wrapping), full names too, case-insensitive.
pub fn parse_days(raw: &str) -> Option<[bool; 7]> {
    let mut days = [false; 7];
    for part in raw.split(',') {
        let part = part.trim();
        if part.is_empty() {
            continue;
        }
        match part.split_once('-') {
            None => days[day_index(part)?] = true,
            Some((from, to)) => {
                let (from, to) = (day_index(from.trim())?, day_index(to.trim())?);
                let mut d = from;
                loop {
                    days[d] = true;
                    if d == to {
                        break;
                    }
                    d = (d + 1) % 7;
                }
            }
        }
    }
    days.contains(&true).then_some(days)
}

fn day_index(name: &str) -> Option<usize> {
    let name = name.to_ascii_lowercase();
    DAY_NAMES
        .iter()
        .position(|d| *d == name)
        .or_else(|| FULL_DAY_NAMES.iter().position(|d| *d == name))
}

/// Parses a UTC offset, `+HH:MM`, `-HH:MM`, `+HH`, `+HHMM` or `Z`, into minutes east of UTC.
pub fn parse_utc_offset(raw: &str) -> Option<i32> {
    if raw.eq_ignore_ascii_case("z") {
        return Some(0);
    }
    let (sign, rest) = match raw.as_bytes().first()? {
        b'+' => (1, &raw[1..]),
        b'-' => (-1, &raw[1..]),
        _ => return None,
    };
    let (h, m) = match rest.len() {
        2 => (rest, "00"),
        4 => rest.split_at(2),
        5 if rest.as_bytes()[2] == b':' => (&rest[..2], &rest[3..]),
        _ => return None,
    };
    let (h, m) = (parse_digits(h)?, parse_digits(m)?);
    (h <= 23 && m <= 59).then(|| sign * (h as i32 * 60 + m as i32))
}

fn parse_hh_mm(raw: &str) -> Option<u16> {
    let (h, m) = raw.split_once(':')?;
    let (h, m) = (parse_digits(h)?, parse_digits(m)?);
    (m <= 59 && (h < 24 || (h == 24 && m == 0))).then(|| (h * 60 + m) as u16)
}

/// Parses 1–4 ASCII digits.
fn parse_digits(s: &str) -> Option<u32> {
    if s.is_empty() || s.len() > 4 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Minutes since the Unix epoch, UTC, of an RFC 3339 timestamp (seconds and fractions ignored).
fn parse_rfc3339_minutes(ts: &str) -> Option<i64> {
    let b = ts.as_bytes();
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't' | b' ')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let num = |r: std::ops::Range<usize>| ts.get(r).and_then(parse_digits).map(i64::from);
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, _second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 {
        return None;
    }
    // Skip fractional seconds, then read the offset.
    let mut i = 19;
    if b.get(i) == Some(&b'.') {
        i += 1;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
    }
    let offset = parse_utc_offset(ts.get(i..)?)?;
    Some(
        days_from_civil(year, month, day) * MINUTES_PER_DAY + hour * 60 + minute
            - i64::from(offset),
    )
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [bool; 7] = [true; 7];

    fn at(ts: &str, offset: i32) -> LocalTime {
        LocalTime::from_rfc3339(ts, offset).unwrap()
    }

    #[test]
    fn timestamps_land_on_the_right_local_day_and_minute() {
        assert_eq!(
            at("1970-01-01T00:00:00Z", 0),
            LocalTime {
                weekday: 3,
                minute_of_day: 0
            }
        );
        assert_eq!(
            at("2025-01-06T10:30:00Z", 60),
            LocalTime {
                weekday: 0,
                minute_of_day: 690
            }
        );
        // Sunday 23:30 UTC is Monday 01:30 at +02:00.
        assert_eq!(
            at("2025-01-05T23:30:00.123456Z", 120),
            LocalTime {
                weekday: 0,
                minute_of_day: 90
            }
        );
        // An offset in the timestamp is honoured: 10:00-05:00 is 15:00 UTC.
        assert_eq!(at("2025-01-06T10:00:00-05:00", 0).minute_of_day, 900);
        assert_eq!(at("2024-02-29T12:00:00+00:00", 0).weekday, 3);
    }

    #[test]
    fn malformed_timestamps_are_rejected() {
        for ts in [
            "",
            "2025-01-06",
            "2025-13-01T00:00:00Z",
            "2025-01-06T10:30:00",
            "2025-01-06T25:00:00Z",
        ] {
            assert_eq!(LocalTime::from_rfc3339(ts, 0), None, "{ts}");
        }
    }

    #[test]
    fn day_hours_and_wrapping_night_hours() {
        let day = OfficeHours::parse("09:00-17:00", ALL).unwrap();
        assert!(day.contains(LocalTime {
            weekday: 0,
            minute_of_day: 9 * 60
        }));
        assert!(!day.contains(LocalTime {
            weekday: 0,
            minute_of_day: 17 * 60
        }));
        let mut mondays = [false; 7];
        mondays[0] = true;
        let night = OfficeHours::parse("22:00-06:00", mondays).unwrap();
        assert!(night.contains(LocalTime {
            weekday: 0,
            minute_of_day: 23 * 60
        }));
        assert!(night.contains(LocalTime {
            weekday: 1,
            minute_of_day: 60
        }));
        assert!(!night.contains(LocalTime {
            weekday: 0,
            minute_of_day: 60
        }));
        assert!(
            OfficeHours::parse("00:00-24:00", ALL)
                .unwrap()
                .contains(LocalTime {
                    weekday: 6,
                    minute_of_day: 1439
                })
        );
    }

    #[test]
    fn malformed_hours_are_rejected() {
        for raw in [
            "9-5",
            "09:00",
            "09:00-09:00",
            "24:00-01:00",
            "09:60-10:00",
            "aa:bb-cc:dd",
        ] {
            assert_eq!(OfficeHours::parse(raw, ALL), None, "{raw}");
        }
    }

    #[test]
    fn day_lists() {
        assert_eq!(
            parse_days("mon-fri"),
            Some([true, true, true, true, true, false, false])
        );
        assert_eq!(
            parse_days("Fri-Mon"),
            Some([true, false, false, false, true, true, true])
        );
        assert_eq!(
            parse_days("monday, wed"),
            Some([true, false, true, false, false, false, false])
        );
        assert_eq!(parse_days("weekdays"), None);
        assert_eq!(parse_days(""), None);
    }

    #[test]
    fn utc_offsets() {
        assert_eq!(parse_utc_offset("+01:00"), Some(60));
        assert_eq!(parse_utc_offset("-05:30"), Some(-330));
        assert_eq!(parse_utc_offset("+0545"), Some(345));
        assert_eq!(parse_utc_offset("Z"), Some(0));
        assert_eq!(parse_utc_offset("01:00"), None);
        assert_eq!(parse_utc_offset("+24:00"), None);
    }
}
