//! The one `bindgen!` of the host: Rust types and traits for the WIT world in `wit/`.

// Exports are async: a plugin runs on the async runtime and yields at every epoch tick. Imports
// that touch the database are async and await it instead of blocking a thread; the others
// (`log`, `config-get`) are plain calls, several times cheaper than an async host call.
wasmtime::component::bindgen!({
    path: "../wit",
    world: "plugin",
    imports: {
        "wasmhook:plugin/host.send-message": async,
        "wasmhook:plugin/kv": async,
    },
    exports: { default: async },
});

pub use self::exports::wasmhook::plugin::handler;
// `self::`: the generated module `wasmhook` would otherwise be ambiguous with this crate
// (doctests see both).
pub use self::wasmhook::plugin::{host, kv, types};
