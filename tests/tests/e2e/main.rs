//! The end-to-end tests: the real server (and the real `wasmhook` binary, where a test is about
//! the process or the command line) on `127.0.0.1:0`, with a temp data dir and real receivers.
//!
//! One test binary, one module per area: every test binary links the whole server with wasmtime
//! and Cranelift, so thirty of them cost a fresh clone gigabytes of disk and minutes of linking.
//! Run one area with a filter: `cargo test -p wasmhook-tests --test e2e -- delivery::`.

mod common;

mod api;
mod bad_input;
mod cli;
mod compile_memory;
mod console;
mod delivery;
mod edge;
mod first_plugin;
mod multi_node;
mod openapi_conformance;
mod other_languages;
mod plugin_compile;
mod plugin_logs;
mod plugin_memory;
mod plugin_reuse;
mod plugin_state;
mod plugin_test_run;
mod plugins;
mod process;
mod quotas;
mod retention;
mod sandbox;
mod scheduling;
mod secrets_at_rest;
mod shared_config;
mod stream;
mod three_nodes;
mod transfer;
mod webhook_checks;
