//! `/v1/subscriptions`: create, list, get, change and delete subscribers; secrets; verification.

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
use crate::clock::{now_ms, opt_ms_as_rfc3339};
use crate::error::{ApiError, ErrorBody, NotFoundAs};
use crate::model::{Subscription, SubscriptionStatus};
use crate::state::AppState;
use crate::store::StoreError;
use crate::subscriptions::{self as rules, CreateSubscription, UpdateSubscription};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create, list))
        .routes(routes!(get_one, update, delete))
        .routes(routes!(get_secret))
        .routes(routes!(rotate_secret))
        .routes(routes!(verify))
}

/// A subscription as created: with its signing secret, shown here and by `GET .../secret`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CreatedSubscription {
    /// The subscription.
    #[serde(flatten)]
    pub subscription: Subscription,
    /// The signing secret (`whsec_...`).
    pub secret: String,
}

/// The signing secret of a subscription.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SecretResponse {
    /// The current secret (`whsec_...`).
    pub secret: String,
    /// Until when the previous secret also signs deliveries (after a rotation), else null.
    #[serde(with = "opt_ms_as_rfc3339")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub previous_secret_expires_at: Option<i64>,
}

/// Refuses references to plugins the account does not have.
pub(crate) async fn check_plugin_refs(
    state: &AppState,
    account: &str,
    ids: &[Option<&String>],
) -> Result<(), ApiError> {
    for id in ids.iter().flatten() {
        if !state
            .store
            .plugin_exists(account.to_string(), id.to_string())
            .await?
        {
            return Err(ApiError::invalid(format!(
                "no plugin {id:?} in this account"
            )));
        }
    }
    Ok(())
}

/// Create a subscription.
#[utoipa::path(post, path = "/v1/subscriptions", operation_id = "create_subscription", tag = "subscriptions", request_body = CreateSubscription,
    security(("api_key" = [])),
    responses((status = 201, body = CreatedSubscription), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody, description = "quota_exceeded: the account has as many subscriptions as it may")))]
async fn create(
    State(state): State<AppState>,
    AccountId(account): AccountId,
    ApiJson(req): ApiJson<CreateSubscription>,
) -> Result<Response, ApiError> {
    check_plugin_refs(
        &state,
        &account,
        &[req.plugin_id.as_ref(), req.transform_plugin_id.as_ref()],
    )
    .await?;
    let sub = rules::build(&account, req, &state.net_policy)?;
    let sub = state.store.create_subscription(sub).await?;
    if sub.status == SubscriptionStatus::PendingVerification {
        crate::delivery::verification::spawn(&state, sub.clone());
    }
    let secret = sub.secret.clone();
    Ok(with_status(
        StatusCode::CREATED,
        CreatedSubscription {
            subscription: sub,
            secret,
        },
    ))
}

/// List subscriptions, newest first.
#[utoipa::path(get, path = "/v1/subscriptions", operation_id = "list_subscriptions", tag = "subscriptions", params(PageQuery),
    security(("api_key" = [])),
    responses((status = 200, body = ListResponse<Subscription>), (status = 401, body = ErrorBody)))]
async fn list(
    State(state): State<AppState>,
    AccountId(account): AccountId,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> Result<Json<ListResponse<Subscription>>, ApiError> {
    let (limit, cursor) = q.parse()?;
    Ok(Json(
        state
            .store
            .list_subscriptions(account, limit, cursor)
            .await?
            .into(),
    ))
}

/// Get a subscription.
#[utoipa::path(get, path = "/v1/subscriptions/{id}", operation_id = "get_subscription", tag = "subscriptions",
    params(("id" = String, Path, description = "Subscription id")), security(("api_key" = [])),
    responses((status = 200, body = Subscription), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn get_one(
    State(state): State<AppState>,
    AccountId(account): AccountId,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Subscription>, ApiError> {
    Ok(Json(
        state
            .store
            .get_subscription(account, id)
            .await
            .or_not_found("subscription")?,
    ))
}

/// Change a subscription; only the fields given change.
#[utoipa::path(patch, path = "/v1/subscriptions/{id}", operation_id = "update_subscription", tag = "subscriptions", request_body = UpdateSubscription,
    params(("id" = String, Path, description = "Subscription id")), security(("api_key" = [])),
    responses((status = 200, body = Subscription), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn update(
    State(state): State<AppState>,
    AccountId(account): AccountId,
    ApiPath(id): ApiPath<String>,
    ApiJson(req): ApiJson<UpdateSubscription>,
) -> Result<Json<Subscription>, ApiError> {
    rules::validate_update(&req, &state.net_policy)?;
    if let Some(Some(t)) = &req.transform_plugin_id {
        check_plugin_refs(&state, &account, &[Some(t)]).await?;
    }
    let (sub, verify_now) = state
        .store
        .update_subscription(account, id, move |sub| {
            rules::apply_update(sub, req).map_err(StoreError::Conflict)
        })
        .await
        .map_err(|e| match e {
            StoreError::Conflict(m) => ApiError::invalid(m),
            StoreError::NotFound => ApiError::NotFound("subscription".into()),
            other => other.into(),
        })?;
    if verify_now {
        crate::delivery::verification::spawn(&state, sub.clone());
    }
    Ok(Json(sub))
}

/// Delete a subscription and its deliveries.
#[utoipa::path(delete, path = "/v1/subscriptions/{id}", operation_id = "delete_subscription", tag = "subscriptions",
    params(("id" = String, Path, description = "Subscription id")), security(("api_key" = [])),
    responses((status = 204), (status = 404, body = ErrorBody)))]
async fn delete(
    State(state): State<AppState>,
    AccountId(account): AccountId,
    ApiPath(id): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    state
        .store
        .delete_subscription(account, id)
        .await
        .or_not_found("subscription")?;
    Ok(StatusCode::NO_CONTENT)
}

/// Get the signing secret.
#[utoipa::path(get, path = "/v1/subscriptions/{id}/secret", operation_id = "get_subscription_secret", tag = "subscriptions",
    params(("id" = String, Path, description = "Subscription id")), security(("api_key" = [])),
    responses((status = 200, body = SecretResponse), (status = 404, body = ErrorBody)))]
async fn get_secret(
    State(state): State<AppState>,
    AccountId(account): AccountId,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<SecretResponse>, ApiError> {
    let sub = state
        .store
        .get_subscription(account, id)
        .await
        .or_not_found("subscription")?;
    let now = now_ms();
    Ok(Json(SecretResponse {
        secret: sub.secret,
        previous_secret_expires_at: sub.previous_secret_expires_at.filter(|t| *t > now),
    }))
}

/// Rotate the signing secret; the old one keeps signing (second signature) for 24 hours.
#[utoipa::path(post, path = "/v1/subscriptions/{id}/secret/rotate", operation_id = "rotate_subscription_secret", tag = "subscriptions",
    params(("id" = String, Path, description = "Subscription id")), security(("api_key" = [])),
    responses((status = 200, body = SecretResponse), (status = 404, body = ErrorBody)))]
async fn rotate_secret(
    State(state): State<AppState>,
    AccountId(account): AccountId,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<SecretResponse>, ApiError> {
    let (sub, _) = state
        .store
        .update_subscription(account, id, |sub| Ok(rules::rotate_secret(sub, now_ms())))
        .await
        .or_not_found("subscription")?;
    Ok(Json(SecretResponse {
        secret: sub.secret,
        previous_secret_expires_at: sub.previous_secret_expires_at,
    }))
}

/// Run the verification handshake again (Papercups `webhook:verify`).
#[utoipa::path(post, path = "/v1/subscriptions/{id}/verify", operation_id = "verify_subscription", tag = "subscriptions",
    params(("id" = String, Path, description = "Subscription id")), security(("api_key" = [])),
    responses((status = 202, body = Subscription), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn verify(
    State(state): State<AppState>,
    AccountId(account): AccountId,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, ApiError> {
    let (sub, ()) = state
        .store
        .update_subscription(account, id, |sub| {
            if sub.url.is_none() {
                return Err(StoreError::Conflict(
                    "a plugin subscription has no URL to verify".into(),
                ));
            }
            sub.status = SubscriptionStatus::PendingVerification;
            sub.status_reason = Some("waiting for the verification handshake".into());
            sub.updated_at = now_ms();
            Ok(())
        })
        .await
        .map_err(|e| match e {
            StoreError::Conflict(m) => ApiError::invalid(m),
            StoreError::NotFound => ApiError::NotFound("subscription".into()),
            other => other.into(),
        })?;
    crate::delivery::verification::spawn(&state, sub.clone());
    Ok(with_status(StatusCode::ACCEPTED, sub))
}
