//! The one `bindgen!` of the host: Rust types and traits for the WIT world in `wit/`.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "plugin",
});

pub use exports::wasmhook::plugin::handler;
pub use wasmhook::plugin::{host, kv, types};
