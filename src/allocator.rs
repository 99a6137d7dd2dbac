//! How the process uses glibc's allocator (the one it ships with).

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
