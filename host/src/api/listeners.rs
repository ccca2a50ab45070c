//! `/v1/listeners`: `wasmhook listen`. A listener is a subscription whose deliveries are handed
//! to the command line that connected to it (`GET .../stream`), which POSTs each to a local
//! receiver and reports the answer (`POST .../results`); see [`crate::delivery::listen`].

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::AccountId;
use super::extract::{ApiJson, ApiPath};
use super::subscriptions::CreatedSubscription;
use super::with_status;
use crate::clock::now_ms;
use crate::delivery::listen::{Connected, ListenResult};
use crate::error::{ApiError, ErrorBody, NotFoundAs};
use crate::model::{Format, Subscription};
use crate::state::AppState;
use crate::subscriptions::build_listener;

/// How often an idle stream gets a comment.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create))
        .routes(routes!(stream))
        .routes(routes!(result))
}

/// Body of `POST /v1/listeners`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ListenIn {
    /// Event types to receive; `["*"]` (the default) for all.
    #[serde(default = "all_types")]
    #[schema(schema_with = crate::subscriptions::schema::event_types)]
    pub event_types: Vec<String>,
    /// Body shape of deliveries; `standard` by default.
    #[serde(default)]
    pub format: Format,
    /// Where the command line forwards deliveries (shown in the description; never contacted
    /// by the server).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forward_to: Option<String>,
}

fn all_types() -> Vec<String> {
    vec!["*".into()]
}

/// Create a listener: a subscription delivered to a connected command line. It is deleted
/// `--listen-grace` (a minute) after its last connection ends, or with
/// `DELETE /v1/subscriptions/{id}`.
#[utoipa::path(post, path = "/v1/listeners", operation_id = "create_listener", tag = "subscriptions", request_body = ListenIn,
    security(("api_key" = [])),
    responses((status = 201, body = CreatedSubscription), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody, description = "quota_exceeded: the account has as many subscriptions as it may")))]
async fn create(
    State(state): State<AppState>,
    AccountId(account): AccountId,
    ApiJson(req): ApiJson<ListenIn>,
) -> Result<Response, ApiError> {
    let description = match &req.forward_to {
        Some(to) => format!("wasmhook listen → {to}"),
        None => "wasmhook listen".into(),
    };
    let now = now_ms();
    let grace = state.config.listen_grace.as_millis() as i64;
    let sub = build_listener(
        &account,
        req.event_types,
        req.format,
        description,
        now,
        now + grace,
    )?;
    let sub = state.store.create_subscription(sub).await?;
    let secret = sub.secret.clone();
    Ok(with_status(
        StatusCode::CREATED,
        CreatedSubscription {
            subscription: sub,
            secret,
        },
    ))
}

async fn listener(state: &AppState, account: &str, id: &str) -> Result<Subscription, ApiError> {
    let sub = state
        .store
        .get_subscription(account.to_string(), id.to_string())
        .await
        .or_not_found("listener")?;
    if sub.listen_expires_at.is_none() {
        return Err(ApiError::NotFound("listener".into()));
    }
    Ok(sub)
}

/// Ends a connection when the stream is dropped, and starts the listener's grace period.
struct Connection {
    state: AppState,
    account: String,
    inner: Connected,
}

impl Drop for Connection {
    fn drop(&mut self) {
        let id = self.inner.subscription_id.clone();
        self.state.listeners.disconnect(&id, self.inner.id);
        let (state, account) = (self.state.clone(), self.account.clone());
        let grace = state.config.listen_grace.as_millis() as i64;
        tokio::spawn(async move {
            let _ = state
                .store
                .touch_listener(account, id, now_ms() + grace)
                .await;
        });
    }
}

/// Receive a listener's deliveries as Server-Sent Events, one `delivery` message (a `Handoff`:
/// the headers and body a URL subscriber would get) per attempt; answer each with
/// `POST /v1/listeners/{id}/results`. A new connection replaces the previous one.
#[utoipa::path(get, path = "/v1/listeners/{id}/stream", operation_id = "stream_listener", tag = "subscriptions",
    params(("id" = String, Path, description = "Listener subscription id")), security(("api_key" = [])),
    responses((status = 200, content_type = "text/event-stream", description = "`delivery` messages"),
        (status = 404, body = ErrorBody)))]
async fn stream(
    State(state): State<AppState>,
    AccountId(account): AccountId,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, ApiError> {
    listener(&state, &account, &id).await?;
    let inner = state.listeners.connect(&id);
    let conn = Connection {
        state: state.clone(),
        account,
        inner,
    };
    let hello = SseEvent::default().comment("connected");
    let messages = futures_util::stream::unfold(conn, |mut conn| async move {
        let handoff = conn.inner.deliveries.recv().await?;
        let event = SseEvent::default()
            .event("delivery")
            .data(serde_json::to_string(&handoff).expect("plain data"));
        Some((Ok::<_, Infallible>(event), conn))
    });
    let events = futures_util::StreamExt::chain(futures_util::stream::iter([Ok(hello)]), messages);
    let sse = Sse::new(events).keep_alive(KeepAlive::new().interval(KEEP_ALIVE));
    Ok(([("x-accel-buffering", "no")], sse).into_response())
}

/// Report what the local receiver answered to a handed-off delivery; it becomes the attempt.
/// `404` when nothing waits for it (answered after the delivery timeout, or from a replaced
/// connection).
#[utoipa::path(post, path = "/v1/listeners/{id}/results", operation_id = "post_listener_result", tag = "subscriptions", request_body = ListenResult,
    params(("id" = String, Path, description = "Listener subscription id")), security(("api_key" = [])),
    responses((status = 204), (status = 404, body = ErrorBody)))]
async fn result(
    State(state): State<AppState>,
    AccountId(account): AccountId,
    ApiPath(id): ApiPath<String>,
    ApiJson(req): ApiJson<ListenResult>,
) -> Result<StatusCode, ApiError> {
    listener(&state, &account, &id).await?;
    if state.listeners.report(&id, req) {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound("waiting delivery".into()))
    }
}
