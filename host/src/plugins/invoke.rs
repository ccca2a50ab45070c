//! One invocation: a fresh store and instance for one event, the handler call, and what came
//! of it (a decision, or a failure with a reason a person can act on).

use std::sync::{Arc, Mutex};

use serde_json::value::RawValue;
use wasmtime::{Store, Trap};
use wasmtime_wasi::WasiCtxBuilder;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi_http::WasiHttpCtx;

use super::PluginRuntime;
use super::bindings::types;
use super::engine::EPOCH_TICK;
use super::host::{CallContext, HostState, outgoing_timeout};
use super::limits::MemoryLimiter;
use super::outgoing::HttpPolicy;
use super::registry::LoadedPlugin;
use crate::clock::{now_ms, rfc3339};
use crate::events::{MAX_DEPTH, json_depth};
use crate::model::{Event, PluginLogLine};
use crate::state::AppState;

/// How long past its deadline an invocation blocked in a host call is waited for.
const HOST_CALL_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

/// What a plugin decided.
#[derive(Debug, Clone)]
pub enum Decision {
    /// Deliver unchanged.
    Keep,
    /// Deliver this payload instead.
    Replace(Box<RawValue>),
    /// Deliver nothing.
    Drop,
}

/// A failed invocation.
#[derive(Debug, Clone)]
pub struct InvokeError {
    /// Why, e.g. "deadline exceeded after 1s" or the plugin's own message.
    pub message: String,
    /// Whether retrying may help.
    pub retryable: bool,
}

impl InvokeError {
    fn new(message: impl Into<String>, retryable: bool) -> InvokeError {
        InvokeError {
            message: message.into(),
            retryable,
        }
    }
}

/// The event as a plugin receives it.
pub struct Input {
    /// The event.
    pub event: Event,
    /// The subscription it arrives through.
    pub subscription_id: String,
    /// 1 for a first attempt.
    pub attempt: u32,
}

/// The event as the WIT types carry it into the plugin.
pub fn to_wit(input: &Input, account_id: &str) -> types::Event {
    let e = &input.event;
    types::Event {
        id: e.id.clone(),
        event_type: e.event_type.clone(),
        occurred_at: e.occurred_at.clone(),
        received_at: rfc3339(e.received_at),
        payload: e.payload.get().to_string(),
        account_id: account_id.to_string(),
        subscription_id: input.subscription_id.clone(),
        attempt: input.attempt,
        causation: e.causation.as_ref().map(|c| types::Causation {
            plugin_id: c.plugin_id.clone(),
            event_id: c.event_id.clone(),
            depth: c.depth,
        }),
    }
}

impl PluginRuntime {
    /// Runs `plugin_id` on one event, on a blocking thread, and stores its log lines.
    pub async fn invoke(
        self: &Arc<Self>,
        app: &AppState,
        plugin_id: &str,
        input: Input,
    ) -> Result<Decision, InvokeError> {
        let Some(plugin) = self.registry.get(plugin_id) else {
            return Err(InvokeError::new(
                format!("plugin {plugin_id} is not loaded (deleted?)"),
                false,
            ));
        };
        let event_id = input.event.id.clone();
        let rt = self.clone();
        let app_for_call = app.clone();
        let handle = tokio::runtime::Handle::current();
        let deadline = plugin.limits.deadline;
        let task = tokio::task::spawn_blocking(move || rt.run(app_for_call, handle, plugin, input));
        // The epoch deadline interrupts wasm, not a host call that blocks (a WASI sleep, say):
        // past the deadline and a grace second the delivery moves on without the thread.
        let joined = match tokio::time::timeout(deadline + HOST_CALL_GRACE, task).await {
            Ok(joined) => joined,
            Err(_) => {
                let message = format!(
                    "deadline exceeded after {} (blocked in a host call)",
                    humantime::format_duration(deadline)
                );
                let line = PluginLogLine {
                    at: now_ms(),
                    level: "error".into(),
                    event_id: Some(event_id),
                    message: message.clone(),
                };
                let _ = app
                    .store
                    .append_plugin_logs(plugin_id.to_string(), vec![line])
                    .await;
                return Err(InvokeError::new(message, true));
            }
        };
        let (result, logs) = match joined {
            Ok(r) => r,
            Err(e) => return Err(InvokeError::new(format!("plugin task failed: {e}"), true)),
        };
        if let Err(e) = app
            .store
            .append_plugin_logs(plugin_id.to_string(), logs)
            .await
        {
            tracing::warn!(plugin = plugin_id, error = %e, "storing plugin logs failed");
        }
        result
    }

    fn run(
        &self,
        app: AppState,
        rt: tokio::runtime::Handle,
        plugin: Arc<LoadedPlugin>,
        input: Input,
    ) -> (Result<Decision, InvokeError>, Vec<PluginLogLine>) {
        let limits = plugin.limits;
        let stdout = MemoryOutputPipe::new(limits.log_bytes);
        let stderr = MemoryOutputPipe::new(limits.log_bytes);
        let wasi = WasiCtxBuilder::new()
            .stdout(stdout.clone())
            .stderr(stderr.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        let denials = Arc::new(Mutex::new(Vec::new()));
        let depth = input.event.causation.as_ref().map_or(0, |c| c.depth);
        let event = to_wit(&input, &plugin.account_id);
        let state = HostState {
            wasi,
            http: WasiHttpCtx::new(),
            http_policy: HttpPolicy {
                allowed_hosts: plugin.allowed_hosts.clone(),
                net: app.net_policy.clone(),
                timeout: outgoing_timeout(&limits),
                denials: denials.clone(),
            },
            table: Default::default(),
            limiter: MemoryLimiter::new(limits.memory_bytes),
            call: CallContext {
                app,
                rt,
                plugin: plugin.clone(),
                limits,
                event_id: input.event.id.clone(),
                account_id: plugin.account_id.clone(),
                depth,
                sends: 0,
                logs: Vec::new(),
                log_bytes: 0,
            },
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limiter);
        let ticks = limits.deadline.as_millis().div_ceil(EPOCH_TICK.as_millis()) as u64 + 1;
        store.set_epoch_deadline(ticks);

        let outcome = plugin.pre.instantiate(&mut store).and_then(|instance| {
            instance
                .wasmhook_plugin_handler()
                .call_handle(&mut store, &event)
        });
        let result = match outcome {
            Ok(Ok(decision)) => decide(decision, limits.replace_bytes),
            Ok(Err(e)) => Err(InvokeError::new(e.message, e.retryable)),
            Err(trap) => Err(explain(&trap, store.data().limiter.hit, &limits)),
        };

        let mut call = store.into_data().call;
        for denial in denials.lock().expect("denials lock").drain(..) {
            call.log("warn", denial);
        }
        for (pipe, level) in [(stdout, "info"), (stderr, "warn")] {
            let text = String::from_utf8_lossy(&pipe.contents()).into_owned();
            for line in text.lines().filter(|l| !l.trim().is_empty()) {
                call.log(level, line.to_string());
            }
        }
        if let Err(e) = &result {
            // Failures are always recorded, even past the log budget.
            call.logs.push(PluginLogLine {
                at: now_ms(),
                level: "error".into(),
                event_id: Some(call.event_id.clone()),
                message: e.message.clone(),
            });
        }
        (result, call.logs)
    }
}

fn decide(decision: types::Decision, max_bytes: usize) -> Result<Decision, InvokeError> {
    match decision {
        types::Decision::Keep => Ok(Decision::Keep),
        types::Decision::Drop => Ok(Decision::Drop),
        types::Decision::Replace(payload) => {
            if payload.len() > max_bytes {
                return Err(InvokeError::new(
                    format!(
                        "replace payload of {} bytes exceeds the limit of {max_bytes} bytes",
                        payload.len()
                    ),
                    false,
                ));
            }
            let raw = RawValue::from_string(payload).map_err(|e| {
                InvokeError::new(format!("replace payload is not valid JSON: {e}"), false)
            })?;
            if !raw.get().starts_with('{') || json_depth(raw.get()) > MAX_DEPTH {
                return Err(InvokeError::new(
                    "replace payload must be a JSON object",
                    false,
                ));
            }
            Ok(Decision::Replace(raw))
        }
    }
}

/// Turns a trap into the reason recorded on the attempt.
fn explain(err: &wasmtime::Error, memory_hit: bool, limits: &super::limits::Limits) -> InvokeError {
    if memory_hit {
        return InvokeError::new(
            format!("memory limit {} MiB exceeded", limits.memory_bytes >> 20),
            false,
        );
    }
    match err.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => InvokeError::new(
            format!(
                "deadline exceeded after {}",
                humantime::format_duration(limits.deadline)
            ),
            true,
        ),
        Some(Trap::StackOverflow) => InvokeError::new("stack overflow", false),
        Some(Trap::UnreachableCodeReached) => InvokeError::new(
            "plugin trapped: unreachable executed (a panic or abort in the plugin)",
            false,
        ),
        Some(trap) => InvokeError::new(format!("plugin trapped: {trap}"), false),
        None => InvokeError::new(format!("plugin failed: {err:#}"), false),
    }
}
