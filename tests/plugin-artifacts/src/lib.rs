//! Paths of the workspace's plugins compiled to WebAssembly components, for tests.
//!
//! Depending on this crate builds every example and fixture plugin for `wasm32-wasip2`
//! (see `build.rs`); each constant is the absolute path of one `.wasm` component:
//!
//! ```
//! let component = std::fs::read(wasmhook_plugin_artifacts::NOOP).unwrap();
//! assert_eq!(&component[..4], b"\0asm");
//! ```
//!
//! The build needs the target: `rustup target add wasm32-wasip2`.

include!(concat!(env!("OUT_DIR"), "/artifacts.rs"));
