//! How the process uses glibc's allocator (the one it ships with).
//!
//! The operator is long-lived and works in bursts: a full sync allocates a
//! second copy of what it knows, plus decoded Scan pages and request bodies,
//! then frees them. glibc's defaults keep what a burst freed resident
//! (BENCHMARKS.md, issue 13), so the process is set up for that at start
//! ([`configure`]) and gives freed pages back after each full sync
//! ([`release_freed_memory`]).

/// Blocks of this size and larger get mappings of their own.
const MMAP_THRESHOLD: i32 = 128 * 1024;
/// Free memory at the top of the heap beyond this goes back to the system.
const TRIM_THRESHOLD: i32 = 128 * 1024;

/// Sets glibc's allocator up before any thread starts:
/// - blocks of 128 KiB and more (decoded Scan pages, response bodies, large
///   maps) get their own mappings, returned to the system when freed. glibc
///   starts there too, but raises the threshold to the largest such block
///   freed (up to 32 MiB), after which those blocks come from the heap and
///   their pages stay resident, fragmented;
/// - the top of the heap is trimmed past 128 KiB free (default: likewise
///   raised as the threshold above rises);
/// - one arena for every thread: memory one runtime worker frees serves the
///   next allocation on another, where an arena per thread keeps each
///   worker's high-water mark resident. The operator waits on the network
///   far more than it allocates, so the shared lock costs nothing measurable.
pub fn configure() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes glibc's allocator parameters; it is called
    // before the runtime starts any thread.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
        libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD);
        libc::mallopt(libc::M_ARENA_MAX, 1);
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
