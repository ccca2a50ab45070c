//! Request authentication: `Authorization: Bearer <api key>` for account endpoints, the admin
//! token for account management.
//!
//! Failed attempts are limited per client address (`--auth-failures-per-minute`): a wrong
//! key or token takes a token from the address's bucket, and once it is empty every request
//! from that address that presents a credential is answered 429, right or wrong (answering a
//! right guess differently would make the limit pointless). Successes take nothing. A request
//! without credentials is not an attempt and is not counted.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use ipnet::IpNet;

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

/// The key a request's failed attempts are counted under (see [`client_key`]).
pub struct Client(pub String);

impl FromRequestParts<AppState> for Client {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        Ok(Client(client_key(parts, &state.config.trusted_proxies)))
    }
}

/// The key failed attempts are counted under: the client's address, an IPv6 address by its
/// /64 (one host usually holds a whole /64, so counting single addresses would not limit it).
pub fn client_key(parts: &Parts, trusted_proxies: &[IpNet]) -> String {
    let peer = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip());
    let Some(peer) = peer else {
        // Served without a socket (a test calling the router directly): one shared bucket.
        return "unknown".into();
    };
    match client_ip(peer, &parts.headers, trusted_proxies).to_canonical() {
        IpAddr::V6(v6) => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
        v4 => v4.to_string(),
    }
}

/// The client's address: the peer, unless it is a trusted proxy; then the last address of
/// `X-Forwarded-For` that is not a trusted proxy (each proxy appends the address it got the
/// request from, so only the entries after the last untrusted one are trustworthy; anything a
/// client wrote itself comes before).
fn client_ip(peer: IpAddr, headers: &http::HeaderMap, trusted_proxies: &[IpNet]) -> IpAddr {
    let trusted = |ip: &IpAddr| trusted_proxies.iter().any(|net| net.contains(ip));
    if !trusted(&peer) {
        return peer;
    }
    let entries: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .collect();
    for entry in entries.into_iter().rev() {
        match entry.trim().parse::<IpAddr>() {
            Ok(ip) if trusted(&ip) => continue,
            Ok(ip) => return ip,
            // Not an address where one of ours would have written one: trust nothing further.
            Err(_) => break,
        }
    }
    peer
}

/// Refuses an address that used up its failed attempts.
pub fn check_attempts(state: &AppState, client: &str) -> Result<(), ApiError> {
    state
        .auth_failures
        .check(client, now_ms())
        .map_err(|retry_after| ApiError::TooManyRequests {
            message: "too many failed authentications from this address; try again later".into(),
            retry_after,
        })
}

/// Counts a failed attempt of `client`.
pub fn count_failure(state: &AppState, client: &str) {
    let _ = state.auth_failures.take(client, now_ms());
}

/// Who a bearer credential is.
enum Caller {
    Admin,
    Account(String),
}

/// Verifies the request's bearer credential, within the address's failed-attempt limit.
async fn caller(parts: &Parts, state: &AppState) -> Result<Caller, ApiError> {
    let token = bearer(parts)?;
    let client = client_key(parts, &state.config.trusted_proxies);
    check_attempts(state, &client)?;
    let key_hash = hash(token);
    if let Some(admin) = &state.admin_token_hash
        && same_hash(&key_hash, admin)
    {
        return Ok(Caller::Admin);
    }
    if let Some(account) = state.keys.get(&key_hash) {
        return Ok(Caller::Account(account));
    }
    match state.store.account_for_key(key_hash).await? {
        Some(account) => {
            state.keys.insert(key_hash, account.clone());
            Ok(Caller::Account(account))
        }
        None => {
            count_failure(state, &client);
            Err(ApiError::Unauthorized("invalid or revoked API key".into()))
        }
    }
}

/// The account whose API key authenticated the request.
pub struct AccountId(pub String);

impl FromRequestParts<AppState> for AccountId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        match caller(parts, state).await? {
            Caller::Account(account) => Ok(AccountId(account)),
            Caller::Admin => Err(ApiError::Unauthorized(
                "this endpoint needs an account's API key; the admin token only manages accounts"
                    .into(),
            )),
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
        // An API key that was given decides, right or wrong; only its absence defers to the cookie.
        let Some(token) = cookie(&parts.headers, COOKIE)
            .filter(|_| !parts.headers.contains_key(http::header::AUTHORIZATION))
        else {
            return AccountId::from_request_parts(parts, state)
                .await
                .map(|AccountId(a)| ReadingAccount(a));
        };
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

/// The refusal of every admin endpoint while they are turned off.
pub fn admin_disabled() -> ApiError {
    ApiError::Forbidden {
        code: "admin_disabled",
        message: "the admin endpoints are turned off on this server (--admin-token none)".into(),
    }
}

/// A request carrying the admin token.
pub struct Admin;

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        if state.admin_token_hash.is_none() {
            return Err(admin_disabled());
        }
        bearer(parts)?;
        match caller(parts, state).await {
            Ok(Caller::Admin) => Ok(Admin),
            Ok(Caller::Account(_)) | Err(ApiError::Unauthorized(_)) => Err(ApiError::Unauthorized(
                "this endpoint needs the admin token".into(),
            )),
            Err(other) => Err(other),
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
        match caller(parts, state).await {
            Ok(Caller::Admin) => Ok(AdminOrAccount::Admin),
            Ok(Caller::Account(account)) => Ok(AdminOrAccount::Account(account)),
            Err(ApiError::Unauthorized(_)) => Err(ApiError::Unauthorized(
                "needs the admin token or an API key of this account".into(),
            )),
            Err(other) => Err(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn forwarded(value: &str) -> http::HeaderMap {
        let mut headers = http::HeaderMap::new();
        headers.insert("x-forwarded-for", value.parse().unwrap());
        headers
    }

    #[test]
    fn the_client_is_the_peer_unless_the_peer_is_a_trusted_proxy() {
        let proxies: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let proxy: IpAddr = "10.0.0.5".parse().unwrap();
        let outsider: IpAddr = "203.0.113.9".parse().unwrap();
        // An untrusted peer cannot choose its address with the header.
        let headers = forwarded("198.51.100.1");
        assert_eq!(client_ip(outsider, &headers, &proxies), outsider);
        // Through the proxy: the address it appended, not what the client wrote before it.
        let headers = forwarded("198.51.100.1, 203.0.113.9");
        assert_eq!(client_ip(proxy, &headers, &proxies), outsider);
        // Two proxies of ours in a row.
        let headers = forwarded("203.0.113.9, 10.0.0.7");
        assert_eq!(client_ip(proxy, &headers, &proxies), outsider);
        // Without the header, the proxy itself.
        assert_eq!(client_ip(proxy, &http::HeaderMap::new(), &proxies), proxy);
        // Without trusted proxies, the header means nothing.
        assert_eq!(client_ip(proxy, &headers, &[]), proxy);
    }
}
