//! The API keys page: create (the key is shown once), list, revoke; and the account's Airy
//! webhook, shown as what it is: a subscription with `format: airy`.

use axum::Router;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Redirect};
use axum::routing::{get, post};
use maud::{Markup, html};

use super::Page;
use super::layout::{self, Nav, badge, csrf_input, seg};
use super::session::Signed;
use crate::auth::new_api_key;
use crate::clock::now_ms;
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/console/api-keys", get(list).post(create))
        .route("/console/api-keys/{id}/revoke", post(revoke))
}

async fn page(state: &AppState, s: &Signed, created: Option<Markup>) -> Page {
    let keys = state.store.list_api_keys(s.account.clone()).await?;
    let airy = state.store.airy_webhook(s.account.clone()).await?;
    Ok(layout::page(
        &s.csrf,
        "API keys",
        Nav::Keys,
        html! {
            @if let Some(created) = created { (created) }
            p { "Account " code data-test="account-id" { (s.account) } ". Every key acts for this account; the console signs in with one too." }
            form method="post" action="/console/api-keys" {
                (csrf_input(&s.csrf))
                button type="submit" data-test="create-key" { "Create API key" }
            }
            div.table-wrap {
                table.responsive data-test="keys-table" {
                    thead { tr { th { "Key" } th { "Created" } th { "Status" } th { "Actions" } } }
                    tbody {
                        @for k in &keys {
                            tr data-test="key-row" data-id=(k.id) {
                                td.mono data-label="Key" { (k.prefix) "…" div.hint { (k.id) } }
                                td data-label="Created" { (layout::time(k.created_at)) }
                                td data-label="Status" data-test="key-status" {
                                    @match k.revoked_at {
                                        Some(at) => { (badge("revoked")) " " (layout::time(at)) },
                                        None => (badge("active")),
                                    }
                                }
                                td data-label="Actions" {
                                    @if k.revoked_at.is_none() {
                                        details.confirm {
                                            summary data-test="revoke-key" { "Revoke" }
                                            p { "Revoke this key? It stops working at once, and console sessions signed in with it end." }
                                            form method="post" action={ "/console/api-keys/" (seg(&k.id)) "/revoke" } {
                                                (csrf_input(&s.csrf))
                                                button.danger type="submit" data-test="revoke-key-confirm" { "Yes, revoke it" }
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            h2 { "Airy webhook" }
            @match &airy {
                None => p data-test="airy-none" { "This account has not subscribed through " code { "/webhooks.subscribe" } "." },
                Some(sub) => p data-test="airy-webhook" {
                    "The account's Airy webhook (" code { "/webhooks.info" } ") is subscription "
                    a href={ "/console/subscriptions/" (seg(&sub.id)) } { (sub.id) }
                    ", format " code { (sub.format.as_str()) } ", delivering to "
                    span.mono.wrap { (sub.url.as_deref().unwrap_or_default()) } " (" (sub.status.as_str()) ")."
                },
            }
        },
    )
    .into_response())
}

async fn list(State(state): State<AppState>, s: Signed) -> Page {
    page(&state, &s, None).await
}

async fn create(State(state): State<AppState>, s: Signed) -> Page {
    let (key, stored) = new_api_key();
    state
        .store
        .add_api_key(s.account.clone(), stored, now_ms())
        .await?;
    let created = html! {
        section.card role="status" data-test="created-key" {
            h2 { "New API key" }
            p { "Shown only this once. Copy it now:" }
            p { code #new-key.wrap data-test="new-api-key" { (key) } " "
                button.secondary type="button" data-copy="new-key" data-test="copy-key" { "Copy" } }
        }
    };
    page(&state, &s, Some(created)).await
}

async fn revoke(State(state): State<AppState>, s: Signed, Path(id): Path<String>) -> Page {
    let hash = state
        .store
        .revoke_api_key(s.account.clone(), id, now_ms())
        .await?;
    state.keys.evict(&hash);
    Ok(Redirect::to("/console/api-keys").into_response())
}
