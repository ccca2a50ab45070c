//! The wit-bindgen bindings of `wit/plugin.wit` (wasm32 only) and the glue between them and
//! the SDK's own types. Nothing outside this module and `__private` names a generated type, so
//! plugin authors never see them.

use crate::{Causation, Decision, Event, Plugin};

/// Generated code: it contains `unsafe` FFI glue and undocumented items by nature.
#[allow(missing_docs, unsafe_code, clippy::all)]
pub mod raw {
    wit_bindgen::generate!({
        path: "../wit",
        world: "wasmhook:plugin/plugin",
        // The export macro is expanded in plugin crates, which depend on this SDK only.
        pub_export_macro: true,
        export_macro_name: "export",
        default_bindings_module: "wasmhook_plugin_sdk::__private::bindings",
        runtime_path: "wasmhook_plugin_sdk::__private::wit_bindgen::rt",
    });
}

use raw::wasmhook::plugin::types as wit;

/// Runs `P::handle` for one event coming from the host.
pub fn handle<P: Plugin>(event: wit::Event) -> Result<wit::Decision, wit::HandlerError> {
    match P::handle(event.into()) {
        Ok(Decision::Keep) => Ok(wit::Decision::Keep),
        Ok(Decision::Replace(payload)) => Ok(wit::Decision::Replace(payload)),
        Ok(Decision::Drop) => Ok(wit::Decision::Drop),
        Err(e) => Err(wit::HandlerError {
            retryable: e.is_retryable(),
            message: e.into_message(),
        }),
    }
}

impl From<wit::Event> for Event {
    fn from(e: wit::Event) -> Self {
        Event {
            id: e.id,
            event_type: e.event_type,
            occurred_at: e.occurred_at,
            received_at: e.received_at,
            payload: e.payload,
            account_id: e.account_id,
            subscription_id: e.subscription_id,
            attempt: e.attempt,
            causation: e.causation.map(|c| Causation {
                plugin_id: c.plugin_id,
                event_id: c.event_id,
                depth: c.depth,
            }),
        }
    }
}

/// The host functions, in the SDK's types. `crate::host`, `kv`, `config` and `log` call these on
/// wasm32; `crate::testing` provides the same functions natively.
pub(crate) mod imports {
    use super::raw::wasmhook::plugin::{host, kv, types as wit};
    use crate::SendError;
    use crate::kv::KvError;
    use crate::log::Level;

    pub(crate) fn send_message(conversation_id: &str, text: &str) -> Result<String, SendError> {
        host::send_message(conversation_id, text).map_err(|e| match e {
            wit::SendError::UnknownConversation => SendError::UnknownConversation,
            wit::SendError::LimitExceeded(n) => SendError::LimitExceeded(n),
            wit::SendError::Invalid(s) => SendError::Invalid(s),
            wit::SendError::Unavailable(s) => SendError::Unavailable(s),
        })
    }

    pub(crate) fn log(level: Level, message: &str) {
        let level = match level {
            Level::Trace => wit::LogLevel::Trace,
            Level::Debug => wit::LogLevel::Debug,
            Level::Info => wit::LogLevel::Info,
            Level::Warn => wit::LogLevel::Warn,
            Level::Error => wit::LogLevel::Error,
        };
        host::log(level, message);
    }

    /// Asked once per instance, which is once per event: the level cannot change within one.
    pub(crate) fn min_log_level() -> Level {
        static LEVEL: std::sync::OnceLock<Level> = std::sync::OnceLock::new();
        *LEVEL.get_or_init(|| match host::min_log_level() {
            wit::LogLevel::Trace => Level::Trace,
            wit::LogLevel::Debug => Level::Debug,
            wit::LogLevel::Info => Level::Info,
            wit::LogLevel::Warn => Level::Warn,
            wit::LogLevel::Error => Level::Error,
        })
    }

    pub(crate) fn config_get(key: &str) -> Option<String> {
        host::config_get(key)
    }

    fn kv_error(e: wit::KvError) -> KvError {
        match e {
            wit::KvError::ValueTooLarge(n) => KvError::ValueTooLarge(n),
            wit::KvError::InvalidKey => KvError::InvalidKey,
            wit::KvError::TooManyKeys(n) => KvError::TooManyKeys(n),
            wit::KvError::Unavailable(s) => KvError::Unavailable(s),
        }
    }

    pub(crate) fn kv_get(key: &str) -> Result<Option<Vec<u8>>, KvError> {
        kv::get(key).map_err(kv_error)
    }

    pub(crate) fn kv_set(key: &str, value: &[u8]) -> Result<(), KvError> {
        kv::set(key, value).map_err(kv_error)
    }

    pub(crate) fn kv_delete(key: &str) -> Result<(), KvError> {
        kv::delete(key).map_err(kv_error)
    }

    pub(crate) fn kv_increment(key: &str, delta: i64) -> Result<i64, KvError> {
        kv::increment(key, delta).map_err(|e| match e {
            wit::IncrementError::Kv(e) => kv_error(e),
            wit::IncrementError::NotANumber => KvError::NotANumber,
            wit::IncrementError::Overflow => KvError::Overflow,
        })
    }

    pub(crate) fn kv_set_if(
        key: &str,
        expected: Option<&[u8]>,
        value: &[u8],
    ) -> Result<bool, KvError> {
        kv::set_if(key, expected, value).map_err(kv_error)
    }
}
