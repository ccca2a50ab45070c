//! What a plugin instance sees of the host: the per-invocation store data and the host
//! functions of the WIT (`send-message`, `log`, `config-get`, the key-value store with its
//! atomic `increment` and `set-if`), plus WASI
//! and an outgoing `wasi:http` that only reaches the plugin's allowed hosts.
//!
//! The limits are checked here; what leaves the sandbox goes through [`PluginServices`], never
//! to the server's state directly.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use super::bindings::types::{IncrementError, KvError, LogLevel, SendError};
use super::bindings::{host, kv, types};
use super::limits::{Limits, MemoryLimiter};
use super::outgoing::HttpPolicy;
use super::registry::LoadedPlugin;
use super::services::{
    HttpRequest, KvLimits, KvRefusal, Outgoing, PluginServices, SendRefusal, Unavailable,
};
use crate::clock::now_ms;
use crate::events::caused_by;
use crate::model::{LogLevel as ModelLevel, PluginLogLine};

const MAX_KEY_BYTES: usize = 512;

/// Where a log line came from: each keeps its own count of what the budget dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// The `log` host call.
    Log,
    /// WASI stdout.
    Stdout,
    /// WASI stderr.
    Stderr,
}

impl Stream {
    const ALL: [Stream; 3] = [Stream::Log, Stream::Stdout, Stream::Stderr];

    /// The level the stream's lines (and its drop marker) are kept at.
    pub fn level(self) -> ModelLevel {
        match self {
            Stream::Log | Stream::Stderr => ModelLevel::Warn,
            Stream::Stdout => ModelLevel::Info,
        }
    }
}

/// The longest drop marker: "[N more bytes of output dropped]" with N at 20 digits.
const MARKER_ROOM: usize = "[ more bytes of output dropped]".len() + 20;

/// The drop marker of a stream that lost `bytes`.
fn marker(bytes: usize) -> String {
    format!("[{bytes} more bytes of output dropped]")
}

/// An invocation's log lines, within its byte budget.
///
/// Room for one drop marker per stream is set aside from the budget, so that a marker is
/// always written whole: lines get the rest, and what does not fit is counted per stream and
/// reported by [`LogBuffer::finish`] as "[N more bytes of output dropped]".
pub struct LogBuffer {
    event_id: String,
    min_level: ModelLevel,
    /// Bytes for lines: the budget less the markers' room.
    room: usize,
    used: usize,
    dropped: [usize; 3],
    /// The lines so far.
    pub lines: Vec<PluginLogLine>,
}

impl LogBuffer {
    /// An empty buffer for one invocation.
    pub fn new(event_id: String, budget: usize, min_level: ModelLevel) -> LogBuffer {
        LogBuffer {
            event_id,
            min_level,
            room: budget.saturating_sub(Stream::ALL.len() * MARKER_ROOM),
            used: 0,
            dropped: [0; 3],
            lines: Vec::new(),
        }
    }

    /// Empties the buffer for another invocation (of an instance kept between events),
    /// keeping its allocations.
    pub fn restart(&mut self, event_id: &str, budget: usize, min_level: ModelLevel) {
        self.event_id.clear();
        self.event_id.push_str(event_id);
        self.min_level = min_level;
        self.room = budget.saturating_sub(Stream::ALL.len() * MARKER_ROOM);
        self.used = 0;
        self.dropped = [0; 3];
        self.lines.clear();
    }

    /// The event being handled.
    pub fn event_id(&self) -> &str {
        &self.event_id
    }

    /// Adds a line of the `log` host call; past the budget, lines are cut and then dropped.
    pub fn push(&mut self, level: ModelLevel, message: String) {
        self.push_from(Stream::Log, level, message);
    }

    /// Adds a line from `stream`; past the budget, lines are cut and then dropped, and what
    /// was lost is counted for the stream's marker. Lines below the log level are not kept
    /// and not counted: the plugin's `log_level` asked for that.
    pub fn push_from(&mut self, stream: Stream, level: ModelLevel, mut message: String) {
        if level < self.min_level {
            return;
        }
        let left = self.room - self.used;
        if message.len() > left {
            let mut cut = left;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            self.dropped[stream as usize] += message.len() - cut;
            message.truncate(cut);
            if message.is_empty() {
                return;
            }
        }
        self.used += message.len();
        self.push_always(level, message);
    }

    /// Counts `bytes` of `stream` lost before they reached the buffer (a full capture).
    pub fn dropped(&mut self, stream: Stream, bytes: usize) {
        if stream.level() >= self.min_level {
            self.dropped[stream as usize] += bytes;
        }
    }

    /// Adds a line whatever the budget (failures are always recorded).
    pub fn push_always(&mut self, level: ModelLevel, message: String) {
        self.lines.push(PluginLogLine {
            at: now_ms(),
            level: level.as_str().to_string(),
            event_id: Some(self.event_id.clone()),
            message,
        });
    }

    /// Takes the lines, each stream that lost output ending with its marker, whole (its room
    /// was set aside); the buffer is left empty, its budget used up.
    pub fn finish(&mut self) -> Vec<PluginLogLine> {
        for stream in Stream::ALL {
            let bytes = std::mem::take(&mut self.dropped[stream as usize]);
            if bytes > 0 {
                self.push_always(stream.level(), marker(bytes));
            }
        }
        self.used = self.room;
        std::mem::take(&mut self.lines)
    }
}

/// Everything one invocation's host calls need.
pub struct CallContext {
    pub(crate) services: Arc<dyn PluginServices>,
    pub(crate) plugin: Arc<LoadedPlugin>,
    pub(crate) limits: Limits,
    pub(crate) depth: u32,
    pub(crate) sends: u32,
    /// The invocation's log lines; it also knows the event.
    pub(crate) logs: LogBuffer,
}

impl CallContext {
    /// The context of one event of `plugin` (`depth`: plugin hops before it).
    pub(crate) fn new(
        services: Arc<dyn PluginServices>,
        plugin: Arc<LoadedPlugin>,
        depth: u32,
        event_id: &str,
    ) -> CallContext {
        let limits = plugin.limits;
        CallContext {
            logs: LogBuffer::new(event_id.to_string(), limits.log_bytes, plugin.log_level),
            services,
            plugin,
            limits,
            depth,
            sends: 0,
        }
    }

    /// Makes this (an instance's context from its previous event) the context of a new event,
    /// as [`CallContext::new`] would, keeping the log buffer's allocations: nothing of the
    /// previous event stays.
    pub(crate) fn restart(
        &mut self,
        services: Arc<dyn PluginServices>,
        plugin: Arc<LoadedPlugin>,
        depth: u32,
        event_id: &str,
    ) {
        let limits = plugin.limits;
        self.logs
            .restart(event_id, limits.log_bytes, plugin.log_level);
        self.services = services;
        self.plugin = plugin;
        self.limits = limits;
        self.depth = depth;
        self.sends = 0;
    }
}

/// The data of one plugin store.
pub struct HostState {
    pub(crate) wasi: WasiCtx,
    pub(crate) http: WasiHttpCtx,
    pub(crate) http_policy: HttpPolicy,
    pub(crate) table: ResourceTable,
    pub(crate) limiter: MemoryLimiter,
    pub(crate) call: CallContext,
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for HostState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.http_policy,
        }
    }
}

impl types::Host for HostState {}

impl host::Host for HostState {
    async fn send_message(
        &mut self,
        conversation_id: String,
        text: String,
    ) -> Result<String, SendError> {
        let c = &mut self.call;
        if c.sends >= c.limits.send_messages {
            let limit = c.limits.send_messages;
            c.logs.push(
                ModelLevel::Warn,
                format!("send-message refused: the limit of {limit} per event is reached"),
            );
            return Err(SendError::LimitExceeded(limit));
        }
        c.sends += 1;
        let message = Outgoing {
            account_id: c.plugin.account_id.clone(),
            conversation_id,
            text,
            causation: caused_by(&c.plugin.id, c.logs.event_id(), c.depth),
        };
        match c.services.send_message(message).await {
            Ok(id) => Ok(id),
            Err(SendRefusal::UnknownConversation) => Err(SendError::UnknownConversation),
            Err(SendRefusal::Invalid(m)) => Err(SendError::Invalid(m)),
            Err(SendRefusal::Unavailable(e)) => Err(SendError::Unavailable(e.0)),
        }
    }

    fn log(&mut self, level: LogLevel, message: String) {
        let level = match level {
            LogLevel::Trace => ModelLevel::Trace,
            LogLevel::Debug => ModelLevel::Debug,
            LogLevel::Info => ModelLevel::Info,
            LogLevel::Warn => ModelLevel::Warn,
            LogLevel::Error => ModelLevel::Error,
        };
        self.call.logs.push(level, message);
    }

    fn min_log_level(&mut self) -> LogLevel {
        match self.call.plugin.log_level {
            ModelLevel::Trace => LogLevel::Trace,
            ModelLevel::Debug => LogLevel::Debug,
            ModelLevel::Info => LogLevel::Info,
            ModelLevel::Warn => LogLevel::Warn,
            ModelLevel::Error => LogLevel::Error,
        }
    }

    fn config_get(&mut self, key: String) -> Option<String> {
        self.call.plugin.config.get(&key).cloned()
    }
}

fn check_key(key: &str) -> Result<(), KvError> {
    if key.is_empty() || key.len() > MAX_KEY_BYTES {
        Err(KvError::InvalidKey)
    } else {
        Ok(())
    }
}

fn kv_limits(limits: &Limits) -> KvLimits {
    KvLimits {
        value_bytes: limits.kv_value_bytes,
        keys: limits.kv_keys,
    }
}

fn unavailable(e: Unavailable) -> KvError {
    KvError::Unavailable(e.0)
}

fn kv_refusal(refusal: KvRefusal) -> KvError {
    match refusal {
        KvRefusal::TooManyKeys(n) => KvError::TooManyKeys(n),
        KvRefusal::ValueTooLarge(n) => KvError::ValueTooLarge(n as u64),
        // Only `increment` is refused for these, and it reports them in its own error type.
        KvRefusal::NotANumber | KvRefusal::Overflow => {
            KvError::Unavailable(format!("unexpected refusal {refusal:?}"))
        }
    }
}

impl kv::Host for HostState {
    async fn get(&mut self, key: String) -> Result<Option<Vec<u8>>, KvError> {
        check_key(&key)?;
        let c = &self.call;
        c.services
            .kv_get(&c.plugin.id, &key)
            .await
            .map_err(unavailable)
    }

    async fn set(&mut self, key: String, value: Vec<u8>) -> Result<(), KvError> {
        check_key(&key)?;
        let c = &self.call;
        if value.len() > c.limits.kv_value_bytes {
            return Err(KvError::ValueTooLarge(c.limits.kv_value_bytes as u64));
        }
        match c
            .services
            .kv_set(&c.plugin.id, &key, value, kv_limits(&c.limits))
            .await
        {
            Ok(Ok(())) => Ok(()),
            Ok(Err(refusal)) => Err(kv_refusal(refusal)),
            Err(e) => Err(unavailable(e)),
        }
    }

    async fn delete(&mut self, key: String) -> Result<(), KvError> {
        check_key(&key)?;
        let c = &self.call;
        c.services
            .kv_delete(&c.plugin.id, &key)
            .await
            .map_err(unavailable)
    }

    async fn increment(&mut self, key: String, delta: i64) -> Result<i64, IncrementError> {
        check_key(&key).map_err(IncrementError::Kv)?;
        let c = &self.call;
        match c
            .services
            .kv_increment(&c.plugin.id, &key, delta, kv_limits(&c.limits))
            .await
        {
            Ok(Ok(n)) => Ok(n),
            Ok(Err(KvRefusal::NotANumber)) => Err(IncrementError::NotANumber),
            Ok(Err(KvRefusal::Overflow)) => Err(IncrementError::Overflow),
            Ok(Err(refusal)) => Err(IncrementError::Kv(kv_refusal(refusal))),
            Err(e) => Err(IncrementError::Kv(unavailable(e))),
        }
    }

    async fn set_if(
        &mut self,
        key: String,
        expected: Option<Vec<u8>>,
        value: Vec<u8>,
    ) -> Result<bool, KvError> {
        check_key(&key)?;
        let c = &self.call;
        if value.len() > c.limits.kv_value_bytes {
            return Err(KvError::ValueTooLarge(c.limits.kv_value_bytes as u64));
        }
        match c
            .services
            .kv_set_if(&c.plugin.id, &key, expected, value, kv_limits(&c.limits))
            .await
        {
            Ok(Ok(stored)) => Ok(stored),
            Ok(Err(refusal)) => Err(kv_refusal(refusal)),
            Err(e) => Err(unavailable(e)),
        }
    }
}

/// What this invocation's outgoing HTTP requests came to: every request, and the refusals
/// worded for the log.
#[derive(Default)]
pub struct HttpCalls {
    /// Refused requests, as log lines.
    pub denials: Vec<String>,
    /// Every request, refused or not.
    pub requests: Vec<HttpRequest>,
}

/// Shared with the `wasi:http` hooks; created by the first request (most plugins make none).
pub type HttpLog = Arc<Mutex<HttpCalls>>;

/// Timeouts of outgoing requests: never longer than the invocation may run.
pub fn outgoing_timeout(limits: &Limits) -> Duration {
    limits.deadline.max(Duration::from_millis(100))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn messages(lines: &[PluginLogLine]) -> Vec<&str> {
        lines.iter().map(|l| l.message.as_str()).collect()
    }

    #[test]
    fn lines_past_the_budget_are_cut_counted_and_marked_whole() {
        let budget = 3 * MARKER_ROOM + 10;
        let mut logs = LogBuffer::new("evt".into(), budget, ModelLevel::Info);
        logs.push(ModelLevel::Info, "0123456".into());
        logs.push(ModelLevel::Info, "789abcdef".into());
        logs.push(ModelLevel::Info, "gone".into());
        logs.push_from(Stream::Stdout, ModelLevel::Info, "out".into());
        logs.dropped(Stream::Stdout, 10_420_224);
        logs.dropped(Stream::Stderr, 5);
        logs.push_always(ModelLevel::Error, "the failure".into());
        let lines = logs.finish();
        assert_eq!(
            messages(&lines),
            [
                "0123456",
                "789",
                "the failure",
                "[10 more bytes of output dropped]",
                "[10420227 more bytes of output dropped]",
                "[5 more bytes of output dropped]",
            ]
        );
        let kept: usize =
            lines.iter().map(|l| l.message.len()).sum::<usize>() - "the failure".len();
        assert!(kept <= budget, "{kept} > {budget}");
    }

    #[test]
    fn a_budget_smaller_than_the_markers_still_writes_them_whole() {
        let mut logs = LogBuffer::new("evt".into(), 16, ModelLevel::Info);
        logs.push(ModelLevel::Info, "é".repeat(10));
        logs.dropped(Stream::Stdout, u32::MAX as usize);
        assert_eq!(
            messages(&logs.finish()),
            [
                "[20 more bytes of output dropped]",
                "[4294967295 more bytes of output dropped]"
            ]
        );
        assert!(marker(usize::MAX).len() <= MARKER_ROOM);
    }

    #[test]
    fn a_restarted_buffer_keeps_nothing_of_the_previous_invocation() {
        let mut logs = LogBuffer::new("evt_1".into(), 3 * MARKER_ROOM + 4, ModelLevel::Info);
        logs.push(ModelLevel::Info, "first event".into());
        logs.dropped(Stream::Stderr, 7);
        assert_eq!(logs.finish().len(), 3);
        logs.restart("evt_2", 3 * MARKER_ROOM + 8, ModelLevel::Warn);
        logs.push(ModelLevel::Info, "below the new level".into());
        logs.push(ModelLevel::Warn, "second".into());
        let lines = logs.finish();
        assert_eq!(
            messages(&lines),
            ["second"],
            "a fresh budget, no old marker"
        );
        assert_eq!(lines[0].event_id.as_deref(), Some("evt_2"));
    }

    #[test]
    fn lines_below_the_level_are_neither_kept_nor_counted() {
        let mut logs = LogBuffer::new("evt".into(), 0, ModelLevel::Warn);
        logs.push(ModelLevel::Debug, "quiet".into());
        logs.dropped(Stream::Stdout, 100);
        assert!(logs.finish().is_empty());
    }
}
