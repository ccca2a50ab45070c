//! The rules of a plugin's key-value store that are not storage: the key limit and counters as
//! decimal text (the records of a refusal are [`KvLimits`] and [`KvRefusal`]). Every backend
//! applies them inside its write, and the plugin runtime's dry run applies them to its overlay,
//! so a test run refuses exactly what a real run would. Pure: no SQL here.

pub use super::records::{KvLimits, KvRefusal};

/// Whether a new key fits next to the `count` keys the plugin has.
pub fn room_for_new_key(count: u32, limits: KvLimits) -> Result<(), KvRefusal> {
    if count >= limits.keys {
        Err(KvRefusal::TooManyKeys(limits.keys))
    } else {
        Ok(())
    }
}

/// A counter's value: the decimal text of an `i64` (an optional sign, then ASCII digits).
pub fn parse_counter(bytes: &[u8]) -> Option<i64> {
    std::str::from_utf8(bytes).ok()?.parse().ok()
}

/// `increment`'s result for the value now stored (a missing key counts as 0): the new number
/// and its text, or why nothing may be written. It never wraps.
pub fn increment(
    current: Option<&[u8]>,
    delta: i64,
    limits: KvLimits,
) -> Result<(i64, String), KvRefusal> {
    let old = match current {
        None => 0,
        Some(bytes) => parse_counter(bytes).ok_or(KvRefusal::NotANumber)?,
    };
    let new = old.checked_add(delta).ok_or(KvRefusal::Overflow)?;
    let text = new.to_string();
    if text.len() > limits.value_bytes {
        return Err(KvRefusal::ValueTooLarge(limits.value_bytes));
    }
    Ok((new, text))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: KvLimits = KvLimits {
        value_bytes: 64,
        keys: 2,
    };

    #[test]
    fn counters_are_decimal_text_and_never_wrap() {
        assert_eq!(increment(None, 5, LIMITS), Ok((5, "5".into())));
        assert_eq!(increment(Some(b"-3"), 1, LIMITS), Ok((-2, "-2".into())));
        assert_eq!(increment(Some(b"x"), 1, LIMITS), Err(KvRefusal::NotANumber));
        assert_eq!(
            increment(Some(i64::MAX.to_string().as_bytes()), 1, LIMITS),
            Err(KvRefusal::Overflow)
        );
        let tiny = KvLimits {
            value_bytes: 1,
            keys: 2,
        };
        assert_eq!(
            increment(Some(b"9"), 1, tiny),
            Err(KvRefusal::ValueTooLarge(1))
        );
    }

    #[test]
    fn the_key_limit_counts_existing_keys() {
        assert_eq!(room_for_new_key(1, LIMITS), Ok(()));
        assert_eq!(room_for_new_key(2, LIMITS), Err(KvRefusal::TooManyKeys(2)));
    }
}
