//! The scanners: pure functions from text to masked text.
//!
//! E-mail addresses are found around each `@`; numbers by one pass that takes a run of digits
//! and separators (starting outside any word) and classifies it as a card, a phone number or
//! neither. Working on bytes is sound because every byte the scanners stop at is ASCII.

use std::borrow::Cow;

const EMAIL: &str = "[email]";
const PHONE: &str = "[phone]";
const CARD: &str = "[card]";

/// Which kinds of personal data to mask.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Redactor {
    /// Mask e-mail addresses.
    pub email: bool,
    /// Mask phone numbers.
    pub phone: bool,
    /// Mask payment card numbers.
    pub card: bool,
}

impl Redactor {
    /// Masks every kind.
    pub const ALL: Redactor = Redactor {
        email: true,
        phone: true,
        card: true,
    };

    /// Parses a comma-separated list of `email`, `phone`, `card`; `None` on an unknown kind.
    pub fn from_kinds(raw: &str) -> Option<Redactor> {
        let mut r = Redactor {
            email: false,
            phone: false,
            card: false,
        };
        for kind in raw.split(',').map(str::trim).filter(|k| !k.is_empty()) {
            match kind.to_ascii_lowercase().as_str() {
                "email" => r.email = true,
                "phone" => r.phone = true,
                "card" => r.card = true,
                _ => return None,
            }
        }
        Some(r)
    }

    /// `text` with the selected kinds masked, or `None` if nothing was masked.
    pub fn redact(&self, text: &str) -> Option<String> {
        let emails_masked = if self.email {
            mask_emails(text)
        } else {
            Cow::Borrowed(text)
        };
        if !(self.phone || self.card) {
            return into_changed(emails_masked);
        }
        match mask_numbers(&emails_masked, self.phone, self.card) {
            Cow::Owned(s) => Some(s),
            Cow::Borrowed(_) => into_changed(emails_masked),
        }
    }
}

fn into_changed(text: Cow<'_, str>) -> Option<String> {
    match text {
        Cow::Owned(s) => Some(s),
        Cow::Borrowed(_) => None,
    }
}

fn is_local_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"._%+-".contains(&b)
}

fn is_domain_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'.' || b == b'-'
}

/// Non-ASCII bytes count as word bytes so that digits glued to letters of any script stay.
fn is_word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || !b.is_ascii()
}

/// Replaces `local@domain.tld` addresses with `[email]`.
pub fn mask_emails(text: &str) -> Cow<'_, str> {
    let b = text.as_bytes();
    let mut out = String::new();
    let mut copied = 0;
    let mut from = 0;
    while let Some(offset) = b[from..].iter().position(|&c| c == b'@') {
        let at = from + offset;
        let mut start = at;
        while start > copied && is_local_byte(b[start - 1]) {
            start -= 1;
        }
        while start < at && b[start] == b'.' {
            start += 1;
        }
        let mut end = at + 1;
        while end < b.len() && is_domain_byte(b[end]) {
            end += 1;
        }
        while end > at + 1 && matches!(b[end - 1], b'.' | b'-') {
            end -= 1;
        }
        if start < at && is_domain(&text[at + 1..end]) {
            // Masks are no longer than what they replace (barring a tiny address), so one
            // allocation of the text's size usually holds the whole result.
            if out.capacity() == 0 {
                out.reserve(text.len());
            }
            out.push_str(&text[copied..start]);
            out.push_str(EMAIL);
            copied = end;
            from = end;
        } else {
            from = at + 1;
        }
    }
    if copied == 0 {
        return Cow::Borrowed(text);
    }
    out.push_str(&text[copied..]);
    Cow::Owned(out)
}

/// `example.com`, `mail.example.co.uk`: dot-separated non-empty labels, alphabetic TLD of 2+.
fn is_domain(domain: &str) -> bool {
    let Some((_, tld)) = domain.rsplit_once('.') else {
        return false;
    };
    domain
        .split('.')
        .all(|label| !label.is_empty() && !label.starts_with('-'))
        && tld.len() >= 2
        && tld.bytes().all(|c| c.is_ascii_alphabetic())
}

/// Replaces phone numbers with `[phone]` and card numbers with `[card]`, each if enabled.
///
/// A run of up to 19 digits is one candidate. A longer run holds more than one number
/// (`555-1234 4111111111111111`), so its longest prefix of whole groups that is a card or a
/// phone number is masked first, and the scan goes on after it. A leading date (`2025-01-31`)
/// is never part of a number.
pub fn mask_numbers(text: &str, phones: bool, cards: bool) -> Cow<'_, str> {
    let b = text.as_bytes();
    let mut out = String::new();
    let mut copied = 0;
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let next_is_digit = b.get(i + 1).is_some_and(u8::is_ascii_digit);
        if !(c.is_ascii_digit() || (matches!(c, b'+' | b'(') && next_is_digit)) {
            // Skip whole words, so digits inside them (`ID12345678`, `0x1234abcd`) are not taken.
            i += 1;
            if is_word_byte(c) {
                while i < b.len() && is_word_byte(b[i]) {
                    i += 1;
                }
            }
            continue;
        }
        let groups = digit_groups(b, i);
        let last_end = groups.last().map_or(i, |g| g.1);
        if b.get(last_end).is_some_and(|&c| is_word_byte(c)) {
            // Digits glued to a word (`12345678abc`): not a number; skip the run and the word.
            i = last_end;
            continue;
        }
        if starts_with_date(text, &groups) {
            i = groups[2].1;
            continue;
        }
        let total_digits: usize = groups.iter().map(|g| g.1 - g.0).sum();
        let shortest = if total_digits <= 19 { groups.len() } else { 1 };
        let found = (shortest..=groups.len()).rev().find_map(|n| {
            let candidate = &text[i..groups[n - 1].1];
            match classify(candidate)? {
                NumberKind::Card if cards => Some((CARD, groups[n - 1].1)),
                NumberKind::Phone if phones => Some((PHONE, groups[n - 1].1)),
                _ => None,
            }
        });
        match found {
            Some((mask, end)) => {
                if out.capacity() == 0 {
                    out.reserve(text.len());
                }
                out.push_str(&text[copied..i]);
                out.push_str(mask);
                copied = end;
                i = end;
            }
            // Nothing here: a short run is done with; a long one may hold a number further on.
            None if total_digits <= 19 => i = last_end,
            None => i = groups[0].1,
        }
    }
    if copied == 0 {
        return Cow::Borrowed(text);
    }
    out.push_str(&text[copied..]);
    Cow::Owned(out)
}

/// The digit groups (start, end) of the run that starts at `start` (a digit, or `+`/`(`
/// before one). At most two separators (` `, `-`, `(`, `)`) may stand between groups.
fn digit_groups(b: &[u8], start: usize) -> Vec<(usize, usize)> {
    let mut groups = Vec::new();
    let mut j = start + usize::from(!b[start].is_ascii_digit());
    loop {
        let group_start = j;
        while j < b.len() && b[j].is_ascii_digit() {
            j += 1;
        }
        groups.push((group_start, j));
        let mut k = j;
        while k < b.len() && k - j < 2 && matches!(b[k], b' ' | b'-' | b'(' | b')') {
            k += 1;
        }
        if k == j || !b.get(k).is_some_and(u8::is_ascii_digit) {
            return groups;
        }
        j = k;
    }
}

/// Whether the first three groups read as a date, `2025-01-31` or `31-01-2025`.
fn starts_with_date(text: &str, groups: &[(usize, usize)]) -> bool {
    let [a, b, c, ..] = groups else {
        return false;
    };
    let dashes = &text[a.1..b.0] == "-" && &text[b.1..c.0] == "-";
    let lens = [a.1 - a.0, b.1 - b.0, c.1 - c.0];
    dashes && (lens == [4, 2, 2] || lens == [2, 2, 4])
}

#[derive(Debug, PartialEq, Eq)]
enum NumberKind {
    Card,
    Phone,
}

/// Decides what a candidate (digits and separators, maybe a leading `+` or `(`) is.
fn classify(candidate: &str) -> Option<NumberKind> {
    let digits = || {
        candidate
            .bytes()
            .filter(u8::is_ascii_digit)
            .map(|c| c - b'0')
    };
    let count = digits().count();
    let card_separators_only = candidate
        .bytes()
        .all(|c| c.is_ascii_digit() || c == b' ' || c == b'-');
    if (13..=19).contains(&count)
        && card_separators_only
        && luhn_sum(digits().rev()).is_multiple_of(10)
    {
        return Some(NumberKind::Card);
    }
    (7..=15).contains(&count).then_some(NumberKind::Phone)
}

/// The Luhn checksum of card numbers.
pub fn luhn_valid(digits: &[u8]) -> bool {
    !digits.is_empty() && luhn_sum(digits.iter().rev().copied()).is_multiple_of(10)
}

/// The Luhn sum of digits given last digit first.
fn luhn_sum(reversed: impl Iterator<Item = u8>) -> u32 {
    reversed
        .enumerate()
        .map(|(i, d)| {
            let d = u32::from(d);
            if i % 2 == 1 {
                let doubled = d * 2;
                if doubled > 9 { doubled - 9 } else { doubled }
            } else {
                d
            }
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redact(text: &str) -> String {
        Redactor::ALL
            .redact(text)
            .unwrap_or_else(|| text.to_string())
    }

    #[test]
    fn emails() {
        assert_eq!(
            redact("write to jo.doe+tag@mail.example.co.uk."),
            "write to [email]."
        );
        assert_eq!(redact("a@b.io,c@d.org"), "[email],[email]");
        assert_eq!(redact("über: jo@example.com!"), "über: [email]!");
        for kept in [
            "@handle",
            "me@localhost",
            "a@b.c",
            "x@-bad.com",
            "price @ 5.00",
            "a@@b.com x",
        ] {
            assert_eq!(Redactor::ALL.redact(kept), None, "{kept}");
        }
    }

    #[test]
    fn cards_need_a_valid_checksum() {
        assert_eq!(redact("4111 1111 1111 1111"), "[card]");
        assert_eq!(
            redact("pay with 5500-0000-0000-0004 now"),
            "pay with [card] now"
        );
        assert_eq!(redact("378282246310005"), "[card]"); // Amex, 15 digits
        // 16 digits failing Luhn: neither card nor phone (too long).
        assert_eq!(Redactor::ALL.redact("4111 1111 1111 1112"), None);
    }

    #[test]
    fn phones() {
        assert_eq!(redact("call +1 (555) 123-4567 today"), "call [phone] today");
        assert_eq!(redact("tel: 030 1234567"), "tel: [phone]");
        assert_eq!(redact("555-1234 or 555 9876."), "[phone] or [phone].");
        assert_eq!(redact("555-1234 4111111111111111"), "[phone] [card]");
        assert_eq!(redact("4111 1111 1111 1111 555-1234"), "[card] [phone]");
    }

    #[test]
    fn ordinary_numbers_stay() {
        for kept in [
            "order 12345",
            "on 2025-01-31 at 10:00",
            "on 31-01-2025 10 30",
            "12345678abc",
            "ID12345678",
            "hash a1b2c3d4e5f6g7",
            "pi is 3.14159",
            "1,000,000 users",
            "+",
            "(",
            "",
        ] {
            assert_eq!(Redactor::ALL.redact(kept), None, "{kept}");
        }
    }

    #[test]
    fn kinds_can_be_switched_off() {
        let only_email = Redactor::from_kinds("email").unwrap();
        assert_eq!(
            only_email
                .redact("jo@example.com 4111111111111111")
                .unwrap(),
            "[email] 4111111111111111"
        );
        let only_cards = Redactor::from_kinds(" card ").unwrap();
        assert_eq!(
            only_cards.redact("555-1234 4111111111111111").unwrap(),
            "555-1234 [card]"
        );
        assert_eq!(Redactor::from_kinds("email,fax"), None);
    }

    #[test]
    fn luhn() {
        assert!(luhn_valid(&[7, 9, 9, 2, 7, 3, 9, 8, 7, 1, 3]));
        assert!(!luhn_valid(&[7, 9, 9, 2, 7, 3, 9, 8, 7, 1, 4]));
        assert!(!luhn_valid(&[]));
    }
}
