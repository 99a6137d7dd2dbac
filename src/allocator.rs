//! How the process uses glibc's allocator (the one it ships with): few
//! arenas, and freed memory handed back after each full sync.
//!
//! glibc gives every thread that allocates concurrently its own arena (up
//! to 8 per core), and memory freed in one arena is not reused by another:
//! with a full sync's allocations spread over the runtime's worker threads
//! and the AWS SDK's, each arena keeps its own high-water mark resident. Two
//! arenas are enough for an operator that spends its time waiting on I/O,
//! and cut the peak RSS of a 10,000-key sync by a third (BENCHMARKS.md,
//! issue 13).

/// Arenas the allocator may create (glibc's default is 8 per core).
pub const ARENAS: i32 = 2;

/// Limits glibc to [`ARENAS`] arenas. Call first thing in `main`, before
/// any thread starts: a thread keeps the arena it first allocated in.
pub fn limit_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets a tunable of glibc's allocator; called
    // before other threads exist, it races with no allocation.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, ARENAS);
    }
}

/// Hands memory freed by a full sync back to the system. A full sync
/// allocates a second copy of the table while the first is alive; glibc keeps
/// the freed pages resident and fragmented, so without this the peak RSS
/// crept up sync after sync (see BENCHMARKS.md).
pub fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns unused pages of glibc's own heap to
    // the kernel; it takes glibc's allocator locks and touches no live data.
    unsafe {
        libc::malloc_trim(0);
    }
}
