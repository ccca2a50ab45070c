//! The HTTP server in front of the API: accepts connections, serves each with hyper, and bounds
//! what a client can hold without doing anything useful.
//!
//! - At most `--max-connections` connections are open at once. Past that the server stops
//!   accepting: new connections wait in the kernel's accept queue until a slot frees up, so
//!   a flood costs queue entries, not memory or file descriptors.
//! - A connection must send a request's headers within `--header-timeout` (from its first
//!   byte, or from the connection's start), wait at most `--idle-timeout` between requests,
//!   and send a request's body within `--body-timeout`. These are enforced here
//!   (`watch.rs`, [`body`]), not by hyper's `header_read_timeout`: hyper starts that timer as
//!   soon as a connection waits for its next request, so it would also close every idle
//!   keep-alive connection after the header timeout, and the two limits could not differ.
//! - A request in flight (a slow handler, a long-lived `/v1/stream`) is never cut by them.
//!
//! On shutdown the server stops accepting, closes connections that have no request in
//! flight, lets the others finish their requests (streams are ended by the live feed), and
//! returns once every connection is closed.
//!
//! This module knows nothing of the API: it serves any [`Router`], and hands each request
//! its client's address as [`ConnectInfo`].

pub mod body;
mod watch;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::config::Config;
use crate::metrics::Metrics;
use watch::{Watch, Watched};

/// What one client may hold, and for how long.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// From a connection's start, or the first byte of a request, to the end of its headers.
    pub header_timeout: Duration,
    /// From the end of a request's headers to the end of its body.
    pub body_timeout: Duration,
    /// How long a keep-alive connection may wait for its next request.
    pub idle_timeout: Duration,
    /// Connections open at once.
    pub max_connections: u32,
}

impl Limits {
    /// The limits of the `serve` options.
    pub fn from_config(config: &Config) -> Limits {
        Limits {
            header_timeout: config.header_timeout,
            body_timeout: config.body_timeout,
            idle_timeout: config.idle_timeout,
            max_connections: config.max_connections,
        }
    }
}

/// Serves `app` on `listener` until `shutdown` resolves, then closes gracefully (see the
/// module documentation) and returns when the last connection is closed.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()>,
) {
    warn_if_few_file_descriptors(limits.max_connections);
    let slots = Arc::new(Semaphore::new(limits.max_connections as usize));
    let stop = CancellationToken::new();
    // Defaults as `axum::serve` has them: HTTP/1.1 with keep-alive, and HTTP/2 with prior
    // knowledge (h2c).
    let builder = Arc::new(auto::Builder::new(TokioExecutor::new()));
    tokio::pin!(shutdown);
    loop {
        let slot = tokio::select! {
            () = &mut shutdown => break,
            slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
        };
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    if !is_connection_error(&e) {
                        // Out of file descriptors, most often: wait for some to be freed
                        // rather than spin (as `axum::serve` does).
                        tracing::error!(error = %e, "accepting a connection failed");
                        tokio::select! {
                            () = &mut shutdown => break,
                            () = tokio::time::sleep(Duration::from_secs(1)) => {}
                        }
                    }
                    continue;
                }
            },
        };
        tokio::spawn(connection(
            Connection {
                builder: builder.clone(),
                app: app.clone(),
                limits,
                stop: stop.clone(),
                metrics: metrics.clone(),
                _slot: slot,
            },
            stream,
            peer,
        ));
    }
    drop(listener);
    stop.cancel();
    // Each connection holds its slot until it is closed: all slots back means all closed.
    let _ = slots.acquire_many(limits.max_connections).await;
}

/// What a connection's task owns.
struct Connection {
    builder: Arc<auto::Builder<TokioExecutor>>,
    app: Router,
    limits: Limits,
    stop: CancellationToken,
    metrics: Arc<Metrics>,
    _slot: OwnedSemaphorePermit,
}

async fn connection(conn: Connection, stream: TcpStream, peer: SocketAddr) {
    conn.metrics.http_connections.inc();
    let watch = Arc::new(Watch::new(
        conn.limits.header_timeout,
        conn.limits.idle_timeout,
    ));
    let io = TokioIo::new(Watched::new(stream, watch.clone()));
    let app = conn.app.clone();
    let service_watch = watch.clone();
    let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
        let in_flight = service_watch.request_started();
        let mut req = req.map(axum::body::Body::new);
        req.extensions_mut().insert(ConnectInfo(peer));
        let app = app.clone();
        async move {
            let response = app.oneshot(req).await.unwrap_or_else(|e| match e {});
            Ok::<_, Infallible>(body::finishing(response, in_flight))
        }
    });
    let served = conn.builder.serve_connection(io, service);
    tokio::pin!(served);
    let mut stopping = false;
    loop {
        tokio::select! {
            result = served.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
                break;
            }
            why = watch.expired() => {
                // Dropping the connection closes the socket: the client sees EOF.
                tracing::debug!(%peer, why, "closing a connection");
                break;
            }
            () = conn.stop.cancelled(), if !stopping => {
                if !watch.busy() {
                    break;
                }
                // Answer what is in flight, then close (no keep-alive).
                served.as_mut().graceful_shutdown();
                stopping = true;
            }
        }
    }
    conn.metrics.http_connections.dec();
}

/// Errors of one connection that say nothing about the listener.
fn is_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset
    )
}

/// Raises the soft limit of open files to the hard limit (as Go's runtime does), and warns
/// when even that leaves too little room for `max_connections` besides the database, plugin
/// files and outgoing deliveries.
fn warn_if_few_file_descriptors(max_connections: u32) {
    #[cfg(unix)]
    {
        use rustix::process::{Resource, getrlimit, setrlimit};
        let mut limit = getrlimit(Resource::Nofile);
        if limit.current != limit.maximum {
            limit.current = limit.maximum;
            if setrlimit(Resource::Nofile, limit).is_err() {
                limit = getrlimit(Resource::Nofile);
            }
        }
        let wanted = u64::from(max_connections) + 512;
        if let Some(open_files) = limit.current
            && open_files < wanted
        {
            tracing::warn!(
                open_files,
                max_connections,
                "the open-file limit leaves little room besides --max-connections; \
                 raise it (ulimit -n, LimitNOFILE=) or lower --max-connections"
            );
        }
    }
}
