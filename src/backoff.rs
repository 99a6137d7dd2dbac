//! Exponential backoff, the one schedule of every retry. Not `backon`'s:
//! its iterator steps in f32 seconds, and the callers here keep a count of
//! failures and need the n-th delay exactly (paused-time tests compare
//! instants).

use std::time::Duration;

/// `base` after the first failure (and for none), doubling with each
/// further one, at most `cap`.
pub fn exponential(base: Duration, failures: u32, cap: Duration) -> Duration {
    let factor = 1u32 << failures.saturating_sub(1).min(16);
    base.saturating_mul(factor).min(cap)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_from_the_base_up_to_the_cap() {
        let delays: Vec<u64> = (0..=9)
            .map(|n| exponential(Duration::from_secs(5), n, Duration::from_secs(300)).as_secs())
            .collect();
        assert_eq!(delays, [5, 5, 10, 20, 40, 80, 160, 300, 300, 300]);
        let far = exponential(Duration::from_millis(200), u32::MAX, Duration::from_secs(1));
        assert_eq!(far, Duration::from_secs(1));
    }
}
