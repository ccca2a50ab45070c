//! `/v1/accounts`: tenants and their API keys (admin token, or an account managing itself).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::{AccountId, Admin, AdminOrAccount};
use super::extract::{ApiJson, ApiPath};
use super::{ListResponse, with_status};
use crate::auth::new_api_key;
use crate::clock::{new_id, now_ms};
use crate::error::{ApiError, ErrorBody, NotFoundAs};
use crate::model::{Account, ApiKeyInfo};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_account, list_accounts))
        .routes(routes!(create_key, list_keys))
        .routes(routes!(revoke_key))
        .routes(routes!(own_account))
}

/// Body of `POST /v1/accounts`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateAccount {
    /// Display name, 1 to 200 characters.
    #[schema(schema_with = name_schema)]
    pub name: String,
}

/// Longest account name, in characters (surrounding spaces aside).
const MAX_NAME: usize = 200;

fn name_schema() -> utoipa::openapi::RefOr<utoipa::openapi::Schema> {
    crate::schema::Str::new("Display name (surrounding spaces are dropped).")
        .len(1, MAX_NAME)
        .pattern(r"\S")
        .build()
}

/// A new account and its first API key (shown only here).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CreatedAccount {
    /// Account id (`acc_...`).
    pub id: String,
    /// Display name.
    pub name: String,
    /// The first API key (`whk_...`).
    pub api_key: String,
    /// Creation time.
    #[schema(value_type = String, format = DateTime)]
    #[serde(with = "crate::clock::ms_as_rfc3339")]
    pub created_at: i64,
}

/// A new API key (shown only here).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CreatedKey {
    /// The key's metadata.
    #[serde(flatten)]
    pub info: ApiKeyInfo,
    /// The key (`whk_...`).
    pub api_key: String,
}

/// The account the API key belongs to (what `wasmhook whoami` shows).
#[utoipa::path(get, path = "/v1/account", operation_id = "get_own_account", tag = "accounts", security(("api_key" = [])),
    responses((status = 200, body = Account), (status = 401, body = ErrorBody)))]
async fn own_account(
    State(state): State<AppState>,
    AccountId(account): AccountId,
) -> Result<Json<Account>, ApiError> {
    Ok(Json(
        state
            .store
            .get_account(account)
            .await
            .or_not_found("account")?,
    ))
}

/// Create an account (admin).
#[utoipa::path(post, path = "/v1/accounts", operation_id = "create_account", tag = "accounts", request_body = CreateAccount,
    security(("admin_token" = [])),
    responses((status = 201, body = CreatedAccount), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
async fn create_account(
    State(state): State<AppState>,
    _: Admin,
    ApiJson(req): ApiJson<CreateAccount>,
) -> Result<Response, ApiError> {
    let name = req.name.trim().to_string();
    if name.is_empty() || name.chars().count() > MAX_NAME {
        return Err(ApiError::invalid(format!(
            "name: 1 to {MAX_NAME} characters"
        )));
    }
    let (api_key, stored) = new_api_key();
    let account = state
        .store
        .create_account(
            Account {
                id: new_id("acc"),
                name,
                created_at: now_ms(),
            },
            stored,
        )
        .await?;
    Ok(with_status(
        StatusCode::CREATED,
        CreatedAccount {
            id: account.id,
            name: account.name,
            api_key,
            created_at: account.created_at,
        },
    ))
}

/// List accounts (admin).
#[utoipa::path(get, path = "/v1/accounts", operation_id = "list_accounts", tag = "accounts", security(("admin_token" = [])),
    responses((status = 200, body = ListResponse<Account>), (status = 401, body = ErrorBody)))]
async fn list_accounts(
    State(state): State<AppState>,
    _: Admin,
) -> Result<Json<ListResponse<Account>>, ApiError> {
    Ok(Json(ListResponse {
        data: state.store.list_accounts().await?,
        next_cursor: None,
    }))
}

/// Issue another API key for an account.
#[utoipa::path(post, path = "/v1/accounts/{id}/api-keys", operation_id = "create_api_key", tag = "accounts",
    params(("id" = String, Path, description = "Account id")),
    security(("admin_token" = []), ("api_key" = [])),
    responses((status = 201, body = CreatedKey), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn create_key(
    State(state): State<AppState>,
    caller: AdminOrAccount,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, ApiError> {
    if !caller.may_manage(&id) {
        return Err(ApiError::NotFound("account".into()));
    }
    let (api_key, stored) = new_api_key();
    let info = state
        .store
        .add_api_key(id, stored, now_ms())
        .await
        .or_not_found("account")?;
    Ok(with_status(
        StatusCode::CREATED,
        CreatedKey { info, api_key },
    ))
}

/// List an account's API keys (without the keys themselves).
#[utoipa::path(get, path = "/v1/accounts/{id}/api-keys", operation_id = "list_api_keys", tag = "accounts",
    params(("id" = String, Path, description = "Account id")),
    security(("admin_token" = []), ("api_key" = [])),
    responses((status = 200, body = ListResponse<ApiKeyInfo>), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn list_keys(
    State(state): State<AppState>,
    caller: AdminOrAccount,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<ListResponse<ApiKeyInfo>>, ApiError> {
    if !caller.may_manage(&id) {
        return Err(ApiError::NotFound("account".into()));
    }
    let keys = state.store.list_api_keys(id).await?;
    Ok(Json(ListResponse {
        data: keys,
        next_cursor: None,
    }))
}

/// Revoke an API key; it stops working at once.
#[utoipa::path(delete, path = "/v1/accounts/{id}/api-keys/{key_id}", operation_id = "revoke_api_key", tag = "accounts",
    params(("id" = String, Path, description = "Account id"), ("key_id" = String, Path, description = "Key id")),
    security(("admin_token" = []), ("api_key" = [])),
    responses((status = 204), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn revoke_key(
    State(state): State<AppState>,
    caller: AdminOrAccount,
    ApiPath((id, key_id)): ApiPath<(String, String)>,
) -> Result<StatusCode, ApiError> {
    if !caller.may_manage(&id) {
        return Err(ApiError::NotFound("account".into()));
    }
    let hash = state
        .store
        .revoke_api_key(id, key_id, now_ms())
        .await
        .or_not_found("api key")?;
    state.keys.evict(&hash);
    Ok(StatusCode::NO_CONTENT)
}
