//! Request authentication: `Authorization: Bearer <api key>` for account endpoints, the admin
//! token for account management.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;

use crate::auth::{hash, same_hash};
use crate::clock::now_ms;
use crate::console::session::{COOKIE, cookie};
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

/// The account of a request that only reads: an API key, or else the web console's session
/// cookie, so the console's `EventSource` (which cannot send headers) can read `/v1/stream`.
///
/// Only for GET endpoints: the cookie is `SameSite=Strict` and no CORS headers are sent, so
/// another site can neither send it nor read the answer, but a cookie-authenticated request
/// that changed something would need the console's CSRF check.
pub struct ReadingAccount(pub String);

impl FromRequestParts<AppState> for ReadingAccount {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let key = AccountId::from_request_parts(parts, state).await;
        let (Err(refused), Some(token)) = (&key, cookie(&parts.headers, COOKIE)) else {
            return key.map(|AccountId(a)| ReadingAccount(a));
        };
        // An API key that was given but is wrong stays refused; only its absence defers to the cookie.
        if parts.headers.contains_key(http::header::AUTHORIZATION) {
            return Err(ApiError::Unauthorized(refused.to_string()));
        }
        match state.store.console_session(hash(token), now_ms()).await? {
            Some(session) => session.account_id.map(ReadingAccount).ok_or_else(|| {
                ApiError::Unauthorized("an admin session has no account to read".into())
            }),
            None => Err(ApiError::Unauthorized(
                "the console session has expired; sign in again".into(),
            )),
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
