//! Moving a whole installation between stores (`wasmhook export` / `wasmhook import`): which
//! tables are carried, their columns, and the secret fields to open on the way out and seal
//! on the way in. Both backends read and write through [`TABLES`], so what one exports the
//! other imports column for column; each backend only maps a [`Cell`] to its driver's types.
//!
//! What is carried, table by table (both schemas have the same tables and column names):
//! accounts, API keys (their SHA-256 only, never a key), plugins with every version (the
//! uploaded component's bytes, never a compiled artifact: the target compiles), the plugins'
//! key-value stores and log lines, subscriptions (signing secrets in clear in the dump, sealed
//! again with the target's keys), events, the conversation index, messages, deliveries
//! (pending ones stay due, with their claim state) and their attempts. Rows keep their `seq`,
//! so references between tables, list orders and cursors stay as they were.
//!
//! Not carried: `subscription_event_types` (derived: rebuilt from each subscription's
//! `event_types`), `console_sessions` (everyone signs in again), `encryption_state`,
//! PostgreSQL's `config_epoch` and the migrations' own table (the target's), and nothing of the
//! data dir besides components (the key file, the admin token and compiled plugins stay the
//! target's own: a version arrives with no artifact, and each node compiles it).

use std::collections::{BTreeMap, BTreeSet};

use super::StoreError;
use super::sealing::{open_config, seal_config, sub_place};
use crate::secrets::Keyring;

/// The type of a column, as both backends store it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A 64-bit integer.
    Int,
    /// Text.
    Text,
    /// Bytes (base64 in the dump).
    Bytes,
    /// A boolean (SQLite's 0/1).
    Bool,
}

/// One column of a carried table.
#[derive(Debug, Clone, Copy)]
pub struct Column {
    /// Its name in both schemas.
    pub name: &'static str,
    /// Its type.
    pub kind: Kind,
    /// Whether it may be null.
    pub nullable: bool,
}

const fn col(name: &'static str, kind: Kind) -> Column {
    Column {
        name,
        kind,
        nullable: false,
    }
}

const fn opt(name: &'static str, kind: Kind) -> Column {
    Column {
        name,
        kind,
        nullable: true,
    }
}

use Kind::{Bool, Bytes, Int, Text};

/// A carried table: its name (also the `type` of its lines in a dump), its columns and the
/// order its rows are read in.
#[derive(Debug)]
pub struct Table {
    /// The table's name.
    pub name: &'static str,
    /// Its columns, in the order of a [`Row`]'s cells.
    pub columns: &'static [Column],
    /// `ORDER BY` of the export: rows come in the order they were written where there is one.
    pub order_by: &'static str,
    /// Whether the table has an identity `seq` a backend must move past the imported rows.
    pub has_seq: bool,
}

/// The uploaded component's bytes: a column of `plugin_versions` in a dump, kept by each
/// backend its own way (SQLite: a file in the data dir; PostgreSQL: the `wasm` column).
pub const COMPONENT: &str = "wasm";

/// The carried tables, in an order that keeps every reference valid while importing.
pub static TABLES: &[Table] = &[
    Table {
        name: "accounts",
        columns: &[col("id", Text), col("name", Text), col("created_at", Int)],
        order_by: "created_at, id",
        has_seq: false,
    },
    Table {
        name: "api_keys",
        columns: &[
            col("id", Text),
            col("account_id", Text),
            col("key_hash", Bytes),
            col("prefix", Text),
            col("created_at", Int),
            opt("revoked_at", Int),
        ],
        order_by: "created_at, id",
        has_seq: false,
    },
    Table {
        name: "plugins",
        columns: &[
            col("seq", Int),
            col("id", Text),
            col("account_id", Text),
            col("name", Text),
            col("config", Text),
            col("allowed_hosts", Text),
            col("limits", Text),
            col("current_version", Int),
            col("created_at", Int),
            col("updated_at", Int),
            col("log_level", Text),
            col("secret_keys", Text),
            col("instances", Text),
        ],
        order_by: "seq",
        has_seq: true,
    },
    Table {
        name: "plugin_versions",
        columns: &[
            col("plugin_id", Text),
            col("version", Int),
            col("sha256", Text),
            col("size_bytes", Int),
            col("created_at", Int),
            col("status", Text),
            opt("failure", Text),
            opt(COMPONENT, Bytes),
        ],
        order_by: "plugin_id, version",
        has_seq: false,
    },
    Table {
        name: "plugin_kv",
        columns: &[
            col("plugin_id", Text),
            col("key", Text),
            col("value", Bytes),
        ],
        order_by: "plugin_id, key",
        has_seq: false,
    },
    Table {
        name: "plugin_logs",
        columns: &[
            col("seq", Int),
            col("plugin_id", Text),
            opt("event_id", Text),
            col("level", Text),
            col("message", Text),
            col("at", Int),
        ],
        order_by: "seq",
        has_seq: true,
    },
    Table {
        name: "subscriptions",
        columns: &[
            col("seq", Int),
            col("id", Text),
            col("account_id", Text),
            opt("url", Text),
            opt("plugin_id", Text),
            opt("transform_plugin_id", Text),
            col("description", Text),
            col("event_types", Text),
            col("headers", Text),
            col("format", Text),
            col("status", Text),
            opt("status_reason", Text),
            col("secret", Text),
            opt("previous_secret", Text),
            opt("previous_secret_expires_at", Int),
            col("verify", Bool),
            opt("verification_token", Text),
            opt("rate_limit_per_second", Int),
            opt("airy_api_secret", Text),
            opt("failing_since", Int),
            col("created_at", Int),
            col("updated_at", Int),
            opt("max_in_flight", Int),
            col("ordering", Text),
            col("breaker_failures", Int),
            opt("breaker_until", Int),
            col("breaker_trips", Int),
            opt("listen_expires_at", Int),
        ],
        order_by: "seq",
        has_seq: true,
    },
    Table {
        name: "events",
        columns: &[
            col("seq", Int),
            col("id", Text),
            col("account_id", Text),
            col("type", Text),
            col("payload", Text),
            col("occurred_at", Text),
            col("received_at", Int),
            opt("idempotency_key", Text),
            opt("body_hash", Bytes),
            opt("cause_plugin_id", Text),
            opt("cause_event_id", Text),
            col("cause_depth", Int),
        ],
        order_by: "seq",
        has_seq: true,
    },
    Table {
        name: "conversations",
        columns: &[
            col("account_id", Text),
            col("conversation_id", Text),
            opt("customer_id", Text),
            opt("source", Text),
            col("updated_at", Int),
        ],
        order_by: "account_id, conversation_id",
        has_seq: false,
    },
    Table {
        name: "messages",
        columns: &[
            col("seq", Int),
            col("id", Text),
            col("account_id", Text),
            col("conversation_id", Text),
            col("text", Text),
            col("sender_id", Text),
            col("sender_type", Text),
            col("sent_at", Int),
            col("event_seq", Int),
        ],
        order_by: "seq",
        has_seq: true,
    },
    Table {
        name: "deliveries",
        columns: &[
            col("seq", Int),
            col("id", Text),
            col("account_id", Text),
            col("event_seq", Int),
            col("subscription_seq", Int),
            col("status", Text),
            col("attempts", Int),
            opt("next_attempt_at", Int),
            opt("lease_until", Int),
            opt("last_error", Text),
            col("created_at", Int),
            col("updated_at", Int),
            opt("ordering_key", Text),
            opt("claim_token", Int),
        ],
        order_by: "seq",
        has_seq: true,
    },
    Table {
        name: "attempts",
        columns: &[
            col("seq", Int),
            col("delivery_seq", Int),
            col("attempted_at", Int),
            col("duration_ms", Int),
            opt("status_code", Int),
            opt("error_kind", Text),
            opt("error_message", Text),
            opt("response_body", Text),
            opt("request_url", Text),
            opt("request_headers", Text),
            opt("request_body", Text),
            opt("request_body_bytes", Int),
        ],
        order_by: "seq",
        has_seq: true,
    },
];

/// The carried table called `name`.
pub fn table(name: &str) -> Option<&'static Table> {
    TABLES.iter().find(|t| t.name == name)
}

/// One value of a row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cell {
    /// SQL NULL.
    Null,
    /// An integer.
    Int(i64),
    /// Text.
    Text(String),
    /// Bytes.
    Bytes(Vec<u8>),
    /// A boolean.
    Bool(bool),
}

/// One row of a carried table, its cells in the table's column order. Secret fields are in
/// clear: a row leaves a backend opened and enters one to be sealed.
#[derive(Debug, Clone)]
pub struct Row {
    /// Its table.
    pub table: &'static Table,
    /// Its values, one per column.
    pub cells: Vec<Cell>,
}

impl PartialEq for Row {
    fn eq(&self, other: &Row) -> bool {
        self.table.name == other.table.name && self.cells == other.cells
    }
}

impl Row {
    /// The cell of column `name` (which the table has).
    pub fn get(&self, name: &str) -> &Cell {
        let at = self
            .table
            .columns
            .iter()
            .position(|c| c.name == name)
            .expect("a column of the table");
        &self.cells[at]
    }

    /// The text of column `name`, if it holds text.
    pub fn text(&self, name: &str) -> Option<&str> {
        match self.get(name) {
            Cell::Text(t) => Some(t),
            _ => None,
        }
    }

    /// The integer of column `name`, if it holds one.
    pub fn int(&self, name: &str) -> Option<i64> {
        match self.get(name) {
            Cell::Int(v) => Some(*v),
            _ => None,
        }
    }

    fn set(&mut self, name: &str, cell: Cell) {
        let at = self
            .table
            .columns
            .iter()
            .position(|c| c.name == name)
            .expect("a column of the table");
        self.cells[at] = cell;
    }
}

/// Names the file of a version's uploaded component (plugin id, version) in the importing
/// node's data dir, which the caller writes and the version's row names (`wasm_path`).
pub type ComponentPaths = std::sync::Arc<dyn Fn(&str, i64) -> String + Send + Sync>;

/// What an import reads: rows, then the end of the input. A store commits an import only
/// once it has seen [`ImportItem::End`]: input that stops early (a reader that failed, a dump
/// cut short) leaves the target as it was.
#[derive(Debug)]
pub enum ImportItem {
    /// A row, with the number of the line it came from (named in errors).
    Row(u64, Row),
    /// Everything was read: commit.
    End,
}

/// Why an import wrote nothing.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The target already holds data.
    #[error(
        "the target database is not empty (its {0} table has rows): import only into a new, \
         empty database; nothing was written"
    )]
    NotEmpty(&'static str),
    /// A row could not be stored (a broken reference, a duplicate, a malformed value).
    #[error("line {line}: {table}: {source}; nothing was written")]
    Row {
        /// The line it came from.
        line: u64,
        /// Its table.
        table: &'static str,
        /// What the store said.
        #[source]
        source: StoreError,
    },
    /// The input ended before its end was confirmed.
    #[error("the input ended early; nothing was written")]
    Incomplete,
    /// The target failed otherwise.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Opens the secret fields of a row as read from a backend: subscriptions' signing and Airy
/// secrets, plugins' secret config values.
pub(crate) fn open_row(keys: &Keyring, row: &mut Row) -> Result<(), StoreError> {
    match row.table.name {
        "subscriptions" => {
            let id = row.text("id").unwrap_or_default().to_string();
            for field in super::sealing::SUBSCRIPTION_SECRET_FIELDS {
                if let Cell::Text(sealed) = row.get(field) {
                    let clear = keys.open(sealed, sub_place(&id, field))?;
                    row.set(field, Cell::Text(clear));
                }
            }
        }
        "plugins" => {
            let (id, mut config, secret_keys) = plugin_config(row)?;
            open_config(keys, &id, &mut config, &secret_keys)?;
            row.set("config", Cell::Text(json(&config)));
        }
        _ => {}
    }
    Ok(())
}

/// Seals the secret fields of a row about to be written (see [`open_row`]).
pub(crate) fn seal_row(keys: &Keyring, row: &mut Row) -> Result<(), StoreError> {
    match row.table.name {
        "subscriptions" => {
            let id = row.text("id").unwrap_or_default().to_string();
            for field in super::sealing::SUBSCRIPTION_SECRET_FIELDS {
                if let Cell::Text(clear) = row.get(field) {
                    let sealed = keys.seal(clear, sub_place(&id, field));
                    row.set(field, Cell::Text(sealed));
                }
            }
        }
        "plugins" => {
            let (id, config, secret_keys) = plugin_config(row)?;
            let sealed = seal_config(keys, &id, &config, &secret_keys);
            row.set("config", Cell::Text(json(&sealed)));
        }
        _ => {}
    }
    Ok(())
}

type PluginConfig = (String, BTreeMap<String, String>, BTreeSet<String>);

fn plugin_config(row: &Row) -> Result<PluginConfig, StoreError> {
    let id = row.text("id").unwrap_or_default().to_string();
    let config = serde_json::from_str(row.text("config").unwrap_or_default())
        .map_err(|e| StoreError::Invalid(format!("config is not a JSON object of strings: {e}")))?;
    let secret_keys =
        serde_json::from_str(row.text("secret_keys").unwrap_or_default()).map_err(|e| {
            StoreError::Invalid(format!("secret_keys is not a JSON array of strings: {e}"))
        })?;
    Ok((id, config, secret_keys))
}

/// The event types a subscription row matches, for the index ingest reads
/// (`subscription_event_types`), which an import rebuilds rather than carries.
pub(crate) fn event_types(row: &Row) -> Result<Vec<String>, StoreError> {
    serde_json::from_str(row.text("event_types").unwrap_or_default()).map_err(|e| {
        StoreError::Invalid(format!("event_types is not a JSON array of strings: {e}"))
    })
}

fn json(v: &impl serde::Serialize) -> String {
    serde_json::to_string(v).expect("plain data serializes")
}

/// `SELECT` list of a table for a backend: each column's name, except those `rename` maps
/// (the component, SQLite's `rowid`).
pub(crate) fn select_list(t: &Table, rename: impl Fn(&str) -> Option<&'static str>) -> String {
    t.columns
        .iter()
        .map(|c| rename(c.name).unwrap_or(c.name))
        .collect::<Vec<_>>()
        .join(", ")
}
