//! The `wasmhook` command line, run as the real binary against a real server: profiles and
//! keys, subscriptions, sending and following events, deliveries and their recovery, plugins on
//! a server and without one, the live stream, `listen`, output modes, errors, help and
//! completions. Each test is a person's terminal: its own HOME and config directory, the binary
//! started as a process.

mod terminal;

mod account;
mod events;
mod live;
mod local_plugins;
mod plugins;
mod readme;
mod subscriptions;
