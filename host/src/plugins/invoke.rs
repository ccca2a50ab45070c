//! One invocation: a store and instance for one event (fresh, or kept from an earlier event
//! of the same subscription in `reuse` mode), the handler call, and what came of it (a
//! decision, or a failure with a reason a person can act on).

use std::sync::Arc;

use serde_json::value::RawValue;
use wasmtime::{PoolConcurrencyLimitError, Trap};

use super::PluginRuntime;
use super::bindings::types;
use super::budget::Reservation;
use super::host::{CallContext, Stream};
use super::registry::LoadedPlugin;
use super::reuse::{Discard, Key};
use super::services::PluginServices;
use super::stack::StackMap;
use crate::clock::push_rfc3339 as rfc3339_into;
use crate::events::{MAX_DEPTH, json_depth};
use crate::model::{Event, InstanceMode, LogLevel};

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
    /// What kind of failure.
    pub kind: FailureKind,
    /// Why, e.g. "deadline exceeded after 1s" or the plugin's own message.
    pub message: String,
    /// Whether retrying may help.
    pub retryable: bool,
}

/// The kinds of failed invocations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// The handler returned an error.
    Handler,
    /// The plugin trapped: a panic, an abort, a stack overflow.
    Trap,
    /// It ran past its deadline.
    Deadline,
    /// It passed a limit: memory, or the size of its replacement payload.
    Limit,
    /// Its replacement payload is not a JSON object.
    InvalidOutput,
    /// The plugin is not loaded (deleted meanwhile).
    NotLoaded,
}

impl FailureKind {
    /// The kind's name in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Handler => "handler",
            FailureKind::Trap => "trap",
            FailureKind::Deadline => "deadline",
            FailureKind::Limit => "limit",
            FailureKind::InvalidOutput => "invalid_output",
            FailureKind::NotLoaded => "not_loaded",
        }
    }
}

impl InvokeError {
    fn new(kind: FailureKind, message: impl Into<String>, retryable: bool) -> InvokeError {
        InvokeError {
            kind,
            message: message.into(),
            retryable,
        }
    }
}

/// What one invocation used.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// The largest linear memory the instance had (its initial memory, then every growth
    /// allowed), in bytes.
    pub peak_memory_bytes: usize,
}

/// The event as a plugin receives it; borrowed, because it is copied once, into the WIT types.
#[derive(Clone, Copy)]
pub struct Input<'a> {
    /// The event.
    pub event: &'a Event,
    /// The subscription it arrives through.
    pub subscription_id: &'a str,
    /// 1 for a first attempt.
    pub attempt: u32,
}

/// The event as the WIT types carry it into the plugin.
pub fn to_wit(input: Input<'_>, account_id: &str) -> types::Event {
    let mut event = empty_event();
    fill_wit(&mut event, input, account_id);
    event
}

/// A WIT event with nothing in it, to be filled by [`fill_wit`].
pub(crate) fn empty_event() -> types::Event {
    types::Event {
        id: String::new(),
        event_type: String::new(),
        occurred_at: String::new(),
        received_at: String::new(),
        payload: String::new(),
        account_id: String::new(),
        subscription_id: String::new(),
        attempt: 0,
        causation: None,
    }
}

/// Makes `wit` (an earlier event's, or an empty one) the WIT form of `input`, reusing its
/// strings' allocations: an instance kept between events refills the same one.
pub(crate) fn fill_wit(wit: &mut types::Event, input: Input<'_>, account_id: &str) {
    fn set(to: &mut String, from: &str) {
        to.clear();
        to.push_str(from);
    }
    let e = input.event;
    set(&mut wit.id, &e.id);
    set(&mut wit.event_type, &e.event_type);
    set(&mut wit.occurred_at, &e.occurred_at);
    wit.received_at.clear();
    rfc3339_into(e.received_at, &mut wit.received_at);
    set(&mut wit.payload, e.payload.get());
    set(&mut wit.account_id, account_id);
    set(&mut wit.subscription_id, input.subscription_id);
    wit.attempt = input.attempt;
    wit.causation = e.causation.as_ref().map(|c| types::Causation {
        plugin_id: c.plugin_id.clone(),
        event_id: c.event_id.clone(),
        depth: c.depth,
    });
}

impl PluginRuntime {
    /// Runs the loaded version of `plugin_id` on one event; its host calls and log lines go to
    /// `services`.
    pub async fn invoke(
        &self,
        services: Arc<dyn PluginServices>,
        plugin_id: &str,
        input: Input<'_>,
    ) -> Result<Decision, InvokeError> {
        self.invoke_reserved(services, plugin_id, input, None).await
    }

    /// [`Self::invoke`] with memory already reserved for it from the budget (see
    /// [`Self::memory_needed`]); without one, or with one made too small by a raised limit,
    /// the invocation reserves what it needs first, waiting for room. A plugin in `reuse`
    /// mode runs on an idle instance of the same subscription when there is one (which has
    /// its own reservation: `reservation` is then given back).
    pub async fn invoke_reserved(
        &self,
        services: Arc<dyn PluginServices>,
        plugin_id: &str,
        input: Input<'_>,
        reservation: Option<Reservation>,
    ) -> Result<Decision, InvokeError> {
        let Some(plugin) = self.registry.get(plugin_id) else {
            let (message, retryable) = self.registry.not_loaded_reason(plugin_id);
            return Err(InvokeError::new(FailureKind::NotLoaded, message, retryable));
        };
        let reuse = plugin.instances == InstanceMode::Reuse;
        self.run(services, plugin, input, reservation, reuse)
            .await
            .0
    }

    /// The memory an invocation of `plugin_id` for an event of `subscription_id` reserves
    /// from the budget: its memory limit. `None` when it is not loaded, or when it is in
    /// `reuse` mode and an idle instance (which holds its own reservation) waits for the
    /// subscription's events.
    pub fn memory_needed(&self, plugin_id: &str, subscription_id: &str) -> Option<usize> {
        let plugin = self.registry.get(plugin_id)?;
        let idle = plugin.instances == InstanceMode::Reuse
            && self.registry.idle.has(&Key::new(&plugin, subscription_id));
        (!idle).then_some(plugin.limits.memory_bytes)
    }

    /// Runs `plugin` (a registered version, or one loaded apart for a dry run) on one event,
    /// in a fresh instance whatever its mode.
    ///
    /// The plugin runs on the async runtime and yields at every epoch tick, so a busy plugin
    /// shares its thread with other tasks; at the deadline the call is dropped, which stops
    /// the guest wherever it is, in wasm or in a host call. The store outlives the call, so
    /// what the plugin logged before its deadline is kept.
    pub async fn invoke_loaded(
        &self,
        services: Arc<dyn PluginServices>,
        plugin: Arc<LoadedPlugin>,
        input: Input<'_>,
    ) -> Result<Decision, InvokeError> {
        self.invoke_measured(services, plugin, input, None).await.0
    }

    /// [`Self::invoke_loaded`] under `reservation` (see [`Self::invoke_reserved`]), also
    /// telling what the invocation used (`wasmhook plugin run` reports it). The deadline
    /// starts once the memory is reserved.
    pub async fn invoke_measured(
        &self,
        services: Arc<dyn PluginServices>,
        plugin: Arc<LoadedPlugin>,
        input: Input<'_>,
        reservation: Option<Reservation>,
    ) -> (Result<Decision, InvokeError>, Usage) {
        self.run(services, plugin, input, reservation, false).await
    }

    /// One event, on an idle instance of its key when `reuse` allows one, else on a fresh
    /// one; afterwards the instance is kept for the key's next event (`reuse`, and no discard
    /// rule applies) or thrown away.
    async fn run(
        &self,
        services: Arc<dyn PluginServices>,
        plugin: Arc<LoadedPlugin>,
        input: Input<'_>,
        reservation: Option<Reservation>,
        reuse: bool,
    ) -> (Result<Decision, InvokeError>, Usage) {
        let limits = plugin.limits;
        // Everything an event's host calls act on is the event's own, in a kept instance too.
        let depth = input.event.causation.as_ref().map_or(0, |c| c.depth);
        let idle = &self.registry.idle;
        let key = reuse.then(|| Key::new(&plugin, input.subscription_id));
        let mut kept = match key.as_ref().and_then(|k| idle.take(k)) {
            Some(mut kept) => {
                drop(reservation);
                self.metrics.plugin_instances.started(true);
                let state = kept.store.data_mut();
                state
                    .call
                    .restart(services, plugin.clone(), depth, &input.event.id);
                state.limiter.start_event();
                state.http_policy.calls = None;
                kept
            }
            None => {
                let call = CallContext::new(services, plugin.clone(), depth, &input.event.id);
                let reservation = self.memory.cover(reservation, limits.memory_bytes).await;
                self.metrics.plugin_instances.started(false);
                Box::new(self.fresh(&plugin, call, reservation))
            }
        };
        fill_wit(&mut kept.event, input, &plugin.account_id);
        kept.store.epoch_deadline_async_yield_and_update(1);
        let deadline = tokio::time::Instant::now() + limits.deadline;
        let outcome = loop {
            let outcome = tokio::time::timeout_at(deadline, kept.handle(&plugin)).await;
            match outcome {
                // Idle instances hold pool slots: one gives its slot up, and the event starts
                // over in a new store (a failed instantiation may have left parts in this one).
                Ok(Err(e))
                    if kept.instance.is_none()
                        && e.downcast_ref::<PoolConcurrencyLimitError>().is_some()
                        && idle.evict_one(Discard::Pool) =>
                {
                    kept = Box::new(self.restart(*kept, limits.memory_bytes));
                }
                outcome => break outcome,
            }
        };
        let result = match outcome {
            Ok(Ok(Ok(decision))) => decide(decision, limits.replace_bytes),
            Ok(Ok(Err(e))) => Err(InvokeError::new(
                FailureKind::Handler,
                e.message,
                e.retryable,
            )),
            Ok(Err(trap)) => Err(explain(
                &trap,
                kept.store.data().limiter.hit,
                &limits,
                &plugin.stack,
            )),
            Err(_) => Err(deadline_exceeded(&limits)),
        };
        let state = kept.store.data_mut();
        let usage = Usage {
            peak_memory_bytes: state.limiter.peak,
        };
        let memory = state.limiter.current();
        let call = &mut state.call;
        if let Some(calls) = state.http_policy.calls.take() {
            let calls = std::mem::take(&mut *calls.lock().expect("http calls lock"));
            for denial in calls.denials {
                call.logs.push(LogLevel::Warn, denial);
            }
            call.services.http_requests(calls.requests);
        }
        for (capture, stream) in [
            (&kept.stdout, Stream::Stdout),
            (&kept.stderr, Stream::Stderr),
        ] {
            let (bytes, dropped) = capture.take();
            if !bytes.is_empty() {
                let text = String::from_utf8_lossy(&bytes);
                for line in text.lines().filter(|l| !l.trim().is_empty()) {
                    call.logs
                        .push_from(stream, stream.level(), line.to_string());
                }
            }
            call.logs.dropped(stream, dropped);
        }
        if let Err(e) = &result {
            call.logs.push_always(LogLevel::Error, e.message.clone());
        }
        call.services
            .plugin_logs(&plugin.account_id, &plugin.id, call.logs.finish());
        let Some(key) = key else {
            (*kept).give_back(&plugin);
            return (result, usage);
        };
        let failure = result.as_ref().err().map(|e| e.kind);
        let rule = idle.settings().after_event(&mut kept, failure, memory);
        // Someone waits for memory: an idle instance would only stand in the way.
        match rule.or_else(|| self.memory.has_waiters().then_some(Discard::Budget)) {
            None => {
                kept.between_events();
                idle.park(key, kept);
            }
            Some(reason) => {
                idle.discarded(reason);
                (*kept).give_back(&plugin);
            }
        }
        (result, usage)
    }
}

fn deadline_exceeded(limits: &super::limits::Limits) -> InvokeError {
    InvokeError::new(
        FailureKind::Deadline,
        format!(
            "deadline exceeded after {}",
            humantime::format_duration(limits.deadline)
        ),
        true,
    )
}

fn decide(decision: types::Decision, max_bytes: usize) -> Result<Decision, InvokeError> {
    match decision {
        types::Decision::Keep => Ok(Decision::Keep),
        types::Decision::Drop => Ok(Decision::Drop),
        types::Decision::Replace(payload) => {
            if payload.len() > max_bytes {
                return Err(InvokeError::new(
                    FailureKind::Limit,
                    format!(
                        "replace payload of {} bytes exceeds the limit of {max_bytes} bytes",
                        payload.len()
                    ),
                    false,
                ));
            }
            let raw = RawValue::from_string(payload).map_err(|e| {
                InvokeError::new(
                    FailureKind::InvalidOutput,
                    format!("replace payload is not valid JSON: {e}"),
                    false,
                )
            })?;
            if !raw.get().starts_with('{') || json_depth(raw.get()) > MAX_DEPTH {
                return Err(InvokeError::new(
                    FailureKind::InvalidOutput,
                    "replace payload must be a JSON object",
                    false,
                ));
            }
            Ok(Decision::Replace(raw))
        }
    }
}

/// Whether an out-of-bounds trap is an access below address 0: a stack in linear memory that
/// overflowed.
///
/// Guests compiled from Rust, C or Zig keep their call stack (locals whose address is taken,
/// arrays, large structs) in linear memory, below a stack pointer that starts at the top of the
/// stack region and decreases. Rust links wasm with `--stack-first`, so that region is at the
/// bottom of memory, and an overflow takes the stack pointer below 0, where it wraps around to
/// the top of the 32-bit address space. With small frames wasmtime's own stack limit is hit
/// first (`Trap::StackOverflow`); a frame of kilobytes takes the stack pointer past 0 in a few
/// calls, and the access faults as "out of bounds memory access" instead. Wasmtime adds the
/// faulting wasm address to the trap ("memory fault at wasm address 0x... in linear memory of
/// size 0x..."): an address at or above 2 GiB, which no memory under our 512 MiB ceiling
/// reaches, is such a wrapped stack pointer (or a wild pointer: the frames on the trap's
/// backtrace, see `stack::StackMap::overflowed`, tell them apart when they can). A bulk memory
/// instruction (`memory.copy`, `memory.fill`) traps without an address: for those, only the
/// frames can tell.
fn below_address_zero(err: &wasmtime::Error) -> bool {
    fault(err).is_some_and(|(address, _)| address >= 1 << 31)
}

/// The faulting wasm address of an out-of-bounds trap and wasmtime's description of it.
fn fault(err: &wasmtime::Error) -> Option<(u64, String)> {
    const PREFIX: &str = "memory fault at wasm address 0x";
    err.chain().find_map(|cause| {
        let text = cause.to_string();
        let rest = text.strip_prefix(PREFIX)?;
        let hex = rest.split(' ').next().unwrap_or_default();
        let address = u64::from_str_radix(hex, 16).ok()?;
        Some((address, text))
    })
}

/// The causes of `err` without the backtrace wasmtime attaches to it: the frames of a deep
/// stack (wasmtime keeps up to `stack::BACKTRACE_FRAMES` of them) are not a reason to store.
fn without_backtrace(err: &wasmtime::Error) -> String {
    const BACKTRACE: &str = "error while executing at wasm backtrace:";
    let causes: Vec<String> = err
        .chain()
        .map(|cause| cause.to_string())
        .filter(|text| !text.starts_with(BACKTRACE))
        .collect();
    causes.join(": ")
}

/// Turns a trap into the reason recorded on the attempt; `stack` is where the plugin's core
/// modules keep their stacks.
fn explain(
    err: &wasmtime::Error,
    memory_hit: bool,
    limits: &super::limits::Limits,
    stack: &StackMap,
) -> InvokeError {
    if memory_hit {
        return InvokeError::new(
            FailureKind::Limit,
            format!("memory limit {} MiB exceeded", limits.memory_bytes >> 20),
            false,
        );
    }
    match err.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => deadline_exceeded(limits),
        Some(Trap::StackOverflow) => InvokeError::new(FailureKind::Trap, "stack overflow", false),
        // The frames on the backtrace decide when they can; else the faulting address does.
        Some(Trap::MemoryOutOfBounds)
            if stack
                .overflowed(err)
                .unwrap_or_else(|| below_address_zero(err)) =>
        {
            InvokeError::new(FailureKind::Trap, "stack overflow", false)
        }
        Some(Trap::UnreachableCodeReached) => InvokeError::new(
            FailureKind::Trap,
            "plugin trapped: unreachable executed (a panic or abort in the plugin)",
            false,
        ),
        Some(trap) => {
            let at = fault(err).map(|(_, text)| format!(" ({text})"));
            let message = format!("plugin trapped: {trap}{}", at.unwrap_or_default());
            InvokeError::new(FailureKind::Trap, message, false)
        }
        None => InvokeError::new(
            FailureKind::Trap,
            format!("plugin failed: {}", without_backtrace(err)),
            false,
        ),
    }
}

#[cfg(test)]
mod tests {
    use wasmtime::{Engine, Instance, Module};

    use super::*;
    use crate::plugins::limits::{DEFAULTS, Limits};

    /// The error of calling `export` of a one-page module that loads from `address`.
    fn trap_loading(address: i32) -> wasmtime::Error {
        let engine = Engine::default();
        let wat = format!(
            r#"(module (memory 1) (func (export "load") i32.const {address} i32.load drop))"#
        );
        let module = Module::new(&engine, wat).unwrap();
        let mut store = wasmtime::Store::new(&engine, ());
        let instance = Instance::new(&mut store, &module, &[]).unwrap();
        let load = instance
            .get_typed_func::<(), ()>(&mut store, "load")
            .unwrap();
        load.call(&mut store, ()).unwrap_err()
    }

    fn event(id: &str, payload: &str, causation: Option<crate::model::Causation>) -> Event {
        Event {
            seq: 0,
            id: id.into(),
            event_type: "message:created".into(),
            payload: RawValue::from_string(payload.into()).unwrap(),
            occurred_at: "2026-11-28T00:00:00Z".into(),
            received_at: 1_700_000_000_123,
            causation,
        }
    }

    #[test]
    fn a_refilled_wit_event_is_the_new_event_alone() {
        let first = event(
            "evt_long_first_id",
            r#"{"text":"a much longer first payload"}"#,
            Some(crate::model::Causation {
                plugin_id: "plg_1".into(),
                event_id: "evt_0".into(),
                depth: 1,
            }),
        );
        let second = event("evt_2", "{}", None);
        let input = |event| Input {
            event,
            subscription_id: "sub_1",
            attempt: 2,
        };
        let mut wit = to_wit(input(&first), "acc_1");
        assert_eq!(wit.causation.as_ref().map(|c| c.depth), Some(1));
        fill_wit(&mut wit, input(&second), "acc_1");
        let fresh = to_wit(input(&second), "acc_1");
        assert_eq!(format!("{wit:?}"), format!("{fresh:?}"));
        assert_eq!(wit.received_at, "2023-11-14T22:13:20.123Z");
        assert_eq!(wit.payload, "{}");
        assert!(wit.causation.is_none());
    }

    #[test]
    fn a_failure_that_is_not_a_trap_is_recorded_without_the_backtrace() {
        let engine = Engine::default();
        let wat = r#"(module (import "host" "fail" (func $fail))
            (func $deep (param i32) local.get 0 i32.eqz if call $fail else local.get 0
              i32.const 1 i32.sub call $deep end)
            (func (export "run") i32.const 50 call $deep))"#;
        let module = Module::new(&engine, wat).unwrap();
        let mut store = wasmtime::Store::new(&engine, ());
        let fail = wasmtime::Func::wrap(&mut store, || -> wasmtime::Result<()> {
            Err(wasmtime::format_err!("host refused"))
        });
        let instance = Instance::new(&mut store, &module, &[fail.into()]).unwrap();
        let run = instance
            .get_typed_func::<(), ()>(&mut store, "run")
            .unwrap();
        let err = run.call(&mut store, ()).unwrap_err();
        assert!(err.downcast_ref::<wasmtime::WasmBacktrace>().is_some());
        let limits = Limits::resolve(&DEFAULTS);
        let reason = explain(&err, false, &limits, &StackMap::default()).message;
        assert_eq!(reason, "plugin failed: host refused");
    }

    #[test]
    fn an_access_below_address_zero_is_a_stack_overflow() {
        let limits = Limits::resolve(&DEFAULTS);
        // A stack pointer 16 bytes below 0, as a large frame leaves it.
        let under = trap_loading(-16);
        assert_eq!(under.downcast_ref::<Trap>(), Some(&Trap::MemoryOutOfBounds));
        assert!(below_address_zero(&under), "{under:?}");
        let stack = StackMap::default();
        assert_eq!(
            explain(&under, false, &limits, &stack).message,
            "stack overflow"
        );
        // Past the end of memory is something else.
        let over = trap_loading(70_000);
        assert!(!below_address_zero(&over), "{over:?}");
        let reason = explain(&over, false, &limits, &stack).message;
        assert!(
            reason.starts_with("plugin trapped") && reason.contains("out of bounds memory access"),
            "{reason}"
        );
    }
}
