//! API keys and the admin token: generation, hashing, and a cache of verified keys.
//!
//! Keys are random, shown once, and stored only as SHA-256 hashes (they are high-entropy, so
//! a slow password hash would buy nothing). Verified keys are cached in memory so the hot
//! ingest path does not hit the database for authentication; revoking a key evicts it.
//!
//! Timing: a presented key is hashed first and only its hash is looked up (in the cache's
//! map, then the database's index). How long a lookup takes can at most reveal how many
//! leading bytes of the *hash* of the guess match a stored hash, and a caller cannot choose
//! hashes, only keys: learning that the SHA-256 of a guess shares its first bytes with a
//! stored hash tells nothing about which key to try next. Secrets compared rather than
//! looked up (the admin token, CSRF and sign-in tokens) go through [`same_hash`], which takes
//! the same time whatever the inputs.

use std::collections::HashMap;
use std::sync::RwLock;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::clock::new_id;
use crate::store::NewApiKey;

/// SHA-256 of a key or token.
pub fn hash(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// `n` random bytes, URL-safe base64 without padding.
pub fn random_token(n: usize) -> String {
    let mut bytes = vec![0u8; n];
    rand::rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A new API key: the key to show once, and what the store keeps of it.
pub fn new_api_key() -> (String, NewApiKey) {
    let key = format!("whk_{}", random_token(32));
    let prefix = key[..12].to_string();
    let stored = NewApiKey {
        id: new_id("key"),
        hash: hash(&key),
        prefix,
    };
    (key, stored)
}

/// Verified key hashes → account id.
#[derive(Default)]
pub struct KeyCache {
    verified: RwLock<HashMap<[u8; 32], String>>,
}

impl KeyCache {
    /// The account of a key already verified.
    pub fn get(&self, hash: &[u8; 32]) -> Option<String> {
        self.verified
            .read()
            .expect("key cache lock")
            .get(hash)
            .cloned()
    }

    /// Remembers a verified key.
    pub fn insert(&self, hash: [u8; 32], account_id: String) {
        let mut map = self.verified.write().expect("key cache lock");
        // Bound the cache: an attacker cannot grow it (only valid keys enter), but keep it tidy.
        if map.len() > 100_000 {
            map.clear();
        }
        map.insert(hash, account_id);
    }

    /// Forgets a revoked key.
    pub fn evict(&self, hash: &[u8; 32]) {
        self.verified.write().expect("key cache lock").remove(hash);
    }
}

/// Constant-time equality of two hashes (`subtle` keeps the compiler from short-cutting it).
pub fn same_hash(a: &[u8; 32], b: &[u8; 32]) -> bool {
    use subtle::ConstantTimeEq;
    bool::from(a[..].ct_eq(&b[..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_unique_and_hashed() {
        let (a, sa) = new_api_key();
        let (b, _) = new_api_key();
        assert_ne!(a, b);
        assert!(a.starts_with("whk_") && a.len() > 40);
        assert_eq!(sa.hash, hash(&a));
        assert!(a.starts_with(&sa.prefix));
        assert!(same_hash(&hash("x"), &hash("x")));
        assert!(!same_hash(&hash("x"), &hash("y")));
    }
}
