//! The one `bindgen!` of the host: Rust types and traits for the WIT world in `wit/`.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "plugin",
});

pub use self::exports::wasmhook::plugin::handler;
// `self::`: the generated module `wasmhook` would otherwise be ambiguous with this crate
// (doctests see both).
pub use self::wasmhook::plugin::{host, kv, types};
