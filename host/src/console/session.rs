//! Console sign-in: an account API key (or the admin token) is exchanged for a session cookie;
//! the session lives in the database and carries the CSRF token every form must send back.
//!
//! The cookie is `HttpOnly` and `SameSite=Strict`, and `Secure` when the request came over
//! HTTPS: the request's own scheme, or `X-Forwarded-Proto: https` set by a TLS-terminating proxy
//! in front of wasmhook (a client that sends it over plain HTTP only gets a cookie its browser
//! will not send back). The sign-in form, which has no session yet, is protected by a
//! double-submit token in a short-lived cookie of its own.

use axum::Router;
use axum::body::Body;
use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use maud::html;

use super::forms::{Fields, form_field};
use super::layout;
use crate::api::auth::{Client, check_attempts, count_failure};
use crate::auth::{hash, random_token, same_hash};
use crate::clock::now_ms;
use crate::error::{ApiError, retry_after_secs};
use crate::state::AppState;
use crate::store::{ConsoleSession, NewConsoleSession};

/// The session cookie's name.
pub const COOKIE: &str = "wasmhook_session";
/// The sign-in form's double-submit cookie.
const SIGN_IN_COOKIE: &str = "wasmhook_sign_in";
/// How long a session lasts.
pub const SESSION_MS: i64 = 12 * 3600 * 1000;
/// The header scripts send the CSRF token in.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// The form field forms send the CSRF token in.
pub const CSRF_FIELD: &str = "csrf";
/// The largest form body read to find the CSRF token.
const MAX_FORM_BYTES: usize = 1024 * 1024;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/console/sign-in", get(sign_in_page).post(sign_in))
        .route("/console/sign-out", post(sign_out))
}

/// A signed-in console session, found by the [`csrf_guard`] for every console request.
#[derive(Debug, Clone)]
pub struct Session {
    token_hash: [u8; 32],
    /// The account, or `None` for the admin.
    pub account_id: Option<String>,
    /// The token forms carry.
    pub csrf: String,
}

/// An account's session: what every account page takes. Without one, the page redirects to
/// the sign-in form (an admin session goes to the accounts page).
#[derive(Debug, Clone)]
pub struct Signed {
    /// The account signed in.
    pub account: String,
    /// The session's CSRF token, for the page's forms.
    pub csrf: String,
}

impl FromRequestParts<AppState> for Signed {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, _: &AppState) -> Result<Self, Response> {
        match parts.extensions.get::<Session>() {
            Some(Session {
                account_id: Some(account),
                csrf,
                ..
            }) => Ok(Signed {
                account: account.clone(),
                csrf: csrf.clone(),
            }),
            Some(_) => Err(Redirect::to("/console/admin").into_response()),
            None => Err(Redirect::to("/console/sign-in").into_response()),
        }
    }
}

/// The admin's session: what the accounts page takes.
#[derive(Debug, Clone)]
pub struct AdminSigned {
    /// The session's CSRF token.
    pub csrf: String,
}

impl FromRequestParts<AppState> for AdminSigned {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        match parts.extensions.get::<Session>() {
            // Sessions made before the admin endpoints were turned off open nothing.
            Some(Session {
                account_id: None, ..
            }) if state.admin_token_hash.is_none() => {
                Err(super::ConsoleError::Api(crate::api::auth::admin_disabled()).into_response())
            }
            Some(Session {
                account_id: None,
                csrf,
                ..
            }) => Ok(AdminSigned { csrf: csrf.clone() }),
            Some(_) => Err(ConsoleNotFound.into_response()),
            None => Err(Redirect::to("/console/sign-in").into_response()),
        }
    }
}

struct ConsoleNotFound;

impl IntoResponse for ConsoleNotFound {
    fn into_response(self) -> Response {
        super::ConsoleError::NotFound("page").into_response()
    }
}

/// The value of cookie `name` in the request.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// Whether the request reached us over HTTPS (directly, or through a proxy that says so).
fn over_https(parts_uri: &http::Uri, headers: &HeaderMap) -> bool {
    parts_uri.scheme_str() == Some("https")
        || headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("https"))
}

/// A `Set-Cookie` value with the console's flags.
fn set_cookie(name: &str, value: &str, path: &str, max_age_s: i64, secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{name}={value}; Path={path}; Max-Age={max_age_s}; HttpOnly; SameSite=Strict{secure}"
    ))
    .expect("cookie made of URL-safe characters")
}

/// Finds the session of every console request, and checks the CSRF token of every request that
/// changes something: without a session such a request goes to the sign-in form; with a wrong
/// or missing token it is refused (403).
pub async fn csrf_guard(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let (mut parts, body) = req.into_parts();
    let session = match cookie(&parts.headers, COOKIE) {
        Some(token) => {
            let token_hash = hash(token);
            match state.store.console_session(token_hash, now_ms()).await {
                Ok(found) => found.map(|s: ConsoleSession| Session {
                    token_hash,
                    account_id: s.account_id,
                    csrf: s.csrf_token,
                }),
                Err(e) => return super::ConsoleError::from(e).into_response(),
            }
        }
        None => None,
    };
    let safe = matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS);
    if safe {
        if let Some(s) = session {
            parts.extensions.insert(s);
        }
        return next.run(Request::from_parts(parts, body)).await;
    }
    // Read a form body to find its token; other bodies (uploads) send it in a header.
    let is_form = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    let (body, form) = if is_form {
        match axum::body::to_bytes(body, MAX_FORM_BYTES).await {
            Ok(bytes) => (Body::from(bytes.clone()), Some(bytes)),
            Err(_) => return refused(StatusCode::PAYLOAD_TOO_LARGE, "The form is too large."),
        }
    } else {
        (body, None)
    };
    let sent = parts
        .headers
        .get(CSRF_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| form.as_deref().and_then(|f| form_field(f, CSRF_FIELD)));
    if parts.uri.path() == "/console/sign-in" {
        // No session yet: the form's token must match the cookie set with the form.
        let expected = cookie(&parts.headers, SIGN_IN_COOKIE);
        let given = form.as_deref().and_then(|f| form_field(f, "sign_in_token"));
        return match (expected, given) {
            (Some(e), Some(g)) if same_hash(&hash(e), &hash(&g)) => {
                next.run(Request::from_parts(parts, body)).await
            }
            _ => refused(
                StatusCode::FORBIDDEN,
                "The sign-in form expired or did not come from this console. Open the sign-in page again.",
            ),
        };
    }
    let Some(session) = session else {
        return Redirect::to("/console/sign-in").into_response();
    };
    match sent {
        Some(sent) if same_hash(&hash(&sent), &hash(&session.csrf)) => {
            parts.extensions.insert(session);
            next.run(Request::from_parts(parts, body)).await
        }
        _ => refused(
            StatusCode::FORBIDDEN,
            "This form did not carry this session's CSRF token (it expired, or came from another site). \
             Reload the page and try again.",
        ),
    }
}

fn refused(status: StatusCode, message: &str) -> Response {
    (
        status,
        layout::bare(
            "Request refused",
            html! { p data-test="error-message" { (message) } p { a href="/console" { "Back to the console" } } },
        ),
    )
        .into_response()
}

async fn sign_in_page(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: http::Uri,
) -> Response {
    sign_in_form(&state, &uri, &headers, None, StatusCode::OK)
}

fn sign_in_form(
    state: &AppState,
    uri: &http::Uri,
    headers: &HeaderMap,
    error: Option<&str>,
    status: StatusCode,
) -> Response {
    let admin = state.admin_token_hash.is_some();
    let token = random_token(24);
    let body = layout::bare(
        "Sign in",
        html! {
            form.card method="post" action="/console/sign-in" data-test="sign-in-form" {
                input type="hidden" name="sign_in_token" value=(token);
                @if let Some(error) = error {
                    p.error role="alert" data-test="sign-in-error" { (error) }
                }
                label for="key" { @if admin { "API key (or the admin token)" } @else { "API key" } }
                input #key type="password" name="key" autocomplete="current-password" required
                    autofocus data-test="sign-in-key";
                @if admin {
                    p.hint { "An account's API key opens its console; the admin token opens the accounts page." }
                } @else {
                    p.hint { "An account's API key opens its console." }
                }
                button type="submit" data-test="sign-in-submit" { "Sign in" }
            }
        },
    );
    let mut response = (status, body).into_response();
    response.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(
            SIGN_IN_COOKIE,
            &token,
            "/console/sign-in",
            3600,
            over_https(uri, headers),
        ),
    );
    response
}

async fn sign_in(
    State(state): State<AppState>,
    Client(client): Client,
    headers: HeaderMap,
    uri: http::Uri,
    form: Fields,
) -> Result<Response, super::ConsoleError> {
    let key = form.get("key").unwrap_or_default().trim().to_string();
    // Sign-in attempts share the API's limit on failed authentications per address.
    if let Err(ApiError::TooManyRequests { retry_after, .. }) = check_attempts(&state, &client) {
        let secs = retry_after_secs(retry_after);
        let message = format!("Too many failed sign-ins from your address. Try again in {secs} s.");
        let mut page = sign_in_form(
            &state,
            &uri,
            &headers,
            Some(&message),
            StatusCode::TOO_MANY_REQUESTS,
        );
        page.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        return Ok(page);
    }
    let key_hash = hash(&key);
    let is_admin = !key.is_empty()
        && state
            .admin_token_hash
            .is_some_and(|admin| same_hash(&key_hash, &admin));
    let (account_id, api_key_id) = if is_admin {
        (None, None)
    } else {
        match state.store.api_key_by_hash(key_hash).await? {
            Some((key_id, account)) => (Some(account), Some(key_id)),
            None => {
                if !key.is_empty() {
                    count_failure(&state, &client);
                }
                let error = if state.admin_token_hash.is_some() {
                    "That key is not a valid API key or admin token (or it was revoked)."
                } else {
                    "That key is not a valid API key (or it was revoked)."
                };
                return Ok(sign_in_form(
                    &state,
                    &uri,
                    &headers,
                    Some(error),
                    StatusCode::UNAUTHORIZED,
                ));
            }
        }
    };
    let token = random_token(32);
    let now = now_ms();
    let admin = account_id.is_none();
    state
        .store
        .create_console_session(NewConsoleSession {
            token_hash: hash(&token),
            account_id,
            api_key_id,
            csrf_token: random_token(32),
            created_at: now,
            expires_at: now + SESSION_MS,
        })
        .await?;
    let secure = over_https(&uri, &headers);
    let mut response =
        Redirect::to(if admin { "/console/admin" } else { "/console" }).into_response();
    let h = response.headers_mut();
    h.append(
        header::SET_COOKIE,
        set_cookie(COOKIE, &token, "/", SESSION_MS / 1000, secure),
    );
    h.append(
        header::SET_COOKIE,
        set_cookie(SIGN_IN_COOKIE, "", "/console/sign-in", 0, secure),
    );
    Ok(response)
}

async fn sign_out(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: http::Uri,
    req: Request,
) -> Result<Response, super::ConsoleError> {
    if let Some(session) = req.extensions().get::<Session>() {
        state
            .store
            .delete_console_session(session.token_hash)
            .await?;
    }
    let mut response = Redirect::to("/console/sign-in").into_response();
    response.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(COOKIE, "", "/", 0, over_https(&uri, &headers)),
    );
    Ok(response)
}
