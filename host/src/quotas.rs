//! Per-account quotas: how many plugins and subscriptions an account may have, and how many
//! bytes of plugin components (every version of every plugin) it may store.
//!
//! The rule is pure ([`Quotas::check`]); the store applies it inside the write transaction
//! that would pass it, counting what the account has in that same transaction, so concurrent
//! requests cannot both slip under a limit. A refusal is a 403 naming the quota, its limit and
//! the account's usage (see `crate::error`).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The limits of every account on this server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quotas {
    /// Plugins per account (`--max-plugins-per-account`).
    pub plugins: u64,
    /// Bytes of stored plugin components per account, all versions
    /// (`--max-plugin-storage-per-account`).
    pub plugin_bytes: u64,
    /// Subscriptions per account (`--max-subscriptions-per-account`).
    pub subscriptions: u64,
}

impl Quotas {
    /// No limits (a store opened without a server's configuration: tools, tests).
    pub const UNLIMITED: Quotas = Quotas {
        plugins: u64::MAX,
        plugin_bytes: u64::MAX,
        subscriptions: u64::MAX,
    };

    /// The limit of `quota`.
    pub fn limit(&self, quota: Quota) -> u64 {
        match quota {
            Quota::Plugins => self.plugins,
            Quota::PluginBytes => self.plugin_bytes,
            Quota::Subscriptions => self.subscriptions,
        }
    }

    /// Whether an account using `usage` of `quota` may add `adding` more.
    pub fn check(&self, quota: Quota, usage: u64, adding: u64) -> Result<(), QuotaExceeded> {
        let limit = self.limit(quota);
        if usage.saturating_add(adding) <= limit {
            Ok(())
        } else {
            Err(QuotaExceeded {
                quota,
                limit,
                usage,
                requested: adding,
            })
        }
    }
}

/// A per-account quota.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Quota {
    /// Number of plugins.
    Plugins,
    /// Bytes of stored plugin components, every version counted.
    PluginBytes,
    /// Number of subscriptions.
    Subscriptions,
}

impl Quota {
    /// The server option that sets it.
    pub fn flag(self) -> &'static str {
        match self {
            Quota::Plugins => "--max-plugins-per-account",
            Quota::PluginBytes => "--max-plugin-storage-per-account",
            Quota::Subscriptions => "--max-subscriptions-per-account",
        }
    }

    fn unit(self) -> &'static str {
        match self {
            Quota::Plugins => "plugins",
            Quota::PluginBytes => "bytes of plugin components",
            Quota::Subscriptions => "subscriptions",
        }
    }
}

/// A refusal: the request would take the account past a quota.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema, thiserror::Error)]
#[error(
    "quota exceeded: this account has {usage} {unit} and may have at most {limit}; this request adds {requested} \
     (delete unused ones, or ask the operator to raise {flag})",
    unit = quota.unit(),
    flag = quota.flag()
)]
pub struct QuotaExceeded {
    /// Which quota: `plugins`, `plugin_bytes` or `subscriptions`.
    pub quota: Quota,
    /// The account's limit.
    pub limit: u64,
    /// What the account uses now.
    pub usage: u64,
    /// What the refused request would have added.
    pub requested: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    const Q: Quotas = Quotas {
        plugins: 2,
        plugin_bytes: 100,
        subscriptions: 3,
    };

    #[test]
    fn usage_up_to_the_limit_is_allowed() {
        assert!(Q.check(Quota::Plugins, 1, 1).is_ok());
        assert!(Q.check(Quota::PluginBytes, 60, 40).is_ok());
        assert!(Q.check(Quota::Subscriptions, 0, 3).is_ok());
        assert!(
            Quotas::UNLIMITED
                .check(Quota::PluginBytes, u64::MAX, 1)
                .is_ok()
        );
    }

    #[test]
    fn a_refusal_names_the_quota_limit_and_usage() {
        let e = Q.check(Quota::PluginBytes, 60, 41).unwrap_err();
        assert_eq!(
            e,
            QuotaExceeded {
                quota: Quota::PluginBytes,
                limit: 100,
                usage: 60,
                requested: 41
            }
        );
        let text = e.to_string();
        assert!(text.contains("60 bytes of plugin components"), "{text}");
        assert!(text.contains("at most 100"), "{text}");
        assert!(text.contains("--max-plugin-storage-per-account"), "{text}");
        assert_eq!(
            serde_json::to_value(&e).unwrap(),
            serde_json::json!({"quota": "plugin_bytes", "limit": 100, "usage": 60, "requested": 41})
        );
        assert!(Q.check(Quota::Plugins, 2, 1).is_err());
    }
}
