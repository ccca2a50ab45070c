//! Airy-compatible webhook endpoints: `/webhooks.subscribe`, `/webhooks.unsubscribe`, `/webhooks.info`.
//!
//! Each account has at most one Airy webhook. It is an ordinary subscription with format
//! `airy` (so it is listed, retried and logged like any other) plus a stable `api_secret`
//! that signs its deliveries in `X-Airy-Content-Signature`.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::AccountId;
use super::extract::ApiJson;
use crate::clock::now_ms;
use crate::error::{ApiError, ErrorBody, NotFoundAs};
use crate::model::{Format, Subscription, SubscriptionStatus};
use crate::state::AppState;
use crate::subscriptions::{CreateSubscription, build, validate_headers, validate_url};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(subscribe))
        .routes(routes!(unsubscribe))
        .routes(routes!(info))
}

/// Body of `/webhooks.subscribe`.
#[derive(Debug, Deserialize, ToSchema)]
struct SubscribeRequest {
    /// Where events are POSTed.
    #[schema(schema_with = crate::subscriptions::schema::required_url)]
    url: String,
    /// Extra headers sent with each event.
    #[serde(default)]
    #[schema(schema_with = crate::subscriptions::schema::headers)]
    headers: BTreeMap<String, String>,
}

/// The webhook, as Airy shows it.
#[derive(Debug, Serialize, ToSchema)]
struct AiryWebhook {
    url: String,
    headers: BTreeMap<String, String>,
    /// `Subscribed` or `Unsubscribed`.
    status: &'static str,
    /// Key of the `X-Airy-Content-Signature` HMAC.
    api_secret: String,
}

/// The webhook's state, as Airy's `/webhooks.info` shows it.
#[derive(Debug, Serialize, ToSchema)]
struct AiryWebhookInfo {
    status: &'static str,
    url: String,
    headers: BTreeMap<String, String>,
}

fn airy_status(sub: &Subscription) -> &'static str {
    if sub.status == SubscriptionStatus::Disabled {
        "Unsubscribed"
    } else {
        "Subscribed"
    }
}

fn view(sub: Subscription) -> AiryWebhook {
    AiryWebhook {
        status: airy_status(&sub),
        url: sub.url.unwrap_or_default(),
        headers: sub.headers,
        api_secret: sub.airy_api_secret.unwrap_or_default(),
    }
}

/// Subscribe the account's webhook, or update its URL and headers (the `api_secret` stays).
#[utoipa::path(post, path = "/webhooks.subscribe", operation_id = "airy_subscribe", tag = "airy", request_body = SubscribeRequest,
    security(("api_key" = [])),
    responses((status = 200, body = AiryWebhook), (status = 400, body = ErrorBody),
        (status = 403, body = ErrorBody, description = "quota_exceeded: the account has as many subscriptions as it may")))]
async fn subscribe(
    State(state): State<AppState>,
    AccountId(account): AccountId,
    ApiJson(req): ApiJson<SubscribeRequest>,
) -> Result<Json<AiryWebhook>, ApiError> {
    validate_url(&req.url, &state.net_policy)?;
    validate_headers(&req.headers)?;
    let mut new = build(
        &account,
        CreateSubscription {
            url: Some(req.url.clone()),
            plugin_id: None,
            transform_plugin_id: None,
            description: "Airy webhook".into(),
            event_types: vec!["message:created".into()],
            headers: req.headers.clone(),
            format: Format::Airy,
            verify: false,
            rate_limit_per_second: None,
            max_in_flight: None,
            ordering: None,
        },
        &state.net_policy,
    )?;
    new.airy_api_secret = Some(uuid::Uuid::new_v4().to_string());
    let sub = state
        .store
        .upsert_airy_webhook(new, move |sub| {
            sub.url = Some(req.url);
            sub.headers = req.headers;
            sub.status = SubscriptionStatus::Active;
            sub.status_reason = None;
            sub.failing_since = None;
            sub.updated_at = now_ms();
        })
        .await?;
    Ok(Json(view(sub)))
}

/// Unsubscribe the account's webhook.
#[utoipa::path(post, path = "/webhooks.unsubscribe", operation_id = "airy_unsubscribe", tag = "airy", security(("api_key" = [])),
    responses((status = 200, body = AiryWebhook), (status = 404, body = ErrorBody)))]
async fn unsubscribe(
    State(state): State<AppState>,
    AccountId(account): AccountId,
) -> Result<Json<AiryWebhook>, ApiError> {
    let existing = state
        .store
        .airy_webhook(account.clone())
        .await?
        .ok_or_else(|| ApiError::NotFound("webhook".into()))?;
    let (sub, ()) = state
        .store
        .update_subscription(account, existing.id, |sub| {
            sub.status = SubscriptionStatus::Disabled;
            sub.status_reason = Some("unsubscribed".into());
            sub.updated_at = now_ms();
            Ok(())
        })
        .await
        .or_not_found("webhook")?;
    Ok(Json(view(sub)))
}

/// The account's webhook.
#[utoipa::path(post, path = "/webhooks.info", operation_id = "airy_info", tag = "airy", security(("api_key" = [])),
    responses((status = 200, body = AiryWebhookInfo), (status = 404, body = ErrorBody)))]
async fn info(
    State(state): State<AppState>,
    AccountId(account): AccountId,
) -> Result<Json<AiryWebhookInfo>, ApiError> {
    let sub = state
        .store
        .airy_webhook(account)
        .await?
        .ok_or_else(|| ApiError::NotFound("webhook".into()))?;
    Ok(Json(AiryWebhookInfo {
        status: airy_status(&sub),
        url: sub.url.unwrap_or_default(),
        headers: sub.headers,
    }))
}
