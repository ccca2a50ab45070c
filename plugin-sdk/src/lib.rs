//! Write [wasmhook](https://github.com/) plugins in Rust.
//!
//! A plugin is a WebAssembly component that wasmhook calls once per event, each time in a
//! fresh instance (or, for a plugin set to `"instances": "reuse"`, possibly in one that handled
//! earlier events of the same subscription). With this crate a plugin is one type implementing [`Plugin`] and one
//! [`export_plugin!`] line; the WIT bindings (`wit/plugin.wit`, world `plugin`) stay hidden.
//!
//! ```
//! use wasmhook_plugin_sdk::{export_plugin, Decision, Event, HandlerError, Plugin};
//!
//! /// Answers every customer message with a fixed text.
//! struct Echo;
//!
//! impl Plugin for Echo {
//!     fn handle(event: Event) -> Result<Decision, HandlerError> {
//!         let Some(message) = event.message_created()? else {
//!             return Ok(Decision::Keep);
//!         };
//!         if message.is_from_contact() && !event.is_caused_by_plugin() {
//!             if let Some(conversation) = &message.conversation_id {
//!                 let text = wasmhook_plugin_sdk::config::get_or("reply", "Thanks!".to_string())?;
//!                 wasmhook_plugin_sdk::send_message(conversation, &text)?;
//!                 wasmhook_plugin_sdk::info!("replied in {conversation}");
//!             }
//!         }
//!         Ok(Decision::Keep)
//!     }
//! }
//!
//! export_plugin!(Echo);
//!
//! // Natively, host calls go to an in-memory host, so `handle` can be unit-tested:
//! use wasmhook_plugin_sdk::testing;
//! let event = Event::new(
//!     "message:created",
//!     serde_json::json!({"conversation_id": "c1", "text": "hi", "sender": {"id": "u1", "type": "source_contact"}}),
//! );
//! assert_eq!(Echo::handle(event).unwrap(), Decision::Keep);
//! assert_eq!(testing::sent_messages()[0].text, "Thanks!");
//! ```
//!
//! Build a plugin with `cargo build --release --target wasm32-wasip2`; the `.cdylib` it
//! produces is the component to upload.
//!
//! # What lives where
//! - [`Plugin`], [`export_plugin!`]: the entry point.
//! - [`Event`], [`MessageCreated`]: what the host hands in, with typed payload accessors.
//! - [`Decision`], [`HandlerError`]: what the plugin hands back.
//! - [`send_message`], [`kv`], [`config`], [`log`]: calls into the host.
//! - [`arena`]: an optional allocator that makes a fresh instance per event cheaper.
//! - `testing` (native builds only): the in-memory host behind those calls in unit tests.
#![deny(missing_docs)]

// Lets the generated bindings name this crate as plugin crates do (`wasmhook_plugin_sdk::…`),
// which the export macro they expand into plugin crates needs.
#[cfg(target_arch = "wasm32")]
extern crate self as wasmhook_plugin_sdk;

mod decision;
mod event;
mod host;
mod message;

pub mod arena;
pub mod config;
pub mod kv;
pub mod log;

#[cfg(target_arch = "wasm32")]
mod bindings;
#[cfg(not(target_arch = "wasm32"))]
pub mod testing;

// Where host calls go: the component's imports, or the in-memory host of native unit tests.
#[cfg(target_arch = "wasm32")]
use bindings::imports as backend;
#[cfg(not(target_arch = "wasm32"))]
use testing::imports as backend;

pub use decision::{Decision, HandlerError};
pub use event::{Causation, Event, PayloadError};
pub use host::{SendError, send_message};
pub use message::{MessageCreated, Sender};

/// A wasmhook plugin: handles one event at a time.
///
/// wasmhook instantiates the plugin afresh for every event, so `handle` takes no `self`:
/// nothing kept in memory survives to the next event. A plugin set to `"instances": "reuse"`
/// may find its statics as an earlier event of the same subscription left them (a cache, say),
/// but any event may be the first of a fresh instance. Keep state in [`kv`].
pub trait Plugin {
    /// Handles one event.
    ///
    /// A transform plugin's [`Decision`] decides what is delivered; a subscriber plugin usually
    /// reacts (for example with [`send_message`]) and returns [`Decision::Keep`]. An `Err` is
    /// recorded on the delivery and retried if [`HandlerError::is_retryable`].
    fn handle(event: Event) -> Result<Decision, HandlerError>;
}

/// Exports a [`Plugin`] implementation as the component's `handler` interface.
///
/// Write it once per plugin crate, at module level: `export_plugin!(MyPlugin);`. On native
/// targets it only checks that the type implements [`Plugin`], so the crate still builds
/// and unit-tests natively.
#[macro_export]
macro_rules! export_plugin {
    ($plugin:ty) => {
        #[cfg(target_arch = "wasm32")]
        // The generated export glue is `unsafe extern "C"` code by nature.
        #[allow(unsafe_code)]
        const _: () = {
            struct __WasmhookPluginExport;
            impl $crate::__private::Guest for __WasmhookPluginExport {
                fn handle(
                    event: $crate::__private::WitEvent,
                ) -> ::core::result::Result<$crate::__private::WitDecision, $crate::__private::WitHandlerError> {
                    $crate::__private::handle::<$plugin>(event)
                }
            }
            $crate::__private::bindings::export!(__WasmhookPluginExport with_types_in $crate::__private::bindings);
        };

        #[cfg(not(target_arch = "wasm32"))]
        const _: fn() = || {
            fn is_plugin<P: $crate::Plugin>() {}
            is_plugin::<$plugin>();
        };
    };
}

/// Used by [`export_plugin!`]; not part of the public API.
#[doc(hidden)]
#[cfg(target_arch = "wasm32")]
pub mod __private {
    pub use crate::bindings::handle;
    pub use crate::bindings::raw as bindings;
    pub use crate::bindings::raw::exports::wasmhook::plugin::handler::Guest;
    pub use crate::bindings::raw::wasmhook::plugin::types::{
        Decision as WitDecision, Event as WitEvent, HandlerError as WitHandlerError,
    };
    pub use wit_bindgen;
}
