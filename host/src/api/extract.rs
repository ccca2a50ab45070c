//! Request extractors whose rejections use the API's error shape.
//!
//! axum's own extractors answer with plain text; these wrap them so a malformed body, a
//! wrong field type or an oversized request gets the same JSON error as everything else,
//! and the message names the offending field (`events[3].type: invalid type: ...`).

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// A JSON body. Besides JSON's own types, the defaults of `curl -d` and of `fetch` with a
/// string body are read as JSON, so `curl -d '{...}'` works without `-H`; a body that says it
/// is something else (a multipart form, XML, ...) is a 415 rather than a confusing parse error.
pub struct ApiJson<T>(pub T);

/// Content types [`ApiJson`] reads; `+json` suffixes are accepted too.
const JSON_TYPES: &[&str] = &[
    "application/json",
    "application/x-www-form-urlencoded",
    "text/plain",
];

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        check_content_type(
            req.headers(),
            JSON_TYPES,
            "send it as JSON (application/json)",
        )?;
        let bytes = Bytes::from_request(req, state).await.map_err(body_error)?;
        parse_json(&bytes).map(ApiJson)
    }
}

/// A WebAssembly component sent as the raw body (`curl --data-binary @plugin.wasm`, whose
/// default content type is the form one, so that one is read as the raw body too).
pub struct WasmBody(pub Bytes);

/// Content types [`WasmBody`] reads.
const WASM_TYPES: &[&str] = &[
    "application/wasm",
    "application/octet-stream",
    "application/x-www-form-urlencoded",
];

impl<S: Send + Sync> FromRequest<S> for WasmBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        check_content_type(
            req.headers(),
            WASM_TYPES,
            "send the component as the raw body (application/wasm), not as a form or JSON",
        )?;
        Bytes::from_request(req, state)
            .await
            .map(WasmBody)
            .map_err(body_error)
    }
}

/// Refuses a declared `Content-Type` outside `accepted` (parameters such as `charset` aside).
fn check_content_type(
    headers: &http::HeaderMap,
    accepted: &[&str],
    hint: &str,
) -> Result<(), ApiError> {
    let Some(value) = headers.get(http::header::CONTENT_TYPE) else {
        return Ok(());
    };
    let essence = value
        .to_str()
        .unwrap_or_default()
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    let json_suffix = accepted.contains(&"application/json") && essence.ends_with("+json");
    if accepted.contains(&essence.as_str()) || json_suffix {
        return Ok(());
    }
    Err(ApiError::UnsupportedMediaType(format!(
        "Content-Type: {essence:?} is not read here; {hint}"
    )))
}

/// Parses JSON, naming the path of the field that failed.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::BadRequest {
            code: "invalid_json",
            message: "the request body is empty".into(),
        });
    }
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let code = if inner.is_data() {
            "invalid_field"
        } else {
            "invalid_json"
        };
        let message = if path == "." || inner.is_syntax() || inner.is_eof() {
            format!("malformed JSON body: {inner}")
        } else {
            format!("{path}: {inner}")
        };
        ApiError::BadRequest { code, message }
    })
}

/// Maps a failure to read the body (most often: over the size limit).
pub fn body_error(e: BytesRejection) -> ApiError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::PayloadTooLarge("the request body is larger than this endpoint accepts".into())
    } else {
        ApiError::invalid(format!("could not read the request body: {e}"))
    }
}

/// Path parameters. axum's own answers a parameter that is not valid percent-encoded UTF-8
/// with plain text; this one with the API's error.
pub struct ApiPath<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| ApiPath(p.0))
            .map_err(|e| ApiError::BadRequest {
                code: "invalid_path",
                message: e.body_text(),
            })
    }
}

/// Query-string parameters.
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| ApiQuery(q.0))
            .map_err(|e: QueryRejection| ApiError::BadRequest {
                code: "invalid_query",
                message: e.body_text(),
            })
    }
}
