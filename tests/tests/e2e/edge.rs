//! The HTTP edge: what a client may hold (connections, time to send headers and bodies, idle
//! keep-alive), how failed authentications are limited per client address, and turning the
//! admin endpoints off. Slow clients are real sockets that stop mid-request.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use crate::common::{ADMIN, TestServer, eventually};
use reqwest::header::{COOKIE, RETRY_AFTER, SET_COOKIE};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Long enough for anything the server should do promptly on a loaded machine.
const WAIT: Duration = Duration::from_secs(30);

fn addr(s: &TestServer) -> SocketAddr {
    s.base.trim_start_matches("http://").parse().unwrap()
}

/// A connection that sends half a request's headers and stops.
async fn half_header(s: &TestServer) -> TcpStream {
    let mut c = TcpStream::connect(addr(s)).await.unwrap();
    c.write_all(b"POST /v1/events HTTP/1.1\r\nHost: wasmhook\r\nContent-Type: appl")
        .await
        .unwrap();
    c
}

/// Waits until the server closes `c` (EOF or a reset); returns what it sent before.
async fn closed_by_server(c: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    match tokio::time::timeout(WAIT, c.read_to_end(&mut got)).await {
        Ok(Ok(_)) => got,
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionReset => got,
        Ok(Err(e)) => panic!("reading the connection: {e}"),
        Err(_) => panic!("the server did not close the connection within {WAIT:?}"),
    }
}

/// The value of the `wasmhook_http_connections` gauge.
fn open_connections(metrics: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("wasmhook_http_connections "))
        .expect("the connections gauge")
        .trim()
        .parse()
        .unwrap()
}

/// Sends a complete request on `c` and reads one response (headers and a Content-Length body).
async fn exchange(c: &mut TcpStream, request: &str) -> String {
    c.write_all(request.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(WAIT, c.read(&mut buf))
            .await
            .expect("a response")
            .unwrap();
        assert!(n > 0, "closed before a whole response: {got:?}");
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got).to_string();
        if let Some(end) = text.find("\r\n\r\n") {
            let length: usize = text[..end]
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap())
                })
                .unwrap_or(0);
            if got.len() >= end + 4 + length {
                return text;
            }
        }
    }
}

#[tokio::test]
async fn requests_are_answered_while_hundreds_of_half_sent_headers_are_open() {
    // A long header timeout: the slow connections stay open for the whole test.
    let mut s = TestServer::start_with(&["--header-timeout", "10m"]).await;
    let (_, key) = s.account("acme").await;
    let mut slow = Vec::new();
    for _ in 0..300 {
        slow.push(half_header(&s).await);
    }
    // Once the server holds all of them, a normal request is still answered; its answer
    // counts them (and the connection it came on).
    let metrics = eventually("the server to hold the 300 connections", WAIT, || async {
        let metrics = s.metrics().await;
        (open_connections(&metrics) > 300).then_some(metrics)
    })
    .await;
    assert!(open_connections(&metrics) > 300, "{metrics}");
    let event = s
        .event(&key, json!({"type": "message:created", "payload": {}}))
        .await;
    let (status, _) = s
        .get(
            &format!("/v1/events/{}", event["id"].as_str().unwrap()),
            &key,
        )
        .await;
    assert_eq!(status, 200);
    // Shutting down does not wait for them: they have no request in flight.
    s.stop().await;
    for c in &mut slow {
        closed_by_server(c).await;
    }
}

#[tokio::test]
async fn half_sent_headers_are_closed_after_the_header_timeout() {
    // A long idle timeout: what closes them is the header timeout.
    let s = TestServer::start_with(&["--header-timeout", "1s", "--idle-timeout", "10m"]).await;
    let mut slow = Vec::new();
    for _ in 0..300 {
        slow.push(half_header(&s).await);
    }
    let (status, _) = s.call(reqwest::Method::GET, "/healthz", None, None).await;
    assert_eq!(status, 200, "answered while they are open");
    for c in &mut slow {
        let sent = closed_by_server(c).await;
        assert!(sent.is_empty(), "closed without an answer: {sent:?}");
    }
    // Nothing is left of them.
    eventually("the slow connections to be gone", WAIT, || async {
        (open_connections(&s.metrics().await) <= 1).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_drip_fed_header_is_closed_at_the_header_timeout() {
    let s = TestServer::start_with(&["--header-timeout", "1s", "--idle-timeout", "10m"]).await;
    let mut c = TcpStream::connect(addr(&s)).await.unwrap();
    let request = b"GET /healthz HTTP/1.1\r\nHost: wasmhook\r\nX-Padding: ";
    c.write_all(request).await.unwrap();
    // One byte every 100 ms, each well within any per-read timeout, never a whole header:
    // only a deadline for the whole header closes this.
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut buf = [0u8; 64];
    loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "still open after {WAIT:?}"
        );
        if c.write_all(b"a").await.is_err() {
            break;
        }
        match tokio::time::timeout(Duration::from_millis(100), c.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => panic!("unexpected answer: {:?}", &buf[..n]),
            Err(_) => {}
        }
    }
}

#[tokio::test]
async fn the_connection_cap_makes_excess_connections_wait_without_starving_the_server() {
    let s = TestServer::start_with(&[
        "--max-connections",
        "5",
        "--header-timeout",
        "1s",
        "--idle-timeout",
        "10m",
    ])
    .await;
    // Five take every slot; twenty more wait to be accepted.
    let mut slow = Vec::new();
    for _ in 0..25 {
        slow.push(half_header(&s).await);
    }
    // A normal request waits for a slot too, and is answered once the slow ones are closed:
    // its answer counts no more connections than the cap.
    let metrics = tokio::time::timeout(WAIT, s.metrics())
        .await
        .expect("answered within the header timeouts of the waiting connections");
    assert!(open_connections(&metrics) <= 5, "{metrics}");
    // The waiting ones were accepted in turn and closed like the others.
    for c in &mut slow {
        closed_by_server(c).await;
    }
    let (status, _) = s.call(reqwest::Method::GET, "/healthz", None, None).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_idle_timeout() {
    let s = TestServer::start_with(&["--idle-timeout", "500ms", "--header-timeout", "10m"]).await;
    let mut c = TcpStream::connect(addr(&s)).await.unwrap();
    let request = "GET /healthz HTTP/1.1\r\nHost: wasmhook\r\n\r\n";
    let first = exchange(&mut c, request).await;
    assert!(first.starts_with("HTTP/1.1 200"), "{first}");
    // Kept alive: a second request on the same connection is answered.
    let second = exchange(&mut c, request).await;
    assert!(second.starts_with("HTTP/1.1 200"), "{second}");
    // Then, with nothing sent, the idle timeout closes it (the header timeout is 10 minutes).
    let after = closed_by_server(&mut c).await;
    assert!(after.is_empty(), "{after:?}");
}

#[tokio::test]
async fn a_body_that_does_not_arrive_in_time_gets_408_and_the_connection_is_closed() {
    let s = TestServer::start_with(&["--body-timeout", "500ms"]).await;
    let (_, key) = s.account("acme").await;
    let mut c = TcpStream::connect(addr(&s)).await.unwrap();
    let head = format!(
        "POST /v1/events HTTP/1.1\r\nHost: wasmhook\r\nAuthorization: Bearer {key}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"type\": \"mess"
    );
    c.write_all(head.as_bytes()).await.unwrap();
    let answer = String::from_utf8(closed_by_server(&mut c).await).unwrap();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("connection: close"),
        "{answer}"
    );
    let body: Value =
        serde_json::from_str(&answer[answer.find("\r\n\r\n").unwrap() + 4..]).unwrap();
    assert_eq!(body["error"]["code"], "request_timeout", "{body}");
    // Nothing was stored, and bodies that arrive are accepted as before.
    let (_, events) = s.get("/v1/events", &key).await;
    assert_eq!(events["data"].as_array().unwrap().len(), 0, "{events}");
    s.event(&key, json!({"type": "message:created", "payload": {}}))
        .await;
}

#[tokio::test]
async fn a_live_stream_outlasts_every_timeout() {
    let s = TestServer::start_with(&[
        "--idle-timeout",
        "300ms",
        "--header-timeout",
        "300ms",
        "--body-timeout",
        "300ms",
    ])
    .await;
    let (_, key) = s.account("acme").await;
    let mut stream = s
        .http
        .get(s.url("/v1/stream"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    let hello = stream
        .chunk()
        .await
        .unwrap()
        .expect("the connected comment");
    assert!(String::from_utf8_lossy(&hello).contains("connected"));
    // Every timeout has run out since the stream started: a connection opened after it was
    // closed by the header timeout, another by the idle timeout.
    let mut slow = half_header(&s).await;
    closed_by_server(&mut slow).await;
    let mut idle = TcpStream::connect(addr(&s)).await.unwrap();
    exchange(&mut idle, "GET /healthz HTTP/1.1\r\nHost: wasmhook\r\n\r\n").await;
    closed_by_server(&mut idle).await;
    // The stream still delivers.
    let event = s
        .event(&key, json!({"type": "message:created", "payload": {}}))
        .await;
    let id = event["id"].as_str().unwrap().to_string();
    let mut seen = String::new();
    while !seen.contains(&id) {
        let chunk = tokio::time::timeout(WAIT, stream.chunk())
            .await
            .expect("the event on the stream")
            .expect("the stream is still open")
            .expect("the stream is still open");
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
}

/// A client whose requests come from another loopback address.
fn client_from(ip: Ipv4Addr) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(IpAddr::V4(ip))
        .build()
        .unwrap()
}

async fn get_with(
    http: &reqwest::Client,
    s: &TestServer,
    path: &str,
    key: &str,
) -> reqwest::Response {
    http.get(s.url(path)).bearer_auth(key).send().await.unwrap()
}

#[tokio::test]
async fn a_burst_of_bad_api_keys_is_rate_limited_per_client_address() {
    let s = TestServer::start_with(&["--auth-failures-per-minute", "3"]).await;
    let (_, key) = s.account("acme").await;
    let here = client_from(Ipv4Addr::new(127, 0, 0, 1));
    for i in 0..3 {
        let resp = get_with(&here, &s, "/v1/subscriptions", &format!("whk_guess{i}")).await;
        assert_eq!(resp.status(), 401);
    }
    let resp = get_with(&here, &s, "/v1/subscriptions", "whk_guess3").await;
    assert_eq!(resp.status(), 429);
    let retry_after: u64 = resp.headers()[RETRY_AFTER]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    // One more failure is allowed every 60 s / 3.
    assert!((1..=20).contains(&retry_after), "{retry_after}");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limited", "{body}");
    // While limited, the address gets 429 whatever it presents: answering a right guess
    // differently would tell the guesser it was right.
    let resp = get_with(&here, &s, "/v1/subscriptions", &key).await;
    assert_eq!(resp.status(), 429);
    let resp = here
        .post(s.url("/v1/accounts"))
        .bearer_auth("a-wrong-admin-token")
        .json(&json!({"name": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 429);
    // Another address is not affected, and has its own budget.
    let there = client_from(Ipv4Addr::new(127, 0, 0, 2));
    let resp = get_with(&there, &s, "/v1/subscriptions", &key).await;
    assert_eq!(resp.status(), 200);
    let resp = get_with(&there, &s, "/v1/subscriptions", "whk_guess").await;
    assert_eq!(resp.status(), 401);
    // Requests without credentials are not attempts.
    let resp = there.get(s.url("/v1/subscriptions")).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    let resp = get_with(&there, &s, "/v1/subscriptions", &key).await;
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn successful_authentications_are_not_limited() {
    let s = TestServer::start_with(&["--auth-failures-per-minute", "2"]).await;
    let (account, key) = s.account("acme").await;
    for _ in 0..50 {
        let (status, _) = s.get("/v1/subscriptions", &key).await;
        assert_eq!(status, 200);
        let (status, _) = s
            .get(&format!("/v1/accounts/{account}/api-keys"), ADMIN)
            .await;
        assert_eq!(status, 200);
    }
    // The admin token on an account endpoint is a valid credential used in the wrong place,
    // not a guess.
    for _ in 0..5 {
        let (status, _) = s.get("/v1/subscriptions", ADMIN).await;
        assert_eq!(status, 401);
    }
    // The whole budget of failures is still there.
    for expected in [401, 401, 429] {
        let (status, _) = s.get("/v1/subscriptions", "whk_guess").await;
        assert_eq!(status, expected);
    }
}

/// Posts the console's sign-in form with `key`.
async fn console_sign_in(s: &TestServer, key: &str) -> reqwest::Response {
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let page = http.get(s.url("/console/sign-in")).send().await.unwrap();
    let form_cookie = page.headers()[SET_COOKIE]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let html = page.text().await.unwrap();
    let marker = "name=\"sign_in_token\" value=\"";
    let at = html.find(marker).unwrap() + marker.len();
    let token = &html[at..at + html[at..].find('"').unwrap()];
    http.post(s.url("/console/sign-in"))
        .header(COOKIE, form_cookie)
        .form(&[("sign_in_token", token), ("key", key)])
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn console_sign_in_shares_the_limit_on_failed_authentications() {
    let s = TestServer::start_with(&["--auth-failures-per-minute", "2"]).await;
    let (_, key) = s.account("acme").await;
    for _ in 0..2 {
        assert_eq!(console_sign_in(&s, "whk_guess").await.status(), 401);
    }
    let limited = console_sign_in(&s, "whk_guess").await;
    assert_eq!(limited.status(), 429);
    assert!(limited.headers().contains_key(RETRY_AFTER));
    let page = limited.text().await.unwrap();
    assert!(page.contains("Too many failed sign-ins"), "{page}");
    assert_eq!(console_sign_in(&s, &key).await.status(), 429);
    // The API from the same address is limited as well.
    let (status, _) = s.get("/v1/subscriptions", &key).await;
    assert_eq!(status, 429);
}

#[tokio::test]
async fn admin_token_none_needs_an_account_first() {
    let dir = tempfile::tempdir().unwrap();
    let config = wasmhook::config::Config::from_args([
        "--admin-token",
        "none",
        "--data-dir",
        dir.path().to_str().unwrap(),
    ])
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let refused = wasmhook::run(config, listener, std::future::pending())
        .await
        .expect_err("nothing could ever be done with this server");
    assert!(
        format!("{refused:#}").contains("no account yet"),
        "{refused:#}"
    );
    assert!(!dir.path().join("admin-token").exists());
}

#[tokio::test]
async fn admin_endpoints_can_be_turned_off_once_accounts_exist() {
    let mut s = TestServer::start().await;
    let (account, key) = s.account("acme").await;
    // An admin console session made before, to check it opens nothing after.
    let admin_session = console_sign_in(&s, ADMIN).await;
    assert_eq!(admin_session.status(), 303);
    let admin_cookie = admin_session
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap())
        .find(|v| v.starts_with("wasmhook_session="))
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();

    s.restart_with(&["--admin-token", "none"]).await;
    for (status, body) in [
        s.post("/v1/accounts", ADMIN, json!({"name": "another"}))
            .await,
        s.get("/v1/accounts", ADMIN).await,
        s.get("/v1/accounts", &key).await,
    ] {
        assert_eq!(status, 403, "{body}");
        assert_eq!(body["error"]["code"], "admin_disabled", "{body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains("--admin-token none"), "{message}");
    }
    // Accounts go on managing themselves; the old admin token is just a wrong key.
    let (status, _) = s.get("/v1/account", &key).await;
    assert_eq!(status, 200);
    let keys = format!("/v1/accounts/{account}/api-keys");
    let (status, created) = s.post(&keys, &key, json!({})).await;
    assert_eq!(status, 201, "{created}");
    let (status, _) = s.get(&keys, ADMIN).await;
    assert_eq!(status, 401);
    // The console: no admin sign-in, and the old admin session opens nothing.
    let sign_in_page = s
        .http
        .get(s.url("/console/sign-in"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!sign_in_page.contains("admin token"), "{sign_in_page}");
    assert_eq!(console_sign_in(&s, ADMIN).await.status(), 401);
    assert_eq!(console_sign_in(&s, &key).await.status(), 303);
    let old = s
        .http
        .get(s.url("/console/admin"))
        .header(COOKIE, &admin_cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(old.status(), 403);
}

#[tokio::test]
async fn the_api_document_lists_the_edge_answers() {
    let s = TestServer::start().await;
    let doc: Value = s
        .http
        .get(s.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let responses = |path: &str, method: &str| doc["paths"][path][method]["responses"].clone();
    let create = responses("/v1/subscriptions", "post");
    assert_eq!(
        create["429"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/ErrorBody"
    );
    assert!(
        create["429"]["headers"]["Retry-After"].is_object(),
        "{create}"
    );
    assert!(create["408"].is_object(), "{create}");
    assert!(responses("/v1/stream", "get")["429"].is_object());
    assert!(responses("/v1/stream", "get")["408"].is_null());
    assert!(responses("/v1/accounts", "post")["403"].is_object());
    assert!(responses("/v1/account", "get")["403"].is_null());
    assert!(responses("/healthz", "get")["429"].is_null());
}
