//! A real HTTP receiver on loopback that records every request and answers as told.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub headers: HashMap<String, String>,
    pub body: Bytes,
}

impl Received {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }
}

type Responder = Arc<dyn Fn(&Received, usize) -> Response + Send + Sync>;

/// The receiver: its URL, what it got, and how it answers.
#[derive(Clone)]
pub struct Receiver {
    pub url: String,
    got: Arc<Mutex<Vec<Received>>>,
    responder: Arc<Mutex<Responder>>,
    delay: Arc<Mutex<Duration>>,
    in_flight: Arc<Mutex<(usize, usize)>>,
}

impl Receiver {
    /// Starts a receiver that answers 200 to everything.
    pub async fn start() -> Receiver {
        let got = Arc::new(Mutex::new(Vec::new()));
        let responder: Arc<Mutex<Responder>> = Arc::new(Mutex::new(Arc::new(|_: &Received, _| {
            StatusCode::OK.into_response()
        })));
        let delay = Arc::new(Mutex::new(Duration::ZERO));
        let in_flight = Arc::new(Mutex::new((0usize, 0usize)));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (g, r, d, f) = (
            got.clone(),
            responder.clone(),
            delay.clone(),
            in_flight.clone(),
        );
        let app = axum::Router::new().fallback(
            move |uri: axum::http::Uri, headers: HeaderMap, body: Bytes| {
                let (g, r, d, f) = (g.clone(), r.clone(), d.clone(), f.clone());
                async move {
                    {
                        let mut f = f.lock().unwrap();
                        f.0 += 1;
                        f.1 = f.1.max(f.0);
                    }
                    let received = Received {
                        path: uri.path().to_string(),
                        headers: headers
                            .iter()
                            .map(|(k, v)| {
                                (k.as_str().to_string(), v.to_str().unwrap_or("").to_string())
                            })
                            .collect(),
                        body,
                    };
                    let pause = *d.lock().unwrap();
                    if !pause.is_zero() {
                        tokio::time::sleep(pause).await;
                    }
                    let n = {
                        let mut g = g.lock().unwrap();
                        g.push(received.clone());
                        g.len()
                    };
                    let responder = r.lock().unwrap().clone();
                    f.lock().unwrap().0 -= 1;
                    responder(&received, n)
                }
            },
        );
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Receiver {
            url,
            got,
            responder,
            delay,
            in_flight,
        }
    }

    /// Changes how it answers; `n` is the 1-based number of the request.
    pub fn respond(&self, f: impl Fn(&Received, usize) -> Response + Send + Sync + 'static) {
        *self.responder.lock().unwrap() = Arc::new(f);
    }

    /// Answers every request with this status.
    pub fn status(&self, status: u16) {
        self.respond(move |_, _| StatusCode::from_u16(status).unwrap().into_response());
    }

    /// Waits this long before answering.
    pub fn set_delay(&self, d: Duration) {
        *self.delay.lock().unwrap() = d;
    }

    /// The most requests it was ever handling at once.
    pub fn max_in_flight(&self) -> usize {
        self.in_flight.lock().unwrap().1
    }

    /// How many requests it got so far (without copying them).
    pub fn count(&self) -> usize {
        self.got.lock().unwrap().len()
    }

    /// Everything received so far.
    pub fn received(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }

    /// Requests received so far at `path`.
    pub fn at(&self, path: &str) -> Vec<Received> {
        self.received()
            .into_iter()
            .filter(|r| r.path == path)
            .collect()
    }
}
