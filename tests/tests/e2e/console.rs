//! The web console: fast handler tests (security headers, session cookies, CSRF, tenancy) and
//! the browser flows, each a real headless Chromium driven by `tests/browser/*.mjs` against the
//! real server and a real receiver (see `tests/browser/README.md`).

#[path = "console/browser.rs"]
mod browser;

use crate::common::{ADMIN, Receiver, TestServer, eventually};
use reqwest::header::{CONTENT_TYPE, COOKIE, LOCATION, SET_COOKIE};
use reqwest::redirect::Policy;
use serde_json::json;
use std::time::Duration;

/// A browser-like client of the console: a session cookie and the page's CSRF token.
struct Console {
    http: reqwest::Client,
    base: String,
    cookie: String,
    csrf: String,
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(Policy::none())
        .build()
        .unwrap()
}

/// The value of `name=...` in a page (an input's value or a meta's content).
fn attr_after(html: &str, marker: &str) -> Option<String> {
    let at = html.find(marker)? + marker.len();
    let rest = &html[at..];
    let end = rest.find('"')?;
    Some(rest[..end].to_string())
}

fn cookie_value(set_cookie: &str) -> String {
    set_cookie.split(';').next().unwrap().to_string()
}

async fn sign_in_response(s: &TestServer, key: &str, extra: &[(&str, &str)]) -> reqwest::Response {
    let http = client();
    let page = http.get(s.url("/console/sign-in")).send().await.unwrap();
    let form_cookie = cookie_value(page.headers()[SET_COOKIE].to_str().unwrap());
    let html = page.text().await.unwrap();
    let token = attr_after(&html, "name=\"sign_in_token\" value=\"").unwrap();
    let mut req = http
        .post(s.url("/console/sign-in"))
        .header(COOKIE, form_cookie)
        .form(&[("sign_in_token", token.as_str()), ("key", key)]);
    for (k, v) in extra {
        req = req.header(*k, *v);
    }
    req.send().await.unwrap()
}

impl Console {
    async fn sign_in(s: &TestServer, key: &str) -> Console {
        let resp = sign_in_response(s, key, &[]).await;
        assert_eq!(resp.status(), 303, "signed in");
        let cookie = resp
            .headers()
            .get_all(SET_COOKIE)
            .iter()
            .map(|v| v.to_str().unwrap())
            .find(|v| v.starts_with("wasmhook_session="))
            .map(cookie_value)
            .expect("a session cookie");
        let mut c = Console {
            http: client(),
            base: s.base.clone(),
            cookie,
            csrf: String::new(),
        };
        let landing = resp.headers()[LOCATION].to_str().unwrap().to_string();
        let (_, html) = c.get(&landing).await;
        c.csrf =
            attr_after(&html, "name=\"csrf-token\" content=\"").expect("the page's CSRF token");
        c
    }

    async fn get(&self, path: &str) -> (u16, String) {
        let resp = self
            .http
            .get(format!("{}{}", self.base, path))
            .header(COOKIE, &self.cookie)
            .send()
            .await
            .unwrap();
        (resp.status().as_u16(), resp.text().await.unwrap())
    }

    /// Posts a form with this session's CSRF token; returns status and `Location` or body.
    async fn post(&self, path: &str, fields: &[(&str, &str)]) -> (u16, String) {
        let mut all: Vec<(&str, &str)> = vec![("csrf", self.csrf.as_str())];
        all.extend_from_slice(fields);
        self.post_raw(path, &all).await
    }

    async fn post_raw(&self, path: &str, fields: &[(&str, &str)]) -> (u16, String) {
        let resp = self
            .http
            .post(format!("{}{}", self.base, path))
            .header(COOKIE, &self.cookie)
            .form(fields)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let location = resp
            .headers()
            .get(LOCATION)
            .map(|v| v.to_str().unwrap().to_string());
        let body = resp.text().await.unwrap();
        (status, location.unwrap_or(body))
    }
}

#[tokio::test]
async fn every_response_has_the_security_headers() {
    let s = TestServer::start().await;
    let http = client();
    for path in [
        "/",
        "/console",
        "/console/sign-in",
        "/console/assets/console.js",
        "/console/assets/console.css",
        "/v1/events",
        "/healthz",
        "/no-such-route",
    ] {
        let resp = http.get(s.url(path)).send().await.unwrap();
        let h = resp.headers();
        let csp = h["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("script-src 'self'"), "{path}: {csp}");
        assert!(!csp.contains("unsafe-inline"), "{path}: {csp}");
        assert!(csp.contains("frame-ancestors 'none'"), "{path}: {csp}");
        assert_eq!(h["x-content-type-options"], "nosniff", "{path}");
        assert!(h.contains_key("referrer-policy"), "{path}");
    }
    let js = http
        .get(s.url("/console/assets/console.js"))
        .send()
        .await
        .unwrap();
    assert!(
        js.headers()[CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/javascript")
    );
    assert!(
        js.headers()["cache-control"]
            .to_str()
            .unwrap()
            .contains("max-age=")
    );
    assert!(
        js.bytes().await.unwrap().len() < 100 * 1024,
        "under 100 KB of script"
    );
    let css = http
        .get(s.url("/console/assets/console.css"))
        .send()
        .await
        .unwrap();
    assert!(
        css.headers()[CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/css")
    );
    // `/` leads to the console, which asks to sign in.
    let root = http.get(s.url("/")).send().await.unwrap();
    assert_eq!(root.headers()[LOCATION], "/console");
    let console = http.get(s.url("/console")).send().await.unwrap();
    assert_eq!(console.headers()[LOCATION], "/console/sign-in");
}

#[tokio::test]
async fn sign_in_sets_a_strict_http_only_cookie_and_sign_out_ends_the_session() {
    let s = TestServer::start().await;
    let (_, key) = s.account("A").await;

    let resp = sign_in_response(&s, &key, &[]).await;
    let cookie = resp
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .find(|v| v.starts_with("wasmhook_session="))
        .unwrap();
    for flag in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(cookie.contains(flag), "{cookie}");
    }
    assert!(!cookie.contains("Secure"), "plain http: {cookie}");
    let behind_tls = sign_in_response(&s, &key, &[("x-forwarded-proto", "https")]).await;
    assert!(
        behind_tls.headers().get_all(SET_COOKIE).iter().any(|v| v
            .to_str()
            .unwrap()
            .starts_with("wasmhook_session=")
            && v.to_str().unwrap().contains("; Secure")),
        "behind a TLS proxy the cookie is Secure"
    );

    // A wrong key is refused and gets no session.
    let wrong = sign_in_response(&s, "whk_not-a-key", &[]).await;
    assert_eq!(wrong.status(), 401);
    assert!(wrong.text().await.unwrap().contains("not a valid API key"));

    let c = Console::sign_in(&s, &key).await;
    let (status, html) = c.get("/console/integrations").await;
    assert_eq!(status, 200);
    assert!(html.contains("Add webhook URL"));
    let (status, to) = c.post("/console/sign-out", &[]).await;
    assert_eq!((status, to.as_str()), (303, "/console/sign-in"));
    let (status, _) = c.get("/console/integrations").await;
    assert_eq!(status, 303, "the old cookie no longer opens the console");

    // Revoking the key a session was made with ends that session.
    let c = Console::sign_in(&s, &key).await;
    let (_, account) = s.get("/v1/subscriptions", &key).await;
    assert_eq!(account["data"], json!([]));
    let (_, keys) = s
        .get(
            &format!("/v1/accounts/{}/api-keys", account_id(&s, "A").await),
            ADMIN,
        )
        .await;
    let key_id = keys["data"][0]["id"].as_str().unwrap().to_string();
    let (status, _) = s
        .delete(
            &format!(
                "/v1/accounts/{}/api-keys/{key_id}",
                account_id(&s, "A").await
            ),
            ADMIN,
        )
        .await;
    assert_eq!(status, 204);
    let (status, _) = c.get("/console/integrations").await;
    assert_eq!(status, 303);
}

async fn account_id(s: &TestServer, name: &str) -> String {
    let (_, list) = s.get("/v1/accounts", ADMIN).await;
    list["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == name)
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string()
}

#[tokio::test]
async fn every_post_needs_the_sessions_csrf_token() {
    let s = TestServer::start().await;
    let (_, key) = s.account("A").await;
    let c = Console::sign_in(&s, &key).await;
    let form = [
        ("url", "http://127.0.0.1:9/hook"),
        ("event_type", "message:created"),
        ("format", "standard"),
    ];
    let (status, body) = c.post_raw("/console/integrations", &form).await;
    assert_eq!(status, 403, "no token");
    assert!(body.contains("CSRF"), "{body}");
    let mut wrong = vec![("csrf", "forged")];
    wrong.extend_from_slice(&form);
    let (status, _) = c.post_raw("/console/integrations", &wrong).await;
    assert_eq!(status, 403, "a wrong token");
    // Another session's token does not count either.
    let other = Console::sign_in(&s, &key).await;
    let mut foreign = vec![("csrf", other.csrf.as_str())];
    foreign.extend_from_slice(&form);
    let (status, _) = c.post_raw("/console/integrations", &foreign).await;
    assert_eq!(status, 403, "another session's token");
    let (_, subs) = s.get("/v1/subscriptions", &key).await;
    assert_eq!(subs["data"], json!([]), "nothing was created");

    let (status, to) = c.post("/console/integrations", &form).await;
    assert_eq!(
        (status, to.as_str()),
        (303, "/console/integrations?done=created")
    );
    let (_, subs) = s.get("/v1/subscriptions", &key).await;
    assert_eq!(subs["data"].as_array().unwrap().len(), 1);

    // Without a session a POST goes to the sign-in form; the sign-in form needs its own token.
    let anonymous = client()
        .post(s.url("/console/integrations"))
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 303);
    let forged_sign_in = client()
        .post(s.url("/console/sign-in"))
        .form(&[("key", key.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(forged_sign_in.status(), 403);
}

#[tokio::test]
async fn another_accounts_resources_are_not_found() {
    let s = TestServer::start().await;
    let receiver = Receiver::start().await;
    let (_, key_a) = s.account("A").await;
    let (_, key_b) = s.account("B").await;
    let sub = s
        .subscribe(
            &key_b,
            json!({"url": format!("{}/b", receiver.url), "event_types": ["*"]}),
        )
        .await;
    let sub_id = sub["id"].as_str().unwrap();
    let event = s
        .event(
            &key_b,
            json!({"type": "message:created", "id": "b-secret-event", "payload": {"text": "hi"}}),
        )
        .await;
    let delivery = eventually("B's delivery", Duration::from_secs(10), || async {
        let (_, list) = s.get("/v1/events/b-secret-event/deliveries", &key_b).await;
        list["data"][0]["id"].as_str().map(str::to_string)
    })
    .await;
    let plugin = s
        .plugin(
            &key_b,
            "b-plugin",
            wasmhook_plugin_artifacts::NOOP,
            serde_json::Value::Null,
        )
        .await;
    let plugin_id = plugin["id"].as_str().unwrap();
    assert_eq!(event["id"], "b-secret-event");

    let a = Console::sign_in(&s, &key_a).await;
    for path in [
        format!("/console/subscriptions/{sub_id}"),
        format!("/console/deliveries/{delivery}"),
        "/console/events/b-secret-event".to_string(),
        format!("/console/plugins/{plugin_id}"),
        format!("/console/subscriptions/{sub_id}/recover?since=2020-01-01T00:00"),
    ] {
        let (status, html) = a.get(&path).await;
        assert_eq!(status, 404, "{path}");
        assert!(!html.contains(sub_id) || path.contains(sub_id), "{path}");
    }
    for path in [
        format!("/console/subscriptions/{sub_id}/delete"),
        format!("/console/subscriptions/{sub_id}/secret"),
        format!("/console/subscriptions/{sub_id}/secret/rotate"),
        format!("/console/deliveries/{delivery}/retry"),
        format!("/console/plugins/{plugin_id}/delete"),
    ] {
        let (status, _) = a.post(&path, &[]).await;
        assert_eq!(status, 404, "{path}");
    }
    let (status, _) = s.get(&format!("/v1/subscriptions/{sub_id}"), &key_b).await;
    assert_eq!(status, 200, "B's subscription is untouched");
    // A's lists do not show B's things.
    for path in [
        "/console/integrations",
        "/console/events",
        "/console/plugins",
    ] {
        let (status, html) = a.get(path).await;
        assert_eq!(status, 200, "{path}");
        assert!(
            !html.contains(sub_id) && !html.contains("b-secret-event") && !html.contains(plugin_id),
            "{path}"
        );
    }
    // An account session does not open the admin's page.
    let (status, _) = a.get("/console/admin").await;
    assert_eq!(status, 404);
    let (status, html) = a.get("/console/no/such/page").await;
    assert_eq!(status, 404);
    assert!(html.contains("does not exist"), "an HTML page: {html}");
}

#[tokio::test]
async fn the_admin_creates_an_account_and_sees_its_key_once() {
    let s = TestServer::start().await;
    let admin = Console::sign_in(&s, ADMIN).await;
    let (status, html) = admin.get("/console/admin").await;
    assert_eq!(status, 200);
    assert!(html.contains("Create an account"));
    let (status, html) = admin
        .post(
            "/console/admin/accounts",
            &[("name", "Acme <b>support</b>")],
        )
        .await;
    assert_eq!(status, 200);
    let key = attr_after(&html, "data-test=\"new-api-key\">")
        .map(|k| k.split('<').next().unwrap().to_string())
        .unwrap_or_default();
    let key = if key.is_empty() {
        let at = html.find("whk_").expect("the new key is shown");
        html[at..].split('<').next().unwrap().to_string()
    } else {
        key
    };
    assert!(
        html.contains("Acme &lt;b&gt;support&lt;/b&gt;"),
        "names are text"
    );
    let (status, _) = s.get("/v1/subscriptions", &key).await;
    assert_eq!(status, 200, "the key shown works");
    let (_, again) = admin.get("/console/admin").await;
    assert!(!again.contains(&key), "the key is not shown again");
    // The admin does not see account pages.
    let (status, _) = admin.get("/console/integrations").await;
    assert_eq!(status, 303);
}

/// A receiver that passes the `webhook:verify` handshake by echoing the challenge, and answers
/// 200 to everything else.
fn echo_challenge(receiver: &Receiver) {
    receiver.respond(|r, _| {
        use axum::response::IntoResponse;
        let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap_or_default();
        if body["event"] == "webhook:verify" {
            body["payload"]
                .as_str()
                .unwrap_or_default()
                .to_string()
                .into_response()
        } else {
            "ok".into_response()
        }
    });
}

/// Issue 12, line 15: the seed's flow in a real browser, and its failing case.
#[tokio::test]
async fn browser_adds_a_webhook_that_is_verified_and_receives_an_event() {
    if !browser::available() {
        return;
    }
    let s = TestServer::start().await;
    let (_, key) = s.account("Acme").await;
    let good = Receiver::start().await;
    echo_challenge(&good);
    let bad = Receiver::start().await; // answers 200 "" : no challenge
    let reported = browser::run(
        "add-webhook",
        &[
            ("BASE", s.base.clone()),
            ("KEY", key.clone()),
            ("GOOD_URL", format!("{}/hooks/good", good.url)),
            ("BAD_URL", format!("{}/hooks/bad", bad.url)),
        ],
    )
    .await;

    // What the browser did, checked through the API.
    let (_, good_sub) = s
        .get(&format!("/v1/subscriptions/{}", reported.str("good")), &key)
        .await;
    assert_eq!(good_sub["status"], "active", "{good_sub}");
    assert_eq!(good_sub["event_types"], json!(["message:created"]));
    let delivered: Vec<_> = good
        .at("/hooks/good")
        .into_iter()
        .filter(|r| r.json()["data"]["text"] == "Hello from the API")
        .collect();
    assert_eq!(delivered.len(), 1, "the event reached the receiver once");
    let (_, bad_sub) = s
        .get(&format!("/v1/subscriptions/{}", reported.str("bad")), &key)
        .await;
    assert_eq!(bad_sub["status"], "pending_verification", "{bad_sub}");
    assert_eq!(
        bad_sub["status_reason"].as_str().unwrap(),
        reported.str("reason"),
        "the page showed the stored reason"
    );
    assert!(
        bad.received()
            .iter()
            .all(|r| r.json()["event"] == "webhook:verify" || r.json()["type"] == "webhook:test"),
        "nothing but handshakes and checks reached the receiver that does not echo"
    );
}

/// Issue 12, lines 9, 10 and 15: uploads (refused ones show the reason), attaching a transform,
/// Send test event, the redacted payload in the attempt log: the request the attempt sent, as
/// stored (the receiver answers a plain "ok", so the page can only show the body by keeping it).
#[tokio::test]
async fn browser_uploads_pii_redactor_attaches_it_and_sees_the_redacted_test_event() {
    if !browser::available() {
        return;
    }
    let s = TestServer::start().await;
    let (_, key) = s.account("Acme").await;
    let receiver = Receiver::start().await;
    receiver.respond(|_, _| {
        use axum::response::IntoResponse;
        "ok".into_response()
    });
    let webhook = s
        .subscribe(
            &key,
            json!({"url": format!("{}/redacted", receiver.url), "event_types": ["message:created"]}),
        )
        .await;
    let webhook_id = webhook["id"].as_str().unwrap().to_string();
    let live = if has_stream(&s).await { "1" } else { "0" };
    let reported = browser::run(
        "plugins",
        &[
            ("BASE", s.base.clone()),
            ("KEY", key.clone()),
            ("WEBHOOK_ID", webhook_id.clone()),
            (
                "PII_REDACTOR_WASM",
                wasmhook_plugin_artifacts::PII_REDACTOR.to_string(),
            ),
            ("LIVE", live.to_string()),
        ],
    )
    .await;
    let plugin_id = reported.str("plugin");
    let (_, plugins) = s.get("/v1/plugins", &key).await;
    let plugins = plugins["data"].as_array().unwrap();
    assert_eq!(
        plugins.len(),
        1,
        "the refused uploads stored nothing: {plugins:?}"
    );
    assert_eq!(plugins[0]["name"], "pii-redactor");
    assert_eq!(plugins[0]["id"], plugin_id);
    let (_, sub) = s
        .get(&format!("/v1/subscriptions/{webhook_id}"), &key)
        .await;
    assert_eq!(sub["transform_plugin_id"], plugin_id);
    // The test event first (then, with the live tail, one more event).
    let got = receiver.at("/redacted");
    let text = got[0].json()["data"]["text"].as_str().unwrap().to_string();
    assert!(
        text.contains("[email]") && !text.contains("jane.doe@"),
        "{text}"
    );
    // What the attempt log keeps is what the receiver got, byte for byte, signature included.
    let test_event = reported.str("test_event");
    let (_, deliveries) = s
        .get(&format!("/v1/events/{test_event}/deliveries"), &key)
        .await;
    let delivery_id = deliveries["data"][0]["id"].as_str().unwrap().to_string();
    let (_, detail) = s.get(&format!("/v1/deliveries/{delivery_id}"), &key).await;
    let sent = &detail["attempt_log"][0]["request"];
    assert_eq!(
        sent["url"],
        format!("{}/redacted", receiver.url),
        "{detail}"
    );
    assert_eq!(sent["body"].as_str().unwrap().as_bytes(), &got[0].body[..]);
    assert_eq!(sent["body_truncated"], false);
    assert_eq!(sent["body_bytes"], got[0].body.len());
    for header in [
        "webhook-id",
        "webhook-timestamp",
        "webhook-signature",
        "content-type",
    ] {
        assert_eq!(
            sent["headers"][header].as_str(),
            got[0].header(header),
            "{header}: {detail}"
        );
    }
    assert_eq!(detail["attempt_log"][0]["response_body"], "ok");
    let (_, events) = s.get("/v1/events", &key).await;
    assert_eq!(
        events["data"].as_array().unwrap().len(),
        1 + usize::from(live == "1"),
        "only the test event (and the live tail's) were stored: the test run stored nothing"
    );
    let (_, plugin) = s.get(&format!("/v1/plugins/{plugin_id}"), &key).await;
    assert_eq!(plugin["config"], json!({"kinds": "email"}));
    assert_eq!(plugin["allowed_hosts"], json!(["api.example.com"]));
    assert_eq!(plugin["limits"], json!({"deadline_ms": 2000}));
    assert_eq!(plugin["log_level"], "debug");
    let (_, subs) = s.get("/v1/subscriptions", &key).await;
    assert!(
        subs["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|sub| sub["plugin_id"] == plugin_id),
        "attached as a subscriber: {subs}"
    );
}

const XSS_SCRIPT: &str = "<script>window.__pwned=true;alert(1)</script>";
const XSS_IMG: &str = "\"><img src=x onerror=\"window.__pwned=true;alert(2)\">";
const XSS_LINK: &str = "javascript:alert(3)";

async fn has_stream(s: &TestServer) -> bool {
    let (_, doc) = s
        .call(reqwest::Method::GET, "/openapi.json", None, None)
        .await;
    doc["paths"].get("/v1/stream").is_some()
}

/// Issue 12, line 3: hostile text in every place the console shows outside data.
#[tokio::test]
async fn browser_shows_hostile_text_as_text_on_every_screen() {
    if !browser::available() {
        return;
    }
    let s = TestServer::start().await;
    let (_, key) = s.account("Acme").await;
    let receiver = Receiver::start().await;
    receiver.respond(|_, _| {
        use axum::response::IntoResponse;
        "<img src=x onerror=alert(4)><script>window.__pwned=true;alert(5)</script>".into_response()
    });
    let url = format!("{}/x?q={XSS_SCRIPT}&r={XSS_IMG}&s={XSS_LINK}", receiver.url);
    let sub = s
        .subscribe(
            &key,
            json!({"url": url, "event_types": ["message:created"],
                   "headers": {"X-Evil": format!("{XSS_SCRIPT}{XSS_IMG}")}}),
        )
        .await;
    let hostile_url =
        "<script>window.__pwned=true;alert(6)</script>\"><img src=x onerror=alert(7)>";
    let plugin = s
        .plugin(
            &key,
            "<script>alert(8)</script>",
            wasmhook_plugin_artifacts::HOSTILE,
            json!({"config": {"mode": "http", "url": hostile_url}}),
        )
        .await;
    let plugin_id = plugin["id"].as_str().unwrap().to_string();
    let plugin_sub = s
        .subscribe(
            &key,
            json!({"plugin_id": plugin_id, "event_types": ["message:created"]}),
        )
        .await;
    s.event(
        &key,
        json!({"type": "message:created", "id": "javascript:alert",
               "payload": {"text": XSS_SCRIPT, "html": XSS_IMG, "link": XSS_LINK,
                           "conversation_id": XSS_IMG}}),
    )
    .await;
    let (delivery, plugin_delivery) = eventually(
        "both deliveries settled",
        Duration::from_secs(20),
        || async {
            let (_, list) = s.get("/v1/events/javascript:alert/deliveries", &key).await;
            let list = list["data"].as_array()?.clone();
            let of = |sub: &serde_json::Value| {
                list.iter()
                    .find(|d| d["subscription_id"] == sub["id"] && d["attempts"].as_u64() > Some(0))
                    .map(|d| d["id"].as_str().unwrap().to_string())
            };
            Some((of(&sub)?, of(&plugin_sub)?))
        },
    )
    .await;
    s.logs_with(&key, &plugin_id, |l| {
        l["message"]
            .as_str()
            .is_some_and(|m| m.contains("alert(7)"))
    })
    .await;
    let live = if has_stream(&s).await { "1" } else { "0" };
    browser::run(
        "xss",
        &[
            ("BASE", s.base.clone()),
            ("KEY", key.clone()),
            ("SUB_ID", sub["id"].as_str().unwrap().to_string()),
            ("DELIVERY_ID", delivery),
            ("PLUGIN_DELIVERY_ID", plugin_delivery),
            ("EVENT_ID", "javascript:alert".to_string()),
            ("PLUGIN_ID", plugin_id),
            ("LIVE", live.to_string()),
        ],
    )
    .await;
}

/// Issue 12, line 2, in a browser: the CSRF token is required, another account's page is a 404.
#[tokio::test]
async fn browser_cannot_post_without_the_token_or_open_another_accounts_subscription() {
    if !browser::available() {
        return;
    }
    let s = TestServer::start().await;
    let (_, key) = s.account("A").await;
    let (_, other_key) = s.account("B").await;
    let mine = s
        .subscribe(
            &key,
            json!({"url": "http://127.0.0.1:9/mine", "event_types": ["*"]}),
        )
        .await;
    let theirs = s
        .subscribe(
            &other_key,
            json!({"url": "http://127.0.0.1:9/theirs", "event_types": ["*"]}),
        )
        .await;
    browser::run(
        "csrf",
        &[
            ("BASE", s.base.clone()),
            ("KEY", key.clone()),
            ("SUB_ID", mine["id"].as_str().unwrap().to_string()),
            ("OTHER_SUB_ID", theirs["id"].as_str().unwrap().to_string()),
        ],
    )
    .await;
    let (status, _) = s
        .get(
            &format!("/v1/subscriptions/{}", mine["id"].as_str().unwrap()),
            &key,
        )
        .await;
    assert_eq!(status, 200, "the forged deletes did nothing");
}

/// Issue 12, line 12: keys created (shown once), listed and revoked; the Airy webhook shown as
/// the subscription it is.
#[tokio::test]
async fn api_keys_are_created_once_listed_and_revoked_and_the_airy_webhook_is_a_subscription() {
    let s = TestServer::start().await;
    let (_, key) = s.account("A").await;
    let c = Console::sign_in(&s, &key).await;
    let (status, html) = c.post("/console/api-keys", &[]).await;
    assert_eq!(status, 200);
    let marker = "data-test=\"new-api-key\">";
    let at = html.find(marker).expect("the new key is shown") + marker.len();
    let new_key = html[at..].split('<').next().unwrap().to_string();
    assert!(new_key.starts_with("whk_"), "{new_key}");
    let (status, _) = s.get("/v1/subscriptions", &new_key).await;
    assert_eq!(status, 200);
    let (_, html) = c.get("/console/api-keys").await;
    assert!(!html.contains(&new_key), "shown once");
    assert_eq!(html.matches("data-test=\"key-row\"").count(), 2);
    let key_id = html
        .match_indices("data-test=\"key-row\" data-id=\"")
        .map(|(i, m)| html[i + m.len()..].split('"').next().unwrap().to_string())
        .find(|id| html.contains(&format!("/console/api-keys/{id}/revoke")))
        .unwrap();
    // Revoke the other key (the one this session was not made with).
    let (_, keys) = s.get("/v1/subscriptions", &new_key).await;
    assert!(keys["data"].is_array());
    let (status, _) = c
        .post(&format!("/console/api-keys/{key_id}/revoke"), &[])
        .await;
    assert_eq!(status, 303);
    let (a, _) = s.get("/v1/subscriptions", &new_key).await;
    let (b, _) = s.get("/v1/subscriptions", &key).await;
    assert!(a == 401 || b == 401, "one key stopped working ({a}, {b})");

    let c = Console::sign_in(&s, if a == 401 { &key } else { &new_key }).await;
    let live_key = if a == 401 { &key } else { &new_key };
    let (_, html) = c.get("/console/api-keys").await;
    assert!(html.contains("data-test=\"airy-none\""));
    let (status, _) = s
        .post(
            "/webhooks.subscribe",
            live_key,
            json!({"url": "http://127.0.0.1:9/airy"}),
        )
        .await;
    assert_eq!(status, 200);
    let (_, html) = c.get("/console/api-keys").await;
    assert!(html.contains("data-test=\"airy-webhook\""), "{html}");
    assert!(html.contains("<code>airy</code>"));
}

/// Takes the README's screenshots into `docs/` (run by hand:
/// `cargo test -p wasmhook-tests --test e2e console::docs_screenshots -- --ignored`).
#[tokio::test]
#[ignore]
async fn docs_screenshots() {
    assert!(browser::available(), "the screenshots need the browser");
    let s = TestServer::start().await;
    let (_, key) = s.account("Acme support").await;
    let good = Receiver::start().await;
    echo_challenge(&good);
    let bad = Receiver::start().await;
    bad.status(404);
    let pii = s
        .plugin(
            &key,
            "pii-redactor",
            wasmhook_plugin_artifacts::PII_REDACTOR,
            serde_json::Value::Null,
        )
        .await;
    let pii_id = pii["id"].as_str().unwrap().to_string();
    s.subscribe(
        &key,
        json!({"url": format!("{}/webhooks/support", good.url),
        "event_types": ["message:created", "conversation:created"], "verify": true,
        "transform_plugin_id": pii_id}),
    )
    .await;
    s.subscribe(
        &key,
        json!({"url": format!("{}/papercups/webhook", good.url), "format": "papercups",
        "event_types": ["*"]}),
    )
    .await;
    s.subscribe(
        &key,
        json!({"url": format!("{}/old-endpoint", bad.url), "verify": true,
        "event_types": ["conversation:updated"]}),
    )
    .await;
    s.subscribe(
        &key,
        json!({"url": format!("{}/crm", good.url), "event_types": ["conversation:updated"]}),
    )
    .await;
    for i in 0..3 {
        s.event(
            &key,
            json!({"type": "message:created", "payload": {"conversation_id": "c-1",
            "text": format!("Hello {i}, mail me at a@b.example")}}),
        )
        .await;
        s.event(&key, json!({"type": "conversation:updated", "payload": {"conversation_id": "c-1", "status": "open"}}))
            .await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs");
    std::fs::create_dir_all(&out).unwrap();
    browser::run(
        "screenshots",
        &[
            ("BASE", s.base.clone()),
            ("KEY", key.clone()),
            ("OUT_DIR", out.display().to_string()),
            ("PLUGIN_ID", pii_id),
            ("VIEWPORT_WIDTH", "1280".to_string()),
            ("VIEWPORT_HEIGHT", "660".to_string()),
            ("NARROW", std::env::var("NARROW").unwrap_or_default()),
        ],
    )
    .await;
}

/// Issue 12, line 6: Retry, Recover (count first), the secret (reveal, copy, rotate), disable,
/// enable and delete, in a browser, checked through the API.
#[tokio::test]
async fn browser_retries_recovers_and_manages_a_subscriptions_secret() {
    if !browser::available() {
        return;
    }
    let s = TestServer::start().await;
    let (_, key) = s.account("Acme").await;
    let receiver = Receiver::start().await;
    receiver.status(500);
    let sub = s
        .subscribe(
            &key,
            json!({"url": format!("{}/flaky", receiver.url), "event_types": ["*"]}),
        )
        .await;
    let sub_id = sub["id"].as_str().unwrap().to_string();
    let other = s
        .subscribe(&key, json!({"url": format!("{}/other", receiver.url), "event_types": ["conversation:updated"]}))
        .await;
    for i in 0..3 {
        s.event(
            &key,
            json!({"type": "message:created", "id": format!("m-{i}"), "payload": {"text": "hi"}}),
        )
        .await;
    }
    eventually("three dead letters", Duration::from_secs(20), || async {
        let (_, list) = s
            .get(
                &format!("/v1/subscriptions/{sub_id}/deliveries?status=failed"),
                &key,
            )
            .await;
        (list["data"].as_array()?.len() == 3).then_some(())
    })
    .await;
    receiver.status(200);
    let reported = browser::run(
        "subscription",
        &[
            ("BASE", s.base.clone()),
            ("KEY", key.clone()),
            ("SUB_ID", sub_id.clone()),
            ("DELETE_ID", other["id"].as_str().unwrap().to_string()),
        ],
    )
    .await;
    assert_eq!(
        reported.str("secret"),
        sub["secret"].as_str().unwrap(),
        "the secret shown is the secret"
    );
    let (_, secret) = s
        .get(&format!("/v1/subscriptions/{sub_id}/secret"), &key)
        .await;
    assert_eq!(secret["secret"].as_str().unwrap(), reported.str("rotated"));
    assert_ne!(reported.str("rotated"), reported.str("secret"));
    assert!(secret["previous_secret_expires_at"].is_string(), "{secret}");
    eventually(
        "every delivery succeeded after Retry and Recover",
        Duration::from_secs(20),
        || async {
            let (_, list) = s
                .get(
                    &format!("/v1/subscriptions/{sub_id}/deliveries?status=succeeded"),
                    &key,
                )
                .await;
            (list["data"].as_array()?.len() == 3).then_some(())
        },
    )
    .await;
    let (_, d) = s
        .get(&format!("/v1/deliveries/{}", reported.str("retried")), &key)
        .await;
    assert_eq!(d["status"], "succeeded");
    let (_, after) = s.get(&format!("/v1/subscriptions/{sub_id}"), &key).await;
    assert_eq!(after["status"], "active");
    let (status, _) = s
        .get(
            &format!("/v1/subscriptions/{}", other["id"].as_str().unwrap()),
            &key,
        )
        .await;
    assert_eq!(status, 404, "deleted");
}

/// Issue 12, lines 7 and 8: filters, the event page (payload, causation, deliveries), Live.
#[tokio::test]
async fn browser_filters_events_follows_causation_and_sees_new_ones_live() {
    if !browser::available() {
        return;
    }
    let s = TestServer::start().await;
    let (_, key) = s.account("Acme").await;
    let receiver = Receiver::start().await;
    let sub = s
        .subscribe(
            &key,
            json!({"url": format!("{}/all", receiver.url), "event_types": ["*"]}),
        )
        .await;
    let plugin = s
        .plugin(
            &key,
            "auto-reply",
            wasmhook_plugin_artifacts::AUTO_REPLY,
            serde_json::Value::Null,
        )
        .await;
    let plugin_id = plugin["id"].as_str().unwrap().to_string();
    s.subscribe(
        &key,
        json!({"plugin_id": plugin_id, "event_types": ["message:created"]}),
    )
    .await;
    s.event(&key, json!({"type": "message:created", "id": "customer-message-1", "payload": {
        "conversation_id": "conv-a", "text": "Hello?", "sender": {"id": "u1", "type": "source_contact"}}}))
        .await;
    for (t, conv) in [
        ("conversation:created", "conv-b"),
        ("conversation:updated", "conv-b"),
        ("conversation:updated", "conv-c"),
    ] {
        s.event(
            &key,
            json!({"type": t, "payload": {"conversation_id": conv}}),
        )
        .await;
    }
    let reply = eventually("the plugin's reply", Duration::from_secs(20), || async {
        let (_, list) = s.get("/v1/events?type=message:created", &key).await;
        list["data"]
            .as_array()?
            .iter()
            .find(|e| e["causation"].is_object())
            .cloned()
    })
    .await;
    let live = if has_stream(&s).await { "1" } else { "0" };
    let reported = browser::run(
        "events",
        &[
            ("BASE", s.base.clone()),
            ("KEY", key.clone()),
            ("PLUGIN_ID", plugin_id.clone()),
            ("SUB_ID", sub["id"].as_str().unwrap().to_string()),
            ("LIVE", live.to_string()),
        ],
    )
    .await;
    assert_eq!(reported.str("reply"), reply["id"].as_str().unwrap());
    assert_eq!(reply["causation"]["event_id"], "customer-message-1");
    assert_eq!(reply["causation"]["plugin_id"], plugin_id);
    if live == "1" {
        let ms = reported.0["live_ms"].as_u64().unwrap();
        assert!(
            ms < 1000,
            "a new event appeared {ms} ms after it was posted"
        );
        let (status, _) = s.get("/v1/events/live-1", &key).await;
        assert_eq!(status, 200);
    }
}

/// Issue 12, line 13: the overview shows the queue, the last hour by outcome, failing
/// subscriptions with the time left before they are disabled, and plugins with failures, each
/// linking to the filtered list.
#[tokio::test]
async fn the_overview_shows_failures_with_links_to_the_filtered_lists() {
    let s = TestServer::start().await;
    let (_, key) = s.account("A").await;
    let receiver = Receiver::start().await;
    receiver.status(500);
    let sub = s
        .subscribe(
            &key,
            json!({"url": format!("{}/down", receiver.url), "event_types": ["*"]}),
        )
        .await;
    let sub_id = sub["id"].as_str().unwrap().to_string();
    let plugin = s
        .plugin(
            &key,
            "trapper",
            wasmhook_plugin_artifacts::HOSTILE,
            json!({"config": {"mode": "trap"}}),
        )
        .await;
    let plugin_id = plugin["id"].as_str().unwrap().to_string();
    s.subscribe(
        &key,
        json!({"plugin_id": plugin_id, "event_types": ["message:created"]}),
    )
    .await;
    s.event(
        &key,
        json!({"type": "message:created", "payload": {"text": "hi"}}),
    )
    .await;
    eventually(
        "the webhook's delivery failed",
        Duration::from_secs(20),
        || async {
            let (_, list) = s
                .get(
                    &format!("/v1/subscriptions/{sub_id}/deliveries?status=failed"),
                    &key,
                )
                .await;
            (!list["data"].as_array()?.is_empty()).then_some(())
        },
    )
    .await;
    s.logs_with(&key, &plugin_id, |l| l["level"] == "error")
        .await;
    let c = Console::sign_in(&s, &key).await;
    let (status, html) = c.get("/console").await;
    assert_eq!(status, 200);
    assert!(html.contains("data-test=\"queue-depth\""), "{html}");
    assert!(html.contains("data-test=\"last-hour-failed\""), "{html}");
    assert!(
        html.contains(&format!("/console/subscriptions/{sub_id}?status=failed")),
        "the failing subscription links to its failed deliveries"
    );
    let left = html.split("data-test=\"time-left\">").nth(1).unwrap();
    assert!(
        left.starts_with("4 d 23 h") || left.starts_with("5 d 0 h"),
        "{left}"
    );
    assert!(
        html.contains(&format!("/console/plugins/{plugin_id}#logs")),
        "{html}"
    );
    assert!(html.contains("trapper"));
    // The hour's failures lead to the account's failed deliveries of the hour.
    assert!(
        html.contains("/console/deliveries?window=1h&amp;status=failed"),
        "{html}"
    );
    let (status, list) = c.get("/console/deliveries?window=1h&status=failed").await;
    assert_eq!(status, 200);
    assert!(list.contains("data-test=\"delivery-row\""), "{list}");
    assert!(!list.contains("badge good\">succeeded"), "only failed ones");
}
