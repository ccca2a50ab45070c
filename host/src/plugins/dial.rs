//! Sends a plugin's outgoing HTTP request to the very addresses the network policy checked.
//!
//! Resolving a name once to check it and again to connect leaves a window in which DNS may
//! answer differently (DNS rebinding: a public address for the check, `127.0.0.1` for the
//! connection). Here the connection goes to the checked addresses; TLS still verifies the
//! certificate against the host name, which travels as SNI and in the `Host` header.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http::header::{HOST, HeaderValue};
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep, timeout};
use wasmtime_wasi_http::{Error, WasiBody};

/// The future that drives the connection after the response head has arrived.
pub type Driver = Box<dyn Future<Output = Result<(), Error>> + Send>;

/// Where and how to send one request.
pub struct Target<'a> {
    /// The host name of the request, or an IP address (without brackets), for TLS.
    pub host: &'a str,
    /// The addresses checked for it, tried in order.
    pub addrs: &'a [SocketAddr],
    /// TLS settings for an `https` URL ([`tls_config`]), `None` for plain HTTP.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// For connecting, TLS and HTTP handshakes included.
    pub connect_timeout: Duration,
    /// From sending the request to the response head.
    pub first_byte_timeout: Duration,
    /// Between two pieces of the response body.
    pub between_bytes_timeout: Duration,
}

trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// Sends `request` over HTTP/1.1 to one of `target.addrs`, never resolving the host again.
pub async fn send(
    mut request: http::Request<WasiBody>,
    target: Target<'_>,
) -> Result<(http::Response<WasiBody>, Driver), Error> {
    let tcp = connect(target.addrs, target.connect_timeout).await?;
    let io: Box<dyn Io> = if let Some(config) = target.tls {
        let connecting =
            tokio_rustls::TlsConnector::from(config).connect(server_name(target.host)?, tcp);
        let stream = timeout(target.connect_timeout, connecting)
            .await
            .map_err(|_| Error::ConnectionTimeout)?
            .map_err(Error::Tls)?;
        Box::new(stream)
    } else {
        Box::new(tcp)
    };
    let (mut sender, conn) = timeout(
        target.connect_timeout,
        hyper::client::conn::http1::handshake(TokioIo::new(io)),
    )
    .await
    .map_err(|_| Error::ConnectionTimeout)??;

    // Origin form on the wire; the authority goes in the Host header (wasi:http sets it).
    if !request.headers().contains_key(HOST)
        && let Some(authority) = request.uri().authority()
        && let Ok(value) = HeaderValue::from_str(authority.as_str())
    {
        request.headers_mut().insert(HOST, value);
    }
    let path = request.uri().path_and_query().map_or("/", |p| p.as_str());
    *request.uri_mut() = http::Uri::builder()
        .path_and_query(path)
        .build()
        .map_err(|_| Error::HttpRequestUriInvalid)?;

    // The connection must be polled for the response to arrive; it may also finish first.
    let mut conn = Box::pin(conn);
    let mut conn_done = false;
    let response = timeout(target.first_byte_timeout, sender.send_request(request));
    tokio::pin!(response);
    let response = loop {
        tokio::select! {
            biased;
            r = &mut response => break r.map_err(|_| Error::ConnectionReadTimeout)??,
            c = &mut conn, if !conn_done => {
                conn_done = true;
                c?;
            }
        }
    };
    let idle = target.between_bytes_timeout;
    let response = response.map(|body| IdleTimeout::new(body, idle).boxed_unsync());
    let driver = async move {
        if !conn_done {
            conn.await?;
        }
        Ok(())
    };
    Ok((response, Box::new(driver)))
}

async fn connect(addrs: &[SocketAddr], limit: Duration) -> Result<TcpStream, Error> {
    let mut last = Error::DestinationNotFound;
    for addr in addrs {
        match timeout(limit, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => {
                // Requests and responses are small and latency matters more than packet count.
                let _ = stream.set_nodelay(true);
                return Ok(stream);
            }
            Ok(Err(e)) if e.kind() == io::ErrorKind::ConnectionRefused => {
                last = Error::ConnectionRefused
            }
            Ok(Err(e)) => last = Error::Connect(e),
            Err(_) => last = Error::ConnectionTimeout,
        }
    }
    Err(last)
}

/// The name the certificate must carry: the host name, or the IP address of an IP literal.
fn server_name(host: &str) -> Result<ServerName<'static>, Error> {
    match host.parse::<IpAddr>() {
        Ok(ip) => Ok(ServerName::from(ip)),
        Err(_) => ServerName::try_from(host.to_string()).map_err(Error::InvalidDnsNameError),
    }
}

/// One client configuration for the process: the Mozilla root set, HTTP/1.1.
pub fn tls_config() -> Arc<rustls::ClientConfig> {
    static CONFIG: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            client_config(rustls::RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.into(),
            })
        })
        .clone()
}

fn client_config(roots: rustls::RootCertStore) -> Arc<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

/// A response body that fails when nothing arrives for `idle`.
struct IdleTimeout {
    body: Incoming,
    idle: Duration,
    timer: Pin<Box<Sleep>>,
}

impl IdleTimeout {
    fn new(body: Incoming, idle: Duration) -> IdleTimeout {
        IdleTimeout {
            body,
            idle,
            timer: Box::pin(tokio::time::sleep(idle)),
        }
    }
}

impl Body for IdleTimeout {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.body).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                this.timer.as_mut().reset(Instant::now() + this.idle);
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                ready!(this.timer.as_mut().poll(cx));
                Poll::Ready(Some(Err(Error::ConnectionReadTimeout)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::Empty;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    /// A server that answers one connection with `reply` and hands back the request it read.
    async fn server(reply: &'static [u8]) -> (SocketAddr, tokio::task::JoinHandle<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut seen = Vec::new();
            let mut buf = [0; 1024];
            while !seen.ends_with(b"\r\n\r\n") {
                let n = s.read(&mut buf).await.unwrap();
                assert!(n > 0, "the client closed early");
                seen.extend_from_slice(&buf[..n]);
            }
            s.write_all(reply).await.unwrap();
            // Keep the connection open a while, as a slow server would.
            tokio::time::sleep(Duration::from_millis(500)).await;
            String::from_utf8(seen).unwrap()
        });
        (addr, task)
    }

    fn get(url: &str) -> http::Request<WasiBody> {
        let body = Empty::<Bytes>::new().map_err(|never| match never {});
        let mut request = http::Request::get(url).body(body.boxed_unsync()).unwrap();
        let host = request.uri().authority().unwrap().as_str().to_string();
        request
            .headers_mut()
            .insert(HOST, HeaderValue::from_str(&host).unwrap());
        request
    }

    fn target<'a>(host: &'a str, addrs: &'a [SocketAddr]) -> Target<'a> {
        Target {
            host,
            addrs,
            tls: None,
            connect_timeout: Duration::from_secs(5),
            first_byte_timeout: Duration::from_secs(5),
            between_bytes_timeout: Duration::from_millis(100),
        }
    }

    #[tokio::test]
    async fn connects_to_the_checked_address_without_resolving_the_name_again() {
        let (addr, seen) = server(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").await;
        // `.invalid` never resolves: reaching the server proves no second lookup was made.
        let (response, driver) = send(
            get("http://rebound.invalid/x?y=1"),
            target("rebound.invalid", &[addr]),
        )
        .await
        .unwrap();
        tokio::spawn(Box::into_pin(driver));
        assert_eq!(response.status(), 200);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"ok");
        let seen = seen.await.unwrap().to_ascii_lowercase();
        assert!(seen.starts_with("get /x?y=1 http/1.1\r\n"), "{seen}");
        assert!(seen.contains("host: rebound.invalid\r\n"), "{seen}");
    }

    #[tokio::test]
    async fn a_stalled_body_fails_after_the_idle_timeout() {
        let (addr, _seen) = server(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nok").await;
        let (response, driver) = send(
            get("http://stall.invalid/"),
            target("stall.invalid", &[addr]),
        )
        .await
        .unwrap();
        tokio::spawn(Box::into_pin(driver));
        let err = response.into_body().collect().await.unwrap_err();
        assert!(matches!(err, Error::ConnectionReadTimeout), "{err:?}");
    }

    #[tokio::test]
    async fn a_refused_connection_is_reported_as_such() {
        let closed = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap()
            .local_addr()
            .unwrap();
        let err = send(
            get("http://gone.invalid/"),
            target("gone.invalid", &[closed]),
        )
        .await
        .err()
        .unwrap();
        assert!(matches!(err, Error::ConnectionRefused), "{err:?}");
    }

    /// A TLS server on loopback with a certificate for `name` only, trusted by the client
    /// configuration it returns; it answers one request with 200.
    async fn tls_server(name: &str) -> (SocketAddr, Arc<rustls::ClientConfig>) {
        let rcgen::CertifiedKey { cert, signing_key } =
            rcgen::generate_simple_self_signed(vec![name.to_string()]).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert.der().clone()).unwrap();
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(signing_key.serialize_der().into());
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert.der().clone()], key)
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let Ok(mut s) = acceptor.accept(tcp).await else {
                return;
            };
            let mut buf = [0; 1024];
            let _ = s.read(&mut buf).await;
            let _ = s
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                .await;
            let _ = s.flush().await;
            tokio::time::sleep(Duration::from_millis(500)).await;
        });
        (addr, client_config(roots))
    }

    #[tokio::test]
    async fn tls_goes_to_the_checked_address_and_verifies_the_host_name() {
        let (addr, config) = tls_server("rebound.test").await;
        let addrs = [addr];
        let mut t = target("rebound.test", &addrs);
        t.tls = Some(config);
        let (response, driver) = send(get("https://rebound.test/"), t).await.unwrap();
        tokio::spawn(Box::into_pin(driver));
        assert_eq!(response.status(), 200);

        let (addr, config) = tls_server("rebound.test").await;
        let addrs = [addr];
        let mut t = target("other.test", &addrs);
        t.tls = Some(config);
        let err = send(get("https://other.test/"), t).await.err().unwrap();
        assert!(
            matches!(err, Error::Tls(_)),
            "a certificate for another name: {err:?}"
        );
    }

    #[test]
    fn certificates_are_checked_against_the_host_name_or_ip() {
        assert_eq!(
            server_name("api.example.com").unwrap(),
            ServerName::try_from("api.example.com").unwrap()
        );
        assert_eq!(
            server_name("::1").unwrap(),
            ServerName::from("::1".parse::<IpAddr>().unwrap())
        );
        assert!(matches!(
            server_name("bad name"),
            Err(Error::InvalidDnsNameError(_))
        ));
    }
}
