//! An allocator made for plugin instances that live for one event.
//!
//! wasmhook runs every event in a fresh instance (unless the plugin opted into reuse), so a
//! plugin's heap is thrown away after each event. A general-purpose allocator (wasi-libc's dlmalloc, Rust's default on
//! `wasm32-wasip2`) sets itself up again in every instance and keeps free lists no one will
//! reuse. [`EventArena`] hands out memory from a fixed buffer by bumping an offset instead:
//! allocating is an addition, freeing the latest block gives it back, and a `String` or `Vec`
//! that grows at the end of the buffer grows in place. When the buffer is used up, it passes
//! requests on to [`System`], so a large event costs at most the buffer's size in extra memory,
//! never a failure.
//!
//! Install it in the plugin crate, for the component build only (a native build, such as the
//! plugin's unit tests, keeps the system allocator):
//!
//! ```
//! #[cfg(target_arch = "wasm32")]
//! #[global_allocator]
//! static ALLOCATOR: wasmhook_plugin_sdk::arena::EventArena<{ 16 * 1024 }> =
//!     wasmhook_plugin_sdk::arena::EventArena::new();
//! ```
//!
//! The buffer is a zero-initialized static, so it costs nothing until it is touched; keep it
//! small enough that the component's initial memory does not grow by a page (16 KiB suits a
//! plugin that links a 64 KiB stack). Memory freed out of order inside the buffer is not
//! reused before the instance ends, which is what makes it fast and why the buffer is bounded:
//! in an instance reused for many events, the buffer fills up once, and later events allocate
//! from [`System`].
//!
//! wasm32-wasip2 components are single-threaded; the offset is still atomic so the type is
//! sound wherever it is compiled.
// The one unsafe module of the SDK: `GlobalAlloc` is an unsafe trait by nature.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

/// A bump allocator over an `N`-byte buffer that falls back to [`System`] when it is full.
///
/// See the [module documentation](self) for when to use it.
pub struct EventArena<const N: usize> {
    buffer: UnsafeCell<Buffer<N>>,
    /// Bytes of `buffer` handed out (including alignment padding).
    used: AtomicUsize,
}

#[repr(C, align(16))]
struct Buffer<const N: usize>([u8; N]);

// SAFETY: every byte range of `buffer` is handed to at most one owner at a time: ranges are
// claimed and given back only by compare-and-swap on `used`.
unsafe impl<const N: usize> Sync for EventArena<N> {}

impl<const N: usize> EventArena<N> {
    /// An empty arena (usable in a `static`).
    pub const fn new() -> EventArena<N> {
        EventArena {
            buffer: UnsafeCell::new(Buffer([0; N])),
            used: AtomicUsize::new(0),
        }
    }

    fn base(&self) -> *mut u8 {
        self.buffer.get().cast()
    }

    /// The offset of `ptr` in the buffer, if it points into it.
    fn offset_of(&self, ptr: *mut u8) -> Option<usize> {
        let offset = (ptr as usize).wrapping_sub(self.base() as usize);
        (offset < N).then_some(offset)
    }

    /// Claims `layout` from the buffer, or `None` if it does not fit.
    fn bump(&self, layout: Layout) -> Option<*mut u8> {
        let base = self.base() as usize;
        let mut used = self.used.load(Relaxed);
        loop {
            let start = (base + used).checked_next_multiple_of(layout.align())? - base;
            let end = start.checked_add(layout.size())?;
            if end > N {
                return None;
            }
            match self.used.compare_exchange_weak(used, end, Relaxed, Relaxed) {
                // SAFETY: `start < end <= N`, inside the buffer.
                Ok(_) => return Some(unsafe { self.base().add(start) }),
                Err(now) => used = now,
            }
        }
    }

    /// Moves the end of a block from `old_end` to `new_end`, if it is the latest one handed
    /// out and the new end fits.
    fn resize_last(&self, old_end: usize, new_end: usize) -> bool {
        new_end <= N
            && self
                .used
                .compare_exchange(old_end, new_end, Relaxed, Relaxed)
                .is_ok()
    }
}

impl<const N: usize> Default for EventArena<N> {
    fn default() -> Self {
        EventArena::new()
    }
}

// SAFETY: blocks come from disjoint ranges of the buffer (see `bump`) or from `System`, and
// each block goes back to where it came from.
unsafe impl<const N: usize> GlobalAlloc for EventArena<N> {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        match self.bump(layout) {
            Some(ptr) => ptr,
            // SAFETY: the caller's contract on `layout` is passed on unchanged.
            None => unsafe { System.alloc(layout) },
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        match self.offset_of(ptr) {
            // Only the latest block can be given back; others wait for the event's end.
            Some(offset) => {
                self.resize_last(offset + layout.size(), offset);
            }
            // SAFETY: not ours, so `System` allocated it with this layout.
            None => unsafe { System.dealloc(ptr, layout) },
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let Some(offset) = self.offset_of(ptr) else {
            // SAFETY: not ours, so `System` allocated it with this layout.
            return unsafe { System.realloc(ptr, layout, new_size) };
        };
        let old_end = offset + layout.size();
        if new_size <= layout.size() {
            // The block stays where it is; if it is the latest, its tail is given back.
            self.resize_last(old_end, offset + new_size);
            return ptr;
        }
        if offset
            .checked_add(new_size)
            .is_some_and(|new_end| self.resize_last(old_end, new_end))
        {
            return ptr;
        }
        // SAFETY: `new_size` is non-zero and, by the caller's contract, does not overflow
        // `isize` when rounded up to `layout.align()`.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        // SAFETY: as above.
        let new = unsafe { self.alloc(new_layout) };
        if !new.is_null() {
            // SAFETY: both blocks are valid for `layout.size()` bytes and distinct.
            unsafe {
                std::ptr::copy_nonoverlapping(ptr, new, layout.size());
                self.dealloc(ptr, layout);
            }
        }
        new
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(size: usize, align: usize) -> Layout {
        Layout::from_size_align(size, align).unwrap()
    }

    #[test]
    fn bumps_aligns_and_gives_back_the_latest_block() {
        let arena = EventArena::<256>::new();
        unsafe {
            let a = arena.alloc(layout(3, 1));
            let b = arena.alloc(layout(8, 8));
            assert_eq!(arena.offset_of(a), Some(0));
            assert_eq!(b as usize % 8, 0);
            assert_eq!(arena.offset_of(b), Some(8));
            arena.dealloc(b, layout(8, 8));
            assert_eq!(
                arena.used.load(Relaxed),
                8,
                "the latest block is given back"
            );
            arena.dealloc(a, layout(3, 1));
            assert_eq!(arena.used.load(Relaxed), 8, "an earlier block is not");
        }
    }

    #[test]
    fn the_latest_block_grows_and_shrinks_in_place() {
        let arena = EventArena::<256>::new();
        unsafe {
            let a = arena.alloc(layout(16, 1));
            a.write_bytes(7, 16);
            let grown = arena.realloc(a, layout(16, 1), 100);
            assert_eq!(grown, a);
            assert_eq!(arena.used.load(Relaxed), 100);
            let shrunk = arena.realloc(grown, layout(100, 1), 10);
            assert_eq!(shrunk, a);
            assert_eq!(arena.used.load(Relaxed), 10);
            assert_eq!(*shrunk.add(9), 7);
        }
    }

    #[test]
    fn an_earlier_block_moves_and_keeps_its_bytes() {
        let arena = EventArena::<256>::new();
        unsafe {
            let a = arena.alloc(layout(4, 1));
            a.copy_from_nonoverlapping(b"abcd".as_ptr(), 4);
            let _b = arena.alloc(layout(4, 1));
            let moved = arena.realloc(a, layout(4, 1), 8);
            assert_ne!(moved, a);
            assert_eq!(std::slice::from_raw_parts(moved, 4), b"abcd");
        }
    }

    #[test]
    fn a_full_buffer_falls_back_to_the_system_allocator() {
        let arena = EventArena::<64>::new();
        unsafe {
            let a = arena.alloc(layout(48, 1));
            let big = arena.alloc(layout(1000, 1));
            assert!(!big.is_null());
            assert_eq!(arena.offset_of(big), None);
            big.write_bytes(1, 1000);
            // Growing past the end moves the latest block out of the buffer.
            a.write_bytes(9, 48);
            let moved = arena.realloc(a, layout(48, 1), 500);
            assert_eq!(arena.offset_of(moved), None);
            assert_eq!(*moved.add(47), 9);
            arena.dealloc(moved, layout(500, 1));
            arena.dealloc(big, layout(1000, 1));
        }
    }

    #[test]
    fn threads_never_share_a_block() {
        static ARENA: EventArena<{ 64 * 1024 }> = EventArena::new();
        let threads: Vec<_> = (0..4u8)
            .map(|t| {
                std::thread::spawn(move || unsafe {
                    let mut blocks = Vec::new();
                    for i in 0..500 {
                        let l = layout(1 + i % 40, 1 << (i % 4));
                        let p = ARENA.alloc(l);
                        p.write_bytes(t, l.size());
                        blocks.push((p, l));
                        if i % 3 == 0 {
                            let (p, l) = blocks.pop().unwrap();
                            ARENA.dealloc(p, l);
                        }
                    }
                    for (p, l) in blocks {
                        assert!(
                            std::slice::from_raw_parts(p, l.size())
                                .iter()
                                .all(|&b| b == t)
                        );
                        ARENA.dealloc(p, l);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
    }
}
