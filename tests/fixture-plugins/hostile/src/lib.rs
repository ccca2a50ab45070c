//! Test fixture: a plugin that misbehaves on purpose, so host tests can check what survives.
//!
//! The behaviour is chosen per event by the config key `mode`:
//!
//! | `mode` | behaviour |
//! |---|---|
//! | `loop` | spins forever (needs the host's deadline) |
//! | `memory` | allocates and touches 1 MiB blocks without bound (needs the memory limit); ends in a trap |
//! | `trap` | panics, which traps the instance |
//! | `stack-overflow` | unbounded non-tail recursion; traps when the stack runs out |
//! | `big-frames` | unbounded recursion with 16 KiB frames: the stack in linear memory runs out below address 0 within a few calls (wasmtime's own stack limit is never reached) |
//! | `hold-memory` | allocates and touches `mb` MiB (default 64), then GETs config `url` through `wasi:http` if set (blocking until it is answered), else sleeps `ms` milliseconds (default 0); returns `keep` |
//! | `send-flood` | calls `send-message` 1000 times into the event's `conversation_id`, ignoring errors, then returns `replace` with `{"sent": n, "errors": {"<error>": count}}` |
//! | `oversized-replace` | returns `replace` with a JSON object of `bytes` bytes (default 2 MiB) |
//! | `http` | GETs config `url` through `wasi:http`; returns `replace` with `{"status": <code>}`, or a non-retryable error with the failure text |
//! | `echo-config` | returns `replace` with `{"config": <config "value" or null>, "kv": {"counter": n}, "event": {...}}`; `n` counts the calls in this mode, kept in kv key `echo-counter` |
//! | `log` | logs one line at each level (`hostile: <level>`), prints `hostile: stdout` / `hostile: stderr`; returns `keep` |
//! | `kv-flood` | sets kv keys `flood/0`, `flood/1`, … (up to `count`, default 100000) until one fails; returns `replace` with `{"written": n, "error": "<kv error>" or null}` |
//! | `kv-atomics` | runs a fixed script of `kv` calls (`increment` up to overflow and on a non-number, `set-if` as claim and as compare-and-swap, `get`); returns `replace` with `{"results": [[<call>, {"ok": <result>} or {"error": "<kv error>"}], …]}` |
//! | `kv-count` | `increment`s kv key `count` by 1; returns `replace` with `{"count": <new value>}` |
//! | `log-lines` | logs `count` (default 100) info lines `batch <b> line <i>`, `b` being the payload's `batch` (or 0); returns `keep` |
//! | `flood-all` | writes `lines` (default 1000) lines of 99 bytes to each of the log (info), stdout and stderr; returns `keep` |
//! | `sleep` | sleeps `ms` milliseconds (default 10000) in a blocking WASI clock wait; returns `keep` |
//! | `counter` | counts the events this instance handled in a static (so the count only goes past 1 when the host reuses instances), logs `counter <n>` and prints `counter stdout <n>`; then does what the payload's `then` says: `trap`, `loop`, `memory` (as those modes), `grow` (allocates and keeps `mb` MiB, default 1), `oversized` (as `oversized-replace`), `invalid` (returns `replace` with a JSON array), `error` (a fatal handler error), `send` (`send-message` `counter <n>` into the payload's `conversation_id`), else nothing; returns `replace` with `{"count": n, "event_id", "account_id", "subscription_id"}` |
//! | `retryable-error` / `fatal-error` | returns a handler error with that retryability and message `hostile: <mode>` |
//! | `drop` | returns `drop` |
//! | anything else, or unset | returns `keep` |
//!
//! Everything but the trapping and endless modes is also unit-tested natively.

mod http;

use std::collections::BTreeMap;
use std::hint::black_box;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::{Value, json};
use wasmhook_plugin_sdk::kv::{self, KvError};
use wasmhook_plugin_sdk::{
    Decision, Event, HandlerError, Plugin, config, export_plugin, log, send_message,
};

/// The hostile plugin.
pub struct Hostile;

impl Plugin for Hostile {
    fn handle(event: Event) -> Result<Decision, HandlerError> {
        let mode = config::get("mode").unwrap_or_default();
        match mode.as_str() {
            "loop" => spin_forever(),
            "memory" => grow_memory_forever(),
            "trap" => panic!("hostile: trap mode"),
            "stack-overflow" => Ok(Decision::Replace(format!(
                "{{\"depth\":{}}}",
                recurse(black_box(0))
            ))),
            "big-frames" => Ok(Decision::Replace(format!(
                "{{\"depth\":{}}}",
                recurse_with_big_frames(black_box(0))
            ))),
            "hold-memory" => hold_memory(
                config::get_or("mb", 64usize)?,
                config::get("url"),
                config::get_or("ms", 0u64)?,
            ),
            "send-flood" => send_flood(&event),
            "oversized-replace" => oversized_replace(config::get_or("bytes", 2 * 1024 * 1024)?),
            "http" => {
                let url = config::get("url")
                    .ok_or_else(|| HandlerError::fatal("hostile: config `url` is not set"))?;
                let status = http::get(&url)
                    .map_err(|e| HandlerError::fatal(format!("hostile: GET {url}: {e}")))?;
                Decision::replace_json(&json!({ "status": status }))
            }
            "echo-config" => echo_config(&event),
            "log" => {
                // What the SDK's macros see of the plugin's log level (asked of the host).
                let debug = log::enabled(log::Level::Debug);
                log::error(&format!("hostile: debug enabled: {debug}"));
                log::trace("hostile: trace");
                log::debug("hostile: debug");
                log::info("hostile: info");
                log::warn("hostile: warn");
                log::error("hostile: error");
                println!("hostile: stdout");
                eprintln!("hostile: stderr");
                Ok(Decision::Keep)
            }
            "kv-flood" => kv_flood(config::get_or("count", 100_000u32)?),
            "kv-atomics" => kv_atomics(),
            "kv-count" => Decision::replace_json(&json!({ "count": kv::increment("count", 1)? })),
            "print-flood" => {
                let line = "x".repeat(99);
                for _ in 0..config::get_or("lines", 4096u32)? {
                    println!("{line}");
                }
                log::info("hostile: still running after the flood");
                Ok(Decision::Keep)
            }
            "log-lines" => {
                let batch = event.payload_json()?.get("batch").and_then(Value::as_u64);
                for i in 0..config::get_or("count", 100u32)? {
                    log::info(&format!("batch {} line {i}", batch.unwrap_or(0)));
                }
                Ok(Decision::Keep)
            }
            "flood-all" => {
                let line = "y".repeat(99);
                for _ in 0..config::get_or("lines", 1000u32)? {
                    log::info(&line);
                    println!("{line}");
                    eprintln!("{line}");
                }
                Ok(Decision::Keep)
            }
            "sleep" => {
                log::info("hostile: going to sleep");
                std::thread::sleep(std::time::Duration::from_millis(config::get_or(
                    "ms", 10_000u64,
                )?));
                Ok(Decision::Keep)
            }
            "counter" => counter(&event),
            "retryable-error" => Err(HandlerError::retryable("hostile: retryable-error")),
            "fatal-error" => Err(HandlerError::fatal("hostile: fatal-error")),
            "drop" => Ok(Decision::Drop),
            _ => Ok(Decision::Keep),
        }
    }
}

export_plugin!(Hostile);

fn spin_forever() -> ! {
    let mut n: u64 = 0;
    loop {
        n = black_box(n.wrapping_add(1));
    }
}

fn grow_memory_forever() -> ! {
    let mut blocks: Vec<Vec<u8>> = Vec::new();
    loop {
        // Filled with non-zero bytes so every page is really touched.
        blocks.push(vec![0xA5; 1024 * 1024]);
        black_box(&blocks);
    }
}

/// Recurses until the stack runs out. `black_box` on a local array keeps a real frame per call,
/// and the addition after the call keeps it from being a tail call.
#[allow(unconditional_recursion)]
#[inline(never)]
fn recurse(depth: u64) -> u64 {
    let frame = black_box([depth; 32]);
    recurse(frame[0] + 1) + frame[31]
}

#[allow(unconditional_recursion)]
#[inline(never)]
fn recurse_with_big_frames(depth: u64) -> u64 {
    let frame = black_box([depth; 2048]);
    recurse_with_big_frames(frame[0] + 1) + frame[2047]
}

fn hold_memory(mb: usize, url: Option<String>, ms: u64) -> Result<Decision, HandlerError> {
    // Filled with non-zero bytes so every page is really touched.
    let held: Vec<Vec<u8>> = (0..mb)
        .map(|i| vec![(i % 255 + 1) as u8; 1 << 20])
        .collect();
    if let Some(url) = url {
        http::get(&url).map_err(|e| HandlerError::fatal(format!("hostile: GET {url}: {e}")))?;
    } else {
        std::thread::sleep(std::time::Duration::from_millis(ms));
    }
    black_box(&held);
    Ok(Decision::Keep)
}

fn send_flood(event: &Event) -> Result<Decision, HandlerError> {
    let conversation_id = event
        .payload_json()?
        .get("conversation_id")
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| {
            HandlerError::fatal("hostile: send-flood needs a payload with `conversation_id`")
        })?;
    let mut sent = 0u32;
    let mut errors: BTreeMap<String, u32> = BTreeMap::new();
    for i in 0..1000 {
        match send_message(&conversation_id, &format!("flood {i}")) {
            Ok(_) => sent += 1,
            Err(e) => *errors.entry(e.to_string()).or_default() += 1,
        }
    }
    Decision::replace_json(&json!({ "sent": sent, "errors": errors }))
}

fn oversized_replace(bytes: usize) -> Result<Decision, HandlerError> {
    // `{"padding":"…"}` is 14 bytes around the padding.
    let padding = "x".repeat(bytes.saturating_sub(14));
    Decision::replace_json(&json!({ "padding": padding }))
}

fn echo_config(event: &Event) -> Result<Decision, HandlerError> {
    const COUNTER: &str = "echo-counter";
    let counter = kv::get_json::<u64>(COUNTER)?.unwrap_or(0) + 1;
    kv::set_json(COUNTER, &counter)?;
    Decision::replace_json(&json!({
        "config": config::get("value"),
        "kv": { "counter": counter },
        "event": {
            "id": event.id,
            "type": event.event_type,
            "attempt": event.attempt,
            "account_id": event.account_id,
            "subscription_id": event.subscription_id,
            "occurred_at": event.occurred_at,
            "received_at": event.received_at,
            "causation": event.causation.as_ref().map(|c| json!({
                "plugin_id": c.plugin_id, "event_id": c.event_id, "depth": c.depth,
            })),
            "payload": event.payload_json()?,
        },
    }))
}

/// Events this instance handled (`counter` mode).
static EVENTS: AtomicU64 = AtomicU64::new(0);
/// Memory `counter` mode keeps between events (`then: grow`).
static HELD: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

fn counter(event: &Event) -> Result<Decision, HandlerError> {
    let n = EVENTS.fetch_add(1, Ordering::Relaxed) + 1;
    let payload = event.payload_json()?;
    log::info(&format!("counter {n}"));
    println!("counter stdout {n}");
    match payload
        .get("then")
        .and_then(Value::as_str)
        .unwrap_or_default()
    {
        "trap" => panic!("hostile: counter trap"),
        "loop" => spin_forever(),
        "memory" => grow_memory_forever(),
        "grow" => {
            let mb = payload.get("mb").and_then(Value::as_u64).unwrap_or(1) as usize;
            // Filled with non-zero bytes so every page is really touched.
            let block = vec![0xA5; mb * 1024 * 1024];
            HELD.lock().unwrap_or_else(|e| e.into_inner()).push(block);
        }
        "oversized" => return oversized_replace(2 * 1024 * 1024),
        "invalid" => return Ok(Decision::Replace("[\"not an object\"]".into())),
        "error" => return Err(HandlerError::fatal("hostile: counter error")),
        "send" => {
            let conversation = payload.get("conversation_id").and_then(Value::as_str);
            send_message(conversation.unwrap_or_default(), &format!("counter {n}"))
                .map_err(|e| HandlerError::fatal(format!("hostile: send-message: {e}")))?;
        }
        _ => {}
    }
    Decision::replace_json(&json!({
        "count": n,
        "event_id": event.id,
        "account_id": event.account_id,
        "subscription_id": event.subscription_id,
    }))
}

fn kv_flood(count: u32) -> Result<Decision, HandlerError> {
    let mut written = 0u32;
    let mut error: Option<KvError> = None;
    for i in 0..count {
        if let Err(e) = kv::set(&format!("flood/{i}"), b"x") {
            error = Some(e);
            break;
        }
        written += 1;
    }
    Decision::replace_json(&json!({ "written": written, "error": error.map(|e| e.to_string()) }))
}

fn kv_atomics() -> Result<Decision, HandlerError> {
    fn outcome<T: Into<Value>>(r: Result<T, KvError>) -> Value {
        match r {
            Ok(v) => json!({ "ok": v.into() }),
            Err(e) => json!({ "error": e.to_string() }),
        }
    }
    let text = |v: Option<Vec<u8>>| v.map(|b| String::from_utf8_lossy(&b).into_owned());
    #[rustfmt::skip]
    let results = [
        ("increment n 5", outcome(kv::increment("n", 5))),
        ("increment n -2", outcome(kv::increment("n", -2))),
        ("get n", outcome(kv::get("n").map(text))),
        ("increment max i64::MAX", outcome(kv::increment("max", i64::MAX))),
        ("increment max 1", outcome(kv::increment("max", 1))),
        ("set text abc", outcome(kv::set("text", "abc").map(|()| Value::Null))),
        ("increment text 1", outcome(kv::increment("text", 1))),
        ("set-if claim none a", outcome(kv::set_if("claim", None, "a"))),
        ("set-if claim none b", outcome(kv::set_if("claim", None, "b"))),
        ("set-if claim x b", outcome(kv::set_if("claim", Some(b"x"), "b"))),
        ("set-if claim a b", outcome(kv::set_if("claim", Some(b"a"), "b"))),
        ("get claim", outcome(kv::get("claim").map(text))),
    ];
    Decision::replace_json(&json!({ "results": results }))
}

#[cfg(test)]
mod tests {
    use wasmhook_plugin_sdk::log::Level;
    use wasmhook_plugin_sdk::testing;

    use super::*;

    fn run(mode: &str) -> Result<Decision, HandlerError> {
        testing::set_config("mode", mode);
        let event = Event::new(
            "message:created",
            json!({"conversation_id": "c1", "text": "hi"}),
        );
        Hostile::handle(event)
    }

    fn replaced(d: Decision) -> Value {
        match d {
            Decision::Replace(p) => serde_json::from_str(&p).unwrap(),
            other => panic!("expected replace, got {other:?}"),
        }
    }

    #[test]
    fn unknown_and_unset_modes_keep() {
        assert_eq!(run("nonsense"), Ok(Decision::Keep));
        testing::reset();
        assert_eq!(
            Hostile::handle(Event::new("x", json!({}))),
            Ok(Decision::Keep)
        );
    }

    #[test]
    fn send_flood_keeps_calling_past_the_limit() {
        testing::set_send_limit(10);
        let p = replaced(run("send-flood").unwrap());
        assert_eq!(p["sent"], 10);
        assert_eq!(
            p["errors"]["send-message: limit of 10 messages per event reached"],
            990
        );
    }

    #[test]
    fn oversized_replace_is_over_a_mebibyte_and_exact() {
        let Decision::Replace(p) = run("oversized-replace").unwrap() else {
            panic!()
        };
        assert_eq!(p.len(), 2 * 1024 * 1024);
        testing::set_config("bytes", "100");
        let Decision::Replace(p) = Hostile::handle(Event::new("x", json!({}))).unwrap() else {
            panic!()
        };
        assert_eq!(p.len(), 100);
    }

    #[test]
    fn echo_config_echoes_config_event_and_counts_in_kv() {
        testing::set_config("value", "v1");
        replaced(run("echo-config").unwrap());
        let p = replaced(run("echo-config").unwrap());
        assert_eq!(p["config"], "v1");
        assert_eq!(p["kv"]["counter"], 2);
        assert_eq!(p["event"]["type"], "message:created");
        assert_eq!(p["event"]["payload"]["text"], "hi");
    }

    #[test]
    fn counter_counts_the_events_of_its_instance() {
        let first = replaced(run("counter").unwrap())["count"].as_u64().unwrap();
        let event = Event::new("x", json!({"then": "grow", "mb": 1}));
        let second = replaced(Hostile::handle(event).unwrap());
        assert_eq!(second["count"].as_u64().unwrap(), first + 1);
        let event = Event::new("x", json!({"then": "error"}));
        assert!(Hostile::handle(event).is_err());
    }

    #[test]
    fn log_writes_every_level() {
        assert_eq!(run("log"), Ok(Decision::Keep));
        let levels: Vec<Level> = testing::logs().into_iter().map(|(l, _)| l).collect();
        assert_eq!(
            levels,
            [
                Level::Error,
                Level::Trace,
                Level::Debug,
                Level::Info,
                Level::Warn,
                Level::Error
            ]
        );
    }

    #[test]
    fn kv_flood_stops_at_the_first_error() {
        testing::set_config("count", "5");
        let p = replaced(run("kv-flood").unwrap());
        assert_eq!(p, json!({"written": 5, "error": null}));
        testing::fail_kv_with(KvError::TooManyKeys(3));
        let p = replaced(Hostile::handle(Event::new("x", json!({}))).unwrap());
        assert_eq!(p["written"], 0);
    }

    #[test]
    fn kv_atomics_runs_its_script() {
        let p = replaced(run("kv-atomics").unwrap());
        let results: Vec<Value> = p["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r[1].clone())
            .collect();
        assert_eq!(
            results,
            [
                json!({"ok": 5}),
                json!({"ok": 3}),
                json!({"ok": "3"}),
                json!({"ok": i64::MAX}),
                json!({"error": "kv: the increment overflows a 64-bit integer"}),
                json!({"ok": null}),
                json!({"error": "kv: the value to increment is not an integer"}),
                json!({"ok": true}),
                json!({"ok": false}),
                json!({"ok": false}),
                json!({"ok": true}),
                json!({"ok": "b"}),
            ]
        );
    }

    #[test]
    fn kv_count_increments() {
        replaced(run("kv-count").unwrap());
        assert_eq!(replaced(run("kv-count").unwrap()), json!({"count": 2}));
    }

    #[test]
    fn errors_and_drop() {
        assert!(run("retryable-error").unwrap_err().is_retryable());
        assert!(!run("fatal-error").unwrap_err().is_retryable());
        assert_eq!(run("drop"), Ok(Decision::Drop));
    }

    #[test]
    fn log_lines_are_numbered_by_batch() {
        testing::set_config("mode", "log-lines");
        testing::set_config("count", "3");
        let event = Event::new("x", json!({"batch": 7}));
        assert_eq!(Hostile::handle(event), Ok(Decision::Keep));
        let lines: Vec<String> = testing::logs().into_iter().map(|(_, m)| m).collect();
        assert_eq!(
            lines,
            ["batch 7 line 0", "batch 7 line 1", "batch 7 line 2"]
        );
    }

    #[test]
    fn hold_memory_holds_then_keeps() {
        testing::set_config("mb", "2");
        testing::set_config("ms", "1");
        assert_eq!(run("hold-memory"), Ok(Decision::Keep));
    }

    #[test]
    fn http_is_unavailable_natively() {
        testing::set_config("url", "http://127.0.0.1:1/");
        let err = run("http").unwrap_err();
        assert!(!err.is_retryable());
    }

    #[test]
    #[should_panic(expected = "hostile: trap mode")]
    fn trap_panics() {
        let _ = run("trap");
    }
}
