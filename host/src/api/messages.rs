//! Sending messages: `POST /v1/messages` and Airy's `POST /messages.send`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use utoipa::ToSchema;
use utoipa::openapi::{RefOr, Schema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::AccountId;
use super::extract::ApiJson;
use super::with_status;
use crate::error::{ApiError, ErrorBody};
use crate::messages::{MAX_CONVERSATION_ID, MAX_TEXT_BYTES, Origin, send};
use crate::model::Message;
use crate::schema::Str;
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
    #[schema(schema_with = conversation_id_schema)]
    conversation_id: String,
    /// Message text.
    #[schema(schema_with = text_schema)]
    text: String,
}

fn conversation_id_schema() -> RefOr<Schema> {
    Str::new("A conversation seen in an ingested event.")
        .len(1, MAX_CONVERSATION_ID)
        .build()
}

fn text_schema() -> RefOr<Schema> {
    Str::new("Message text: not blank, at most `maxLength` bytes of UTF-8.")
        .len(1, MAX_TEXT_BYTES)
        .pattern(r"\S")
        .build()
}

/// Body of Airy's `POST /messages.send`.
#[derive(Debug, Deserialize, ToSchema)]
struct AirySendMessage {
    /// A conversation seen in an ingested event.
    #[schema(schema_with = conversation_id_schema)]
    conversation_id: String,
    /// The message.
    message: AiryMessageContent,
}

#[derive(Debug, Deserialize, ToSchema)]
struct AiryMessageContent {
    /// Message text.
    #[schema(schema_with = text_schema)]
    text: String,
}

/// Send a message into a conversation; emits `message:created` to the account's webhooks.
#[utoipa::path(post, path = "/v1/messages", operation_id = "send_message", tag = "messages", request_body = SendMessage,
    security(("api_key" = [])),
    responses((status = 201, body = Message), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn send_v1(
    State(state): State<AppState>,
    AccountId(account): AccountId,
    ApiJson(req): ApiJson<SendMessage>,
) -> Result<Response, ApiError> {
    crate::events::admit(&state)?;
    let message = send(&state, &account, req.conversation_id, req.text, Origin::Api).await?;
    Ok(with_status(StatusCode::CREATED, message))
}

/// Send a message (Airy-compatible shape).
#[utoipa::path(post, path = "/messages.send", operation_id = "airy_send_message", tag = "airy", request_body = AirySendMessage,
    security(("api_key" = [])),
    responses((status = 200, body = Message), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn send_airy(
    State(state): State<AppState>,
    AccountId(account): AccountId,
    ApiJson(req): ApiJson<AirySendMessage>,
) -> Result<Response, ApiError> {
    crate::events::admit(&state)?;
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
