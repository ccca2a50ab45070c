//! `wasmhook export` and `wasmhook import`: moving an installation from one store to another
//! (SQLite to PostgreSQL, and back), run on the server's machine with the servers stopped.
//!
//! Owns the dump's format and the two commands; the store reads and writes the rows
//! (`store::transfer` says which tables and columns are carried, and why the others are not).
//!
//! **The dump** is JSON lines. Line 1 is the header:
//! `{"format": "wasmhook-dump", "version": 1, "source": {"backend": "sqlite", "schema_version": 10}, ...}`.
//! Every other line is one row, `{"table": "<table>", "<column>": <value>, ...}`: integers,
//! text and booleans as JSON, bytes (key hashes, key-value values, plugin components) in
//! base64, NULL as null. The last line is `{"end": true, "rows": <count>}`: a dump without
//! it (an export that failed halfway, a copy cut short) is refused as a whole. Signing
//! secrets and secret plugin settings are **in clear** in a dump: the export opens them with
//! the source's key file and the import seals them with the target's.
//!
//! **The import** refuses a target that holds data, and writes nothing unless every line is
//! read and stored (one transaction): a bad line is an error naming its number.

use std::collections::BTreeSet;
use std::io::{BufRead, BufWriter, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, anyhow, bail};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use clap::Args;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use crate::secrets::Keyring;
use crate::store::transfer::{
    COMPONENT, Cell, ComponentPaths, ImportItem, Kind, Row, Table, table,
};
use crate::store::{Store, SyncMode, postgres::PgOptions};

/// The dump format's name, in the header.
const FORMAT: &str = "wasmhook-dump";
/// The dump format's version: a reader refuses versions it does not know.
const VERSION: u64 = 1;
/// The key of a row's table (not `type`: `events` has a column of that name).
const TABLE: &str = "table";
/// The key that marks the last line.
const END: &str = "end";
/// Rows in flight between the store and the dump, either way: memory stays bounded whatever
/// the number of events.
const IN_FLIGHT: usize = 256;

/// Where an installation is: the same options as `serve`. Without `--database-url` it is the
/// SQLite database in `--data-dir`; with it, the PostgreSQL database, and the data dir holds
/// only the node's files (its key file).
#[derive(Debug, Args)]
pub struct StoreArgs {
    /// The data dir: the SQLite database, else the node's files; the key file unless
    /// `--encryption-key-file`.
    #[arg(long, default_value = "./wasmhook-data")]
    pub data_dir: PathBuf,
    /// A PostgreSQL database (`postgres://user:password@host:port/db`) instead of SQLite.
    #[arg(long, hide_env_values = true)]
    pub database_url: Option<String>,
    /// The key file that encrypts secrets at rest, when the server uses one outside the data dir.
    #[arg(long, env = "WASMHOOK_ENCRYPTION_KEY_FILE")]
    pub encryption_key_file: Option<PathBuf>,
}

impl StoreArgs {
    fn key_file(&self) -> PathBuf {
        crate::key_file_path(&self.data_dir, self.encryption_key_file.as_deref())
    }

    fn describe(&self) -> String {
        match &self.database_url {
            Some(_) => "the PostgreSQL database (--database-url)".to_string(),
            None => format!("the SQLite database in {}", self.data_dir.display()),
        }
    }

    async fn open(&self, keys: Keyring) -> anyhow::Result<Store> {
        let keys = Arc::new(keys);
        let store = match &self.database_url {
            Some(url) => {
                let options = PgOptions {
                    pool_size: 2,
                    ..Default::default()
                };
                Store::connect(url, keys, options).await
            }
            None => {
                let dir = self.data_dir.clone();
                tokio::task::spawn_blocking(move || Store::open(&dir, SyncMode::Full, keys)).await?
            }
        };
        store.with_context(|| format!("opening {}", self.describe()))
    }
}

/// `wasmhook export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// The installation to export (stop its server first).
    #[command(flatten)]
    pub from: StoreArgs,
    /// Write the dump to this file (created with mode 0600) instead of standard output.
    #[arg(long, short = 'f')]
    pub file: Option<PathBuf>,
}

/// `wasmhook import`.
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The new installation to fill: it must hold no data yet.
    #[command(flatten)]
    pub to: StoreArgs,
    /// Read the dump from this file instead of standard input.
    #[arg(long, short = 'f')]
    pub file: Option<PathBuf>,
}

/// Runs `wasmhook export`: the whole installation as a dump, on standard output or a file.
pub async fn export(args: ExportArgs) -> anyhow::Result<()> {
    let from = &args.from;
    if from.database_url.is_none() && !Store::sqlite_file(&from.data_dir).exists() {
        bail!(
            "no wasmhook database in {} (expected {}): give the server's --data-dir",
            from.data_dir.display(),
            Store::sqlite_file(&from.data_dir).display()
        );
    }
    // The source's own key file: never a new one, which would open nothing.
    let keys = Keyring::load(&from.key_file())?;
    let store = from.open(keys).await?;
    let out: Box<dyn Write> = match &args.file {
        Some(path) => Box::new(private_file(path)?),
        None if std::io::stdout().is_terminal() => bail!(
            "standard output is a terminal, and the dump holds secrets in clear: pipe it into \
             `wasmhook import`, redirect it to a file, or give --file"
        ),
        None => Box::new(std::io::stdout().lock()),
    };
    let written = write_dump(&store, BufWriter::new(out)).await;
    store.close().await;
    let rows = written?;
    eprintln!(
        "Exported {rows} rows from {}. The dump holds signing secrets in clear: keep it private \
         and delete it once imported.",
        from.describe()
    );
    Ok(())
}

/// A new file readable by its owner only (the dump holds secrets in clear).
fn private_file(path: &Path) -> anyhow::Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options
        .open(path)
        .with_context(|| format!("creating {} (it must not exist yet)", path.display()))
}

async fn write_dump(store: &Store, mut out: impl Write) -> anyhow::Result<u64> {
    let header = serde_json::json!({
        "format": FORMAT,
        "version": VERSION,
        "source": {
            "backend": store.backend_name(),
            "schema_version": store.schema_version().await?,
        },
        "wasmhook_version": env!("CARGO_PKG_VERSION"),
        "exported_at": crate::clock::rfc3339(crate::clock::now_ms()),
    });
    writeln!(out, "{header}")?;
    let (tx, mut rx) = mpsc::channel(IN_FLIGHT);
    let reader = {
        let store = store.clone();
        tokio::spawn(async move { store.export(tx).await })
    };
    let mut rows = 0u64;
    while let Some(row) = rx.recv().await {
        serde_json::to_writer(&mut out, &line(&row))?;
        out.write_all(b"\n")?;
        rows += 1;
    }
    // A failed read leaves the dump without its last line, so no import accepts it.
    reader.await?.context("reading the source database")?;
    writeln!(out, "{}", serde_json::json!({END: true, "rows": rows}))?;
    out.flush().context("writing the dump")?;
    Ok(rows)
}

/// A row as a line of the dump.
fn line(row: &Row) -> Value {
    let mut object = Map::new();
    object.insert(TABLE.into(), Value::String(row.table.name.into()));
    for (column, cell) in row.table.columns.iter().zip(&row.cells) {
        let value = match cell {
            Cell::Null => Value::Null,
            Cell::Int(v) => Value::from(*v),
            Cell::Text(t) => Value::String(t.clone()),
            Cell::Bytes(b) => Value::String(STANDARD.encode(b)),
            Cell::Bool(v) => Value::Bool(*v),
        };
        object.insert(column.name.into(), value);
    }
    Value::Object(object)
}

/// Runs `wasmhook import`: a dump from standard input or a file into a new installation.
pub async fn import(args: ImportArgs) -> anyhow::Result<()> {
    let to = &args.to;
    let (keys, generated) = target_keys(to)?;
    let key_file = keys.path().to_path_buf();
    let store = to.open(keys).await?;
    let input: Box<dyn BufRead> = match &args.file {
        Some(path) => Box::new(std::io::BufReader::new(
            std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?,
        )),
        None if std::io::stdin().is_terminal() => bail!(
            "no dump on standard input (it is a terminal): pipe `wasmhook export` into this \
             command, or give --file"
        ),
        None => Box::new(std::io::stdin().lock()),
    };
    // PostgreSQL keeps components in the database; SQLite in files of the data dir.
    let plugins_dir = to
        .database_url
        .is_none()
        .then(|| to.data_dir.join("plugins"));
    let result = read_dump(&store, input, plugins_dir.as_deref()).await;
    store.close().await;
    match result {
        Ok((rows, source)) => {
            eprintln!(
                "Imported {rows} rows from a {source} dump into {}. Secrets are encrypted with the \
                 key file {}{}: start the server{} with it.",
                to.describe(),
                key_file.display(),
                if generated {
                    " (generated now: back it up)"
                } else {
                    ""
                },
                if to.database_url.is_some() { "s" } else { "" },
            );
            Ok(())
        }
        Err(e) => {
            if generated {
                // Nothing was written under it.
                let _ = std::fs::remove_file(&key_file);
            }
            Err(e)
        }
    }
}

/// The target's key file, as `serve` would use it: a given `--encryption-key-file` must
/// exist; the data dir's is generated when missing (a new installation).
fn target_keys(to: &StoreArgs) -> anyhow::Result<(Keyring, bool)> {
    let path = to.key_file();
    if to.encryption_key_file.is_some() || path.exists() {
        return Ok((Keyring::load(&path)?, false));
    }
    std::fs::create_dir_all(&to.data_dir)
        .with_context(|| format!("creating the data dir {}", to.data_dir.display()))?;
    Ok((Keyring::create(&path)?, true))
}

/// Reads a dump into `store`: returns the number of rows and the source's description.
async fn read_dump(
    store: &Store,
    input: Box<dyn BufRead>,
    plugins_dir: Option<&Path>,
) -> anyhow::Result<(u64, String)> {
    let dir = plugins_dir.map(Path::to_path_buf);
    let paths: ComponentPaths = Arc::new(move |plugin_id, version| {
        dir.as_ref().map_or_else(String::new, |dir| {
            version_files(dir, plugin_id, version)
                .0
                .display()
                .to_string()
        })
    });
    let (tx, rx) = mpsc::channel(IN_FLIGHT);
    let writer = {
        let store = store.clone();
        let paths = paths.clone();
        tokio::spawn(async move { store.import(rx, paths).await })
    };
    let mut components = Components::new(plugins_dir);
    let fed = feed(input, &tx, &mut components).await;
    drop(tx);
    let written = writer.await?;
    let outcome = match (fed, written) {
        // What went wrong reading explains the store's "ended early".
        (Err(e), _) => Err(e),
        (Ok(_), Err(e)) => Err(anyhow!(e)),
        (Ok(done), Ok(())) => Ok(done),
    };
    if outcome.is_err() {
        components.remove();
    }
    outcome
}

fn version_files(dir: &Path, plugin_id: &str, version: i64) -> (PathBuf, PathBuf) {
    crate::plugins::version_files(dir, plugin_id, u32::try_from(version).unwrap_or(0))
}

/// The component files an import wrote (into `dir`, for a store that keeps them in files),
/// removed again if it fails.
struct Components {
    dir: Option<PathBuf>,
    created: BTreeSet<PathBuf>,
}

impl Components {
    fn new(dir: Option<&Path>) -> Components {
        Components {
            dir: dir.map(Path::to_path_buf),
            created: BTreeSet::new(),
        }
    }

    /// Writes a version's component where the target's runtime looks for it, if in a file.
    fn write(&mut self, plugin_id: &str, version: i64, bytes: &[u8]) -> anyhow::Result<()> {
        // A path component, not a path: the id comes from the dump.
        let plain = !plugin_id.is_empty()
            && plugin_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !plain {
            bail!("plugin_id {plugin_id:?} is not a plugin id");
        }
        let Some(dir) = &self.dir else {
            return Ok(());
        };
        let (wasm, _) = version_files(dir, plugin_id, version);
        let parent = wasm.parent().expect("a plugin dir").to_path_buf();
        if !parent.exists() {
            std::fs::create_dir_all(&parent)
                .with_context(|| format!("creating {}", parent.display()))?;
            self.created.insert(parent);
        }
        std::fs::write(&wasm, bytes).with_context(|| format!("writing {}", wasm.display()))
    }

    fn remove(&self) {
        for dir in &self.created {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Parses the dump line by line and hands each row to the store; ends with
/// [`ImportItem::End`] only when the dump's last line was read and its count matches.
async fn feed(
    input: Box<dyn BufRead>,
    tx: &mpsc::Sender<ImportItem>,
    components: &mut Components,
) -> anyhow::Result<(u64, String)> {
    let mut lines = input.lines();
    let header = match lines.next() {
        Some(line) => line.context("line 1")?,
        None => bail!("the input is empty: expected a dump written by `wasmhook export`"),
    };
    let source = check_header(&header).map_err(|e| anyhow!("line 1: {e}"))?;
    let mut rows = 0u64;
    let mut number = 1u64;
    let mut ended = false;
    for text in lines {
        number += 1;
        let text = text.with_context(|| format!("line {number}"))?;
        if ended {
            if text.trim().is_empty() {
                continue;
            }
            bail!("line {number}: text after the dump's last line");
        }
        let value: Value = serde_json::from_str(&text)
            .map_err(|e| anyhow!("line {number}: not a JSON object: {e}"))?;
        if value.get(END) == Some(&Value::Bool(true)) {
            let count = value.get("rows").and_then(Value::as_u64);
            if count != Some(rows) {
                bail!(
                    "line {number}: the dump says it has {} rows, but {rows} were read",
                    count.map_or("an unknown number of".to_string(), |c| c.to_string())
                );
            }
            ended = true;
            continue;
        }
        let row = parse_row(value).map_err(|e| anyhow!("line {number}: {e}"))?;
        if row.table.name == "plugin_versions" {
            write_component(&row, components).map_err(|e| anyhow!("line {number}: {e:#}"))?;
        }
        rows += 1;
        if tx.send(ImportItem::Row(number, row)).await.is_err() {
            // The store stopped (a target with data, a refused row): it says why.
            return Ok((rows, source));
        }
    }
    if !ended {
        bail!(
            "the dump ends at line {number} without its last line ({{\"end\": true, ...}}): \
             it was cut short or its export failed"
        );
    }
    let _ = tx.send(ImportItem::End).await;
    Ok((rows, source))
}

fn check_header(text: &str) -> Result<String, String> {
    let header: Value = serde_json::from_str(text)
        .map_err(|_| "not a dump written by `wasmhook export` (no JSON header)".to_string())?;
    if header.get("format").and_then(Value::as_str) != Some(FORMAT) {
        return Err(format!(
            "not a dump written by `wasmhook export` (expected \"format\": \"{FORMAT}\")"
        ));
    }
    match header.get("version").and_then(Value::as_u64) {
        Some(VERSION) => {}
        other => {
            return Err(format!(
                "dump format version {other:?} is not one this wasmhook reads ({VERSION}): \
                 import with the wasmhook version that exported it, or a newer one"
            ));
        }
    }
    let source = &header["source"];
    Ok(format!(
        "{} (schema version {})",
        source["backend"].as_str().unwrap_or("unknown"),
        source["schema_version"]
    ))
}

/// A line of the dump as a row of its table: every column present with a value of its type.
fn parse_row(value: Value) -> Result<Row, String> {
    let Value::Object(mut object) = value else {
        return Err("not a JSON object".into());
    };
    let name = match object.remove(TABLE) {
        Some(Value::String(name)) => name,
        _ => return Err(format!("no \"{TABLE}\": not a row")),
    };
    let t: &'static Table =
        table(&name).ok_or_else(|| format!("unknown table {name:?} (not one a dump carries)"))?;
    let mut cells = Vec::with_capacity(t.columns.len());
    for column in t.columns {
        let value = object
            .remove(column.name)
            .ok_or_else(|| format!("{name}: no {:?}", column.name))?;
        let cell = match (value, column.kind) {
            (Value::Null, _) if column.nullable => Cell::Null,
            (Value::Number(n), Kind::Int) if n.is_i64() => Cell::Int(n.as_i64().unwrap_or(0)),
            (Value::String(s), Kind::Text) => Cell::Text(s),
            (Value::String(s), Kind::Bytes) => Cell::Bytes(
                STANDARD
                    .decode(&s)
                    .map_err(|e| format!("{name}: {}: not base64: {e}", column.name))?,
            ),
            (Value::Bool(b), Kind::Bool) => Cell::Bool(b),
            (other, kind) => {
                let expected = match kind {
                    Kind::Int => "an integer",
                    Kind::Text => "a string",
                    Kind::Bytes => "a base64 string",
                    Kind::Bool => "true or false",
                };
                let null = if column.nullable { " or null" } else { "" };
                return Err(format!(
                    "{name}: {}: expected {expected}{null}, got {other}",
                    column.name
                ));
            }
        };
        cells.push(cell);
    }
    if let Some(extra) = object.keys().next() {
        return Err(format!("{name}: unknown column {extra:?}"));
    }
    Ok(Row { table: t, cells })
}

/// Writes a version's component into the target's data dir, after checking it is the
/// component its row describes.
fn write_component(row: &Row, components: &mut Components) -> anyhow::Result<()> {
    let Cell::Bytes(bytes) = row.get(COMPONENT) else {
        // A failed version keeps no component.
        return Ok(());
    };
    let sha = hex::encode(Sha256::digest(bytes));
    if Some(sha.as_str()) != row.text("sha256") {
        bail!("plugin_versions: the component's SHA-256 is {sha}, not its row's sha256");
    }
    let version = row.int("version").unwrap_or_default();
    if u32::try_from(version).map_or(true, |v| v == 0) {
        bail!("plugin_versions: version {version} is not a version number");
    }
    components.write(row.text("plugin_id").unwrap_or_default(), version, bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn account_line() -> Value {
        json!({"table": "accounts", "id": "acc_1", "name": "Acme", "created_at": 5})
    }

    #[test]
    fn a_row_reads_back_as_the_line_it_was_written_as() {
        let row = parse_row(account_line()).unwrap();
        assert_eq!(row.table.name, "accounts");
        assert_eq!(line(&row), account_line());
        let key = json!({"table": "api_keys", "id": "key_1", "account_id": "acc_1",
            "key_hash": STANDARD.encode([7u8; 32]), "prefix": "whk_a", "created_at": 1,
            "revoked_at": null});
        let row = parse_row(key.clone()).unwrap();
        assert_eq!(row.get("key_hash"), &Cell::Bytes(vec![7; 32]));
        assert_eq!(line(&row), key);
    }

    #[test]
    fn a_bad_row_names_its_table_and_column() {
        let cases = [
            (json!([1]), "not a JSON object"),
            (json!({"id": "x"}), "no \"table\""),
            (json!({"table": "sessions"}), "unknown table \"sessions\""),
            (
                json!({"table": "accounts", "id": "a", "name": "n"}),
                "accounts: no \"created_at\"",
            ),
            (
                json!({"table": "accounts", "id": "a", "name": "n", "created_at": "now"}),
                "accounts: created_at: expected an integer, got \"now\"",
            ),
            (
                json!({"table": "accounts", "id": "a", "name": null, "created_at": 1}),
                "accounts: name: expected a string, got null",
            ),
            (
                json!({"table": "accounts", "id": "a", "name": "n", "created_at": 1, "x": 1}),
                "accounts: unknown column \"x\"",
            ),
            (
                json!({"table": "plugin_kv", "plugin_id": "p", "key": "k", "value": "%%"}),
                "plugin_kv: value: not base64",
            ),
        ];
        for (value, expected) in cases {
            let e = parse_row(value.clone()).unwrap_err();
            assert!(e.contains(expected), "{value}: {e}");
        }
    }

    #[test]
    fn only_a_dump_of_a_known_version_is_read() {
        let ok = json!({"format": FORMAT, "version": VERSION,
            "source": {"backend": "sqlite", "schema_version": 10}});
        assert_eq!(
            check_header(&ok.to_string()).unwrap(),
            "sqlite (schema version 10)"
        );
        let newer = json!({"format": FORMAT, "version": 2});
        assert!(
            check_header(&newer.to_string())
                .unwrap_err()
                .contains("version")
        );
        assert!(
            check_header("{\"table\": \"accounts\"}")
                .unwrap_err()
                .contains("not a dump")
        );
        assert!(check_header("PGDMP").unwrap_err().contains("not a dump"));
    }

    /// Feeds `text` as a dump; returns what reached the store and how reading ended.
    async fn fed(text: &str) -> (Vec<u64>, bool, anyhow::Result<(u64, String)>) {
        let dir = tempfile::tempdir().unwrap();
        let (tx, mut rx) = mpsc::channel(16);
        let mut components = Components::new(Some(dir.path()));
        let input: Box<dyn BufRead> = Box::new(std::io::Cursor::new(text.to_string()));
        let result = feed(input, &tx, &mut components).await;
        drop(tx);
        let (mut lines, mut ended) = (Vec::new(), false);
        while let Some(item) = rx.recv().await {
            match item {
                ImportItem::Row(n, _) => lines.push(n),
                ImportItem::End => ended = true,
            }
        }
        (lines, ended, result)
    }

    #[tokio::test]
    async fn the_store_commits_only_a_whole_dump_and_errors_name_the_line() {
        let header = json!({"format": FORMAT, "version": VERSION, "source": {}}).to_string();
        let row = account_line().to_string();
        let end = |n: u64| json!({"end": true, "rows": n}).to_string();

        let (lines, ended, result) = fed(&[&*header, &row, &end(1)].join("\n")).await;
        assert_eq!((lines, ended), (vec![2], true));
        assert_eq!(result.unwrap().0, 1);

        // Cut short: the rows before reach the store, the end never does.
        let (_, ended, result) = fed(&[&*header, &row].join("\n")).await;
        assert!(!ended);
        assert!(result.unwrap_err().to_string().contains("cut short"));

        // A count that does not match, text after the end, a bad line in the middle.
        let (_, ended, result) = fed(&[&*header, &row, &end(2)].join("\n")).await;
        assert!(!ended);
        assert!(result.unwrap_err().to_string().starts_with("line 3: "));
        let (_, ended, result) = fed(&[&*header, &end(0), &row].join("\n")).await;
        assert!(!ended);
        assert!(result.unwrap_err().to_string().starts_with("line 3: "));
        let (lines, ended, result) = fed(&[&*header, &row, "{", &row, &end(2)].join("\n")).await;
        assert_eq!((lines, ended), (vec![2], false));
        assert!(
            result
                .unwrap_err()
                .to_string()
                .starts_with("line 3: not a JSON object")
        );
    }

    #[tokio::test]
    async fn a_component_must_match_its_hash() {
        let header = json!({"format": FORMAT, "version": VERSION, "source": {}}).to_string();
        let bytes = b"\0asm-component";
        let version = |sha: String| {
            json!({"table": "plugin_versions", "plugin_id": "plg_1", "version": 1,
                "sha256": sha, "size_bytes": bytes.len(), "created_at": 1, "status": "ready",
                "failure": null, "wasm": STANDARD.encode(bytes)})
            .to_string()
        };
        let wrong = version("00".repeat(32));
        let (_, _, result) = fed(&[&*header, &wrong].join("\n")).await;
        let e = result.unwrap_err().to_string();
        assert!(e.starts_with("line 2: ") && e.contains("SHA-256"), "{e}");
        let right = version(hex::encode(Sha256::digest(bytes)));
        let end = json!({"end": true, "rows": 1}).to_string();
        let (lines, ended, result) = fed(&[&*header, &right, &end].join("\n")).await;
        assert_eq!((lines, ended), (vec![2], true));
        result.unwrap();
    }
}
