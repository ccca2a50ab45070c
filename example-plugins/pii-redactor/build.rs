//! Links the component with a 64 KiB shadow stack (the part of linear memory Rust uses as its
//! call stack) instead of rustc's default 1 MiB.
//!
//! Initial memory is mostly that stack, and a fresh instance per event costs in proportion to
//! the memory it maps and resets: 2 pages of 64 KiB instead of 17. This plugin can afford it
//! because it never recurses by payload depth (it reads the payload one object level at a time
//! without building a tree; see `src/fields.rs`). Overflowing it would trap cleanly: rustc
//! links wasm with `--stack-first`, so the stack runs below address 0, never into data.

fn main() {
    if std::env::var("CARGO_CFG_TARGET_ARCH").as_deref() == Ok("wasm32") {
        println!("cargo:rustc-link-arg-cdylib=-zstack-size=65536");
    }
}
