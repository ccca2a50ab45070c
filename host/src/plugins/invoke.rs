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
use super::host::{CallContext, HostState, LogBuffer, Logs, outgoing_timeout};
use super::limits::MemoryLimiter;
use super::outgoing::HttpPolicy;
use super::registry::LoadedPlugin;
use crate::clock::rfc3339;
use crate::events::{MAX_DEPTH, json_depth};
use crate::model::{Event, LogLevel};
use crate::state::AppState;

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
    /// Runs `plugin_id` on one event and stores its log lines.
    ///
    /// The plugin runs on the async runtime and yields at every epoch tick, so a busy plugin
    /// shares its thread with other tasks; at the deadline the invocation is dropped, which
    /// stops the guest wherever it is, in wasm or in a host call.
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
        let limits = plugin.limits;
        let logs: Logs = Arc::new(Mutex::new(LogBuffer::new(
            input.event.id.clone(),
            limits.log_bytes,
            plugin.log_level,
        )));
        let io = Io {
            stdout: MemoryOutputPipe::new(limits.log_bytes),
            stderr: MemoryOutputPipe::new(limits.log_bytes),
            denials: Arc::new(Mutex::new(Vec::new())),
        };
        let run = self.run(app.clone(), plugin, input, logs.clone(), io.clone());
        let result = match tokio::time::timeout(limits.deadline, run).await {
            Ok(result) => result,
            Err(_) => Err(InvokeError::new(
                format!(
                    "deadline exceeded after {}",
                    humantime::format_duration(limits.deadline)
                ),
                true,
            )),
        };
        let lines = {
            let mut buf = logs.lock().expect("log buffer lock");
            for denial in io.denials.lock().expect("denials lock").drain(..) {
                buf.push(LogLevel::Warn, denial);
            }
            for (pipe, level) in [(&io.stdout, LogLevel::Info), (&io.stderr, LogLevel::Warn)] {
                let text = String::from_utf8_lossy(&pipe.contents()).into_owned();
                for line in text.lines().filter(|l| !l.trim().is_empty()) {
                    buf.push(level, line.to_string());
                }
            }
            if let Err(e) = &result {
                buf.push_always(LogLevel::Error, e.message.clone());
            }
            std::mem::take(&mut buf.lines)
        };
        // Logs are diagnostics, not part of the delivery: written in batches, off the hot path.
        self.logs.send(plugin_id, lines);
        result
    }

    async fn run(
        &self,
        app: AppState,
        plugin: Arc<LoadedPlugin>,
        input: Input,
        logs: Logs,
        io: Io,
    ) -> Result<Decision, InvokeError> {
        let limits = plugin.limits;
        let wasi = WasiCtxBuilder::new()
            .stdout(io.stdout)
            .stderr(io.stderr)
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        let depth = input.event.causation.as_ref().map_or(0, |c| c.depth);
        let event = to_wit(&input, &plugin.account_id);
        let state = HostState {
            wasi,
            http: WasiHttpCtx::new(),
            http_policy: HttpPolicy {
                allowed_hosts: plugin.allowed_hosts.clone(),
                net: app.net_policy.clone(),
                timeout: outgoing_timeout(&limits),
                denials: io.denials,
            },
            table: Default::default(),
            limiter: MemoryLimiter::new(limits.memory_bytes),
            call: CallContext {
                app,
                plugin: plugin.clone(),
                limits,
                event_id: input.event.id.clone(),
                account_id: plugin.account_id.clone(),
                depth,
                sends: 0,
                logs,
            },
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limiter);
        store.epoch_deadline_async_yield_and_update(1);
        let outcome = async {
            let instance = plugin.pre.instantiate_async(&mut store).await?;
            instance
                .wasmhook_plugin_handler()
                .call_handle(&mut store, &event)
                .await
        }
        .await;
        match outcome {
            Ok(Ok(decision)) => decide(decision, limits.replace_bytes),
            Ok(Err(e)) => Err(InvokeError::new(e.message, e.retryable)),
            Err(trap) => Err(explain(&trap, store.data().limiter.hit, &limits)),
        }
    }
}

/// Where an invocation's stdout, stderr and refused requests go; read after it ends.
#[derive(Clone)]
struct Io {
    stdout: MemoryOutputPipe,
    stderr: MemoryOutputPipe,
    denials: super::host::Denials,
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
