//! Compiles every plugin of the workspace to a WebAssembly component and writes their paths
//! into `$OUT_DIR/artifacts.rs` (see `src/lib.rs`).
//!
//! Follows wasmtime's `test-programs-artifacts`: a nested `cargo build` for `wasm32-wasip2`,
//! with its target directory inside `OUT_DIR` so that it never waits for the lock of the outer
//! build's target directory. Environment that configures the *outer* build for the host
//! (rustflags, target, target dir) is removed so it cannot leak into the guest build. The
//! jobserver (`CARGO_MAKEFLAGS`) is inherited on purpose: the nested build then shares the
//! outer build's job slots instead of oversubscribing the CPU.

use std::env;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

const TARGET: &str = "wasm32-wasip2";

/// (constant name, package, directory relative to the workspace root).
const PLUGINS: &[(&str, &str, &str)] = &[
    ("AUTO_REPLY", "auto-reply", "example-plugins/auto-reply"),
    (
        "PII_REDACTOR",
        "pii-redactor",
        "example-plugins/pii-redactor",
    ),
    ("ROUTER", "router", "example-plugins/router"),
    (
        "FIRST_CONTACT_GREETER",
        "first-contact-greeter",
        "example-plugins/first-contact-greeter",
    ),
    ("NOOP", "noop", "tests/fixture-plugins/noop"),
    ("HOSTILE", "hostile", "tests/fixture-plugins/hostile"),
    ("OLD_WIT", "old-wit", "tests/fixture-plugins/old-wit"),
];

/// Size of the guests' shadow stack (the part of linear memory Rust uses as its call stack),
/// instead of rustc's default 1 MiB. Initial memory is mostly this stack, so a smaller one makes
/// each fresh instance cheaper (17 pages down to 5, measured in BENCHMARKS.md's plugin invocation notes).
/// It is safe because rustc links wasm with `--stack-first`: overflowing the stack runs below
/// address 0 and traps cleanly (the `stack-overflow` fixture shows it) instead of corrupting
/// data. Measured need: pii-redactor parsing a payload at serde_json's nesting limit (128) fits
/// in 64 KiB but not in 32 KiB, so 256 KiB leaves a 4x margin. A plugin may link its own size
/// from its `build.rs` (pii-redactor: 64 KiB), which takes precedence over this one.
const STACK_SIZE: u32 = 256 * 1024;

/// Environment variables that configure the outer build and must not reach the nested one.
const OUTER_ENV: &[&str] = &[
    "RUSTFLAGS",
    "CARGO_ENCODED_RUSTFLAGS",
    "CARGO_BUILD_RUSTFLAGS",
    "CARGO_TARGET_DIR",
    "CARGO_BUILD_TARGET_DIR",
    "CARGO_BUILD_BUILD_DIR",
    "CARGO_BUILD_TARGET",
    "RUSTDOCFLAGS",
    "CARGO_ENCODED_RUSTDOCFLAGS",
    "CARGO_LLVM_COV",
    "CARGO_LLVM_COV_TARGET_DIR",
    "LLVM_PROFILE_FILE",
    // `cargo clippy` runs through these; the nested build only produces artifacts (clippy
    // checks the plugin crates natively as workspace members anyway).
    "RUSTC_WORKSPACE_WRAPPER",
    "CLIPPY_ARGS",
    "CLIPPY_CONF_DIR",
];

fn main() {
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR is set by cargo"));
    let manifest_dir = PathBuf::from(
        env::var_os("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR is set by cargo"),
    );
    let workspace = manifest_dir
        .join("../..")
        .canonicalize()
        .expect("the workspace root exists");

    for path in ["plugin-sdk", "wit", "Cargo.toml", "Cargo.lock"] {
        rerun_if_changed(&workspace.join(path));
    }
    for (_, _, dir) in PLUGINS {
        rerun_if_changed(&workspace.join(dir));
    }
    for var in ["RUSTC", "CARGO", "CARGO_HOME", "RUSTUP_TOOLCHAIN"] {
        println!("cargo:rerun-if-env-changed={var}");
    }

    check_target_installed();

    let target_dir = out_dir.join("target");
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&workspace)
        .args(["build", "--release", "--target", TARGET])
        .arg("--target-dir")
        .arg(&target_dir);
    for (_, package, _) in PLUGINS {
        cmd.args(["-p", package]);
    }
    for var in OUTER_ENV {
        cmd.env_remove(var);
    }
    cmd.env(
        format!(
            "CARGO_TARGET_{}_RUSTFLAGS",
            TARGET.to_uppercase().replace('-', "_")
        ),
        format!("-C link-arg=-zstack-size={STACK_SIZE}"),
    )
    // Components without DWARF are 20x smaller and compile faster; the name section stays,
    // so traps still show function names.
    .env("CARGO_PROFILE_RELEASE_DEBUG", "false")
    .env("CARGO_PROFILE_RELEASE_STRIP", "debuginfo")
    .env("CARGO_BUILD_BUILD_DIR", &target_dir);

    let status = cmd
        .status()
        .unwrap_or_else(|e| panic!("could not run cargo for the plugins: {e}"));
    if !status.success() {
        panic!("building the plugins for {TARGET} failed ({status}); see the cargo output above");
    }

    let mut generated = String::new();
    for (name, package, dir) in PLUGINS {
        let wasm = target_dir
            .join(TARGET)
            .join("release")
            .join(format!("{}.wasm", package.replace('-', "_")));
        check_is_component(&wasm);
        let path = wasm.to_str().expect("the artifact path is UTF-8");
        writeln!(
            generated,
            "/// The `{package}` plugin (`{dir}`), compiled to a component."
        )
        .unwrap();
        writeln!(generated, "pub const {name}: &str = {path:?};").unwrap();
    }
    writeln!(generated, "\n/// Every artifact, as (package name, path).").unwrap();
    writeln!(generated, "pub const ALL: &[(&str, &str)] = &[").unwrap();
    for (name, package, _) in PLUGINS {
        writeln!(generated, "    ({package:?}, {name}),").unwrap();
    }
    writeln!(generated, "];").unwrap();
    fs::write(out_dir.join("artifacts.rs"), generated).expect("can write to OUT_DIR");
}

fn rerun_if_changed(path: &Path) {
    // For a directory, cargo checks every file under it.
    println!("cargo:rerun-if-changed={}", path.display());
}

/// Fails with instructions when the standard library for the target is missing.
fn check_target_installed() {
    let rustc = env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let output = Command::new(&rustc)
        .args(["--print", "target-libdir", "--target", TARGET])
        .output()
        .unwrap_or_else(|e| panic!("could not run {}: {e}", rustc.to_string_lossy()));
    let libdir = String::from_utf8_lossy(&output.stdout).trim().to_string();
    if !output.status.success() || libdir.is_empty() || !Path::new(&libdir).is_dir() {
        panic!(
            "\n\nThe Rust target `{TARGET}` is not installed, and the test plugins are built for it.\n\
             Install it with:\n\n    rustup target add {TARGET}\n\n"
        );
    }
}

/// Panics unless `path` holds a WebAssembly component (not a core module).
fn check_is_component(path: &Path) {
    let bytes = fs::read(path)
        .unwrap_or_else(|e| panic!("expected the built plugin at {}: {e}", path.display()));
    // Magic `\0asm`, then version 0x000d and layer 0x0001 (component), little-endian.
    const COMPONENT_HEADER: [u8; 8] = [0x00, 0x61, 0x73, 0x6d, 0x0d, 0x00, 0x01, 0x00];
    if bytes.get(..8) != Some(&COMPONENT_HEADER[..]) {
        panic!(
            "{} is not a WebAssembly component (header {:02x?})",
            path.display(),
            &bytes[..bytes.len().min(8)]
        );
    }
}
