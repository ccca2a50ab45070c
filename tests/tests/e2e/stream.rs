//! `GET /v1/stream` end to end: Server-Sent Events read off the wire as a client would, for
//! events on ingest, attempts as they settle and plugin log lines; scoped to the account,
//! filtered as asked, and ended by a graceful shutdown.

use std::time::Duration;

use crate::common::{Receiver, TestServer};
use serde_json::{Value, json};
use wasmhook_plugin_artifacts as wasm;

const WAIT: Duration = Duration::from_secs(20);

/// One SSE message.
#[derive(Debug, Clone)]
struct Sse {
    event: String,
    id: Option<String>,
    data: Value,
}

/// A stream read off the wire: `text/event-stream` parsed line by line.
struct Stream {
    resp: reqwest::Response,
    buf: String,
}

impl Stream {
    async fn open(s: &TestServer, key: &str, query: &str) -> Stream {
        let req = s.http.get(s.url(&format!("/v1/stream{query}")));
        Stream::open_with(req.bearer_auth(key)).await
    }

    async fn open_with(req: reqwest::RequestBuilder) -> Stream {
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["content-type"], "text/event-stream");
        let mut stream = Stream {
            resp,
            buf: String::new(),
        };
        // The first bytes are the "connected" comment: from here on, everything is streamed.
        let hello = stream.block(WAIT).await.expect("the connected comment");
        assert!(hello.contains(": connected"), "{hello}");
        stream
    }

    /// The next block (up to a blank line), or `None` at the end of the stream or after `wait`.
    async fn block(&mut self, wait: Duration) -> Option<String> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some(at) = self.buf.find("\n\n") {
                let block = self.buf[..at].to_string();
                self.buf.drain(..at + 2);
                return Some(block);
            }
            let chunk = tokio::time::timeout_at(deadline, self.resp.chunk())
                .await
                .ok()?
                .expect("the stream reads");
            self.buf.push_str(std::str::from_utf8(&chunk?).unwrap());
        }
    }

    /// The next message with data (comments skipped), or `None` after `wait`.
    async fn next_within(&mut self, wait: Duration) -> Option<Sse> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let block = self.block(left).await?;
            let (mut event, mut id, mut data) = (String::from("message"), None, None::<String>);
            for line in block.lines() {
                let (field, value) = line.split_once(':').unwrap_or((line, ""));
                let value = value.strip_prefix(' ').unwrap_or(value).to_string();
                match field {
                    "event" => event = value,
                    "id" => id = Some(value),
                    "data" => data = Some(data.map_or(value.clone(), |d| d + "\n" + &value)),
                    _ => {}
                }
            }
            if let Some(data) = data {
                let data = serde_json::from_str(&data).expect("JSON data");
                return Some(Sse { event, id, data });
            }
        }
    }

    async fn next(&mut self) -> Sse {
        self.next_within(WAIT)
            .await
            .expect("a message within the wait")
    }
}

#[tokio::test]
async fn an_event_then_its_attempt_are_streamed_to_its_account_only() {
    let s = TestServer::start().await;
    let r = Receiver::start().await;
    let (_, a) = s.account("A").await;
    let (_, b) = s.account("B").await;
    let sub = s.subscribe(&a, json!({ "url": r.url.clone() })).await;
    let mut mine = Stream::open(&s, &a, "").await;
    let mut theirs = Stream::open(&s, &b, "").await;

    let posted = s
        .event(
            &a,
            json!({"type": "message:created", "id": "msg-1", "payload": {"body": "Hello"}}),
        )
        .await;
    let event = mine.next().await;
    assert_eq!(event.event, "event");
    assert_eq!(event.data, posted, "the event as the API shows it");
    let attempt = mine.next().await;
    assert_eq!(attempt.event, "attempt", "{attempt:?}");
    let d = &attempt.data;
    assert_eq!(d["event_id"], "msg-1");
    assert_eq!(d["event_type"], "message:created");
    assert_eq!(d["subscription_id"], sub["id"]);
    assert_eq!(
        (
            &d["status"],
            &d["outcome"],
            &d["status_code"],
            &d["attempt"]
        ),
        (
            &json!("succeeded"),
            &json!("succeeded"),
            &json!(200),
            &json!(1)
        )
    );
    assert!(d["delivery_id"].as_str().unwrap().starts_with("msg_"));
    assert!(d["duration_ms"].is_i64());
    let (_, delivery) = s
        .get(
            &format!("/v1/deliveries/{}", d["delivery_id"].as_str().unwrap()),
            &a,
        )
        .await;
    assert_eq!(delivery["status"], "succeeded");
    let ids: Vec<u64> = [&event, &attempt]
        .iter()
        .map(|m| m.id.as_deref().unwrap().parse().unwrap())
        .collect();
    assert!(ids[0] < ids[1], "ids increase: {ids:?}");

    // B's stream got nothing of A's: the first thing it sees is its own event.
    s.event(&b, json!({"type": "b:only", "payload": {}})).await;
    let first = theirs.next().await;
    assert_eq!(
        (first.event.as_str(), &first.data["type"]),
        ("event", &json!("b:only"))
    );
}

#[tokio::test]
async fn failed_attempts_carry_the_outcome_and_the_reason() {
    let s = TestServer::start().await;
    let r = Receiver::start().await;
    r.status(500);
    let (_, key) = s.account("A").await;
    s.subscribe(&key, json!({ "url": r.url.clone() })).await;
    let mut live = Stream::open(&s, &key, "?types=order:paid").await;
    s.event(&key, json!({"type": "order:paid", "payload": {}}))
        .await;
    assert_eq!(live.next().await.event, "event");
    // The test retry schedule has three steps: three retries, then a dead letter.
    let mut outcomes = Vec::new();
    for _ in 0..4 {
        let m = live.next().await;
        assert_eq!(m.event, "attempt");
        assert_eq!(m.data["status_code"], 500);
        assert_eq!(m.data["error_kind"], "http_status");
        assert_eq!(m.data["error_message"], "HTTP 500 Internal Server Error");
        outcomes.push((
            m.data["outcome"].clone(),
            m.data["next_attempt_at"].is_string(),
        ));
    }
    let retrying = (json!("retrying"), true);
    assert_eq!(
        outcomes,
        [
            retrying.clone(),
            retrying.clone(),
            retrying,
            (json!("failed"), false)
        ]
    );
}

#[tokio::test]
async fn filters_select_types_subscriptions_and_plugins() {
    let s = TestServer::start().await;
    let r = Receiver::start().await;
    let (_, key) = s.account("A").await;
    let one = s
        .subscribe(&key, json!({ "url": format!("{}/one", r.url) }))
        .await;
    let two = s
        .subscribe(&key, json!({ "url": format!("{}/two", r.url) }))
        .await;
    let bot = s
        .plugin(
            &key,
            "auto-reply",
            wasm::AUTO_REPLY,
            json!({"config": {"reply_text": "On it!", "keywords": "help"}}),
        )
        .await;
    let bot_id = bot["id"].as_str().unwrap();
    let bot_sub = s
        .subscribe(
            &key,
            json!({"plugin_id": bot_id, "event_types": ["message:created"]}),
        )
        .await;

    let mut by_type = Stream::open(&s, &key, "?types=conversation:created,ticket:closed").await;
    let mut by_sub = Stream::open(
        &s,
        &key,
        &format!("?subscription_id={}", two["id"].as_str().unwrap()),
    )
    .await;
    let mut by_plugin = Stream::open(&s, &key, &format!("?plugin_id={bot_id}")).await;

    s.event(&key, json!({"type": "other:thing", "payload": {}}))
        .await;
    s.event(
        &key,
        json!({"type": "conversation:created", "id": "conv-created", "payload": {"conversation_id": "c1"}}),
    )
    .await;
    s.event(
        &key,
        json!({"type": "message:created", "id": "help-me", "payload": {
            "conversation_id": "c1", "text": "I need help",
            "sender": {"id": "contact-1", "type": "source_contact"}}}),
    )
    .await;

    // types: the conversation:created event and its attempts (at both URL subscriptions).
    let first = by_type.next().await;
    assert_eq!(
        (first.event.as_str(), &first.data["id"]),
        ("event", &json!("conv-created"))
    );
    let mut attempted = Vec::new();
    for _ in 0..2 {
        let m = by_type.next().await;
        assert_eq!(
            (m.event.as_str(), &m.data["event_id"]),
            ("attempt", &json!("conv-created"))
        );
        attempted.push(m.data["subscription_id"].as_str().unwrap().to_string());
    }
    attempted.sort();
    let mut urls = vec![
        one["id"].as_str().unwrap().to_string(),
        two["id"].as_str().unwrap().to_string(),
    ];
    urls.sort();
    assert_eq!(attempted, urls);

    // subscription_id: attempts of that subscription only, no events.
    for _ in 0..3 {
        let m = by_sub.next().await;
        assert_eq!(m.event, "attempt", "{m:?}");
        assert_eq!(m.data["subscription_id"], two["id"]);
    }

    // plugin_id: what the plugin did: its log line, the attempt it handled, the event it
    // emitted (its reply), and nothing else.
    let mut seen = Vec::new();
    while !(seen.iter().any(|m: &Sse| m.event == "log")
        && seen
            .iter()
            .any(|m| m.event == "attempt" && m.data["event_id"] == "help-me")
        && seen.iter().any(|m| m.event == "event"))
    {
        seen.push(by_plugin.next().await);
    }
    for m in &seen {
        match m.event.as_str() {
            "log" => {
                assert_eq!(m.data["plugin_id"], bot["id"]);
                assert_eq!(m.data["event_id"], "help-me");
                assert!(m.data["level"].is_string() && m.data["message"].is_string());
                assert!(m.data["at"].is_string());
            }
            "attempt" => {
                assert_eq!(m.data["subscription_id"], bot_sub["id"]);
                // The plugin handled the customer's message; it is never given its own reply.
                let status = if m.data["event_id"] == "help-me" {
                    "succeeded"
                } else {
                    "filtered"
                };
                assert_eq!(m.data["status"], status, "{m:?}");
            }
            "event" => {
                assert_eq!(m.data["causation"]["plugin_id"], bot["id"]);
                assert_eq!(m.data["causation"]["event_id"], "help-me");
                assert_eq!(m.data["payload"]["text"], "On it!");
            }
            other => panic!("unexpected {other}: {m:?}"),
        }
    }
}

#[tokio::test]
async fn subscription_disabled_events_are_streamed() {
    let s = TestServer::start().await;
    let r = Receiver::start().await;
    r.status(410);
    let (_, key) = s.account("A").await;
    let sub = s.subscribe(&key, json!({ "url": r.url.clone() })).await;
    let mut live = Stream::open(&s, &key, "?types=subscription:disabled").await;
    s.event(&key, json!({"type": "message:created", "payload": {}}))
        .await;
    let disabled = live.next().await;
    assert_eq!(disabled.event, "event");
    assert_eq!(disabled.data["type"], "subscription:disabled");
    assert_eq!(disabled.data["payload"]["subscription_id"], sub["id"]);
}

#[tokio::test]
async fn streams_are_authenticated_and_filters_are_checked() {
    let s = TestServer::start().await;
    let (_, a) = s.account("A").await;
    let (_, b) = s.account("B").await;
    let theirs = s
        .subscribe(&b, json!({"url": "https://example.com/hook"}))
        .await;

    let (status, err) = s.call(reqwest::Method::GET, "/v1/stream", None, None).await;
    assert_eq!(status, 401);
    assert_eq!(err["error"]["code"], "unauthorized");
    let (status, _) = s.get("/v1/stream", "whk_not-a-key").await;
    assert_eq!(status, 401);

    for (query, code) in [
        ("?types=Not%20A%20Type", 400),
        ("?types=,", 400),
        (
            &format!("?subscription_id={}", theirs["id"].as_str().unwrap()),
            404,
        ),
        ("?plugin_id=plg_nope", 404),
    ] {
        let (status, err) = s.get(&format!("/v1/stream{query}"), &a).await;
        assert_eq!(status, code, "{query}: {err}");
        assert!(err["error"]["message"].is_string(), "{query}: {err}");
    }
}

/// Signs in to the web console with `key`; returns the `Cookie` header of the session.
async fn console_session(s: &TestServer, key: &str) -> String {
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let page = http.get(s.url("/console/sign-in")).send().await.unwrap();
    let form_cookie = page.headers()["set-cookie"].to_str().unwrap();
    let form_cookie = form_cookie.split(';').next().unwrap().to_string();
    let html = page.text().await.unwrap();
    let marker = "name=\"sign_in_token\" value=\"";
    let at = html.find(marker).expect("the sign-in token") + marker.len();
    let token = &html[at..at + html[at..].find('"').unwrap()];
    let signed_in = http
        .post(s.url("/console/sign-in"))
        .header("cookie", form_cookie)
        .form(&[("sign_in_token", token), ("key", key)])
        .send()
        .await
        .unwrap();
    assert_eq!(signed_in.status(), 303);
    signed_in
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap())
        .find(|v| v.starts_with("wasmhook_session="))
        .map(|v| v.split(';').next().unwrap().to_string())
        .expect("a session cookie")
}

#[tokio::test]
async fn the_console_session_cookie_reads_the_stream_of_its_account() {
    let s = TestServer::start().await;
    let (_, a) = s.account("A").await;
    let (_, b) = s.account("B").await;
    let cookie = console_session(&s, &a).await;
    let mut live =
        Stream::open_with(s.http.get(s.url("/v1/stream")).header("cookie", &cookie)).await;
    s.event(&b, json!({"type": "not:mine", "payload": {}}))
        .await;
    s.event(&a, json!({"type": "mine", "payload": {}})).await;
    assert_eq!(live.next().await.data["type"], "mine");

    // A wrong API key is not rescued by the cookie, and the cookie opens nothing that writes.
    let wrong_key = s
        .http
        .get(s.url("/v1/stream"))
        .header("cookie", &cookie)
        .bearer_auth("whk_wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong_key.status(), 401);
    let write = s
        .http
        .post(s.url("/v1/events"))
        .header("cookie", &cookie)
        .json(&json!({"type": "forged", "payload": {}}))
        .send()
        .await
        .unwrap();
    assert_eq!(write.status(), 401);
}

#[tokio::test]
async fn a_graceful_shutdown_ends_open_streams() {
    let mut s = TestServer::start().await;
    let (_, key) = s.account("A").await;
    let mut live = Stream::open(&s, &key, "").await;
    tokio::time::timeout(WAIT, s.stop())
        .await
        .expect("the server stops with a stream open");
    assert_eq!(
        live.next_within(WAIT).await.map(|m| m.event),
        None,
        "the stream ended"
    );
}

#[tokio::test]
async fn the_stream_is_described_in_openapi() {
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
    let op = &doc["paths"]["/v1/stream"]["get"];
    assert!(
        op["responses"]["200"]["content"]["text/event-stream"].is_object(),
        "{op}"
    );
    let params: Vec<&str> = op["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(params, ["types", "subscription_id", "plugin_id"]);
    for schema in ["AttemptSettled", "LogWritten", "Lagged"] {
        assert!(doc["components"]["schemas"][schema].is_object(), "{schema}");
    }
}
