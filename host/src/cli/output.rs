//! How results are shown: aligned tables (and short lines) for people, the API's JSON for
//! scripts (`-o json`, pretty-printed, exactly the API's shape).

use clap::ValueEnum;
use serde::Serialize;

/// The output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum Output {
    /// Human-readable tables and lines.
    #[default]
    Table,
    /// JSON, as the API answers it.
    Json,
}

/// Prints `value` as pretty JSON on stdout.
pub fn print_json<T: Serialize + ?Sized>(value: &T) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).expect("API types serialize")
    );
}

/// A table with a header row; columns are as wide as their widest cell.
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column names.
    pub fn new<const N: usize>(header: [&str; N]) -> Table {
        Table {
            header: header.iter().map(|h| h.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row.
    pub fn row<const N: usize>(&mut self, cells: [String; N]) {
        debug_assert_eq!(N, self.header.len());
        self.rows.push(cells.into());
    }

    /// The table as text, one line per row, a newline after each.
    pub fn render(&self) -> String {
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let mut out = String::new();
        for row in std::iter::once(&self.header).chain(&self.rows) {
            let mut line = String::new();
            for (i, (cell, w)) in row.iter().zip(&widths).enumerate() {
                if i + 1 == row.len() {
                    line.push_str(cell);
                } else {
                    line.push_str(&format!("{cell:<w$}  "));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }

    /// Prints the table, or a note when it has no rows.
    pub fn print(&self, empty: &str) {
        if self.rows.is_empty() {
            println!("{empty}");
        } else {
            print!("{}", self.render());
        }
    }
}

/// `-` for a missing value.
pub fn or_dash<T: ToString>(v: Option<T>) -> String {
    v.map(|v| v.to_string()).unwrap_or_else(|| "-".into())
}

/// A time for tables: RFC 3339 to the second.
pub fn time(ms: i64) -> String {
    let mut t = crate::clock::rfc3339(ms);
    // "2026-01-01T12:00:00.123Z" → "2026-01-01T12:00:00Z": tables need no milliseconds.
    if let Some(dot) = t.find('.') {
        t.replace_range(dot..t.len() - 1, "");
    }
    t
}

/// Cuts `text` to `max` characters, marking the cut.
pub fn cut(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let mut s: String = text.chars().take(max.saturating_sub(1)).collect();
    s.push('…');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_columns() {
        let mut t = Table::new(["ID", "STATUS"]);
        t.row(["sub_1".into(), "active".into()]);
        t.row(["sub_long".into(), "-".into()]);
        assert_eq!(
            t.render(),
            "ID        STATUS\nsub_1     active\nsub_long  -\n"
        );
    }

    #[test]
    fn times_and_cuts() {
        assert_eq!(time(0), "1970-01-01T00:00:00Z");
        assert_eq!(cut("abcdef", 4), "abc…");
        assert_eq!(cut("abc", 4), "abc");
    }
}
