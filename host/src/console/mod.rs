//! The web console: server-rendered HTML pages over the same store calls, services, auth and
//! tenancy as the JSON API, served by the same binary under `/console`.
//!
//! Pages are rendered with maud, which escapes every interpolated value: data from the outside
//! (payloads, URLs, headers, plugin logs, response bodies) is always text, never markup, and
//! `PreEscaped` is never used on it. One small hand-written script and one stylesheet are
//! embedded in the binary (`assets`); the Content-Security-Policy set on every response
//! ([`security_headers`]) allows scripts and styles from the server itself only, so neither
//! inline scripts nor inline styles nor event-handler attributes would run even if one slipped
//! into a page. Sign-in makes a server-side session ([`session`]); every POST carries the
//! session's CSRF token.
//!
//! This module must not contain SQL or wasm calls: it calls the store's typed functions and the
//! same services as `api/`.

mod accounts;
mod assets;
mod check;
mod deliveries;
mod events;
mod examples;
mod forms;
mod integrations;
mod keys;
mod layout;
mod overview;
mod plugin_test;
mod plugins;
pub mod session;
mod subscription;

use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use maud::html;

use crate::error::ApiError;
use crate::state::AppState;
use crate::store::StoreError;

/// The policy on every response: only the server's own scripts, styles and images (and data:
/// images), no plugins, no framing, forms post only back here.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; \
     frame-ancestors 'none'; form-action 'self'";

/// The console's pages, assets and form endpoints; `/` leads to it.
pub fn router(state: &AppState) -> Router<AppState> {
    Router::new()
        .route("/", get(|| async { Redirect::to("/console") }))
        .route("/console/", get(|| async { Redirect::to("/console") }))
        // Unknown console pages get a page, not the API's JSON.
        .route(
            "/console/{*rest}",
            get(|| async { ConsoleError::NotFound("page") }),
        )
        .merge(assets::router())
        .merge(session::router())
        .merge(accounts::router())
        .merge(overview::router())
        .merge(integrations::router())
        .merge(keys::router())
        .merge(subscription::router())
        .merge(deliveries::router())
        .merge(events::router())
        .merge(plugins::router(&state.config))
        .merge(plugin_test::router())
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            session::csrf_guard,
        ))
}

/// Sets the security headers on every response that has not set them itself.
pub async fn security_headers(req: Request, next: Next) -> Response {
    let mut response = next.run(req).await;
    let headers = response.headers_mut();
    for (name, value) in [
        (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "same-origin"),
        (header::X_FRAME_OPTIONS, "DENY"),
    ] {
        headers
            .entry(name)
            .or_insert(HeaderValue::from_static(value));
    }
    response
}

/// What a console handler fails with: a page saying what went wrong, with the right status.
#[derive(Debug)]
pub enum ConsoleError {
    /// The thing does not exist in this account (another account's is the same 404).
    NotFound(&'static str),
    /// An error of the API layer, shown with its message.
    Api(ApiError),
}

impl From<ApiError> for ConsoleError {
    fn from(e: ApiError) -> Self {
        match e {
            ApiError::NotFound(_) => ConsoleError::NotFound("page"),
            other => ConsoleError::Api(other),
        }
    }
}

impl From<StoreError> for ConsoleError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => ConsoleError::NotFound("page"),
            other => ConsoleError::Api(other.into()),
        }
    }
}

impl IntoResponse for ConsoleError {
    fn into_response(self) -> Response {
        let (status, title, message) = match self {
            ConsoleError::NotFound(what) => (
                StatusCode::NOT_FOUND,
                "Not found".to_string(),
                format!("This {what} does not exist in your account."),
            ),
            ConsoleError::Api(e) => {
                let message = e.to_string();
                // The status the API would answer with (its conversion also logs internal errors).
                let status = e.into_response().status();
                (status, "Something went wrong".to_string(), message)
            }
        };
        let body = layout::bare(
            &title,
            html! {
                p data-test="error-message" { (message) }
                p { a href="/console" { "Back to the console" } }
            },
        );
        (status, body).into_response()
    }
}

/// A console result.
pub type Page = Result<Response, ConsoleError>;
