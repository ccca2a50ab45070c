//! The admin's page: every account, and creating one (its first API key is shown once).

use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use maud::{Markup, html};

use super::forms::Fields;
use super::layout::{self, Nav, csrf_input};
use super::session::AdminSigned;
use super::{ConsoleError, Page};
use crate::auth::new_api_key;
use crate::clock::{new_id, now_ms};
use crate::model::Account;
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/console/admin", get(list))
        .route("/console/admin/accounts", post(create))
}

async fn page(
    state: &AppState,
    csrf: &str,
    created: Option<Markup>,
    error: Option<String>,
) -> Page {
    let accounts = state.store.list_accounts().await?;
    Ok(layout::page(
        csrf,
        "Accounts",
        Nav::Admin,
        html! {
            @if let Some(created) = created { (created) }
            form.card method="post" action="/console/admin/accounts" data-test="create-account-form" {
                (csrf_input(csrf))
                h2 { "Create an account" }
                @if let Some(error) = error { p.error role="alert" data-test="form-error" { (error) } }
                label for="account-name" { "Name" }
                input #account-name type="text" name="name" required maxlength="200" data-test="account-name";
                p.hint { "Its first API key is shown once, right after it is created." }
                button type="submit" data-test="create-account" { "Create account" }
            }
            h2 { "All accounts" }
            div.table-wrap {
                table.responsive data-test="accounts-table" {
                    thead { tr { th { "Name" } th { "ID" } th { "Created" } } }
                    tbody {
                        @for a in &accounts {
                            tr data-test="account-row" {
                                td data-label="Name" data-test="account-name-cell" { (a.name) }
                                td.mono data-label="ID" { (a.id) }
                                td data-label="Created" { (layout::time(a.created_at)) }
                            }
                        }
                    }
                }
            }
        },
    )
    .into_response())
}

async fn list(State(state): State<AppState>, admin: AdminSigned) -> Page {
    page(&state, &admin.csrf, None, None).await
}

async fn create(State(state): State<AppState>, admin: AdminSigned, form: Fields) -> Page {
    let name = form.text("name").unwrap_or_default();
    if name.is_empty() || name.len() > 200 {
        let mut r: Response = page(
            &state,
            &admin.csrf,
            None,
            Some("Name: 1 to 200 characters.".into()),
        )
        .await?;
        *r.status_mut() = http::StatusCode::BAD_REQUEST;
        return Ok(r);
    }
    let (api_key, stored) = new_api_key();
    let account = state
        .store
        .create_account(
            Account {
                id: new_id("acc"),
                name,
                created_at: now_ms(),
            },
            stored,
        )
        .await
        .map_err(ConsoleError::from)?;
    let created = html! {
        section.card role="status" data-test="created-account" {
            h2 { "Account created: " (account.name) }
            p { "Its API key, shown only this once. Copy it now:" }
            p { code #new-key data-test="new-api-key" { (api_key) } " "
                button.secondary type="button" data-copy="new-key" data-test="copy-key" { "Copy" } }
        }
    };
    page(&state, &admin.csrf, Some(created), None).await
}
