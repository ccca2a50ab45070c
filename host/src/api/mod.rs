//! The HTTP API: one module per resource, each ending in `router()`; [`app`] merges them.
//!
//! Handlers parse, authenticate and call services or the store's typed functions; no SQL and
//! no wasm here. The request and response types (DTOs) are public and both serialize and
//! deserialize: the command line (`crate::cli`) sends and reads these same types.

pub mod accounts;
mod airy;
pub mod auth;
pub mod deliveries;
pub mod events;
pub mod extract;
pub mod listeners;
mod messages;
mod openapi;
mod ops;
pub mod plugin_test_runs;
pub mod plugins;
mod stream;
pub mod subscriptions;
pub mod webhook_checks;

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use tracing::Instrument;
use utoipa::{OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;

use crate::error::ApiError;
use crate::metrics::RequestLabels;
use crate::state::AppState;

/// The whole HTTP surface, and its OpenAPI description.
pub fn app(state: AppState) -> Router {
    let config = state.config.clone();
    let (router, mut openapi) = OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .merge(accounts::router())
        .merge(subscriptions::router())
        .merge(events::router(&config))
        .merge(deliveries::router())
        .merge(messages::router())
        .merge(airy::router())
        .merge(plugins::router(&config))
        .merge(plugin_test_runs::router())
        .merge(webhook_checks::router())
        .merge(listeners::router())
        .merge(stream::router())
        .merge(ops::router())
        .split_for_parts();
    openapi::complete(&mut openapi);
    router
        .route(
            "/openapi.json",
            axum::routing::get(move || async move { Json(openapi.clone()) }),
        )
        .merge(crate::console::router(&state))
        .fallback(|| async { ApiError::NotFound("route".into()) })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(axum::extract::DefaultBodyLimit::max(config.max_event_bytes))
        .layer(axum::middleware::from_fn_with_state(
            config.body_timeout,
            crate::http_server::body::deadline,
        ))
        .layer(axum::middleware::from_fn_with_state(state.clone(), observe))
        .layer(axum::middleware::from_fn(crate::console::security_headers))
        .with_state(state)
}

/// One span per request (method, route, status, latency), and the request counter.
async fn observe(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let method = req.method().clone();
    let span = tracing::info_span!("request", %method, %route, status = tracing::field::Empty);
    let started = Instant::now();
    let response = next.run(req).instrument(span.clone()).await;
    let status = response.status().as_u16();
    span.record("status", status);
    let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
    span.in_scope(|| tracing::info!(status, latency_ms, "request"));
    state
        .metrics
        .requests
        .get_or_create(&RequestLabels {
            method: method.to_string(),
            route,
            status,
        })
        .inc();
    response
}

/// The most items a listing page holds.
pub const MAX_PAGE: usize = 250;

fn page_limit_schema() -> utoipa::openapi::RefOr<utoipa::openapi::Schema> {
    crate::schema::integer(
        "Items per page (default 50).",
        Some(1),
        Some(MAX_PAGE as u64),
        true,
    )
}

/// Pagination of listings: newest first, `limit` items, continue with `cursor`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// Items per page, 1 to 250 (default 50).
    #[param(schema_with = page_limit_schema)]
    pub limit: Option<usize>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

impl PageQuery {
    /// Validated (limit, cursor).
    pub fn parse(&self) -> Result<(usize, Option<i64>), ApiError> {
        let limit = self.limit.unwrap_or(50);
        if !(1..=MAX_PAGE).contains(&limit) {
            return Err(ApiError::BadRequest {
                code: "invalid_query",
                message: format!("limit: must be 1 to {MAX_PAGE}"),
            });
        }
        let cursor = match &self.cursor {
            None => None,
            Some(c) => Some(c.parse::<i64>().ok().filter(|c| *c > 0).ok_or_else(|| {
                ApiError::BadRequest {
                    code: "invalid_query",
                    message: "cursor: not a cursor returned by this listing".into(),
                }
            })?),
        };
        Ok((limit, cursor))
    }
}

/// A page of a listing.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ListResponse<T> {
    /// The items, newest first.
    pub data: Vec<T>,
    /// Pass as `cursor` for the next page; null on the last page.
    pub next_cursor: Option<String>,
}

impl<T> From<crate::store::Page<T>> for ListResponse<T> {
    fn from(p: crate::store::Page<T>) -> Self {
        ListResponse {
            data: p.items,
            next_cursor: p.next_cursor.map(|c| c.to_string()),
        }
    }
}

/// Returns `body` with `status`.
pub fn with_status<T: Serialize>(status: http::StatusCode, body: T) -> Response {
    (status, Json(body)).into_response()
}
