//! A plugin's configuration rules: which values are secret, what is shown in their place, and
//! how a change applies. Pure: the API and the console both change configs through [`apply`].
//!
//! A secret value is write-only, like a Spin variable marked `secret` or a CI secret: once set
//! it is shown as [`MASK`], and a change that sends [`MASK`] back for a secret key keeps the
//! stored value. So the usual read-modify-write of the whole map (`GET`, edit one key, `PATCH`)
//! keeps every secret it could not see.

use std::collections::{BTreeMap, BTreeSet};

use crate::model::Plugin;

/// What responses and the console show in place of a secret config value.
pub const MASK: &str = "********";

/// `config` as it may be shown: the values of `secret_keys` replaced by [`MASK`].
pub fn masked<'a>(
    config: &'a BTreeMap<String, String>,
    secret_keys: &BTreeSet<String>,
) -> BTreeMap<&'a str, &'a str> {
    config
        .iter()
        .map(|(k, v)| {
            let shown = if secret_keys.contains(k) {
                MASK
            } else {
                v.as_str()
            };
            (k.as_str(), shown)
        })
        .collect()
}

/// Applies a change to a plugin's configuration. `config`, when given, replaces the whole map,
/// except that [`MASK`] as the value of a secret key that has a value keeps that value.
/// `secret_keys`, when given, replaces the set of secret keys (a key may be marked before it
/// has a value); otherwise the set stays as it is.
pub fn apply(
    plugin: &mut Plugin,
    config: Option<BTreeMap<String, String>>,
    secret_keys: Option<BTreeSet<String>>,
) {
    if let Some(keys) = secret_keys {
        plugin.secret_keys = keys;
    }
    if let Some(mut config) = config {
        for (k, v) in config.iter_mut() {
            if v.as_str() == MASK
                && plugin.secret_keys.contains(k)
                && let Some(kept) = plugin.config.get(k)
            {
                v.clone_from(kept);
            }
        }
        plugin.config = config;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plugin(config: &[(&str, &str)], secret: &[&str]) -> Plugin {
        Plugin {
            id: "plg_1".into(),
            account_id: "acc".into(),
            name: "p".into(),
            config: config
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            secret_keys: secret.iter().map(|k| k.to_string()).collect(),
            allowed_hosts: vec![],
            limits: Default::default(),
            log_level: Default::default(),
            instances: Default::default(),
            version: 1,
            latest_version: 1,
            status: crate::model::VersionStatus::Ready,
            failure: None,
            created_at: 0,
            updated_at: 0,
        }
    }

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn secret_values_never_serialize() {
        let p = plugin(&[("token", "s3cr3t-value"), ("region", "eu")], &["token"]);
        let json = serde_json::to_value(&p).unwrap();
        assert_eq!(json["config"]["token"], MASK);
        assert_eq!(json["config"]["region"], "eu");
        assert_eq!(json["secret_keys"], serde_json::json!(["token"]));
        assert!(!json.to_string().contains("s3cr3t-value"));
        // What a client reads back serializes the same (the command line reads into Plugin).
        let back: Plugin = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(serde_json::to_value(&back).unwrap(), json);
    }

    #[test]
    fn the_mask_sent_back_keeps_the_stored_secret() {
        let mut p = plugin(&[("token", "s3cr3t"), ("region", "eu")], &["token"]);
        apply(
            &mut p,
            Some(map(&[("token", MASK), ("region", "us")])),
            None,
        );
        assert_eq!(p.config, map(&[("token", "s3cr3t"), ("region", "us")]));
        // A new value replaces it; a key left out is removed.
        apply(&mut p, Some(map(&[("token", "new")])), None);
        assert_eq!(p.config, map(&[("token", "new")]));
    }

    #[test]
    fn the_mask_is_only_special_for_secret_keys_with_a_value() {
        let mut p = plugin(&[("region", "eu")], &["token"]);
        apply(
            &mut p,
            Some(map(&[("region", MASK), ("token", MASK)])),
            None,
        );
        assert_eq!(p.config, map(&[("region", MASK), ("token", MASK)]));
    }

    #[test]
    fn secret_keys_can_be_marked_alone_or_with_their_values() {
        let mut p = plugin(&[("token", "s3cr3t")], &[]);
        apply(&mut p, None, Some(["token".to_string()].into()));
        assert_eq!(p.secret_keys, ["token".to_string()].into());
        assert_eq!(p.config, map(&[("token", "s3cr3t")]));
        apply(
            &mut p,
            Some(map(&[("token", MASK), ("key", "v")])),
            Some(["token".to_string(), "key".to_string()].into()),
        );
        assert_eq!(p.config, map(&[("token", "s3cr3t"), ("key", "v")]));
    }
}
