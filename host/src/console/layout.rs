//! The page frame (head, navigation, sign-out) and small pieces every page uses.
//!
//! Everything interpolated here goes through maud's escaping; nothing builds markup from data.

use maud::{DOCTYPE, Markup, html};

use super::session::CSRF_FIELD;
use crate::clock::rfc3339;

/// The sections in the navigation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    Overview,
    Integrations,
    Events,
    Plugins,
    Keys,
    Admin,
}

fn head(title: &str, csrf: Option<&str>) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            @if let Some(csrf) = csrf {
                meta name="csrf-token" content=(csrf);
            }
            title { (title) " · wasmhook" }
            link rel="stylesheet" href=(super::assets::CSS_PATH.as_str());
            script src=(super::assets::JS_PATH.as_str()) defer {}
        }
    }
}

/// A page of a signed-in account (or the admin, with `Nav::Admin`).
pub fn page(csrf: &str, title: &str, active: Nav, body: Markup) -> Markup {
    let items: &[(Nav, &str, &str)] = if active == Nav::Admin {
        &[(Nav::Admin, "/console/admin", "Accounts")]
    } else {
        &[
            (Nav::Overview, "/console", "Overview"),
            (Nav::Integrations, "/console/integrations", "Integrations"),
            (Nav::Events, "/console/events", "Events"),
            (Nav::Plugins, "/console/plugins", "Plugins"),
            (Nav::Keys, "/console/api-keys", "API keys"),
        ]
    };
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title, Some(csrf)))
            body {
                a.skip href="#main" { "Skip to content" }
                header.top {
                    a.brand href="/console" { "wasmhook" }
                    nav aria-label="Sections" {
                        ul {
                            @for (nav, href, label) in items {
                                li {
                                    @let slug = label.to_lowercase().replace(' ', "-");
                                    @if *nav == active {
                                        a href=(href) aria-current="page" data-test={ "nav-" (slug) } { (label) }
                                    } @else {
                                        a href=(href) data-test={ "nav-" (slug) } { (label) }
                                    }
                                }
                            }
                        }
                    }
                    form.sign-out method="post" action="/console/sign-out" {
                        (csrf_input(csrf))
                        button.link type="submit" data-test="sign-out" { "Sign out" }
                    }
                }
                main #main tabindex="-1" {
                    h1 { (title) }
                    (body)
                }
            }
        }
    }
}

/// A page outside a session (sign-in, errors).
pub fn bare(title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title, None))
            body {
                header.top { a.brand href="/console" { "wasmhook" } }
                main #main {
                    h1 { (title) }
                    (body)
                }
            }
        }
    }
}

/// The hidden CSRF field every form carries.
pub fn csrf_input(csrf: &str) -> Markup {
    html! { input type="hidden" name=(CSRF_FIELD) value=(csrf); }
}

/// A time, as the API writes it.
pub fn time(ms: i64) -> Markup {
    let text = rfc3339(ms);
    html! { time datetime=(text) { (text) } }
}

/// An optional time, or a dash.
pub fn opt_time(ms: Option<i64>) -> Markup {
    match ms {
        Some(ms) => time(ms),
        None => html! { "—" },
    }
}

/// A status word as a coloured badge (the class is chosen from a fixed list, never from data).
pub fn badge(status: &str) -> Markup {
    let class = match status {
        "active" | "succeeded" | "closed" | "keep" | "ok" | "ready" => "badge good",
        "pending" | "pending_verification" | "half_open" | "retrying" | "compiling" => "badge wait",
        "failed" | "disabled" | "open" | "error" => "badge bad",
        _ => "badge",
    };
    html! { span class=(class) { (status) } }
}

/// A flash message shown at the top of a page after an action (text from the server).
pub fn notice(text: Option<&str>) -> Markup {
    html! {
        @if let Some(text) = text {
            p.notice role="status" data-test="notice" { (text) }
        }
    }
}

/// Shortens text for a table cell, on a character boundary.
pub fn short(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text.to_string(),
    }
}

/// Percent-encodes one path segment (ids clients choose may hold any allowed character).
pub fn seg(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Percent-encodes a query value.
pub fn q(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}
