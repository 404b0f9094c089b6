//! The one clock everything is measured on: `CLOCK_MONOTONIC`, which is what
//! `bpf_ktime_get_ns` reads in the kernel and what tokio's `Instant` uses, so
//! kernel timestamps and user-space deadlines compare directly.

/// Nanoseconds on `CLOCK_MONOTONIC`.
pub fn monotonic_ns() -> u64 {
    // CLOCK_MONOTONIC always exists on Linux; clock_gettime cannot fail for it.
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).map_or(0, |ts| {
        ts.tv_sec() as u64 * 1_000_000_000 + ts.tv_nsec() as u64
    })
}
