//! The retry schedule as a pure function: attempt number → delay.

use std::time::{Duration, SystemTime};

/// How far a delay may stray from its step, either way.
pub const JITTER: f64 = 0.2;

/// The delay before the next attempt after `attempts` failed attempts, or `None` when the
/// schedule is exhausted (the delivery is dead). `jitter` is in [-1, 1] and scales ±20%;
/// a `retry_after` from the receiver pushes the attempt later, up to the longest step.
pub fn next_delay(
    schedule: &[Duration],
    attempts: u32,
    jitter: f64,
    retry_after: Option<Duration>,
) -> Option<Duration> {
    let step = *schedule.get((attempts as usize).checked_sub(1)?)?;
    let factor = 1.0 + JITTER * jitter.clamp(-1.0, 1.0);
    let delay = step.mul_f64(factor);
    match retry_after {
        Some(wanted) => {
            let longest = schedule.iter().max().copied().unwrap_or(step);
            Some(delay.max(wanted.min(longest)))
        }
        None => Some(delay),
    }
}

/// Parses `Retry-After`: delay-seconds or an HTTP date.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn steps_follow_the_schedule_then_stop() {
        let s = [ms(10), ms(20), ms(40)];
        assert_eq!(next_delay(&s, 1, 0.0, None), Some(ms(10)));
        assert_eq!(next_delay(&s, 3, 0.0, None), Some(ms(40)));
        assert_eq!(next_delay(&s, 4, 0.0, None), None);
        assert_eq!(next_delay(&s, 0, 0.0, None), None);
    }

    #[test]
    fn jitter_stays_within_twenty_percent() {
        let s = [Duration::from_secs(100)];
        assert_eq!(next_delay(&s, 1, 1.0, None), Some(Duration::from_secs(120)));
        assert_eq!(next_delay(&s, 1, -1.0, None), Some(Duration::from_secs(80)));
        assert_eq!(next_delay(&s, 1, 7.0, None), Some(Duration::from_secs(120)));
    }

    #[test]
    fn retry_after_pushes_later_but_is_clamped_to_the_longest_step() {
        let s = [ms(10), ms(50)];
        assert_eq!(next_delay(&s, 1, 0.0, Some(ms(30))), Some(ms(30)));
        assert_eq!(
            next_delay(&s, 1, 0.0, Some(Duration::from_secs(3600))),
            Some(ms(50))
        );
        assert_eq!(next_delay(&s, 2, 0.0, Some(ms(1))), Some(ms(50)));
    }

    #[test]
    fn retry_after_parses_seconds_and_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        let later = httpdate::fmt_http_date(now + Duration::from_secs(30));
        assert_eq!(
            parse_retry_after(&later, now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(parse_retry_after("soon", now), None);
    }
}
