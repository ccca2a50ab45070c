//! WASI contexts kept between invocations of one plugin.
//!
//! Building a `WasiCtx` seeds two random generators and allocates a dozen small objects, a
//! measurable share of a microsecond-scale invocation. A context holds no guest state (each
//! event still gets a fresh store and instance; stdout and stderr are taken after every
//! invocation), so contexts of the same plugin, hence the same account, are reused.

use std::sync::Mutex;

use wasmtime_wasi::{WasiCtx, WasiCtxBuilder};

use super::capture::Capture;

/// Idle contexts kept per plugin; more are dropped when returned.
const KEEP: usize = 32;

/// A WASI context with its captured stdout and stderr.
pub struct Context {
    /// The context: no network sockets, no files, no environment.
    pub wasi: WasiCtx,
    /// The guest's stdout.
    pub stdout: Capture,
    /// The guest's stderr.
    pub stderr: Capture,
}

impl Context {
    fn new(log_bytes: usize) -> Context {
        let (stdout, stderr) = (Capture::new(log_bytes), Capture::new(log_bytes));
        let wasi = WasiCtxBuilder::new()
            .stdout(stdout.clone())
            .stderr(stderr.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        Context {
            wasi,
            stdout,
            stderr,
        }
    }
}

/// The idle contexts of one plugin.
pub struct Pool {
    log_bytes: usize,
    idle: Mutex<Vec<Context>>,
}

impl Pool {
    /// An empty pool whose contexts capture up to `log_bytes` of each stream.
    pub fn new(log_bytes: usize) -> Pool {
        Pool {
            log_bytes,
            idle: Mutex::new(Vec::new()),
        }
    }

    /// An idle context, or a new one.
    pub fn take(&self) -> Context {
        let idle = self.idle.lock().expect("context pool lock").pop();
        idle.unwrap_or_else(|| Context::new(self.log_bytes))
    }

    /// Returns a context whose captured output has been taken.
    pub fn give_back(&self, context: Context) {
        let mut idle = self.idle.lock().expect("context pool lock");
        if idle.len() < KEEP {
            idle.push(context);
        }
    }
}
