//! Sending messages: `POST /v1/messages` and Airy's `POST /messages.send`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::AccountId;
use super::extract::ApiJson;
use super::with_status;
use crate::error::{ApiError, ErrorBody};
use crate::messages::{Origin, send};
use crate::model::Message;
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(send_v1))
        .routes(routes!(send_airy))
}

/// Body of `POST /v1/messages`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct SendMessage {
    /// A conversation seen in an ingested event.
    conversation_id: String,
    /// Message text.
    text: String,
}

/// Body of Airy's `POST /messages.send`.
#[derive(Debug, Deserialize, ToSchema)]
struct AirySendMessage {
    /// A conversation seen in an ingested event.
    conversation_id: String,
    /// The message.
    message: AiryMessageContent,
}

#[derive(Debug, Deserialize, ToSchema)]
struct AiryMessageContent {
    /// Message text.
    text: String,
}

/// Send a message into a conversation; emits `message:created` to the account's webhooks.
#[utoipa::path(post, path = "/v1/messages", tag = "messages", request_body = SendMessage,
    security(("api_key" = [])),
    responses((status = 201, body = Message), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn send_v1(
    State(state): State<AppState>,
    AccountId(account): AccountId,
    ApiJson(req): ApiJson<SendMessage>,
) -> Result<Response, ApiError> {
    let message = send(&state, &account, req.conversation_id, req.text, Origin::Api).await?;
    Ok(with_status(StatusCode::CREATED, message))
}

/// Send a message (Airy-compatible shape).
#[utoipa::path(post, path = "/messages.send", tag = "airy", request_body = AirySendMessage,
    security(("api_key" = [])),
    responses((status = 200, body = Message), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn send_airy(
    State(state): State<AppState>,
    AccountId(account): AccountId,
    ApiJson(req): ApiJson<AirySendMessage>,
) -> Result<Response, ApiError> {
    let message = send(
        &state,
        &account,
        req.conversation_id,
        req.message.text,
        Origin::Api,
    )
    .await?;
    Ok(with_status(StatusCode::OK, message))
}
