//! Secrets at rest: the keyring kept outside the database and the sealing of single values.
//!
//! Owns the key file (its format, its atomic creation with mode 0600, adding a key to rotate)
//! and the AEAD: XChaCha20-Poly1305 with a random 192-bit nonce per value, the value bound to
//! its place (table, row, field) as associated data so that a sealed value copied into another
//! row or column does not open. Knows nothing about storage: the store decides which fields are
//! secret and calls [`Keyring::seal`] / [`Keyring::open`], so any backend shares this code.
//!
//! A sealed value is text, `enc1:<key id>:<base64url(nonce ‖ ciphertext ‖ tag)>`: it fits the
//! columns that held the clear value, and names the key that opens it, so a keyring with
//! several keys opens rows written under any of them while new values use the newest.

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};

/// The prefix of every sealed value (format version 1).
const PREFIX: &str = "enc1:";
const NONCE_LEN: usize = 24;
const KEY_LEN: usize = 32;
/// Separates the parts of the associated data; none of them may contain it.
const AD_DOMAIN: &str = "wasmhook secret v1";

/// Errors of the keyring and of sealed values. Every message names the key file when one is
/// involved, so an operator knows which file to fix.
#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    /// The key file could not be read or written.
    #[error("encryption key file {}: {source}", path.display())]
    Io {
        /// The key file.
        path: PathBuf,
        /// What the file system said.
        #[source]
        source: std::io::Error,
    },
    /// The key file is not a keyring.
    #[error("encryption key file {}, line {line}: {message}", path.display())]
    Format {
        /// The key file.
        path: PathBuf,
        /// 1-based line number (0: the file as a whole).
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// A value is sealed with a key the keyring does not hold.
    #[error(
        "{what} is encrypted with key {key_id:?}, which the encryption key file {} does not hold: \
         start with the key file this database was written with (restore it from its backup)",
        path.display()
    )]
    UnknownKey {
        /// Which value.
        what: String,
        /// The key it names.
        key_id: String,
        /// The key file.
        path: PathBuf,
    },
    /// A value did not open: wrong key material under a known id, or a changed or moved value.
    #[error(
        "{what} does not decrypt with key {key_id:?} of the encryption key file {}: the key file \
         does not match this database, or the stored value was altered",
        path.display()
    )]
    Decrypt {
        /// Which value.
        what: String,
        /// The key tried.
        key_id: String,
        /// The key file.
        path: PathBuf,
    },
    /// A stored value is not in the sealed format.
    #[error("{what} is stored in clear or malformed where a sealed value was expected")]
    NotSealed {
        /// Which value.
        what: String,
    },
}

/// Where a value lives: bound into its seal, so it opens only there.
#[derive(Debug, Clone, Copy)]
pub struct Place<'a> {
    /// The record kind (`subscriptions`, `plugins`).
    pub table: &'a str,
    /// The record's id.
    pub row: &'a str,
    /// The field (`secret`, `config.api_token`, ...).
    pub field: &'a str,
}

impl fmt::Display for Place<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} of {} {}", self.field, self.table, self.row)
    }
}

impl Place<'_> {
    fn associated_data(&self) -> Vec<u8> {
        // NUL-separated: ids and field names never contain NUL, so no two places share bytes.
        [AD_DOMAIN, self.table, self.row, self.field]
            .join("\0")
            .into_bytes()
    }
}

struct Key {
    id: String,
    cipher: XChaCha20Poly1305,
}

/// The encryption keys, oldest first; the last one seals new values.
pub struct Keyring {
    keys: Vec<Key>,
    path: PathBuf,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the key material.
        f.debug_struct("Keyring")
            .field("path", &self.path)
            .field("keys", &self.key_ids())
            .finish()
    }
}

/// What a value needs before it is as it should be at rest (see [`Keyring::reseal`]).
#[derive(Debug, PartialEq, Eq)]
pub enum Reseal {
    /// Sealed under the current key and opens: nothing to do.
    Current,
    /// Stored in clear (written before encryption at rest): here it is, sealed.
    WasClear(String),
    /// Sealed under an older key: here it is, sealed under the current one.
    Rewrapped(String),
}

fn valid_key_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
}

fn new_key_line(existing: &[&str]) -> (String, String) {
    loop {
        let id = format!("ek_{}", hex::encode(rand::random::<[u8; 4]>()));
        if !existing.contains(&id.as_str()) {
            let key: [u8; KEY_LEN] = rand::random();
            return (id.clone(), format!("{id} {}\n", STANDARD.encode(key)));
        }
    }
}

const HEADER: &str = "\
# wasmhook encryption keys: one key per line, \"<key id> <base64 of 32 random bytes>\".
# New secrets are encrypted with the last key; older keys open what was written under them.
# Keep this file out of database backups, and back it up separately: without it the
# secrets in the database cannot be read.
";

impl Keyring {
    /// Reads the keyring at `path`. A missing file, a file without keys, a malformed line or a
    /// repeated key id is an error naming the file.
    pub fn load(path: &Path) -> Result<Keyring, SecretsError> {
        let text = std::fs::read_to_string(path).map_err(|source| SecretsError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        warn_if_readable_by_others(path);
        Keyring::parse(&text, path)
    }

    fn parse(text: &str, path: &Path) -> Result<Keyring, SecretsError> {
        let format = |line: usize, message: String| SecretsError::Format {
            path: path.to_path_buf(),
            line,
            message,
        };
        let mut keys: Vec<Key> = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut parts = line.split_whitespace();
            let (Some(id), Some(material), None) = (parts.next(), parts.next(), parts.next())
            else {
                return Err(format(
                    i + 1,
                    "expected \"<key id> <base64 key>\"".to_string(),
                ));
            };
            if !valid_key_id(id) {
                return Err(format(
                    i + 1,
                    format!("key id {id:?}: 1 to 64 of A-Z a-z 0-9 _ - ."),
                ));
            }
            if keys.iter().any(|k| k.id == id) {
                return Err(format(i + 1, format!("key id {id:?} appears twice")));
            }
            let bytes = STANDARD
                .decode(material)
                .ok()
                .filter(|b| b.len() == KEY_LEN)
                .ok_or_else(|| {
                    format(
                        i + 1,
                        format!("key {id:?} is not the base64 of {KEY_LEN} bytes"),
                    )
                })?;
            let cipher = XChaCha20Poly1305::new_from_slice(&bytes)
                .map_err(|_| format(i + 1, "key of the wrong length".into()))?;
            keys.push(Key {
                id: id.to_string(),
                cipher,
            });
        }
        if keys.is_empty() {
            return Err(format(0, "the file holds no key".into()));
        }
        Ok(Keyring {
            keys,
            path: path.to_path_buf(),
        })
    }

    /// Creates a keyring file at `path` holding one new random key, readable by its owner only,
    /// and returns it. The file appears whole or not at all, and an existing file is never
    /// replaced (an error instead).
    pub fn create(path: &Path) -> Result<Keyring, SecretsError> {
        let (_, line) = new_key_line(&[]);
        let text = format!("{HEADER}{line}");
        write_atomically(path, &text, false)?;
        Keyring::parse(&text, path)
    }

    /// Adds a new random key at the end of the keyring file at `path` (it becomes the key that
    /// seals new values); returns its id. The file is replaced atomically and stays mode 0600.
    pub fn add_key(path: &Path) -> Result<String, SecretsError> {
        let current = Keyring::load(path)?;
        let text = std::fs::read_to_string(path).map_err(|source| SecretsError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let (id, line) = new_key_line(&current.key_ids());
        let mut text = text;
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        text.push_str(&line);
        Keyring::parse(&text, path)?;
        write_atomically(path, &text, true)?;
        Ok(id)
    }

    /// Removes the keys named in `ids` from the keyring file at `path` (atomically). The
    /// current (last) key is never removed.
    pub fn remove_keys(path: &Path, ids: &[String]) -> Result<(), SecretsError> {
        let current = Keyring::load(path)?;
        let text = std::fs::read_to_string(path).map_err(|source| SecretsError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let kept: String = text
            .lines()
            .filter(|line| {
                let id = line.split_whitespace().next().unwrap_or("");
                line.trim_start().starts_with('#')
                    || id == current.current_id()
                    || !ids.iter().any(|r| r == id)
            })
            .map(|line| format!("{line}\n"))
            .collect();
        Keyring::parse(&kept, path)?;
        write_atomically(path, &kept, true)
    }

    /// A keyring with one random key, kept in memory only (tests).
    pub fn ephemeral() -> Keyring {
        let (_, line) = new_key_line(&[]);
        Keyring::parse(&line, Path::new("(in memory)")).expect("a generated key parses")
    }

    /// The key file this keyring was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The key ids, oldest first.
    pub fn key_ids(&self) -> Vec<&str> {
        self.keys.iter().map(|k| k.id.as_str()).collect()
    }

    /// The id of the key that seals new values.
    pub fn current_id(&self) -> &str {
        &self.current().id
    }

    fn current(&self) -> &Key {
        self.keys.last().expect("a keyring holds at least one key")
    }

    /// Seals `clear` for `place` under the current key, with a fresh random nonce.
    pub fn seal(&self, clear: &str, place: Place<'_>) -> String {
        let key = self.current();
        let nonce: [u8; NONCE_LEN] = rand::random();
        let aad = place.associated_data();
        let sealed = key
            .cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: clear.as_bytes(),
                    aad: &aad,
                },
            )
            .expect("XChaCha20-Poly1305 encrypts any message this size");
        let mut bytes = Vec::with_capacity(NONCE_LEN + sealed.len());
        bytes.extend_from_slice(&nonce);
        bytes.extend_from_slice(&sealed);
        format!("{PREFIX}{}:{}", key.id, URL_SAFE_NO_PAD.encode(bytes))
    }

    /// Opens a value sealed for `place`. A value in clear is an error, never passed through.
    pub fn open(&self, stored: &str, place: Place<'_>) -> Result<String, SecretsError> {
        let (key_id, body) = split_sealed(stored).ok_or_else(|| SecretsError::NotSealed {
            what: place.to_string(),
        })?;
        let key =
            self.keys
                .iter()
                .find(|k| k.id == key_id)
                .ok_or_else(|| SecretsError::UnknownKey {
                    what: place.to_string(),
                    key_id: key_id.to_string(),
                    path: self.path.clone(),
                })?;
        let decrypt = || SecretsError::Decrypt {
            what: place.to_string(),
            key_id: key_id.to_string(),
            path: self.path.clone(),
        };
        let bytes = URL_SAFE_NO_PAD.decode(body).map_err(|_| decrypt())?;
        if bytes.len() < NONCE_LEN {
            return Err(decrypt());
        }
        let (nonce, sealed) = bytes.split_at(NONCE_LEN);
        let aad = place.associated_data();
        let clear = key
            .cipher
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: sealed,
                    aad: &aad,
                },
            )
            .map_err(|_| decrypt())?;
        String::from_utf8(clear).map_err(|_| decrypt())
    }

    /// Checks a stored value and says what it needs: a clear value (from a version before
    /// encryption at rest) comes back sealed, a value under an older key comes back sealed under
    /// the current one, and a value that does not open is an error (wrong key file).
    pub fn reseal(&self, stored: &str, place: Place<'_>) -> Result<Reseal, SecretsError> {
        match split_sealed(stored) {
            None => Ok(Reseal::WasClear(self.seal(stored, place))),
            Some((key_id, _)) => {
                let clear = self.open(stored, place)?;
                if key_id == self.current_id() {
                    Ok(Reseal::Current)
                } else {
                    Ok(Reseal::Rewrapped(self.seal(&clear, place)))
                }
            }
        }
    }
}

/// The key id of a sealed value, or `None` for anything else.
pub fn sealed_key_id(stored: &str) -> Option<&str> {
    split_sealed(stored).map(|(id, _)| id)
}

fn split_sealed(stored: &str) -> Option<(&str, &str)> {
    let rest = stored.strip_prefix(PREFIX)?;
    let (id, body) = rest.split_once(':')?;
    valid_key_id(id).then_some((id, body))
}

fn warn_if_readable_by_others(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(path)
            && meta.permissions().mode() & 0o077 != 0
        {
            tracing::warn!(
                path = %path.display(),
                mode = format!("{:o}", meta.permissions().mode() & 0o777),
                "the encryption key file is readable by other users; chmod 600 it"
            );
        }
    }
}

/// Writes `text` to `path` through a temporary file in the same directory (mode 0600, synced),
/// so that a reader sees the old file or the new one, never a part. Without `replace`, an
/// existing file at `path` is an error and is left alone.
fn write_atomically(path: &Path, text: &str, replace: bool) -> Result<(), SecretsError> {
    let io = |source| SecretsError::Io {
        path: path.to_path_buf(),
        source,
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "keys".into());
    let tmp = dir.join(format!(
        ".{name}.{}.tmp",
        hex::encode(rand::random::<[u8; 6]>())
    ));
    let result: std::io::Result<()> = (|| {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(&tmp)?;
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        drop(file);
        if replace {
            std::fs::rename(&tmp, path)?;
        } else {
            // A hard link fails if `path` exists: creation without a window for a clobber.
            std::fs::hard_link(&tmp, path)?;
            std::fs::remove_file(&tmp)?;
        }
        // The directory entry itself must reach the disk, or a crash could lose the key.
        #[cfg(unix)]
        std::fs::File::open(dir)?.sync_all()?;
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn place<'a>(row: &'a str, field: &'a str) -> Place<'a> {
        Place {
            table: "subscriptions",
            row,
            field,
        }
    }

    #[test]
    fn a_sealed_value_opens_only_in_its_place() {
        let keys = Keyring::ephemeral();
        let sealed = keys.seal("whsec_abc", place("sub_1", "secret"));
        assert!(!sealed.contains("whsec_abc"));
        assert!(sealed.starts_with(&format!("enc1:{}:", keys.current_id())));
        assert_eq!(
            keys.open(&sealed, place("sub_1", "secret")).unwrap(),
            "whsec_abc"
        );
        // Swapped into another row or another column, it does not open.
        for wrong in [place("sub_2", "secret"), place("sub_1", "previous_secret")] {
            assert!(matches!(
                keys.open(&sealed, wrong),
                Err(SecretsError::Decrypt { .. })
            ));
        }
    }

    #[test]
    fn every_seal_uses_a_fresh_nonce() {
        let keys = Keyring::ephemeral();
        let a = keys.seal("same", place("sub_1", "secret"));
        let b = keys.seal("same", place("sub_1", "secret"));
        assert_ne!(a, b);
    }

    #[test]
    fn a_changed_value_or_another_key_does_not_open() {
        let keys = Keyring::ephemeral();
        let sealed = keys.seal("whsec_abc", place("sub_1", "secret"));
        let mut flipped = sealed.clone().into_bytes();
        let last = flipped.len() - 1;
        flipped[last] = if flipped[last] == b'A' { b'B' } else { b'A' };
        let flipped = String::from_utf8(flipped).unwrap();
        assert!(keys.open(&flipped, place("sub_1", "secret")).is_err());

        // Another key file whose key has the same id: a wrong key, not a silent failure.
        let other = Keyring::parse(
            &format!(
                "{} {}\n",
                keys.current_id(),
                STANDARD.encode([9u8; KEY_LEN])
            ),
            Path::new("other"),
        )
        .unwrap();
        let err = other.open(&sealed, place("sub_1", "secret")).unwrap_err();
        assert!(matches!(err, SecretsError::Decrypt { .. }), "{err}");
        assert!(err.to_string().contains("other"), "{err}");
    }

    #[test]
    fn clear_values_are_never_passed_through() {
        let keys = Keyring::ephemeral();
        assert!(matches!(
            keys.open("whsec_abc", place("sub_1", "secret")),
            Err(SecretsError::NotSealed { .. })
        ));
    }

    #[test]
    fn rotation_keeps_old_values_readable_and_rewraps_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys");
        let old = Keyring::create(&path).unwrap();
        let sealed = old.seal("whsec_old", place("sub_1", "secret"));

        let new_id = Keyring::add_key(&path).unwrap();
        let keys = Keyring::load(&path).unwrap();
        assert_eq!(keys.current_id(), new_id);
        assert_eq!(keys.key_ids(), vec![old.current_id(), new_id.as_str()]);
        assert_eq!(
            keys.open(&sealed, place("sub_1", "secret")).unwrap(),
            "whsec_old"
        );
        let Reseal::Rewrapped(rewrapped) = keys.reseal(&sealed, place("sub_1", "secret")).unwrap()
        else {
            panic!("an old key's value is rewrapped")
        };
        assert_eq!(sealed_key_id(&rewrapped), Some(new_id.as_str()));
        assert_eq!(
            keys.reseal(&rewrapped, place("sub_1", "secret")).unwrap(),
            Reseal::Current
        );

        // With the old key gone, the rewrapped value still opens; the old one names its key.
        Keyring::remove_keys(&path, &[old.current_id().to_string()]).unwrap();
        let pruned = Keyring::load(&path).unwrap();
        assert_eq!(pruned.key_ids(), vec![new_id.as_str()]);
        assert_eq!(
            pruned.open(&rewrapped, place("sub_1", "secret")).unwrap(),
            "whsec_old"
        );
        let err = pruned.open(&sealed, place("sub_1", "secret")).unwrap_err();
        assert!(matches!(err, SecretsError::UnknownKey { .. }), "{err}");
    }

    #[test]
    fn the_current_key_is_never_removed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys");
        let keys = Keyring::create(&path).unwrap();
        Keyring::remove_keys(&path, &[keys.current_id().to_string()]).unwrap();
        assert_eq!(
            Keyring::load(&path).unwrap().key_ids(),
            vec![keys.current_id()]
        );
    }

    #[test]
    fn clear_values_are_sealed_by_reseal() {
        let keys = Keyring::ephemeral();
        let Reseal::WasClear(sealed) = keys.reseal("whsec_abc", place("sub_1", "secret")).unwrap()
        else {
            panic!("a clear value is sealed")
        };
        assert_eq!(
            keys.open(&sealed, place("sub_1", "secret")).unwrap(),
            "whsec_abc"
        );
    }

    #[cfg(unix)]
    #[test]
    fn the_key_file_is_created_once_with_mode_0600() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys");
        Keyring::create(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let before = std::fs::read(&path).unwrap();
        assert!(Keyring::create(&path).is_err(), "an existing file is kept");
        assert_eq!(std::fs::read(&path).unwrap(), before);
        Keyring::add_key(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        // No temporary file is left behind.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn bad_key_files_are_errors_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys");
        let err = Keyring::load(&path).unwrap_err();
        assert!(
            err.to_string().contains(&path.display().to_string()),
            "{err}"
        );
        for (text, says) in [
            ("", "holds no key"),
            ("# only a comment\n", "holds no key"),
            ("k1\n", "expected"),
            ("k1 notbase64!\n", "base64"),
            ("k1 AAAA\n", "32 bytes"),
            ("k:1 AAAA\n", "key id"),
        ] {
            std::fs::write(&path, text).unwrap();
            let err = Keyring::load(&path).unwrap_err().to_string();
            assert!(err.contains(&path.display().to_string()), "{err}");
            assert!(err.contains(says), "{text:?}: {err}");
        }
        let key = STANDARD.encode([1u8; KEY_LEN]);
        std::fs::write(&path, format!("k1 {key}\nk1 {key}\n")).unwrap();
        let err = Keyring::load(&path).unwrap_err().to_string();
        assert!(err.contains("twice"), "{err}");
    }
}
