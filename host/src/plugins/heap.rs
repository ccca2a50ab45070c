//! The allocator's side of compiling uploads: memory the compiler freed goes back to the
//! operating system.
//!
//! Compiling a large component allocates hundreds of megabytes for a while (Cranelift's
//! working data, on several threads), all freed when it is done. Measured with the 18 MB
//! Python example plugin, four uploads left the server 200 MB larger than a restart with the
//! same plugins even after `malloc_trim(0)`: glibc raises its mmap threshold (up to 32 MiB) and
//! its trim threshold (up to 64 MiB) as large blocks are freed, so the compiler's big buffers
//! came from the per-thread arenas, and `malloc_trim` never shrinks the free top of a thread's
//! arena, only the main one's. Fixed thresholds keep large blocks in their own mappings (given
//! back when freed) and let a thread arena's free top go back past 8 MiB; with the throwaway
//! compiling engine (see `super::engine::for_compiling`), about 30 MB above a restart then.

/// Blocks from this size get their own mapping, unmapped when freed.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD: libc::c_int = 1 << 20;
/// Free memory at the top of an arena beyond this goes back to the system.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const TRIM_THRESHOLD: libc::c_int = 8 << 20;

/// Sets the allocator's thresholds (glibc; elsewhere it does nothing). Called once at start.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
pub fn configure() {
    // SAFETY: `mallopt` takes plain integers and only changes glibc's tuning parameters.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
        libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD);
    }
}

/// Sets the allocator's thresholds (glibc; elsewhere it does nothing). Called once at start.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn configure() {}

/// Returns the allocator's free memory to the operating system, where the allocator keeps it
/// (glibc: the main arena's top and the free pages inside every arena); elsewhere it does
/// nothing.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
pub fn give_back_free_memory() {
    // SAFETY: `malloc_trim` takes no pointers and only releases memory glibc's own arenas hold
    // unused; it is safe to call from any thread at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Returns the allocator's free memory to the operating system, where the allocator keeps it;
/// elsewhere it does nothing.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn give_back_free_memory() {}
