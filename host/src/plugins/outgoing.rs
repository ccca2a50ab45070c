//! Outgoing `wasi:http` from plugins: deny by default, allow only the plugin's
//! `allowed_hosts`, and apply the same network policy as webhooks to every resolved address.
//! The request then goes to those checked addresses (`dial`), not to a second lookup.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpHooks};

use super::dial::{self, Target};
use super::host::HttpLog;
use super::services::HttpRequest;
use crate::delivery::netpolicy::NetPolicy;

/// The per-invocation HTTP policy, installed as the `wasi:http` hooks.
pub struct HttpPolicy {
    pub(crate) allowed_hosts: Arc<Vec<String>>,
    pub(crate) net: Arc<NetPolicy>,
    pub(crate) timeout: Duration,
    /// Requests made and refused, for the log and the dry run; created by the first request
    /// (most plugins make none).
    pub(crate) calls: Option<HttpLog>,
}

/// Whether `host` is on the list: exact names, or `*.example.com` for any subdomain.
pub fn host_allowed(allowed: &[String], host: &str) -> bool {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    allowed.iter().any(|a| {
        let a = a.to_ascii_lowercase();
        match a.strip_prefix("*.") {
            Some(suffix) => host.ends_with(&format!(".{suffix}")),
            None => a == host,
        }
    })
}

type Sent = Box<
    dyn Future<
            Output = Result<
                (
                    http::Response<WasiBody>,
                    Box<dyn Future<Output = Result<(), Error>> + Send>,
                ),
                Error,
            >,
        > + Send,
>;

impl WasiHttpHooks for HttpPolicy {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        fut: Box<dyn Future<Output = Result<(), Error>> + Send>,
    ) -> Sent {
        _ = fut;
        let request_method = request.method().to_string();
        let request_url = request.uri().to_string();
        // `[::1]` in a URL is the address `::1`.
        let host = request
            .uri()
            .host()
            .map(|h| h.trim_start_matches('[').trim_end_matches(']').to_string());
        let tls = request.uri().scheme_str() == Some("https");
        let port = request
            .uri()
            .port_u16()
            .unwrap_or(if tls { 443 } else { 80 });
        let allowed = host
            .as_deref()
            .is_some_and(|h| host_allowed(&self.allowed_hosts, h));
        let calls = self.calls.get_or_insert_with(HttpLog::default).clone();
        let record = move |status: Option<u16>, error: Option<String>, denial: bool| {
            let mut calls = calls.lock().expect("http calls lock");
            if denial && let Some(e) = &error {
                calls.denials.push(e.clone());
            }
            calls.requests.push(HttpRequest {
                method: request_method,
                url: request_url,
                status,
                error,
            });
        };
        let net = self.net.clone();
        // The plugin may ask for shorter timeouts than its limit, never for longer ones.
        let limit = |asked: Option<Duration>| asked.map_or(self.timeout, |t| t.min(self.timeout));
        let connect_timeout = limit(options.and_then(|o| o.connect_timeout));
        let first_byte_timeout = limit(options.and_then(|o| o.first_byte_timeout));
        let between_bytes_timeout = limit(options.and_then(|o| o.between_bytes_timeout));
        Box::new(async move {
            let Some(host) = host else {
                record(None, Some("the URL has no host".into()), false);
                return Err(Error::HttpRequestUriInvalid);
            };
            if !allowed {
                let refusal =
                    format!("outgoing HTTP to {host} refused: not in the plugin's allowed_hosts");
                record(None, Some(refusal), true);
                return Err(Error::HttpRequestDenied);
            }
            // Resolve first and refuse internal addresses, as for webhooks.
            let addrs: Vec<_> = match tokio::net::lookup_host((host.as_str(), port)).await {
                Ok(a) => a.collect(),
                Err(e) => {
                    record(
                        None,
                        Some(format!("DNS lookup of {host} failed: {e}")),
                        false,
                    );
                    return Err(Error::DnsTimeout);
                }
            };
            if addrs.is_empty() || addrs.iter().any(|a| !net.permits(a.ip())) {
                let refusal = format!(
                    "outgoing HTTP to {host} refused by network policy: it resolves to an internal address"
                );
                record(None, Some(refusal), true);
                return Err(Error::HttpRequestDenied);
            }
            let target = Target {
                host: &host,
                addrs: &addrs,
                tls: tls.then(dial::tls_config),
                connect_timeout,
                first_byte_timeout,
                between_bytes_timeout,
            };
            let sent = dial::send(request, target).await;
            match &sent {
                Ok((response, _)) => record(Some(response.status().as_u16()), None, false),
                Err(e) => record(None, Some(e.to_string()), false),
            }
            sent
        })
    }
}

#[cfg(test)]
mod tests {
    use super::host_allowed;

    #[test]
    fn allow_list_matches_names_and_wildcards() {
        let list = vec!["api.example.com".to_string(), "*.slack.com".to_string()];
        assert!(host_allowed(&list, "api.example.com"));
        assert!(host_allowed(&list, "API.example.com."));
        assert!(host_allowed(&list, "hooks.slack.com"));
        assert!(!host_allowed(&list, "slack.com"));
        assert!(!host_allowed(&list, "example.com"));
        assert!(!host_allowed(&[], "api.example.com"));
    }
}
