//! `/v1/webhook-checks`: try a URL before subscribing it (the handshake or a signed test
//! delivery), rate limited per account.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::AccountId;
use super::extract::ApiJson;
use crate::delivery::check::{self, Check, CheckReport};
use crate::error::{ApiError, ErrorBody};
use crate::model::Format;
use crate::state::AppState;
use crate::subscriptions::{parse_url, validate_headers};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(create))
}

/// Body of `POST /v1/webhook-checks`: the fields of a subscription that decide what is sent.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckIn {
    /// The URL to try.
    #[schema(schema_with = crate::subscriptions::schema::required_url)]
    pub url: String,
    /// The body format the subscription would use; `standard` by default.
    #[serde(default)]
    pub format: Format,
    /// The custom headers it would send.
    #[serde(default)]
    #[schema(schema_with = crate::subscriptions::schema::headers)]
    pub headers: BTreeMap<String, String>,
    /// Whether it would require the handshake (always so for `papercups`).
    #[serde(default)]
    pub verify: bool,
}

/// Check a webhook URL before subscribing it: runs what subscribing would run and reports
/// what was sent, what came back and why it failed.
///
/// A subscription that would need the verification handshake (`format: papercups`, or
/// `verify: true`) gets the `webhook:verify` handshake: `ok` when the answer is 2xx with the
/// challenge string as the body (raw or as a JSON string). Any other gets one signed test
/// delivery of a `webhook:test` event in its format: `ok` on any 2xx. Requests are signed with a
/// throwaway secret (returned in `request.signing_secret`), go through the same network policy,
/// client and timeout (`--delivery-timeout`) as deliveries, and redirects are not followed.
/// A refused address (`error_kind: network_policy`) or any other failure is a `200` with
/// `ok: false` and the `reason`; `400` is only for a request that could never be subscribed.
/// Each account may run `--webhook-checks-per-minute` (10) checks a minute; past that, `429`
/// with `Retry-After`.
#[utoipa::path(post, path = "/v1/webhook-checks", operation_id = "check_webhook", tag = "subscriptions", request_body = CheckIn,
    security(("api_key" = [])),
    responses((status = 200, body = CheckReport), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 429, body = ErrorBody, headers(("Retry-After" = u64, description = "Seconds until a check is accepted again")))))]
async fn create(
    State(state): State<AppState>,
    AccountId(account): AccountId,
    ApiJson(req): ApiJson<CheckIn>,
) -> Result<Json<CheckReport>, ApiError> {
    // Where the URL points is the check's to report, not a reason to refuse it.
    parse_url(&req.url)?;
    validate_headers(&req.headers)?;
    let check = Check {
        url: &req.url,
        format: req.format,
        headers: &req.headers,
        verify: req.verify,
    };
    match check::run(&state, &account, check).await {
        Ok(report) => Ok(Json(report)),
        Err(limited) => Err(ApiError::TooManyRequests {
            message: limited.to_string(),
            retry_after: limited.retry_after,
        }),
    }
}
