//! Which stored fields are secret, and how each is sealed: the same for every backend.
//!
//! Secret fields: a subscription's signing secret, its previous secret (kept while a rotation
//! runs), its Airy `api_secret`, and the values of a plugin's config keys listed in its
//! `secret_keys`. A backend seals a record just before writing it and opens it just after
//! reading it, each value bound to its table, row and field (so a sealed value copied to
//! another row or field does not open); the crypto itself is [`crate::secrets`], which knows no
//! database. Walking a database to re-seal everything at start is each backend's own
//! (`sqlite::reseal`), built from `reseal_subscription_field` and `reseal_config`.

use std::collections::{BTreeMap, BTreeSet};

use super::StoreError;
use crate::model::Subscription;
use crate::secrets::{Keyring, Place, Reseal, SecretsError};

pub(crate) const SUBSCRIPTIONS: &str = "subscriptions";
pub(crate) const PLUGINS: &str = "plugins";

pub(crate) fn sub_place<'a>(id: &'a str, field: &'a str) -> Place<'a> {
    Place {
        table: SUBSCRIPTIONS,
        row: id,
        field,
    }
}

pub(crate) fn config_field(key: &str) -> String {
    format!("config.{key}")
}

/// A subscription's secret fields as they are written: sealed.
pub(crate) struct SealedSubscription {
    pub secret: String,
    pub previous_secret: Option<String>,
    pub airy_api_secret: Option<String>,
}

pub(crate) fn seal_subscription(keys: &Keyring, s: &Subscription) -> SealedSubscription {
    let seal = |v: &str, field| keys.seal(v, sub_place(&s.id, field));
    SealedSubscription {
        secret: seal(&s.secret, "secret"),
        previous_secret: s
            .previous_secret
            .as_deref()
            .map(|v| seal(v, "previous_secret")),
        airy_api_secret: s
            .airy_api_secret
            .as_deref()
            .map(|v| seal(v, "airy_api_secret")),
    }
}

/// Opens the secret fields of a subscription as read from the database.
pub(crate) fn open_subscription(
    keys: &Keyring,
    mut s: Subscription,
) -> Result<Subscription, StoreError> {
    s.secret = keys.open(&s.secret, sub_place(&s.id, "secret"))?;
    if let Some(v) = &s.previous_secret {
        s.previous_secret = Some(keys.open(v, sub_place(&s.id, "previous_secret"))?);
    }
    if let Some(v) = &s.airy_api_secret {
        s.airy_api_secret = Some(keys.open(v, sub_place(&s.id, "airy_api_secret"))?);
    }
    Ok(s)
}

/// A plugin's config as written: the values of secret keys sealed, the others as they are.
pub(crate) fn seal_config(
    keys: &Keyring,
    plugin_id: &str,
    config: &BTreeMap<String, String>,
    secret_keys: &BTreeSet<String>,
) -> BTreeMap<String, String> {
    config
        .iter()
        .map(|(k, v)| {
            let v = if secret_keys.contains(k) {
                let field = config_field(k);
                keys.seal(
                    v,
                    Place {
                        table: PLUGINS,
                        row: plugin_id,
                        field: &field,
                    },
                )
            } else {
                v.clone()
            };
            (k.clone(), v)
        })
        .collect()
}

/// Opens the values of a plugin's secret config keys as read from the database.
pub(crate) fn open_config(
    keys: &Keyring,
    plugin_id: &str,
    config: &mut BTreeMap<String, String>,
    secret_keys: &BTreeSet<String>,
) -> Result<(), StoreError> {
    for (k, v) in config.iter_mut() {
        if secret_keys.contains(k) {
            let field = config_field(k);
            *v = keys.open(
                v,
                Place {
                    table: PLUGINS,
                    row: plugin_id,
                    field: &field,
                },
            )?;
        }
    }
    Ok(())
}

/// What the start-up pass did.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct ResealReport {
    /// Values found in clear (written by a version without encryption at rest), now sealed.
    pub sealed_clear: usize,
    /// Values found under an older key, now under the current one.
    pub rewrapped: usize,
    /// Values already under the current key (each one opened, to check the key file).
    pub current: usize,
}

pub(crate) fn tally(report: &mut ResealReport, outcome: Reseal) -> Option<String> {
    match outcome {
        Reseal::Current => {
            report.current += 1;
            None
        }
        Reseal::WasClear(v) => {
            report.sealed_clear += 1;
            Some(v)
        }
        Reseal::Rewrapped(v) => {
            report.rewrapped += 1;
            Some(v)
        }
    }
}

/// A subscription's secret fields (also their column names in both backends).
pub(crate) const SUBSCRIPTION_SECRET_FIELDS: [&str; 3] =
    ["secret", "previous_secret", "airy_api_secret"];

/// One stored subscription secret brought to rest under the current key: the value to write
/// back, if it changed (it was in clear, or under an older key), counted in `report`.
pub(crate) fn reseal_subscription_field(
    keys: &Keyring,
    report: &mut ResealReport,
    id: &str,
    field: &str,
    stored: &str,
) -> Result<Option<String>, SecretsError> {
    Ok(tally(report, keys.reseal(stored, sub_place(id, field))?))
}

/// A plugin's stored config brought to rest under the current key, in place; true when a value
/// changed and the config must be written back.
pub(crate) fn reseal_config(
    keys: &Keyring,
    report: &mut ResealReport,
    plugin_id: &str,
    config: &mut BTreeMap<String, String>,
    secret_keys: &BTreeSet<String>,
) -> Result<bool, SecretsError> {
    let mut changed = false;
    for (k, v) in config.iter_mut().filter(|(k, _)| secret_keys.contains(*k)) {
        let field = config_field(k);
        let place = Place {
            table: PLUGINS,
            row: plugin_id,
            field: &field,
        };
        if let Some(sealed) = tally(report, keys.reseal(v, place)?) {
            *v = sealed;
            changed = true;
        }
    }
    Ok(changed)
}

/// Which keys the sealed values in a database use, and how many values are still in clear.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct KeyUse {
    /// Key id → number of values sealed under it.
    pub sealed: BTreeMap<String, usize>,
    /// Values in clear (from a version before encryption at rest, until the next start).
    pub clear: usize,
    /// The key the last server started seals new values with (it may use none yet).
    pub sealing_key: Option<String>,
}

impl KeyUse {
    /// Counts one stored secret value: under which key it is sealed, or in clear.
    pub(crate) fn count(&mut self, stored: &str) {
        match crate::secrets::sealed_key_id(stored) {
            Some(id) => *self.sealed.entry(id.to_string()).or_default() += 1,
            None => self.clear += 1,
        }
    }
}
