//! `wasmhook keys`: the operator's commands on the encryption key file, run on the server's
//! machine (they read the key file and the database, never the API).
//!
//! Rotation is three steps: `keys rotate` adds a key at the end of the key file; the next start
//! of the server seals new secrets with it and re-encrypts every stored secret under it (see
//! `store::sqlite::reseal`); `keys prune` then removes the keys no stored secret uses.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use crate::secrets::Keyring;
use crate::store::Store;

/// `wasmhook keys ...`.
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Add a new encryption key to the key file.
    ///
    /// From the server's next start it encrypts new secrets, and the server re-encrypts the
    /// stored ones under it at that start; older keys stay in the file until `keys prune`.
    #[command(
        after_help = "Example:\n  wasmhook keys rotate --data-dir ./wasmhook-data\n  # restart the server, then:\n  wasmhook keys prune --data-dir ./wasmhook-data"
    )]
    Rotate(KeyFileArgs),
    /// Remove the keys no stored secret uses any more.
    ///
    /// Reads the database to see which keys its secrets use. The newest key, and the key the
    /// last started server encrypts with, are always kept.
    #[command(after_help = "Example:\n  wasmhook keys prune --data-dir ./wasmhook-data")]
    Prune(KeyFileArgs),
}

/// Where the key file and the database are: the same options as `serve`.
#[derive(Debug, Args)]
pub struct KeyFileArgs {
    /// The server's data dir (its database; its key file unless `--encryption-key-file`).
    #[arg(long, env = "WASMHOOK_DATA_DIR", default_value = "./wasmhook-data")]
    pub data_dir: PathBuf,
    /// The key file, when the server is started with one.
    #[arg(long, env = "WASMHOOK_ENCRYPTION_KEY_FILE")]
    pub encryption_key_file: Option<PathBuf>,
}

impl KeyFileArgs {
    fn key_file(&self) -> PathBuf {
        crate::key_file_path(&self.data_dir, self.encryption_key_file.as_deref())
    }
}

/// Runs a `keys` subcommand; what it did is printed on stdout.
pub fn run(cmd: KeysCommand) -> anyhow::Result<()> {
    match cmd {
        KeysCommand::Rotate(args) => {
            let path = args.key_file();
            let id = Keyring::add_key(&path)?;
            println!(
                "Added key {id} to {}.\nRestart the server: it encrypts new secrets with {id} and \
                 re-encrypts the stored ones at start.\nThen `wasmhook keys prune` removes the \
                 keys no longer used. Back up the key file again.",
                path.display()
            );
            Ok(())
        }
        KeysCommand::Prune(args) => {
            let path = args.key_file();
            let keys = Keyring::load(&path)?;
            let used = Store::key_use(&args.data_dir)?;
            let mut removable = Vec::new();
            for id in keys.key_ids() {
                let in_use = used.sealed.get(id).copied().unwrap_or(0);
                if id == keys.current_id() || used.sealing_key.as_deref() == Some(id) {
                    continue;
                }
                if in_use > 0 {
                    println!(
                        "Kept key {id}: {in_use} stored secret(s) still use it. Restart the server \
                         with this key file (it re-encrypts them under {}), then prune again.",
                        keys.current_id()
                    );
                } else {
                    removable.push(id.to_string());
                }
            }
            if let Some(sealing) = used.sealing_key.as_deref()
                && sealing != keys.current_id()
            {
                println!(
                    "Kept key {sealing}: the running server encrypts new secrets with it. Restart \
                     the server, then prune again."
                );
            }
            if removable.is_empty() {
                println!("No key to remove from {}.", path.display());
                return Ok(());
            }
            Keyring::remove_keys(&path, &removable)?;
            println!(
                "Removed key(s) {} from {}.",
                removable.join(", "),
                path.display()
            );
            Ok(())
        }
    }
}
