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

/// The resync interval spread over ±20% by `unit` (expected in -1..=1), so pipelines created
/// or verified together (a bulk apply, a restart) drift apart instead of resyncing in waves.
pub fn spread(interval: Duration, unit: f64) -> Duration {
    interval.mul_f64(1.0 + 0.2 * unit.clamp(-1.0, 1.0))
}

/// When the `n`th (from 0) already settled pipeline found after a start gets its first pass:
/// `rate` pipelines per second, the first second's at once. `None`: now.
pub fn startup_slot(n: u64, rate: f64) -> Option<Duration> {
    if rate <= 0.0 {
        return None;
    }
    let at = Duration::from_secs_f64(n as f64 / rate);
    (at >= Duration::from_secs(1)).then_some(at)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resyncs_spread_over_twenty_percent() {
        let five = Duration::from_secs(300);
        assert_eq!(spread(five, -1.0), Duration::from_secs(240));
        assert_eq!(spread(five, 0.0), five);
        assert_eq!(spread(five, 1.0), Duration::from_secs(360));
        assert_eq!(spread(five, 7.0), Duration::from_secs(360));
    }

    #[test]
    fn a_restart_wave_is_spread_at_the_startup_rate() {
        assert_eq!(startup_slot(0, 4.0), None);
        assert_eq!(startup_slot(3, 4.0), None);
        assert_eq!(startup_slot(4, 4.0), Some(Duration::from_secs(1)));
        // 1,000 pipelines at 4/s: the last is verified after 250 s, within a 5 min resync.
        assert_eq!(startup_slot(999, 4.0), Some(Duration::from_millis(249_750)));
        assert_eq!(startup_slot(999, 0.0), None);
    }

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
