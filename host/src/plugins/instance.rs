//! One instance with its store, for one event or (reuse mode) for many: making it, calling
//! its handler (instantiating it first if it is new), readying it to wait for the next event,
//! and throwing it away.

use std::sync::{Arc, LazyLock};
use std::time::Instant;

use wasmtime::Store;
use wasmtime_wasi_http::WasiHttpCtx;

use super::budget::Reservation;
use super::capture::Capture;
use super::context::Context;
use super::host::{CallContext, HostState, outgoing_timeout};
use super::invoke::empty_event;
use super::limits::MemoryLimiter;
use super::outgoing::HttpPolicy;
use super::registry::LoadedPlugin;
use super::services::{BetweenEvents, PluginServices};
use super::{PluginRuntime, PluginWorld, bindings::types};

/// An instance with its store, during an event or kept between events.
pub struct Kept {
    /// The store: its data is reset for every event (see `super::invoke`).
    pub store: Store<HostState>,
    /// The instance, once instantiated.
    pub instance: Option<PluginWorld>,
    /// Its WASI stdout and stderr, taken after every event.
    pub stdout: Capture,
    /// See `stdout`.
    pub stderr: Capture,
    /// Its memory reservation in the budget.
    pub reservation: Reservation,
    /// Events it served.
    pub events: u32,
    /// When it was made.
    pub born: Instant,
    /// Its linear memory after its first event, in bytes.
    pub baseline: Option<usize>,
    /// The event being handled, as the WIT types carry it; refilled for each event (see
    /// `super::invoke::fill_wit`), emptied between events.
    pub event: types::Event,
}

/// The services of every instance kept idle (see [`BetweenEvents`]).
static BETWEEN_EVENTS: LazyLock<Arc<dyn PluginServices>> =
    LazyLock::new(|| Arc::new(BetweenEvents));

impl PluginRuntime {
    /// A new store for `plugin` under `reservation`; instantiated by the first [`Kept::handle`].
    pub(super) fn fresh(
        &self,
        plugin: &LoadedPlugin,
        call: CallContext,
        reservation: Reservation,
    ) -> Kept {
        let context = plugin.contexts.take();
        let state = HostState {
            wasi: context.wasi,
            http: WasiHttpCtx::new(),
            http_policy: HttpPolicy {
                allowed_hosts: plugin.allowed_hosts.clone(),
                net: self.net_policy.clone(),
                timeout: outgoing_timeout(&plugin.limits),
                calls: None,
            },
            table: Default::default(),
            limiter: MemoryLimiter::new(plugin.limits.memory_bytes),
            call,
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limiter);
        Kept {
            store,
            instance: None,
            stdout: context.stdout,
            stderr: context.stderr,
            reservation,
            events: 0,
            born: Instant::now(),
            baseline: None,
            event: empty_event(),
        }
    }

    /// `kept`'s data in a new store, as before its instantiation.
    pub(super) fn restart(&self, kept: Kept, memory_bytes: usize) -> Kept {
        let Kept {
            store,
            stdout,
            stderr,
            reservation,
            event,
            ..
        } = kept;
        let mut state = store.into_data();
        state.limiter = MemoryLimiter::new(memory_bytes);
        state.table = Default::default();
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limiter);
        store.epoch_deadline_async_yield_and_update(1);
        Kept {
            store,
            instance: None,
            stdout,
            stderr,
            reservation,
            events: 0,
            born: Instant::now(),
            baseline: None,
            event,
        }
    }
}

impl Kept {
    /// Instantiates the instance if it is new, and calls its handler on [`Kept::event`].
    pub async fn handle(
        &mut self,
        plugin: &LoadedPlugin,
    ) -> wasmtime::Result<Result<types::Decision, types::HandlerError>> {
        if self.instance.is_none() {
            self.instance = Some(plugin.pre.instantiate_async(&mut self.store).await?);
        }
        let instance = self.instance.as_ref().expect("instantiated above");
        instance
            .wasmhook_plugin_handler()
            .call_handle(&mut self.store, &self.event)
            .await
    }

    /// Readies the instance to wait for its next event: it lets go of the services its event
    /// ran with (the server's hold the runtime, which holds idle instances).
    pub fn between_events(&mut self) {
        self.store.data_mut().call.services = BETWEEN_EVENTS.clone();
        let e = &mut self.event;
        for text in [
            &mut e.id,
            &mut e.event_type,
            &mut e.occurred_at,
            &mut e.received_at,
            &mut e.payload,
            &mut e.account_id,
            &mut e.subscription_id,
        ] {
            text.clear();
        }
        e.causation = None;
    }

    /// Drops the instance and gives its WASI context (which holds no guest state) back to the
    /// plugin's pool.
    pub fn give_back(self, plugin: &LoadedPlugin) {
        let Kept {
            store,
            stdout,
            stderr,
            ..
        } = self;
        let state = store.into_data();
        plugin.contexts.give_back(Context {
            wasi: state.wasi,
            stdout,
            stderr,
        });
    }
}
