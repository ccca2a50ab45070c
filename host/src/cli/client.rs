//! The HTTP client of the command line: the API's base URL and key, JSON in and out through
//! the API's own types, and API errors turned into [`CliError::Api`] with the server's message.

use std::time::Duration;

use reqwest::{Method, RequestBuilder, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::CliError;
use super::profile::Profile;
use crate::error::ErrorBody;

/// A client of one server, authenticated with one API key.
#[derive(Clone)]
pub struct Client {
    base: String,
    api_key: String,
    http: reqwest::Client,
}

impl Client {
    /// A client of `profile`'s server.
    pub fn new(profile: &Profile) -> Result<Client, CliError> {
        let base = profile.url.trim_end_matches('/').to_string();
        let parsed = url::Url::parse(&base)
            .map_err(|e| CliError::Invalid(format!("server URL {base:?}: {e}")))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(CliError::Invalid(format!(
                "server URL {base:?}: the scheme must be http or https"
            )));
        }
        let http = reqwest::Client::builder()
            .user_agent(concat!("wasmhook-cli/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(10))
            .build()
            .expect("a client with default TLS settings builds");
        Ok(Client {
            base,
            api_key: profile.api_key.clone(),
            http,
        })
    }

    /// The server's base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// A request to `path` (starting with `/`), authenticated.
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.api_key)
    }

    /// Sends `req`; a non-2xx answer becomes the API's error.
    pub async fn send(&self, req: RequestBuilder) -> Result<Response, CliError> {
        let response = req.send().await.map_err(|e| self.unreachable(e))?;
        if response.status().is_success() {
            return Ok(response);
        }
        Err(api_error(response).await)
    }

    /// Sends `req` and reads the answer as `T`.
    pub async fn json<T: DeserializeOwned>(&self, req: RequestBuilder) -> Result<T, CliError> {
        let response = self.send(req).await?;
        let bytes = response.bytes().await.map_err(|e| self.unreachable(e))?;
        serde_json::from_slice(&bytes).map_err(|e| {
            CliError::Invalid(format!(
                "unexpected answer from {} (is it a wasmhook server of the same version?): {e}",
                self.base
            ))
        })
    }

    /// `GET path` as `T`.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, CliError> {
        self.json(self.request(Method::GET, path)).await
    }

    /// `POST path` with a JSON body, as `T`.
    pub async fn post<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, CliError> {
        self.json(self.request(Method::POST, path).json(body)).await
    }

    /// `PATCH path` with a JSON body, as `T`.
    pub async fn patch<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, CliError> {
        self.json(self.request(Method::PATCH, path).json(body))
            .await
    }

    /// `DELETE path`.
    pub async fn delete(&self, path: &str) -> Result<(), CliError> {
        self.send(self.request(Method::DELETE, path)).await?;
        Ok(())
    }

    /// The error for a request that got no answer.
    pub fn unreachable(&self, e: reqwest::Error) -> CliError {
        CliError::Unreachable {
            url: self.base.clone(),
            reason: error_chain(&e),
        }
    }
}

/// The API error in a non-2xx answer (`{"error": {"code", "message"}}`), or the status alone
/// when the body is not one.
pub async fn api_error(response: Response) -> CliError {
    let status = response.status();
    let body = response.bytes().await.unwrap_or_default();
    match serde_json::from_slice::<ErrorBody>(&body) {
        Ok(e) => CliError::Api {
            status: status.as_u16(),
            code: e.error.code,
            message: e.error.message,
        },
        Err(_) => CliError::Api {
            status: status.as_u16(),
            code: "http_status".into(),
            message: format!(
                "HTTP {status}: {}",
                String::from_utf8_lossy(&body[..body.len().min(200)])
            ),
        },
    }
}

/// An error and its sources, on one line.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text
}

/// Percent-encodes a query value.
pub fn query_value(v: &str) -> String {
    url::form_urlencoded::byte_serialize(v.as_bytes()).collect()
}
