//! The "Check URL" action of the webhook form: the check of `POST /v1/webhook-checks` (same
//! service, same per-account rate limit), shown as what was sent, what came back and why it
//! failed, before anything is saved.

use std::collections::BTreeMap;

use maud::{Markup, html};

use super::layout::badge;
use crate::delivery::check::{self, Check, CheckMode, CheckReport};
use crate::model::Format;
use crate::state::AppState;
use crate::subscriptions::parse_url;

/// Runs a check for `account` and renders its report.
pub async fn run(
    state: &AppState,
    account: &str,
    url: &str,
    format: Format,
    headers: &BTreeMap<String, String>,
    verify: bool,
) -> Markup {
    // Where the URL points is the check's to report; only a URL that could never be subscribed
    // is refused before sending anything.
    if let Err(e) = parse_url(url) {
        return refused(&e.to_string());
    }
    let check = Check {
        url,
        format,
        headers,
        verify,
    };
    match check::run(state, account, check).await {
        Ok(report) => render(&report),
        Err(limited) => refused(&limited.to_string()),
    }
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

fn render(r: &CheckReport) -> Markup {
    let what = match r.mode {
        CheckMode::Verification => {
            "the webhook:verify handshake (it must answer 2xx with the challenge as the body)"
        }
        CheckMode::TestDelivery => "one signed webhook:test delivery (any 2xx passes)",
    };
    html! {
        section.card role="status" data-test="check-report" {
            @if r.ok {
                h2 data-test="check-ok" { "Check: passed " (badge("ok")) }
            } @else {
                h2 data-test="check-failed" { "Check: failed " (badge("failed")) }
                p.error data-test="check-reason" {
                    (r.reason.as_deref().unwrap_or("failed"))
                    @if let Some(kind) = &r.error_kind { " (" (kind) ")" }
                }
            }
            p.hint { "Sent " (what) ". Nothing was saved." }
            h3 { "What came back" }
            dl.kv {
                dt { "Status" } dd data-test="check-status" {
                    @match r.status_code { Some(c) => { "HTTP " (c) }, None => "no response" }
                }
                dt { "Time" } dd data-test="check-duration" { (r.duration_ms) " ms" }
                dt { "Body (first bytes)" } dd {
                    @match &r.response_excerpt {
                        Some(b) if !b.is_empty() => pre data-test="check-response" { (b) },
                        _ => "—",
                    }
                }
            }
            details {
                summary { "What was sent" }
                pre.wrap data-test="check-request" {
                    (r.request.method) " " (r.request.url) "\n"
                    @for (name, value) in &r.request.headers { (name) ": " (value) "\n" }
                    "\n" (r.request.body)
                }
                p.hint { "Signed with a throwaway secret made for this check: " code.wrap { (r.request.signing_secret) } " (not the secret the subscription gets when saved)." }
            }
        }
    }
}
