//! The "Check URL" action of the webhook form: what subscribing would send, run before saving.
//!
//! Wired to the webhook-check service (`POST /v1/webhook-checks`) once it is in the tree.

use std::collections::BTreeMap;

use maud::{Markup, html};

use crate::model::Format;
use crate::state::AppState;

/// Runs a check for `account` and renders its report.
pub async fn run(
    _state: &AppState,
    _account: &str,
    _url: &str,
    _format: Format,
    _headers: &BTreeMap<String, String>,
    _verify: bool,
) -> Markup {
    refused("Checking a URL before saving is not available in this build yet.")
}

/// A check that could not run, with the reason.
pub fn refused(reason: &str) -> Markup {
    html! {
        section.card role="status" data-test="check-report" {
            h2 { "Check: not run" }
            p.error data-test="check-reason" { (reason) }
        }
    }
}
