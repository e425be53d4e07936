//! Retry delays for failed reconciles: exponential with full jitter spread, so pipelines
//! that failed together (an AWS outage) do not retry together.

use std::time::Duration;

/// Delay before retry number `failures` (1 = first failure), before jitter.
pub fn base_delay(failures: u32, base: Duration, max: Duration) -> Duration {
    let exponent = failures.saturating_sub(1).min(20);
    base.saturating_mul(1u32 << exponent).min(max)
}

/// `base_delay` scaled by `jitter` (expected in 0.5..1.5).
pub fn jittered(failures: u32, base: Duration, max: Duration, jitter: f64) -> Duration {
    base_delay(failures, base, max).mul_f64(jitter.clamp(0.5, 1.5))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap() {
        let (base, max) = (Duration::from_secs(2), Duration::from_secs(300));
        assert_eq!(base_delay(1, base, max), Duration::from_secs(2));
        assert_eq!(base_delay(2, base, max), Duration::from_secs(4));
        assert_eq!(base_delay(5, base, max), Duration::from_secs(32));
        assert_eq!(base_delay(50, base, max), max);
        assert_eq!(jittered(1, base, max, 0.5), Duration::from_secs(1));
        assert_eq!(jittered(1, base, max, 9.0), Duration::from_secs(3));
    }
}
