//! A plugin's stdout and stderr: kept in memory up to a byte budget, read and cleared after
//! each invocation.
//!
//! Unlike wasmtime-wasi's `MemoryOutputPipe`, a full buffer never fails a write (a chatty
//! plugin keeps running; the excess is dropped and the log says so), and the buffer can be
//! taken, which lets one WASI context serve many invocations of the same plugin.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError};

/// How much a guest may write in one call; it may always write again.
const WRITE_PERMIT: usize = 64 * 1024;

#[derive(Default)]
struct Buffer {
    bytes: Vec<u8>,
    dropped: usize,
}

/// One captured stream; clones share the buffer.
#[derive(Clone)]
pub struct Capture {
    budget: usize,
    buffer: Arc<Mutex<Buffer>>,
}

impl Capture {
    /// A capture keeping at most `budget` bytes.
    pub fn new(budget: usize) -> Capture {
        Capture {
            budget,
            buffer: Default::default(),
        }
    }

    /// Everything written since the last take, and how many bytes were dropped past the budget.
    pub fn take(&self) -> (Vec<u8>, usize) {
        let mut buffer = self.buffer.lock().expect("capture lock");
        let dropped = std::mem::take(&mut buffer.dropped);
        (std::mem::take(&mut buffer.bytes), dropped)
    }

    fn append(&self, bytes: &[u8]) {
        let mut buffer = self.buffer.lock().expect("capture lock");
        let room = self.budget.saturating_sub(buffer.bytes.len());
        let kept = bytes.len().min(room);
        buffer.bytes.extend_from_slice(&bytes[..kept]);
        buffer.dropped += bytes.len() - kept;
    }
}

impl IsTerminal for Capture {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for Capture {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl OutputStream for Capture {
    fn write(&mut self, bytes: Bytes) -> Result<(), StreamError> {
        self.append(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> Result<(), StreamError> {
        Ok(())
    }

    fn check_write(&mut self) -> Result<usize, StreamError> {
        Ok(WRITE_PERMIT)
    }
}

#[async_trait::async_trait]
impl Pollable for Capture {
    async fn ready(&mut self) {}
}

impl AsyncWrite for Capture {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.append(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_budget_counts_the_rest_and_clears_on_take() {
        let mut c = Capture::new(8);
        c.write(Bytes::from_static(b"hello ")).unwrap();
        c.write(Bytes::from_static(b"world")).unwrap();
        assert_eq!(c.take(), (b"hello wo".to_vec(), 3));
        assert_eq!(c.take(), (Vec::new(), 0));
        c.write(Bytes::from_static(b"again")).unwrap();
        assert_eq!(c.take().0, b"again");
    }
}
