//! Deliveries and their attempt log: listing, inspection, manual retry and recovery.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::AccountId;
use super::extract::{ApiJson, ApiPath, ApiQuery};
use super::{ListResponse, PageQuery, with_status};
use crate::clock::{now_ms, parse_rfc3339};
use crate::error::{ApiError, ErrorBody, NotFoundAs};
use crate::model::{Attempt, Delivery, DeliveryStatus};
use crate::state::AppState;
use crate::store::{DeliveryFilter, DeliveryScope};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(for_account))
        .routes(routes!(for_subscription))
        .routes(routes!(for_event))
        .routes(routes!(get_one))
        .routes(routes!(retry))
        .routes(routes!(recover))
}

/// Listing filters for deliveries.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct DeliveryQuery {
    /// Only deliveries in this status.
    status: Option<DeliveryStatus>,
    /// Items per page, 1 to 250 (default 50).
    #[param(schema_with = super::page_limit_schema)]
    limit: Option<usize>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// A delivery with every attempt made.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DeliveryDetail {
    /// The delivery.
    #[serde(flatten)]
    pub delivery: Delivery,
    /// Attempts, oldest first.
    pub attempt_log: Vec<Attempt>,
}

async fn list(
    state: &AppState,
    account: String,
    filter: DeliveryFilter,
    q: DeliveryQuery,
) -> Result<Json<ListResponse<Delivery>>, ApiError> {
    let (limit, cursor) = PageQuery {
        limit: q.limit,
        cursor: q.cursor,
    }
    .parse()?;
    let filter = DeliveryFilter {
        status: q.status,
        ..filter
    };
    Ok(Json(
        state
            .store
            .list_deliveries(account, filter, limit, cursor)
            .await?
            .into(),
    ))
}

/// The account's deliveries, newest first.
#[utoipa::path(get, path = "/v1/deliveries", operation_id = "list_deliveries", tag = "deliveries",
    params(DeliveryQuery), security(("api_key" = [])),
    responses((status = 200, body = ListResponse<Delivery>), (status = 400, body = ErrorBody)))]
async fn for_account(
    State(state): State<AppState>,
    AccountId(account): AccountId,
    ApiQuery(q): ApiQuery<DeliveryQuery>,
) -> Result<Json<ListResponse<Delivery>>, ApiError> {
    list(&state, account, DeliveryFilter::default(), q).await
}

/// A subscription's deliveries, newest first.
#[utoipa::path(get, path = "/v1/subscriptions/{id}/deliveries", operation_id = "list_subscription_deliveries", tag = "deliveries",
    params(("id" = String, Path, description = "Subscription id"), DeliveryQuery), security(("api_key" = [])),
    responses((status = 200, body = ListResponse<Delivery>), (status = 404, body = ErrorBody)))]
async fn for_subscription(
    State(state): State<AppState>,
    AccountId(account): AccountId,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<DeliveryQuery>,
) -> Result<Json<ListResponse<Delivery>>, ApiError> {
    state
        .store
        .get_subscription(account.clone(), id.clone())
        .await
        .or_not_found("subscription")?;
    list(
        &state,
        account,
        DeliveryFilter {
            scope: DeliveryScope::Subscription(id),
            ..Default::default()
        },
        q,
    )
    .await
}

/// An event's deliveries, newest first.
#[utoipa::path(get, path = "/v1/events/{id}/deliveries", operation_id = "list_event_deliveries", tag = "deliveries",
    params(("id" = String, Path, description = "Event id"), DeliveryQuery), security(("api_key" = [])),
    responses((status = 200, body = ListResponse<Delivery>), (status = 404, body = ErrorBody)))]
async fn for_event(
    State(state): State<AppState>,
    AccountId(account): AccountId,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<DeliveryQuery>,
) -> Result<Json<ListResponse<Delivery>>, ApiError> {
    state
        .store
        .get_event(account.clone(), id.clone())
        .await
        .or_not_found("event")?;
    list(
        &state,
        account,
        DeliveryFilter {
            scope: DeliveryScope::Event(id),
            ..Default::default()
        },
        q,
    )
    .await
}

/// A delivery with its attempt log.
#[utoipa::path(get, path = "/v1/deliveries/{id}", operation_id = "get_delivery", tag = "deliveries",
    params(("id" = String, Path, description = "Delivery id")), security(("api_key" = [])),
    responses((status = 200, body = DeliveryDetail), (status = 404, body = ErrorBody)))]
async fn get_one(
    State(state): State<AppState>,
    AccountId(account): AccountId,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<DeliveryDetail>, ApiError> {
    let (delivery, attempt_log) = state
        .store
        .get_delivery(account, id)
        .await
        .or_not_found("delivery")?;
    Ok(Json(DeliveryDetail {
        delivery,
        attempt_log,
    }))
}

/// Attempt a delivery again now, whatever its status.
#[utoipa::path(post, path = "/v1/deliveries/{id}/retry", operation_id = "retry_delivery", tag = "deliveries",
    params(("id" = String, Path, description = "Delivery id")), security(("api_key" = [])),
    responses((status = 202, body = Delivery), (status = 404, body = ErrorBody)))]
async fn retry(
    State(state): State<AppState>,
    AccountId(account): AccountId,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, ApiError> {
    let delivery = state
        .store
        .retry_delivery(account, id, now_ms())
        .await
        .or_not_found("delivery")?;
    state.wake_dispatcher();
    Ok(with_status(StatusCode::ACCEPTED, delivery))
}

/// Body of `POST /v1/subscriptions/{id}/recover`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RecoverRequest {
    /// Requeue failed deliveries created at or after this time (RFC 3339).
    #[schema(format = DateTime)]
    pub since: String,
    /// Only count them: nothing is requeued (`recovered` is how many would be).
    #[serde(default)]
    pub dry_run: bool,
}

/// How many deliveries were requeued (or, with `dry_run`, would be).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RecoverResponse {
    /// Failed deliveries requeued (with `dry_run`: that would be requeued).
    pub recovered: usize,
    /// Whether this was a dry run.
    #[serde(default)]
    pub dry_run: bool,
}

/// Requeue a subscription's failed deliveries since a time; with `dry_run`, only count them.
#[utoipa::path(post, path = "/v1/subscriptions/{id}/recover", operation_id = "recover_subscription", tag = "deliveries", request_body = RecoverRequest,
    params(("id" = String, Path, description = "Subscription id")), security(("api_key" = [])),
    responses((status = 202, body = RecoverResponse), (status = 200, body = RecoverResponse, description = "dry run: nothing requeued"), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn recover(
    State(state): State<AppState>,
    AccountId(account): AccountId,
    ApiPath(id): ApiPath<String>,
    ApiJson(req): ApiJson<RecoverRequest>,
) -> Result<Response, ApiError> {
    let (_, since) = parse_rfc3339(&req.since)
        .ok_or_else(|| ApiError::invalid("since: not an RFC 3339 timestamp"))?;
    if req.dry_run {
        // One count on the (subscription, status) index, as the console's preview.
        let recovered = state
            .store
            .count_failed_since(account, id, since)
            .await
            .or_not_found("subscription")? as usize;
        return Ok(with_status(
            StatusCode::OK,
            RecoverResponse {
                recovered,
                dry_run: true,
            },
        ));
    }
    let recovered = state
        .store
        .recover_deliveries(account, id, since, now_ms())
        .await
        .or_not_found("subscription")?;
    state.wake_dispatcher();
    Ok(with_status(
        StatusCode::ACCEPTED,
        RecoverResponse {
            recovered,
            dry_run: false,
        },
    ))
}
