//! Request authentication: `Authorization: Bearer <api key>` for account endpoints, the admin
//! token for account management.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;

use crate::auth::{hash, same_hash};
use crate::error::ApiError;
use crate::state::AppState;

fn bearer(parts: &Parts) -> Result<&str, ApiError> {
    let value = parts
        .headers
        .get(http::header::AUTHORIZATION)
        .ok_or_else(|| {
            ApiError::Unauthorized("missing header Authorization: Bearer <api key>".into())
        })?;
    let value = value
        .to_str()
        .map_err(|_| ApiError::Unauthorized("the Authorization header is not valid text".into()))?;
    match value.split_once(' ') {
        Some((scheme, token))
            if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() =>
        {
            Ok(token.trim())
        }
        _ => Err(ApiError::Unauthorized(
            "the Authorization header must be \"Bearer <api key>\"".into(),
        )),
    }
}

/// The account whose API key authenticated the request.
pub struct AccountId(pub String);

impl FromRequestParts<AppState> for AccountId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let key_hash = hash(bearer(parts)?);
        if let Some(account) = state.keys.get(&key_hash) {
            return Ok(AccountId(account));
        }
        match state.store.account_for_key(key_hash).await? {
            Some(account) => {
                state.keys.insert(key_hash, account.clone());
                Ok(AccountId(account))
            }
            None => Err(ApiError::Unauthorized("invalid or revoked API key".into())),
        }
    }
}

/// A request carrying the admin token.
pub struct Admin;

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        if same_hash(&hash(bearer(parts)?), &state.admin_token_hash) {
            Ok(Admin)
        } else {
            Err(ApiError::Unauthorized(
                "this endpoint needs the admin token".into(),
            ))
        }
    }
}

/// Either the admin, or an account acting on itself.
pub enum AdminOrAccount {
    /// The admin token.
    Admin,
    /// An API key of this account.
    Account(String),
}

impl AdminOrAccount {
    /// True when the caller may manage `account_id`.
    pub fn may_manage(&self, account_id: &str) -> bool {
        match self {
            AdminOrAccount::Admin => true,
            AdminOrAccount::Account(own) => own == account_id,
        }
    }
}

impl FromRequestParts<AppState> for AdminOrAccount {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        if Admin::from_request_parts(parts, state).await.is_ok() {
            return Ok(AdminOrAccount::Admin);
        }
        AccountId::from_request_parts(parts, state)
            .await
            .map(|a| AdminOrAccount::Account(a.0))
            .map_err(|_| {
                ApiError::Unauthorized("needs the admin token or an API key of this account".into())
            })
    }
}
