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
//! reused while other blocks in it are alive, which is what makes it fast and why the buffer
//! is bounded; once every block in the buffer has been given back, it starts over from its
//! beginning. An event gives back everything it allocated (the event itself, its results) by
//! the time the host has read its decision, so in an instance reused for many events
//! (`"instances": "reuse"`) every event starts with an empty buffer, as long as the plugin
//! keeps nothing in it between events. Values a plugin keeps in a static across events (a
//! cache, its parsed configuration) hold the buffer's blocks; make them inside [`kept`], which
//! takes their memory from [`System`], and the buffer still starts over after each event.
//!
//! wasm32-wasip2 components are single-threaded; the arena's state is still one atomic word
//! so the type is sound wherever it is compiled.
// The one unsafe module of the SDK: `GlobalAlloc` is an unsafe trait by nature.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::{Cell, UnsafeCell};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

thread_local! {
    /// Set while [`kept`] runs on this thread: allocations then come from [`System`]. A const
    /// initializer and no destructor: reading it never allocates, as an allocator must not.
    static KEPT: Cell<bool> = const { Cell::new(false) };
}

/// Runs `make` with every [`EventArena`] passing allocations on to [`System`]: for values kept
/// between events of a reused instance (in a static), which would otherwise hold blocks of the
/// buffer and stop it from starting over after each event (see the [module documentation](self)).
///
/// Without an arena installed it just runs `make`.
///
/// ```
/// use std::sync::OnceLock;
/// static GREETING: OnceLock<String> = OnceLock::new();
/// let greeting = GREETING.get_or_init(|| {
///     wasmhook_plugin_sdk::arena::kept(|| "Hello!".to_string())
/// });
/// assert_eq!(greeting, "Hello!");
/// ```
pub fn kept<T>(make: impl FnOnce() -> T) -> T {
    /// Puts the flag back, also when `make` panics.
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            KEPT.set(self.0);
        }
    }
    let _restore = Restore(KEPT.replace(true));
    make()
}

/// A bump allocator over an `N`-byte buffer that falls back to [`System`] when it is full.
///
/// See the [module documentation](self) for when to use it.
pub struct EventArena<const N: usize> {
    buffer: UnsafeCell<Buffer<N>>,
    /// Bytes of `buffer` handed out, including alignment padding (the low 32 bits), and how
    /// many blocks handed out are not given back yet (the high 32 bits): one word, so that
    /// starting over when the last block comes back cannot race with a new block.
    state: AtomicU64,
}

/// The parts of [`EventArena::state`].
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct State {
    used: usize,
    live: u64,
}

impl State {
    fn unpack(word: u64) -> State {
        State {
            used: (word & u64::from(u32::MAX)) as usize,
            live: word >> 32,
        }
    }

    fn pack(self) -> u64 {
        (self.live << 32) | self.used as u64
    }
}

#[repr(C, align(16))]
struct Buffer<const N: usize>([u8; N]);

// SAFETY: every byte range of `buffer` is handed to at most one owner at a time: ranges are
// claimed and given back only by compare-and-swap on `state`.
unsafe impl<const N: usize> Sync for EventArena<N> {}

impl<const N: usize> EventArena<N> {
    /// An empty arena (usable in a `static`).
    pub const fn new() -> EventArena<N> {
        assert!(
            N <= u32::MAX as usize,
            "the buffer's size must fit in 32 bits"
        );
        EventArena {
            buffer: UnsafeCell::new(Buffer([0; N])),
            state: AtomicU64::new(0),
        }
    }

    /// Applies `change` to the state atomically; `None` from it leaves the state alone.
    fn update(&self, mut change: impl FnMut(State) -> Option<State>) -> Option<State> {
        let mut word = self.state.load(Relaxed);
        loop {
            let before = State::unpack(word);
            let after = change(before)?;
            match self
                .state
                .compare_exchange_weak(word, after.pack(), Relaxed, Relaxed)
            {
                Ok(_) => return Some(before),
                Err(now) => word = now,
            }
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

    /// Claims `layout` from the buffer, or `None` if it does not fit (or [`kept`] runs).
    fn bump(&self, layout: Layout) -> Option<*mut u8> {
        if KEPT.get() {
            return None;
        }
        let base = self.base() as usize;
        let start_of = |used: usize| -> Option<(usize, usize)> {
            let start = (base + used).checked_next_multiple_of(layout.align())? - base;
            let end = start.checked_add(layout.size())?;
            (end <= N).then_some((start, end))
        };
        let before = self.update(|s| {
            let (_, end) = start_of(s.used)?;
            Some(State {
                used: end,
                live: s.live + 1,
            })
        })?;
        let (start, _) = start_of(before.used).expect("it fitted");
        // SAFETY: `start < end <= N`, inside the buffer.
        Some(unsafe { self.base().add(start) })
    }

    /// Gives back the block at `offset` of `size` bytes: its bytes if it is the latest one
    /// handed out, the whole buffer if it was the last one alive.
    fn give_back(&self, offset: usize, size: usize) {
        self.update(|s| {
            let live = s.live - 1;
            let used = if live == 0 {
                0
            } else if s.used == offset + size {
                offset
            } else {
                s.used
            };
            Some(State { used, live })
        });
    }

    /// Moves the end of a block from `old_end` to `new_end`, if it is the latest one handed
    /// out and the new end fits.
    fn resize_last(&self, old_end: usize, new_end: usize) -> bool {
        new_end <= N
            && self
                .update(|s| {
                    (s.used == old_end).then_some(State {
                        used: new_end,
                        live: s.live,
                    })
                })
                .is_some()
    }

    /// Bytes of the buffer handed out now (tests).
    #[cfg(test)]
    fn used(&self) -> usize {
        State::unpack(self.state.load(Relaxed)).used
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
            // Only the latest block's bytes can be given back; others wait until no block of
            // the buffer is alive (the event's end).
            Some(offset) => self.give_back(offset, layout.size()),
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
            let c = arena.alloc(layout(4, 4));
            assert_eq!(arena.offset_of(c), Some(16));
            arena.dealloc(c, layout(4, 4));
            assert_eq!(arena.used(), 16, "the latest block is given back");
            arena.dealloc(a, layout(3, 1));
            assert_eq!(
                arena.used(),
                16,
                "an earlier block is not, while one is alive"
            );
            arena.dealloc(b, layout(8, 8));
            assert_eq!(arena.used(), 0, "the last block alive empties the buffer");
            let d = arena.alloc(layout(5, 1));
            assert_eq!(arena.offset_of(d), Some(0), "and the next one starts over");
        }
    }

    #[test]
    fn blocks_made_inside_kept_come_from_the_system_allocator() {
        let arena = EventArena::<256>::new();
        unsafe {
            let event = arena.alloc(layout(8, 1));
            let cache = kept(|| arena.alloc(layout(8, 1)));
            assert_eq!(arena.offset_of(cache), None);
            arena.dealloc(event, layout(8, 1));
            assert_eq!(arena.used(), 0, "the kept block does not hold the buffer");
            arena.dealloc(cache, layout(8, 1));
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
            assert_eq!(arena.used(), 100);
            let shrunk = arena.realloc(grown, layout(100, 1), 10);
            assert_eq!(shrunk, a);
            assert_eq!(arena.used(), 10);
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
