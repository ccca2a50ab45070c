//! The one `bindgen!` of the host: Rust types and traits for the WIT world in `wit/`.

// Async on both sides: a plugin runs on the async runtime and yields at every epoch tick, and
// host calls that touch the database await it instead of blocking a thread.
wasmtime::component::bindgen!({
    path: "../wit",
    world: "plugin",
    imports: { default: async },
    exports: { default: async },
});

pub use self::exports::wasmhook::plugin::handler;
// `self::`: the generated module `wasmhook` would otherwise be ambiguous with this crate
// (doctests see both).
pub use self::wasmhook::plugin::{host, kv, types};
