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
    pub const ALL: Redactor = Redactor { email: true, phone: true, card: true };

    /// Parses a comma-separated list of `email`, `phone`, `card`; `None` on an unknown kind.
    pub fn from_kinds(raw: &str) -> Option<Redactor> {
        let mut r = Redactor { email: false, phone: false, card: false };
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
        let text = if self.email { mask_emails(text) } else { Cow::Borrowed(text) };
        let masked = if self.phone || self.card { mask_numbers(&text, self.phone, self.card) } else { Cow::Borrowed(&*text) };
        match (masked, text) {
            (Cow::Owned(s), _) => Some(s),
            (Cow::Borrowed(_), Cow::Owned(s)) => Some(s),
            (Cow::Borrowed(_), Cow::Borrowed(_)) => None,
        }
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
    domain.split('.').all(|label| !label.is_empty() && !label.starts_with('-'))
        && tld.len() >= 2
        && tld.bytes().all(|c| c.is_ascii_alphabetic())
}

/// Replaces phone numbers with `[phone]` and card numbers with `[card]`, each if enabled.
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
        let end = number_run_end(b, i);
        let kind = if b.get(end).is_some_and(|&c| is_word_byte(c)) { None } else { classify(&text[i..end]) };
        let mask = match kind {
            Some(NumberKind::Card) if cards => Some(CARD),
            Some(NumberKind::Phone) if phones => Some(PHONE),
            _ => None,
        };
        if let Some(mask) = mask {
            out.push_str(&text[copied..i]);
            out.push_str(mask);
            copied = end;
        }
        i = end;
    }
    if copied == 0 {
        return Cow::Borrowed(text);
    }
    out.push_str(&text[copied..]);
    Cow::Owned(out)
}

/// Where a run of digits and separators that starts at `start` ends: just after its last
/// digit. At most two separators (` `, `-`, `(`, `)`) may stand between digits.
fn number_run_end(b: &[u8], start: usize) -> usize {
    let mut j = start + usize::from(b[start] == b'+');
    let mut end = j;
    let mut separators = 0;
    while j < b.len() {
        match b[j] {
            c if c.is_ascii_digit() => {
                j += 1;
                end = j;
                separators = 0;
            }
            b' ' | b'-' | b'(' | b')' if separators < 2 => {
                j += 1;
                separators += 1;
            }
            _ => break,
        }
    }
    end
}

#[derive(Debug, PartialEq, Eq)]
enum NumberKind {
    Card,
    Phone,
}

/// Decides what a run of digits and separators is.
fn classify(run: &str) -> Option<NumberKind> {
    let digits: Vec<u8> = run.bytes().filter(u8::is_ascii_digit).map(|c| c - b'0').collect();
    let card_separators_only = run.bytes().all(|c| c.is_ascii_digit() || c == b' ' || c == b'-');
    if (13..=19).contains(&digits.len()) && card_separators_only && luhn_valid(&digits) {
        return Some(NumberKind::Card);
    }
    if (7..=15).contains(&digits.len()) && !is_date_shaped(run) {
        return Some(NumberKind::Phone);
    }
    None
}

/// `2025-01-31` or `31-01-2025`.
fn is_date_shaped(run: &str) -> bool {
    let groups: Vec<usize> = run.split('-').map(str::len).collect();
    run.bytes().all(|c| c.is_ascii_digit() || c == b'-') && (groups == [4, 2, 2] || groups == [2, 2, 4])
}

/// The Luhn checksum of card numbers.
pub fn luhn_valid(digits: &[u8]) -> bool {
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            let d = u32::from(d);
            if i % 2 == 1 {
                let doubled = d * 2;
                if doubled > 9 { doubled - 9 } else { doubled }
            } else {
                d
            }
        })
        .sum();
    !digits.is_empty() && sum % 10 == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redact(text: &str) -> String {
        Redactor::ALL.redact(text).unwrap_or_else(|| text.to_string())
    }

    #[test]
    fn emails() {
        assert_eq!(redact("write to jo.doe+tag@mail.example.co.uk."), "write to [email].");
        assert_eq!(redact("a@b.io,c@d.org"), "[email],[email]");
        assert_eq!(redact("über: jo@example.com!"), "über: [email]!");
        for kept in ["@handle", "me@localhost", "a@b.c", "x@-bad.com", "price @ 5.00", "a@@b.com x"] {
            assert_eq!(Redactor::ALL.redact(kept), None, "{kept}");
        }
    }

    #[test]
    fn cards_need_a_valid_checksum() {
        assert_eq!(redact("4111 1111 1111 1111"), "[card]");
        assert_eq!(redact("pay with 5500-0000-0000-0004 now"), "pay with [card] now");
        assert_eq!(redact("378282246310005"), "[card]"); // Amex, 15 digits
        // 16 digits failing Luhn: neither card nor phone (too long).
        assert_eq!(Redactor::ALL.redact("4111 1111 1111 1112"), None);
    }

    #[test]
    fn phones() {
        assert_eq!(redact("call +1 (555) 123-4567 today"), "call [phone] today");
        assert_eq!(redact("tel: 030 1234567"), "tel: [phone]");
        assert_eq!(redact("555-1234 or 555 9876."), "[phone] or [phone].");
    }

    #[test]
    fn ordinary_numbers_stay() {
        for kept in [
            "order 12345",
            "on 2025-01-31 at 10:00",
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
        assert_eq!(only_email.redact("jo@example.com 4111111111111111").unwrap(), "[email] 4111111111111111");
        let only_cards = Redactor::from_kinds(" card ").unwrap();
        assert_eq!(only_cards.redact("555-1234 4111111111111111").unwrap(), "555-1234 [card]");
        assert_eq!(Redactor::from_kinds("email,fax"), None);
    }

    #[test]
    fn luhn() {
        assert!(luhn_valid(&[7, 9, 9, 2, 7, 3, 9, 8, 7, 1, 3]));
        assert!(!luhn_valid(&[7, 9, 9, 2, 7, 3, 9, 8, 7, 1, 4]));
        assert!(!luhn_valid(&[]));
    }
}
