//! The API's error type and its one mapping to HTTP.
//!
//! Every error body has the same shape, `{"error": {"code": "...", "message": "..."}}`, so
//! clients can branch on `code` and show `message` to a person.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::quotas::QuotaExceeded;
use crate::store::StoreError;

/// An error answered to an API caller.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request is malformed or a field is invalid.
    #[error("{message}")]
    BadRequest {
        /// Machine-readable code, e.g. `invalid_field`.
        code: &'static str,
        /// What is wrong.
        message: String,
    },
    /// No valid credentials.
    #[error("{0}")]
    Unauthorized(String),
    /// The credentials are valid but the operation is turned off or not theirs to do.
    #[error("{message}")]
    Forbidden {
        /// Machine-readable code, e.g. `admin_disabled`.
        code: &'static str,
        /// Why.
        message: String,
    },
    /// The resource does not exist for this caller.
    #[error("{0} not found")]
    NotFound(String),
    /// The route exists but not with this method.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// The request conflicts with stored state.
    #[error("{0}")]
    Conflict(String),
    /// The request's body did not arrive within the server's body timeout.
    #[error("{0}")]
    RequestTimeout(String),
    /// The body is larger than the limit.
    #[error("{0}")]
    PayloadTooLarge(String),
    /// The body's content type is not accepted.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// The caller used up its quota for this endpoint; `Retry-After` says when to come back.
    #[error("{message}")]
    TooManyRequests {
        /// What was exceeded.
        message: String,
        /// When a new request will be accepted.
        retry_after: std::time::Duration,
    },
    /// The request would take the account past a quota: a 403 naming it, its limit and the
    /// account's usage.
    #[error("{0}")]
    QuotaExceeded(QuotaExceeded),
    /// The server is shutting down or the database is unavailable.
    #[error("{0}")]
    Unavailable(String),
    /// A bug or an unexpected failure; details are logged, not shown.
    #[error("internal error")]
    Internal(String),
}

impl ApiError {
    /// A 400 with code `invalid_request`.
    pub fn invalid(message: impl Into<String>) -> ApiError {
        ApiError::BadRequest {
            code: "invalid_request",
            message: message.into(),
        }
    }

    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::BadRequest { code, .. } => (StatusCode::BAD_REQUEST, code),
            ApiError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::Forbidden { code, .. } => (StatusCode::FORBIDDEN, code),
            ApiError::RequestTimeout(_) => (StatusCode::REQUEST_TIMEOUT, "request_timeout"),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            ApiError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            ApiError::PayloadTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            ApiError::UnsupportedMediaType(_) => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
            }
            ApiError::TooManyRequests { .. } => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
            ApiError::QuotaExceeded(_) => (StatusCode::FORBIDDEN, "quota_exceeded"),
            ApiError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }
}

/// The JSON body of every error response.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// What went wrong.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable machine-readable code, e.g. `not_found`, `invalid_request`, `conflict`.
    pub code: String,
    /// Human-readable explanation naming the problem.
    pub message: String,
    /// With code `quota_exceeded`: which quota, its limit, the account's usage and what the
    /// request would have added.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota: Option<QuotaExceeded>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        if let ApiError::Internal(detail) = &self {
            tracing::error!(%detail, "internal error");
        }
        let body = ErrorBody {
            error: ErrorDetail {
                code: code.to_string(),
                message: self.to_string(),
                quota: match &self {
                    ApiError::QuotaExceeded(q) => Some(q.clone()),
                    _ => None,
                },
            },
        };
        let mut response = (status, Json(body)).into_response();
        if let ApiError::TooManyRequests { retry_after, .. } = &self {
            response.headers_mut().insert(
                http::header::RETRY_AFTER,
                http::HeaderValue::from(retry_after_secs(*retry_after)),
            );
        }
        response
    }
}

/// A `Retry-After` in whole seconds, rounded up (coming back at the stated time always
/// succeeds), at least 1.
pub fn retry_after_secs(wait: std::time::Duration) -> u64 {
    (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1)
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        match e {
            StoreError::NotFound => ApiError::NotFound("resource".into()),
            StoreError::Conflict(m) => ApiError::Conflict(m),
            StoreError::Closed => ApiError::Unavailable("the server is shutting down".into()),
            StoreError::Unavailable(m) => ApiError::Unavailable(m),
            StoreError::Invalid(m) => ApiError::invalid(m),
            StoreError::Quota(q) => ApiError::QuotaExceeded(q),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl From<crate::plugins::PluginError> for ApiError {
    fn from(e: crate::plugins::PluginError) -> ApiError {
        use crate::plugins::PluginError as P;
        match e {
            P::Empty | P::NotWasm | P::CoreModule | P::Invalid(_) | P::Incompatible(_) => {
                let code = match e {
                    P::CoreModule => "not_a_component",
                    P::Incompatible(_) => "incompatible_component",
                    _ => "invalid_component",
                };
                ApiError::BadRequest {
                    code,
                    message: e.to_string(),
                }
            }
            P::Store(StoreError::NotFound) => ApiError::NotFound("plugin".into()),
            P::Store(s) => s.into(),
            P::Io(m) => ApiError::Internal(m),
        }
    }
}

/// Maps [`StoreError::NotFound`] to a 404 that names the resource.
pub trait NotFoundAs<T> {
    /// Names what was not found.
    fn or_not_found(self, what: &str) -> Result<T, ApiError>;
}

impl<T> NotFoundAs<T> for Result<T, StoreError> {
    fn or_not_found(self, what: &str) -> Result<T, ApiError> {
        self.map_err(|e| match e {
            StoreError::NotFound => ApiError::NotFound(what.to_string()),
            other => other.into(),
        })
    }
}
