//! Scheduling: one tenant's trouble stays that tenant's (per-subscription `max_in_flight`,
//! rotation, circuit breaker), one attempt at a time per delivery (leases held while an attempt
//! runs), and conversation order for subscriptions that ask for it.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::common::{Receiver, TestServer, eventually};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde_json::{Value, json};
use wasmhook_plugin_artifacts as wasm;

const WAIT: Duration = Duration::from_secs(60);

fn id(v: &Value) -> String {
    v["id"].as_str().expect("an id").to_string()
}

/// The one delivery of `event_id` (with its attempt log) once it is `status`.
async fn settled(s: &TestServer, key: &str, event_id: &str, status: &str) -> Value {
    eventually(&format!("{event_id} is {status}"), WAIT, || async {
        let (_, list) = s
            .get(&format!("/v1/events/{event_id}/deliveries"), key)
            .await;
        let delivery = list["data"][0]["id"].as_str()?.to_string();
        let (_, d) = s.get(&format!("/v1/deliveries/{delivery}"), key).await;
        (d["status"] == status).then_some(d)
    })
    .await
}

fn ms(rfc3339: &Value) -> i64 {
    let t = time::OffsetDateTime::parse(
        rfc3339.as_str().expect("a time"),
        &time::format_description::well_known::Rfc3339,
    )
    .expect("RFC 3339");
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}

/// Ingest-to-first-attempt time of a delivered event, from the server's own records.
async fn delivered_within(s: &TestServer, key: &str, event: &Value) -> i64 {
    let d = settled(s, key, event["id"].as_str().unwrap(), "succeeded").await;
    ms(&d["attempt_log"][0]["attempted_at"]) - ms(&event["received_at"])
}

/// Pending deliveries of a subscription (up to 250).
async fn pending(s: &TestServer, key: &str, sub: &str) -> usize {
    let (status, list) = s
        .get(
            &format!("/v1/subscriptions/{sub}/deliveries?status=pending&limit=250"),
            key,
        )
        .await;
    assert_eq!(status, 200, "{list}");
    list["data"].as_array().expect("a page").len()
}

/// Account A has a backlog on a subscription that holds each attempt for `hold`; account B's
/// one event to a healthy endpoint must not wait behind it.
async fn healthy_tenant_is_not_stalled(s: &TestServer, a_key: &str, a_sub: &str, backlog: usize) {
    let events: Vec<Value> = (0..backlog)
        .map(|i| json!({"type": "noisy", "payload": {"i": i}}))
        .collect();
    let (status, _) = s
        .post("/v1/events/batch", a_key, json!({"events": events}))
        .await;
    assert_eq!(status, 202);
    // A's attempts have started and hold their slots: a claimed delivery's next attempt is
    // at the end of its lease, seconds away.
    eventually("A's attempts are in flight", WAIT, || async {
        let (_, list) = s
            .get(
                &format!("/v1/subscriptions/{a_sub}/deliveries?status=pending&limit=250"),
                a_key,
            )
            .await;
        list["data"]
            .as_array()?
            .iter()
            .any(|d| {
                !d["next_attempt_at"].is_null()
                    && ms(&d["next_attempt_at"]) - ms(&d["created_at"]) > 2000
            })
            .then_some(())
    })
    .await;

    let healthy = Receiver::start().await;
    let (_, b_key) = s.account("B").await;
    s.subscribe(&b_key, json!({"url": healthy.url, "event_types": ["calm"]}))
        .await;
    let b_event = s
        .event(&b_key, json!({"type": "calm", "payload": {"hello": "B"}}))
        .await;
    let waited = delivered_within(s, &b_key, &b_event).await;
    assert!(
        waited < 1000,
        "B's event waited {waited} ms for a delivery slot behind A's backlog"
    );
    assert!(
        pending(s, a_key, a_sub).await > 0,
        "A's backlog is still draining at its own pace"
    );
}

const FAIR: &[&str] = &[
    "--delivery-concurrency",
    "4",
    "--subscription-max-in-flight",
    "2",
];

#[tokio::test]
async fn a_slow_endpoint_holds_only_its_own_slots() {
    let s = TestServer::start_with(FAIR).await;
    let slow = Receiver::start().await;
    slow.set_delay(Duration::from_millis(1500));
    let (_, a_key) = s.account("A").await;
    let a_sub = id(&s
        .subscribe(&a_key, json!({"url": slow.url, "event_types": ["noisy"]}))
        .await);
    healthy_tenant_is_not_stalled(&s, &a_key, &a_sub, 12).await;
    // A drains, never more than its own two at once.
    eventually("A's backlog is delivered", WAIT, || async {
        (slow.received().len() >= 12).then_some(())
    })
    .await;
    assert!(
        slow.max_in_flight() <= 2,
        "A had {} attempts at once",
        slow.max_in_flight()
    );
}

#[tokio::test]
async fn a_fast_endpoint_claimed_ahead_still_gets_at_most_its_cap_at_once() {
    // A fast, healthy endpoint may have several times its cap claimed (so that a freed slot
    // finds its next delivery waiting); attempts at once stay within `max_in_flight`.
    let s = TestServer::start().await;
    let fast = Receiver::start().await;
    fast.set_delay(Duration::from_millis(5));
    let (_, key) = s.account("A").await;
    let sub = id(&s
        .subscribe(&key, json!({"url": fast.url, "max_in_flight": 3}))
        .await);
    for batch in 0..4 {
        let events: Vec<Value> = (0..100)
            .map(|i| json!({"type": "a", "payload": {"batch": batch, "i": i}}))
            .collect();
        let (status, _) = s
            .post("/v1/events/batch", &key, json!({"events": events}))
            .await;
        assert_eq!(status, 202);
    }
    eventually("all 400 delivered", WAIT, || async {
        (pending(&s, &key, &sub).await == 0 && fast.received().len() >= 400).then_some(())
    })
    .await;
    assert_eq!(fast.received().len(), 400, "each delivered once");
    assert!(
        fast.max_in_flight() <= 3,
        "{} attempts at once",
        fast.max_in_flight()
    );
    assert!(fast.max_in_flight() >= 2, "the cap is what bounds it");
}

#[tokio::test]
async fn an_endpoint_that_times_out_holds_only_its_own_slots() {
    let s = TestServer::start_with(&[FAIR, &["--delivery-timeout", "1s"]].concat()).await;
    let dead = Receiver::start().await;
    dead.set_delay(Duration::from_secs(30));
    let (_, a_key) = s.account("A").await;
    let a_sub = id(&s
        .subscribe(&a_key, json!({"url": dead.url, "event_types": ["noisy"]}))
        .await);
    healthy_tenant_is_not_stalled(&s, &a_key, &a_sub, 12).await;
    assert!(dead.max_in_flight() <= 2, "A had {}", dead.max_in_flight());
}

#[tokio::test]
async fn a_transform_using_its_whole_deadline_holds_only_its_own_slots() {
    let s = TestServer::start_with(FAIR).await;
    let r = Receiver::start().await;
    let (_, a_key) = s.account("A").await;
    let slow = s
        .plugin(
            &a_key,
            "slow",
            wasm::HOSTILE,
            json!({"config": {"mode": "sleep", "ms": "5000"}, "limits": {"deadline_ms": 1500}}),
        )
        .await;
    let a_sub = id(&s
        .subscribe(
            &a_key,
            json!({"url": r.url, "event_types": ["noisy"], "transform_plugin_id": id(&slow)}),
        )
        .await);
    healthy_tenant_is_not_stalled(&s, &a_key, &a_sub, 12).await;
}

#[tokio::test]
async fn a_circuit_breaker_pauses_a_failing_endpoint_and_drops_nothing() {
    let s = TestServer::start_with(&[
        "--circuit-breaker-threshold",
        "3",
        "--circuit-breaker-cooldown",
        "700ms",
        "--circuit-breaker-max-cooldown",
        "10s",
        "--retry-schedule",
        "10ms,10ms,10ms,10ms,10ms,10ms,10ms,10ms,10ms,10ms,10ms,10ms",
        "--subscription-max-in-flight",
        "1",
    ])
    .await;
    let r = Receiver::start().await;
    r.status(503);
    let (_, key) = s.account("A").await;
    let sub = id(&s.subscribe(&key, json!({"url": r.url})).await);
    let events: Vec<Value> = (0..5)
        .map(|i| json!({"type": "a", "payload": {"i": i}}))
        .collect();
    s.post("/v1/events/batch", &key, json!({"events": events}))
        .await;

    let path = format!("/v1/subscriptions/{sub}");
    let tripped = eventually("the breaker opens", WAIT, || async {
        let (_, sub) = s.get(&path, &key).await;
        (sub["circuit"]["state"] == "open").then_some(sub)
    })
    .await;
    assert!(tripped["circuit"]["consecutive_failures"].as_u64().unwrap() >= 3);
    let probe_at = ms(&tripped["circuit"]["next_probe_at"]);
    let metrics = s.metrics().await;
    let listed = |state: &str| {
        format!(
            "wasmhook_subscription_circuit_next_probe_timestamp_seconds{{subscription=\"{sub}\",state=\"{state}\"}} {}",
            probe_at / 1000
        )
    };
    assert!(
        metrics.contains(&listed("open")) || metrics.contains(&listed("half_open")),
        "{metrics}"
    );

    // The first probe fails too: the next pause is twice as long.
    let reopened = eventually("a failed probe reopens it for longer", WAIT, || async {
        let (_, sub) = s.get(&path, &key).await;
        let next = sub["circuit"]["next_probe_at"].clone();
        (!next.is_null() && ms(&next) > probe_at).then_some(sub)
    })
    .await;
    let second_probe_at = ms(&reopened["circuit"]["next_probe_at"]);
    assert!(
        second_probe_at - probe_at >= 1400,
        "the pause doubles: {probe_at} -> {second_probe_at}"
    );

    // The endpoint recovers: the next probe closes the breaker and everything goes out.
    r.status(200);
    eventually("all five delivered", WAIT, || async {
        (pending(&s, &key, &sub).await == 0).then_some(())
    })
    .await;
    let (_, after) = s.get(&path, &key).await;
    assert_eq!(after["circuit"]["state"], "closed", "{after}");
    assert_eq!(after["circuit"]["consecutive_failures"], 0);
    let (_, list) = s
        .get(&format!("/v1/subscriptions/{sub}/deliveries"), &key)
        .await;
    let deliveries = list["data"].as_array().unwrap();
    assert_eq!(deliveries.len(), 5);
    assert!(deliveries.iter().all(|d| d["status"] == "succeeded"));
    assert!(
        !s.metrics()
            .await
            .contains("wasmhook_subscription_circuit_next_probe_timestamp_seconds{"),
        "a closed breaker is not listed"
    );

    // While open, no attempt was made: every attempt started before a trip or at/after the
    // probe time it set.
    let cooldowns = [(probe_at, 700), (second_probe_at, 1400)];
    for d in deliveries {
        let (_, d) = s.get(&format!("/v1/deliveries/{}", id(d)), &key).await;
        for a in d["attempt_log"].as_array().unwrap() {
            let at = ms(&a["attempted_at"]);
            for (probe, cooldown) in cooldowns {
                assert!(
                    at <= probe - cooldown || at >= probe,
                    "an attempt at {at} while paused until {probe}"
                );
            }
        }
    }
}

#[tokio::test]
async fn a_plugin_slower_than_the_lease_runs_once() {
    // The lease is the delivery timeout plus 5 s: a 7 s plugin outlives it.
    let s = TestServer::start_with(&["--delivery-timeout", "1s"]).await;
    let r = Receiver::start().await;
    let (_, key) = s.account("A").await;
    let slow = s
        .plugin(
            &key,
            "slow",
            wasm::HOSTILE,
            json!({"config": {"mode": "sleep", "ms": "7000"}, "limits": {"deadline_ms": 9000}}),
        )
        .await;
    let plugin = id(&slow);
    s.subscribe(
        &key,
        json!({"plugin_id": plugin, "event_types": ["as-subscriber"]}),
    )
    .await;
    s.subscribe(
        &key,
        json!({"url": r.url, "event_types": ["as-transform"], "transform_plugin_id": plugin}),
    )
    .await;
    let a = s
        .event(&key, json!({"type": "as-subscriber", "payload": {}}))
        .await;
    let b = s
        .event(&key, json!({"type": "as-transform", "payload": {}}))
        .await;
    for e in [&a, &b] {
        let d = settled(&s, &key, e["id"].as_str().unwrap(), "succeeded").await;
        assert_eq!(d["attempts"], 1, "{d}");
    }
    assert_eq!(r.received().len(), 1, "one POST after the transform");
    // Log lines are stored after the run that wrote them: wait for both events' lines.
    let runs = eventually("both events' runs logged", WAIT, || async {
        let logs = s
            .logs_with(&key, &plugin, |l| l["message"] == "hostile: going to sleep")
            .await;
        let runs: BTreeMap<String, usize> = logs
            .iter()
            .filter(|l| l["message"] == "hostile: going to sleep")
            .fold(BTreeMap::new(), |mut m, l| {
                *m.entry(l["event_id"].as_str().unwrap().to_string())
                    .or_default() += 1;
                m
            });
        (runs.len() == 2).then_some(runs)
    })
    .await;
    assert_eq!(
        runs,
        BTreeMap::from([(id(&a), 1), (id(&b), 1)]),
        "each event's plugin started once"
    );
}

/// Posts events concurrently: each inner list back to back (each waiting for its 202), the
/// lists at the same time, as customers in different conversations type.
async fn post_concurrently(s: &TestServer, key: &str, lists: Vec<Vec<Value>>) {
    let mut tasks = tokio::task::JoinSet::new();
    for list in lists {
        let (http, url, key) = (s.http.clone(), s.url("/v1/events"), key.to_string());
        tasks.spawn(async move {
            for event in list {
                let resp = http
                    .post(&url)
                    .bearer_auth(&key)
                    .json(&event)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(resp.status().as_u16(), 202);
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("a posting task");
    }
}

/// 20 conversations × 10 messages.
async fn post_conversations(s: &TestServer, key: &str, event_type: &str) {
    let lists = (0..20)
        .map(|c| {
            (0..10)
                .map(|n| json!({"type": event_type, "payload": {"conversation_id": format!("conv-{c}"), "n": n}}))
                .collect()
        })
        .collect();
    post_concurrently(s, key, lists).await;
}

#[tokio::test]
async fn ordered_subscriptions_get_each_conversation_in_order() {
    let s = TestServer::start().await;
    let r = Receiver::start().await;
    // Slow enough that parallel attempts of one conversation would overtake each other.
    r.set_delay(Duration::from_millis(5));
    let (_, key) = s.account("A").await;
    let url_sub = s
        .subscribe(
            &key,
            json!({"url": r.url, "event_types": ["chat"], "ordering": "conversation"}),
        )
        .await;
    assert_eq!(url_sub["ordering"], "conversation");
    let reactor = s
        .plugin(
            &key,
            "reactor",
            wasm::HOSTILE,
            json!({"config": {"mode": "sleep", "ms": "3"}}),
        )
        .await;
    let plugin_sub = s
        .subscribe(
            &key,
            json!({"plugin_id": id(&reactor), "event_types": ["chat"]}),
        )
        .await;
    assert_eq!(
        plugin_sub["ordering"], "conversation",
        "the default for plugin subscribers"
    );

    post_conversations(&s, &key, "chat").await;
    for sub in [&url_sub, &plugin_sub] {
        eventually("all 200 settled", WAIT, || async {
            (pending(&s, &key, &id(sub)).await == 0).then_some(())
        })
        .await;
    }

    // The URL subscriber received each conversation's messages in order.
    let mut seen: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for got in r.received() {
        let data = &got.json()["data"];
        seen.entry(data["conversation_id"].as_str().unwrap().to_string())
            .or_default()
            .push(data["n"].as_i64().unwrap());
    }
    assert_eq!(seen.len(), 20);
    for (conversation, ns) in &seen {
        assert_eq!(ns, &(0..10).collect::<Vec<_>>(), "{conversation}");
    }

    // The plugin's attempts of one conversation never overlapped and followed ingest order:
    // each started after the previous one ended.
    let (_, events) = s.get("/v1/events?type=chat&limit=250", &key).await;
    let mut by_conversation: BTreeMap<String, Vec<(i64, String)>> = BTreeMap::new();
    for e in events["data"].as_array().unwrap() {
        by_conversation
            .entry(e["payload"]["conversation_id"].as_str().unwrap().into())
            .or_default()
            .push((e["payload"]["n"].as_i64().unwrap(), id(e)));
    }
    for (conversation, mut events) in by_conversation {
        events.sort();
        let mut previous_end = i64::MIN;
        for (n, event_id) in events {
            let (_, list) = s
                .get(&format!("/v1/events/{event_id}/deliveries"), &key)
                .await;
            let delivery = list["data"]
                .as_array()
                .unwrap()
                .iter()
                .find(|d| d["subscription_id"] == plugin_sub["id"])
                .expect("a delivery to the plugin")
                .clone();
            let (_, d) = s
                .get(&format!("/v1/deliveries/{}", id(&delivery)), &key)
                .await;
            let attempt = &d["attempt_log"][0];
            let start = ms(&attempt["attempted_at"]);
            assert!(
                start >= previous_end,
                "{conversation}: message {n} started at {start}, before the previous ended at {previous_end}"
            );
            previous_end = start + attempt["duration_ms"].as_i64().unwrap();
        }
    }
}

#[tokio::test]
async fn a_failing_delivery_holds_back_only_its_own_conversation() {
    let s = TestServer::start_with(&["--retry-schedule", "300ms,300ms"]).await;
    let r = Receiver::start().await;
    // conv-stuck's first message fails twice (dead letter after the schedule), then all succeed.
    r.respond(|got, _| {
        let data = got.json()["data"].clone();
        if data["conversation_id"] == "conv-stuck" && data["n"] == 0 {
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        } else {
            StatusCode::OK.into_response()
        }
    });
    let (_, key) = s.account("A").await;
    let sub = id(&s
        .subscribe(
            &key,
            json!({"url": r.url, "ordering": "conversation", "event_types": ["chat"]}),
        )
        .await);
    for n in 0..3 {
        s.event(
            &key,
            json!({"type": "chat", "payload": {"conversation_id": "conv-stuck", "n": n}}),
        )
        .await;
    }
    let free = s
        .event(
            &key,
            json!({"type": "chat", "payload": {"conversation_id": "conv-free", "n": 0}}),
        )
        .await;
    // Another conversation goes straight through while conv-stuck retries.
    settled(&s, &key, free["id"].as_str().unwrap(), "succeeded").await;
    let stuck: Vec<i64> = r
        .received()
        .iter()
        .filter(|g| g.json()["data"]["conversation_id"] == "conv-stuck")
        .map(|g| g.json()["data"]["n"].as_i64().unwrap())
        .collect();
    assert!(
        stuck.iter().all(|n| *n == 0),
        "later messages wait for the first: {stuck:?}"
    );
    // Once the first is dead-lettered, the next ones go, in order.
    eventually(
        "conv-stuck's later messages go after the dead letter",
        WAIT,
        || async { (pending(&s, &key, &sub).await == 0).then_some(()) },
    )
    .await;
    let order: Vec<i64> = r
        .received()
        .iter()
        .filter(|g| g.json()["data"]["conversation_id"] == "conv-stuck")
        .map(|g| g.json()["data"]["n"].as_i64().unwrap())
        .collect();
    assert_eq!(order, vec![0, 0, 0, 1, 2]);
    let (_, failed) = s
        .get(
            &format!("/v1/subscriptions/{sub}/deliveries?status=failed"),
            &key,
        )
        .await;
    assert_eq!(failed["data"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn the_greeter_greets_once_per_conversation_when_customers_type_fast() {
    let s = TestServer::start().await;
    let (_, key) = s.account("A").await;
    let greeter = s
        .plugin(&key, "greeter", wasm::FIRST_CONTACT_GREETER, Value::Null)
        .await;
    s.subscribe(
        &key,
        json!({"plugin_id": id(&greeter), "event_types": ["message:created"]}),
    )
    .await;
    let customer = |c: usize, n: usize| {
        json!({"type": "message:created", "payload": {
            "conversation_id": format!("new-{c}"), "text": format!("hello {n}"),
            "sender": {"id": format!("cust-{c}"), "type": "source_contact"}}})
    };
    // Two messages per conversation, back to back, ten conversations at once.
    let lists = (0..10)
        .map(|c| vec![customer(c, 0), customer(c, 1)])
        .collect();
    post_concurrently(&s, &key, lists).await;
    let greetings = eventually("ten greetings, every delivery settled", WAIT, || async {
        let (_, events) = s
            .get("/v1/events?type=message:created&limit=250", &key)
            .await;
        let events = events["data"].as_array()?.clone();
        let (_, list) = s.get("/v1/subscriptions?limit=10", &key).await;
        let sub = id(&list["data"][0]);
        let settled = pending(&s, &key, &sub).await == 0;
        let greetings: Vec<Value> = events
            .into_iter()
            .filter(|e| e["causation"]["plugin_id"] == greeter["id"])
            .collect();
        (settled && greetings.len() >= 10).then_some(greetings)
    })
    .await;
    let mut per_conversation: BTreeMap<String, usize> = BTreeMap::new();
    for g in &greetings {
        *per_conversation
            .entry(g["payload"]["conversation_id"].as_str().unwrap().into())
            .or_default() += 1;
    }
    assert_eq!(per_conversation.len(), 10);
    assert!(
        per_conversation.values().all(|n| *n == 1),
        "{per_conversation:?}"
    );
}

#[tokio::test]
async fn scheduling_fields_are_validated_and_patchable() {
    let s = TestServer::start().await;
    let r = Receiver::start().await;
    let (_, key) = s.account("A").await;
    let sub = s.subscribe(&key, json!({"url": r.url})).await;
    assert_eq!(sub["ordering"], "none", "the default for URL subscriptions");
    assert_eq!(sub["max_in_flight"], Value::Null);
    assert_eq!(sub["circuit"]["state"], "closed");
    for bad in [
        json!({"max_in_flight": 0}),
        json!({"max_in_flight": 1001}),
        json!({"ordering": "fifo"}),
    ] {
        let mut body = bad.clone();
        body["url"] = json!(r.url);
        let (status, err) = s.post("/v1/subscriptions", &key, body).await;
        assert_eq!(status, 400, "{bad}: {err}");
        assert!(err["error"]["message"].is_string(), "{err}");
    }
    let path = format!("/v1/subscriptions/{}", id(&sub));
    let (status, patched) = s
        .patch(
            &path,
            &key,
            json!({"max_in_flight": 3, "ordering": "conversation"}),
        )
        .await;
    assert_eq!(status, 200, "{patched}");
    assert_eq!(patched["max_in_flight"], 3);
    assert_eq!(patched["ordering"], "conversation");
    let (_, patched) = s.patch(&path, &key, json!({"max_in_flight": null})).await;
    assert_eq!(patched["max_in_flight"], Value::Null);
}
