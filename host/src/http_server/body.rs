//! Request and response bodies at the edge: a request's body must arrive within
//! `--body-timeout` ([`deadline`], answered 408), and a response's body carries the
//! connection's in-flight mark until it has been sent.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use hyper::body::{Body as HttpBody, Frame, SizeHint};
use tokio::time::{Instant, Sleep};

use super::watch::InFlight;
use crate::error::ApiError;

/// Middleware: the request's body must be received within `timeout` of its headers. A body
/// that is late fails the handler's read, and the answer is a 408 (whatever the handler made
/// of the failed read) on a connection that is then closed, since the rest of the body would
/// still be on its way.
///
/// The deadline only bites while the handler waits for bytes: a body already received is
/// never late, however long the handler took before reading it.
pub async fn deadline(State(timeout): State<Duration>, req: Request, next: Next) -> Response {
    if req.body().is_end_stream() {
        return next.run(req).await;
    }
    let late = Arc::new(AtomicBool::new(false));
    let req = req.map(|body| {
        Body::new(Deadline {
            inner: body,
            at: Instant::now() + timeout,
            sleep: None,
            late: late.clone(),
        })
    });
    let response = next.run(req).await;
    if !late.load(Ordering::Relaxed) {
        return response;
    }
    let mut response = ApiError::RequestTimeout(format!(
        "the request body was not received within {}",
        humantime::format_duration(timeout)
    ))
    .into_response();
    response.headers_mut().insert(
        http::header::CONNECTION,
        http::HeaderValue::from_static("close"),
    );
    response
}

/// The request body was not received in time.
#[derive(Debug, thiserror::Error)]
#[error("the request body was not received in time")]
pub struct BodyTimeout;

/// A request body with a deadline.
struct Deadline {
    inner: Body,
    at: Instant,
    /// Armed on the first wait, so a body read at once costs no timer.
    sleep: Option<Pin<Box<Sleep>>>,
    late: Arc<AtomicBool>,
}

impl HttpBody for Deadline {
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => Poll::Ready(frame.map(|f| f.map_err(Into::into))),
            Poll::Pending => {
                let at = this.at;
                let sleep = this
                    .sleep
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(at)));
                match sleep.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        this.late.store(true, Ordering::Relaxed);
                        Poll::Ready(Some(Err(BodyTimeout.into())))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// `response`, whose body keeps the request marked in flight until it has been sent: a
/// long-lived stream is a request in flight, never an idle connection.
pub(super) fn finishing(response: Response, in_flight: InFlight) -> Response {
    response.map(|inner| {
        Body::new(Finishing {
            inner,
            _in_flight: in_flight,
        })
    })
}

struct Finishing {
    inner: Body,
    _in_flight: InFlight,
}

impl HttpBody for Finishing {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
