//! `/v1/events`: ingest (single and batch), list and get.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::AccountId;
use super::extract::{ApiJson, ApiPath, ApiQuery};
use super::{ListResponse, PageQuery, with_status};
use crate::config::Config;
use crate::error::{ApiError, ErrorBody, NotFoundAs};
use crate::events::{EventIn, MAX_BATCH, ingest, prepare};
use crate::model::Event;
use crate::state::AppState;

pub fn router(config: &Config) -> OpenApiRouter<AppState> {
    let batch = OpenApiRouter::new()
        .routes(routes!(create_batch))
        .layer(axum::extract::DefaultBodyLimit::max(config.max_batch_bytes));
    OpenApiRouter::new()
        .routes(routes!(create, list))
        .routes(routes!(get_one))
        .merge(batch)
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    match headers.get("idempotency-key") {
        None => Ok(None),
        Some(v) => {
            let key = v
                .to_str()
                .ok()
                .filter(|k| !k.is_empty() && k.len() <= 256)
                .ok_or_else(|| {
                    ApiError::invalid("Idempotency-Key: 1 to 256 visible ASCII characters")
                })?;
            Ok(Some(key.to_string()))
        }
    }
}

/// Post an event. It is stored durably before the 202; posting the same `id` (or
/// `Idempotency-Key`) again returns the first event and stores nothing new.
#[utoipa::path(post, path = "/v1/events", operation_id = "create_event", tag = "events", request_body = EventIn,
    params(("Idempotency-Key" = Option<String>, Header, description = "Makes retries of this request safe")),
    security(("api_key" = [])),
    responses((status = 202, body = Event), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 413, body = ErrorBody)))]
async fn create(
    State(state): State<AppState>,
    AccountId(account): AccountId,
    headers: HeaderMap,
    ApiJson(req): ApiJson<EventIn>,
) -> Result<Response, ApiError> {
    let key = idempotency_key(&headers)?;
    let event = prepare(&account, req, key, state.config.max_event_bytes, "")?;
    let mut stored = ingest(&state, vec![event]).await?;
    let one = stored.pop().expect("one event in, one out");
    let mut response = with_status(StatusCode::ACCEPTED, one.event);
    if one.replayed {
        response
            .headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    Ok(response)
}

/// A batch of events.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct BatchIn {
    /// 1 to 1000 events, stored all or none.
    #[schema(schema_with = batch_schema)]
    events: Vec<EventIn>,
}

fn batch_schema() -> utoipa::openapi::RefOr<utoipa::openapi::Schema> {
    crate::schema::array(
        "The events (see `minItems` and `maxItems`), stored all or none.",
        utoipa::openapi::Ref::from_schema_name("EventIn").into(),
        1,
        MAX_BATCH,
        false,
    )
}

/// Post up to 1000 events in one transaction: all are stored, or none.
#[utoipa::path(post, path = "/v1/events/batch", operation_id = "create_event_batch", tag = "events", request_body = BatchIn,
    security(("api_key" = [])),
    responses((status = 202, body = ListResponse<Event>), (status = 400, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 413, body = ErrorBody)))]
async fn create_batch(
    State(state): State<AppState>,
    AccountId(account): AccountId,
    ApiJson(req): ApiJson<BatchIn>,
) -> Result<Response, ApiError> {
    if req.events.is_empty() || req.events.len() > MAX_BATCH {
        return Err(ApiError::invalid(format!(
            "events: 1 to {MAX_BATCH} events"
        )));
    }
    let max = state.config.max_event_bytes;
    let events = req
        .events
        .into_iter()
        .enumerate()
        .map(|(i, e)| prepare(&account, e, None, max, &format!("events[{i}].")))
        .collect::<Result<Vec<_>, _>>()?;
    let stored = ingest(&state, events).await?;
    let data: Vec<Event> = stored.into_iter().map(|i| i.event).collect();
    Ok((
        StatusCode::ACCEPTED,
        Json(ListResponse {
            data,
            next_cursor: None,
        }),
    )
        .into_response())
}

/// Listing filters for events.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct EventQuery {
    /// Only events of this type.
    #[serde(rename = "type")]
    event_type: Option<String>,
    /// Items per page, 1 to 250 (default 50).
    #[param(schema_with = super::page_limit_schema)]
    limit: Option<usize>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// List events, newest first.
#[utoipa::path(get, path = "/v1/events", operation_id = "list_events", tag = "events", params(EventQuery), security(("api_key" = [])),
    responses((status = 200, body = ListResponse<Event>), (status = 400, body = ErrorBody)))]
async fn list(
    State(state): State<AppState>,
    AccountId(account): AccountId,
    ApiQuery(q): ApiQuery<EventQuery>,
) -> Result<Json<ListResponse<Event>>, ApiError> {
    let (limit, cursor) = PageQuery {
        limit: q.limit,
        cursor: q.cursor,
    }
    .parse()?;
    Ok(Json(
        state
            .store
            .list_events(account, q.event_type, limit, cursor)
            .await?
            .into(),
    ))
}

/// Get an event.
#[utoipa::path(get, path = "/v1/events/{id}", operation_id = "get_event", tag = "events",
    params(("id" = String, Path, description = "Event id")), security(("api_key" = [])),
    responses((status = 200, body = Event), (status = 404, body = ErrorBody)))]
async fn get_one(
    State(state): State<AppState>,
    AccountId(account): AccountId,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Event>, ApiError> {
    Ok(Json(
        state
            .store
            .get_event(account, id)
            .await
            .or_not_found("event")?,
    ))
}
