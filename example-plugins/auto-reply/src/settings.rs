//! The plugin's configuration, read once per event and validated as a whole.

use wasmhook_plugin_sdk::config::{self, ConfigError};

use crate::hours::{OfficeHours, parse_days, parse_utc_offset};

const DEFAULT_REPLY: &str = "Thanks for your message! We will get back to you soon.";

/// Validated configuration (see the crate docs for the keys).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// `reply_text`.
    pub reply_text: String,
    /// `outside_hours_text`, if set.
    pub outside_hours_text: Option<String>,
    /// `keywords`, lowercased and trimmed, empty entries removed.
    pub keywords: Vec<String>,
    /// `office_hours` and `office_days`, if office hours are set.
    pub office_hours: Option<OfficeHours>,
    /// `timezone_offset`, in minutes east of UTC.
    pub utc_offset_minutes: i32,
    /// `reply_outside_hours_only`.
    pub reply_outside_hours_only: bool,
}

impl Settings {
    /// Reads and validates the plugin's configuration.
    pub fn from_config() -> Result<Self, ConfigError> {
        let reply_text = config::get("reply_text").unwrap_or_else(|| DEFAULT_REPLY.to_string());
        let keywords = config::get("keywords")
            .map(|k| parse_keywords(&k))
            .unwrap_or_default();
        let utc_offset_minutes = match config::get("timezone_offset") {
            None => 0,
            Some(raw) => parse_utc_offset(raw.trim()).ok_or_else(|| {
                ConfigError::new("timezone_offset", "expected `+HH:MM` or `-HH:MM`")
            })?,
        };
        let days = match config::get("office_days") {
            None => [true; 7],
            Some(raw) => parse_days(&raw).ok_or_else(|| {
                ConfigError::new(
                    "office_days",
                    "expected days such as `mon-fri` or `mon,wed`",
                )
            })?,
        };
        let office_hours = match config::get("office_hours") {
            None => None,
            Some(raw) => Some(
                OfficeHours::parse(raw.trim(), days)
                    .ok_or_else(|| ConfigError::new("office_hours", "expected `HH:MM-HH:MM`"))?,
            ),
        };
        let reply_outside_hours_only = config::get_or("reply_outside_hours_only", false)?;
        if reply_outside_hours_only && office_hours.is_none() {
            return Err(ConfigError::new(
                "reply_outside_hours_only",
                "needs `office_hours` to be set",
            ));
        }
        Ok(Settings {
            reply_text,
            outside_hours_text: config::get("outside_hours_text"),
            keywords,
            office_hours,
            utc_offset_minutes,
            reply_outside_hours_only,
        })
    }
}

/// Splits a comma-separated keyword list, lowercased, ignoring blanks.
pub fn parse_keywords(raw: &str) -> Vec<String> {
    raw.split(',')
        .map(|k| k.trim().to_lowercase())
        .filter(|k| !k.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use wasmhook_plugin_sdk::testing;

    use super::*;

    #[test]
    fn defaults_reply_to_everything() {
        let s = Settings::from_config().unwrap();
        assert_eq!(s.reply_text, DEFAULT_REPLY);
        assert!(s.keywords.is_empty() && s.office_hours.is_none());
    }

    #[test]
    fn keywords_are_normalised() {
        assert_eq!(parse_keywords(" Price,, REFUND ,"), ["price", "refund"]);
        assert!(parse_keywords(" , ").is_empty());
    }

    #[test]
    fn outside_hours_only_needs_office_hours() {
        testing::set_config("reply_outside_hours_only", "true");
        assert_eq!(
            Settings::from_config().unwrap_err().key(),
            "reply_outside_hours_only"
        );
    }

    #[test]
    fn malformed_values_name_their_key() {
        testing::set_config("timezone_offset", "CET");
        assert_eq!(
            Settings::from_config().unwrap_err().key(),
            "timezone_offset"
        );
        testing::reset();
        testing::set_config("office_days", "weekdays");
        assert_eq!(Settings::from_config().unwrap_err().key(), "office_days");
    }
}
