//! The one HTTP client deliveries and handshakes use: no redirects, per-attempt timeout,
//! connection reuse, and a DNS resolver that applies the network policy to every address.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use super::netpolicy::NetPolicy;

/// The `User-Agent` of every request.
pub const USER_AGENT: &str = concat!("wasmhook/", env!("CARGO_PKG_VERSION"));
/// How much of a response body is kept in the attempt log.
pub const RESPONSE_EXCERPT: usize = 4096;

/// A connection refused because every address of the host is internal.
#[derive(Debug, thiserror::Error)]
#[error("refused by network policy: {host} resolves only to internal addresses ({addrs})")]
pub struct PolicyRefused {
    host: String,
    addrs: String,
}

/// The host name did not resolve.
#[derive(Debug, thiserror::Error)]
#[error("failed to resolve {host}")]
pub struct LookupFailed {
    host: String,
    #[source]
    source: std::io::Error,
}

struct PolicyResolver {
    policy: Arc<NetPolicy>,
}

impl Resolve for PolicyResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.policy.clone();
        Box::pin(async move {
            let host = name.as_str().to_string();
            let all: Vec<SocketAddr> = match tokio::net::lookup_host((host.as_str(), 0)).await {
                Ok(addrs) => addrs.collect(),
                Err(source) => {
                    let host = host.clone();
                    return Err(Box::new(LookupFailed { host, source }) as _);
                }
            };
            let permitted: Vec<SocketAddr> = all
                .iter()
                .copied()
                .filter(|a| policy.permits(a.ip()))
                .collect();
            if permitted.is_empty() {
                let addrs = all
                    .iter()
                    .map(|a| a.ip().to_string())
                    .collect::<Vec<_>>()
                    .join(", ");
                return Err(Box::new(PolicyRefused { host, addrs })
                    as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(permitted.into_iter()) as Addrs)
        })
    }
}

/// Builds the shared client.
pub fn client(policy: Arc<NetPolicy>, timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .user_agent(USER_AGENT)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(10)))
        .pool_idle_timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(64)
        .dns_resolver(Arc::new(PolicyResolver { policy }))
        .build()
        .expect("the TLS backend initialises")
}

/// Literal IP hosts never reach the resolver, so they are checked here before connecting.
pub fn literal_refused(url: &reqwest::Url, policy: &NetPolicy) -> Option<String> {
    let ip: IpAddr = match url.host()? {
        url::Host::Ipv4(v4) => v4.into(),
        url::Host::Ipv6(v6) => v6.into(),
        url::Host::Domain(_) => return None,
    };
    (!policy.permits(ip)).then(|| format!("refused by network policy: {ip} is an internal address"))
}

/// Why an attempt got no HTTP response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// The attempt ran out of time.
    Timeout,
    /// The host name did not resolve.
    Dns,
    /// No TCP connection.
    Connect,
    /// The TLS handshake failed.
    Tls,
    /// The network policy refused every address.
    NetworkPolicy,
    /// Anything else (broken response, reset, ...).
    Other,
}

impl FailureKind {
    /// The name stored in the attempt log.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Timeout => "timeout",
            FailureKind::Dns => "dns",
            FailureKind::Connect => "connect",
            FailureKind::Tls => "tls",
            FailureKind::NetworkPolicy => "network_policy",
            FailureKind::Other => "request",
        }
    }
}

/// Classifies a reqwest error by the types in its chain of sources.
pub fn classify(e: &reqwest::Error) -> (FailureKind, String) {
    let mut chain = Vec::new();
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    let mut kind = None;
    while let Some(err) = source {
        if let Some(p) = err.downcast_ref::<PolicyRefused>() {
            return (FailureKind::NetworkPolicy, p.to_string());
        }
        if kind.is_none() {
            if err.is::<LookupFailed>() {
                kind = Some(FailureKind::Dns);
            } else if is_tls(err) {
                kind = Some(FailureKind::Tls);
            }
        }
        chain.push(err.to_string());
        source = err.source();
    }
    let message = chain.join(": ");
    let kind = if e.is_timeout() {
        FailureKind::Timeout
    } else if let Some(k) = kind {
        k
    } else if e.is_connect() {
        FailureKind::Connect
    } else {
        FailureKind::Other
    };
    (kind, message)
}

/// A rustls error, bare or inside the `io::Error`s the TLS stream and the connector wrap it in
/// (their `source()` skips what they wrap, hence `get_ref`).
fn is_tls(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut err = err;
    loop {
        if err.is::<rustls::Error>() {
            return true;
        }
        match err
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            Some(inner) => err = inner,
            None => return false,
        }
    }
}

/// Reads at most [`RESPONSE_EXCERPT`] bytes of a response body, lossily as UTF-8.
pub async fn excerpt(mut resp: reqwest::Response) -> String {
    let mut buf = Vec::new();
    while buf.len() < RESPONSE_EXCERPT {
        match resp.chunk().await {
            Ok(Some(chunk)) => buf.extend_from_slice(&chunk),
            _ => break,
        }
    }
    buf.truncate(RESPONSE_EXCERPT);
    String::from_utf8_lossy(&buf).into_owned()
}
