//! Plugin state that must not race: the key-value store's atomic `increment` and `set-if`
//! through real plugins, the first-contact greeter greeting once per conversation while events
//! of one conversation are handled at the same time, and components built against the WIT
//! from before those functions still linking.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::common::{Receiver, TestServer, eventually};
use serde_json::{Value, json};
use wasmhook_plugin_artifacts as wasm;

const WAIT: Duration = Duration::from_secs(30);

/// Posts every body to `/v1/events` at once (each request on its own task, none waiting for
/// another); returns the accepted events in the order of `bodies`.
async fn post_concurrently(s: &TestServer, key: &str, bodies: Vec<Value>) -> Vec<Value> {
    let mut tasks = tokio::task::JoinSet::new();
    for (i, body) in bodies.into_iter().enumerate() {
        let request = s
            .http
            .post(s.url("/v1/events"))
            .bearer_auth(key)
            .json(&body);
        tasks.spawn(async move {
            let resp = request.send().await.expect("request reaches the server");
            let status = resp.status().as_u16();
            let event: Value = resp.json().await.unwrap();
            assert_eq!(status, 202, "{event}");
            (i, event)
        });
    }
    let mut events = tasks.join_all().await;
    events.sort_by_key(|(i, _)| *i);
    events.into_iter().map(|(_, e)| e).collect()
}

/// Waits until every delivery of every event is settled; panics unless all succeeded.
async fn all_deliveries_succeed(s: &TestServer, key: &str, events: &[Value]) {
    let settled = eventually("every delivery is settled", WAIT, || async {
        let mut all = Vec::new();
        for e in events {
            let path = format!("/v1/events/{}/deliveries", e["id"].as_str().unwrap());
            let (_, list) = s.get(&path, key).await;
            let list = list["data"].as_array().cloned().unwrap_or_default();
            let terminal = ["succeeded", "failed", "filtered"];
            let done = |d: &Value| d["status"].as_str().is_some_and(|s| terminal.contains(&s));
            if list.is_empty() || !list.iter().all(done) {
                return None;
            }
            all.extend(list);
        }
        Some(all)
    })
    .await;
    for d in &settled {
        assert_eq!(d["status"], "succeeded", "{d}");
    }
}

/// A customer's message in `conversation`.
fn customer_message(conversation: &str, n: usize) -> Value {
    json!({"type": "message:created", "payload": {
        "conversation_id": conversation, "id": format!("m-{conversation}-{n}"),
        "text": format!("message {n}"), "source": "facebook",
        "sender": {"id": format!("contact-{conversation}"), "type": "source_contact"}}})
}

#[tokio::test]
async fn the_greeter_greets_once_per_conversation_even_with_ordering_off() {
    let s = TestServer::start().await;
    let (_, key) = s.account("A").await;
    let greeter = s
        .plugin(
            &key,
            "greeter",
            wasm::FIRST_CONTACT_GREETER,
            json!({"config": {"greeting": "Welcome!"}}),
        )
        .await;
    // Ordering off: events of one conversation reach concurrent instances; only the greeter's
    // compare-and-swap claim keeps it to one greeting.
    s.subscribe(
        &key,
        json!({"plugin_id": greeter["id"], "event_types": ["message:created"], "ordering": "none"}),
    )
    .await;

    // 10 new conversations, 3 messages each, all posted at once; a conversation's messages
    // next to each other, so that they are claimed in the same round and run side by side.
    let conversations: Vec<String> = (0..10).map(|i| format!("conv-race-{i}")).collect();
    let bodies = conversations
        .iter()
        .flat_map(|c| (0..3).map(move |n| customer_message(c, n)))
        .collect();
    let events = post_concurrently(&s, &key, bodies).await;
    all_deliveries_succeed(&s, &key, &events).await;

    // Greetings are stored before the invocation that sent them returns.
    let (status, list) = s
        .get("/v1/events?type=message:created&limit=250", &key)
        .await;
    assert_eq!(status, 200, "{list}");
    let mut greetings: BTreeMap<String, usize> = BTreeMap::new();
    for e in list["data"].as_array().unwrap() {
        if e["payload"]["text"] == "Welcome!" {
            assert_eq!(e["causation"]["plugin_id"], greeter["id"], "{e}");
            let conversation = e["payload"]["conversation_id"].as_str().unwrap();
            *greetings.entry(conversation.to_string()).or_default() += 1;
        }
    }
    let expected: BTreeMap<String, usize> = conversations.iter().map(|c| (c.clone(), 1)).collect();
    assert_eq!(greetings, expected, "exactly one greeting per conversation");
}

/// Runs the hostile plugin's `kv-atomics` script once, as a transform, on a fresh plugin with
/// `limits` (its receiver path named `run`); returns each call's outcome.
async fn kv_atomics_with(
    s: &TestServer,
    key: &str,
    r: &Receiver,
    run: &str,
    limits: Value,
) -> Vec<Value> {
    let path = format!("/{run}");
    let p = s
        .plugin(
            key,
            "atomics",
            wasm::HOSTILE,
            json!({"config": {"mode": "kv-atomics"}, "limits": limits}),
        )
        .await;
    let sub = s
        .subscribe(
            key,
            json!({"url": format!("{}{path}", r.url), "transform_plugin_id": p["id"]}),
        )
        .await;
    s.event(key, json!({"type": "run", "payload": {}})).await;
    let got = eventually("the script's results", WAIT, || async { r.at(&path).pop() }).await;
    s.delete(
        &format!("/v1/subscriptions/{}", sub["id"].as_str().unwrap()),
        key,
    )
    .await;
    let results = got.json()["data"]["results"].clone();
    let labels: Vec<&str> = results
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r[0].as_str().unwrap())
        .collect();
    assert_eq!(labels.len(), 12, "{results}");
    results
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r[1].clone())
        .collect()
}

#[tokio::test]
async fn increment_and_set_if_through_a_plugin_with_the_kv_limits() {
    let s = TestServer::start().await;
    let r = Receiver::start().await;
    let (_, key) = s.account("A").await;
    let ok = |v: Value| json!({ "ok": v });
    let err = |m: &str| json!({ "error": m });
    let overflow = err("kv: the increment overflows a 64-bit integer");
    let not_a_number = err("kv: the value to increment is not an integer");

    // Default limits: counters in decimal text, no wrap-around, claims and compare-and-swap.
    let results = kv_atomics_with(&s, &key, &r, "defaults", json!({})).await;
    #[rustfmt::skip]
    assert_eq!(results, [
        ok(json!(5)), ok(json!(3)), ok(json!("3")),          // increment n 5, -2; get n
        ok(json!(i64::MAX)), overflow.clone(),                // increment max: MAX, then +1
        ok(Value::Null), not_a_number,                        // set text abc; increment text
        ok(json!(true)), ok(json!(false)),                    // set-if claim none a, none b
        ok(json!(false)), ok(json!(true)), ok(json!("b")),    // set-if claim x b, a b; get claim
    ]);

    // Two keys at most: new keys made by `increment` and `set-if` count like those of `set`.
    let too_many = err("kv: already storing the maximum of 2 keys");
    let results = kv_atomics_with(&s, &key, &r, "two-keys", json!({"kv_keys": 2})).await;
    #[rustfmt::skip]
    assert_eq!(results, [
        ok(json!(5)), ok(json!(3)), ok(json!("3")),
        ok(json!(i64::MAX)), overflow,
        too_many.clone(), too_many.clone(),
        too_many.clone(), too_many,
        ok(json!(false)), ok(json!(false)), ok(Value::Null),
    ]);

    // One-byte values: a counter's text counts against the value limit.
    let too_large = err("kv: value larger than 1 bytes");
    let results = kv_atomics_with(&s, &key, &r, "one-byte", json!({"kv_value_bytes": 1})).await;
    #[rustfmt::skip]
    assert_eq!(results, [
        ok(json!(5)), ok(json!(3)), ok(json!("3")),
        too_large.clone(), ok(json!(1)),                      // "9223372036854775807" is 19 bytes
        too_large, ok(json!(1)),                              // nothing stored under text
        ok(json!(true)), ok(json!(false)),
        ok(json!(false)), ok(json!(true)), ok(json!("b")),
    ]);
}

#[tokio::test]
async fn concurrent_increments_are_never_lost() {
    let s = TestServer::start().await;
    let r = Receiver::start().await;
    let (_, key) = s.account("A").await;
    let counter = s
        .plugin(
            &key,
            "counter",
            wasm::HOSTILE,
            json!({"config": {"mode": "kv-count"}}),
        )
        .await;
    s.subscribe(
        &key,
        json!({"url": r.url.clone(), "transform_plugin_id": counter["id"]}),
    )
    .await;
    let bodies = (0..20)
        .map(|i| json!({"type": "tick", "payload": {"i": i}}))
        .collect();
    let events = post_concurrently(&s, &key, bodies).await;
    all_deliveries_succeed(&s, &key, &events).await;
    let mut counts: Vec<i64> = r
        .received()
        .iter()
        .map(|x| x.json()["data"]["count"].as_i64().unwrap())
        .collect();
    counts.sort();
    assert_eq!(
        counts,
        (1..=20).collect::<Vec<_>>(),
        "each increment saw its own value"
    );
}

/// `tests/fixture-plugins/old-wit` is built against a frozen copy of the WIT from before
/// `increment` and `set-if`: it uploads and runs, calling every host function it knows.
#[tokio::test]
async fn components_built_against_the_previous_wit_still_link() {
    let s = TestServer::start().await;
    let r = Receiver::start().await;
    let (_, key) = s.account("A").await;
    let old = s
        .plugin(
            &key,
            "old",
            wasm::OLD_WIT,
            json!({"config": {"value": "v"}}),
        )
        .await;
    s.subscribe(
        &key,
        json!({"url": r.url.clone(), "transform_plugin_id": old["id"]}),
    )
    .await;
    let e = s.event(&key, json!({"type": "a", "payload": {}})).await;
    let got = eventually("the old component's payload", WAIT, || async {
        r.received().pop()
    })
    .await;
    assert_eq!(
        got.json()["data"],
        json!({
            "stored": e["id"],
            "invalid_key": "invalid-key",
            "after_delete": null,
            "config": "v",
            "send": "unknown-conversation",
            "event_id": e["id"],
        })
    );
    let id = old["id"].as_str().unwrap();
    s.logs_with(&key, id, |l| {
        l["message"]
            .as_str()
            .unwrap_or("")
            .starts_with("old-wit: handling")
    })
    .await;
}
