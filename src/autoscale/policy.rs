//! The scaling decision, pure: a queue measurement, the current replica count and what
//! happened recently go in; the replica count to set and why come out. No clock, no client:
//! the caller passes `now`, so every rule here is tested with fixtures.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::api::AutoscalingSpec;

/// `spec.worker.autoscaling` in the units the decision works in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    pub min_replicas: i32,
    pub max_replicas: i32,
    pub target_backlog_per_replica: i64,
    pub max_oldest_message_age_seconds: Option<i64>,
    pub scale_down_window: Duration,
    pub scale_up_step: i32,
    pub scale_up_period: Duration,
}

impl Policy {
    pub fn from_spec(spec: &AutoscalingSpec) -> Self {
        let seconds = |s: i32| Duration::from_secs(u64::try_from(s).unwrap_or(0));
        // The CRD refuses values outside these bounds; clamping keeps a spec that slipped past
        // validation (an older CRD) from dividing by zero or inverting min and max.
        let min_replicas = spec.min_replicas.max(0);
        Self {
            min_replicas,
            max_replicas: spec.max_replicas.max(min_replicas),
            target_backlog_per_replica: i64::from(spec.target_backlog_per_replica.max(1)),
            max_oldest_message_age_seconds: spec.max_oldest_message_age_seconds.map(i64::from),
            scale_down_window: seconds(spec.scale_down_stabilization_seconds),
            scale_up_step: spec.scale_up_step.max(1),
            scale_up_period: seconds(spec.scale_up_period_seconds.max(1)),
        }
    }
}

/// One measurement of the main queue.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Observation {
    /// `ApproximateNumberOfMessages`.
    pub visible: i64,
    /// `ApproximateNumberOfMessagesNotVisible`: received by a worker, not yet deleted.
    pub in_flight: i64,
    /// `ApproximateAgeOfOldestMessage` from CloudWatch, when it was read.
    pub oldest_age_seconds: Option<i64>,
}

impl Observation {
    /// What the workers still have to do: waiting plus being worked on. In-flight messages
    /// count so that a Pod holding the last batch is never scaled away under it.
    pub fn backlog(&self) -> i64 {
        self.visible.max(0) + self.in_flight.max(0)
    }
}

/// What the autoscaler remembers about one pipeline between measurements.
#[derive(Clone, Debug)]
pub struct History {
    /// Replica counts the backlog wanted, oldest first; the first entry is the one in effect
    /// at the start of the scale-down window.
    wanted: VecDeque<(Instant, i32)>,
    /// Replicas added by each scale-up within the last rate-limit period.
    scale_ups: VecDeque<(Instant, i32)>,
}

impl History {
    /// A pipeline seen for the first time (or by a new leader): it counts as having wanted
    /// its current replicas until now, so nothing is removed before a full window passed.
    pub fn new(now: Instant, current: i32) -> Self {
        Self {
            wanted: VecDeque::from([(now, current)]),
            scale_ups: VecDeque::new(),
        }
    }

    /// Records a replica change that was written.
    pub fn scaled(&mut self, now: Instant, from: i32, to: i32) {
        if to > from {
            self.scale_ups.push_back((now, to - from));
        }
    }

    fn remember(&mut self, now: Instant, wanted: i32, window: Duration) {
        self.wanted.push_back((now, wanted));
        // Before the monotonic clock's origin nothing can be old enough to drop.
        let Some(start) = now.checked_sub(window) else {
            return;
        };
        // Keep the entry in effect at the window's start (the second one is not yet older).
        while self.wanted.len() >= 2 && self.wanted[1].0 <= start {
            self.wanted.pop_front();
        }
    }

    fn added_within(&mut self, now: Instant, period: Duration) -> i32 {
        let start = now.checked_sub(period);
        while let (Some((at, _)), Some(start)) = (self.scale_ups.front(), start) {
            if *at > start {
                break;
            }
            self.scale_ups.pop_front();
        }
        self.scale_ups.iter().map(|(_, n)| n).sum()
    }

    fn highest_wanted(&self) -> i32 {
        self.wanted.iter().map(|(_, n)| *n).max().unwrap_or(0)
    }
}

/// The outcome of one measurement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// The replica count to set (equal to the current one: leave it).
    pub desired: i32,
    /// What the backlog alone asked for, within min and max.
    pub wanted: i32,
    /// Human-readable why, for the Event and `status.worker.lastScaleReason`.
    pub reason: String,
}

/// ceil(backlog / target), within min and max; an oldest message past the age ceiling
/// asks for one more than now.
fn wanted(policy: &Policy, observation: &Observation, current: i32) -> (i32, String) {
    let backlog = observation.backlog();
    let by_backlog = backlog
        .unsigned_abs()
        .div_ceil(policy.target_backlog_per_replica.unsigned_abs().max(1));
    let by_backlog = i32::try_from(by_backlog).unwrap_or(i32::MAX);
    let mut reason = format!(
        "backlog {backlog} ({} visible, {} in flight) at {} per replica wants {by_backlog}",
        observation.visible, observation.in_flight, policy.target_backlog_per_replica
    );
    let mut wanted = by_backlog;
    if let (Some(ceiling), Some(age)) = (
        policy.max_oldest_message_age_seconds,
        observation.oldest_age_seconds,
    ) {
        if age > ceiling && backlog > 0 && wanted <= current {
            wanted = current.saturating_add(1);
            reason.push_str(&format!(
                "; oldest message {age}s is past maxOldestMessageAgeSeconds {ceiling}, wants {wanted}"
            ));
        }
    }
    let clamped = wanted.clamp(policy.min_replicas, policy.max_replicas);
    if clamped != wanted {
        reason.push_str(&format!(
            "; {} {clamped}",
            if clamped > wanted {
                "minReplicas"
            } else {
                "maxReplicas"
            }
        ));
    }
    (clamped, reason)
}

/// The replica count for `current` replicas given this `observation`, updating `history`.
///
/// Up: straight to what the backlog wants, but at most `scaleUpStep` replicas added per
/// `scaleUpPeriodSeconds`. Down: only to the highest count wanted during the window, so a
/// queue that empties for a moment between bursts keeps its Pods, and zero needs an empty
/// queue with nothing in flight for the whole window. `minReplicas` and `maxReplicas` win
/// over both (a lowered maximum applies at once).
pub fn decide(
    policy: &Policy,
    observation: &Observation,
    current: i32,
    history: &mut History,
    now: Instant,
) -> Decision {
    let (wanted, mut reason) = wanted(policy, observation, current);
    history.remember(now, wanted, policy.scale_down_window);
    let mut desired = wanted;
    if wanted < current {
        let held = history.highest_wanted().min(current);
        if held > wanted {
            reason.push_str(&format!(
                "; held at {held} by scaleDownStabilizationSeconds {}",
                policy.scale_down_window.as_secs()
            ));
        }
        desired = held.max(wanted);
    } else if wanted > current {
        let room =
            (policy.scale_up_step - history.added_within(now, policy.scale_up_period)).max(0);
        let limit = current.saturating_add(room);
        if limit < wanted {
            reason.push_str(&format!(
                "; limited to {limit} by scaleUpStep {} per {}s",
                policy.scale_up_step,
                policy.scale_up_period.as_secs()
            ));
            desired = limit;
        }
    }
    Decision {
        desired: desired.clamp(policy.min_replicas, policy.max_replicas),
        wanted,
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        Policy {
            min_replicas: 0,
            max_replicas: 10,
            target_backlog_per_replica: 100,
            max_oldest_message_age_seconds: None,
            scale_down_window: Duration::from_secs(300),
            scale_up_step: 4,
            scale_up_period: Duration::from_secs(60),
        }
    }

    fn backlog(visible: i64, in_flight: i64) -> Observation {
        Observation {
            visible,
            in_flight,
            oldest_age_seconds: None,
        }
    }

    /// Runs the loop as the I/O side does: decide, then "write" and record a change.
    struct Sim {
        policy: Policy,
        history: History,
        replicas: i32,
        t0: Instant,
    }

    impl Sim {
        fn new(policy: Policy, replicas: i32) -> Self {
            let t0 = Instant::now();
            Self {
                history: History::new(t0, replicas),
                policy,
                replicas,
                t0,
            }
        }

        fn at(&mut self, seconds: u64, observation: Observation) -> Decision {
            let now = self.t0 + Duration::from_secs(seconds);
            let d = decide(
                &self.policy,
                &observation,
                self.replicas,
                &mut self.history,
                now,
            );
            if d.desired != self.replicas {
                self.history.scaled(now, self.replicas, d.desired);
                self.replicas = d.desired;
            }
            d
        }
    }

    #[test]
    fn spec_defaults_become_a_policy() {
        let p = Policy::from_spec(&AutoscalingSpec::default());
        assert_eq!(p.min_replicas, 0);
        assert_eq!(p.max_replicas, 10);
        assert_eq!(p.target_backlog_per_replica, 100);
        assert_eq!(p.scale_down_window, Duration::from_secs(300));
        assert_eq!((p.scale_up_step, p.scale_up_period.as_secs()), (4, 60));
    }

    #[test]
    fn invalid_specs_are_clamped_not_divided_by() {
        let spec = AutoscalingSpec {
            min_replicas: 5,
            max_replicas: 2,
            target_backlog_per_replica: 0,
            scale_up_step: 0,
            ..AutoscalingSpec::default()
        };
        let p = Policy::from_spec(&spec);
        assert_eq!((p.min_replicas, p.max_replicas), (5, 5));
        assert_eq!(p.target_backlog_per_replica, 1);
        assert_eq!(p.scale_up_step, 1);
    }

    #[test]
    fn backlog_counts_in_flight_and_rounds_up() {
        let mut sim = Sim::new(policy(), 1);
        assert_eq!(sim.at(0, backlog(101, 0)).wanted, 2);
        assert_eq!(sim.at(1, backlog(0, 250)).wanted, 3);
        assert_eq!(sim.at(2, backlog(100, 100)).wanted, 2);
        assert_eq!(backlog(-1, 3).backlog(), 3, "never negative");
    }

    #[test]
    fn scale_up_is_rate_limited_per_period() {
        let mut sim = Sim::new(policy(), 0);
        let d = sim.at(0, backlog(5_000, 0));
        assert_eq!(d.wanted, 10);
        assert_eq!(d.desired, 4);
        assert!(
            d.reason.contains("limited to 4 by scaleUpStep 4 per 60s"),
            "{}",
            d.reason
        );
        // Still inside the period: no more room.
        assert_eq!(sim.at(30, backlog(5_000, 0)).desired, 4);
        assert_eq!(sim.at(59, backlog(5_000, 0)).desired, 4);
        // The first step left the period.
        assert_eq!(sim.at(60, backlog(5_000, 0)).desired, 8);
        // Capped by maxReplicas, not by the step.
        let d = sim.at(120, backlog(5_000, 0));
        assert_eq!(d.desired, 10);
        assert!(d.reason.contains("maxReplicas 10"), "{}", d.reason);
    }

    #[test]
    fn partial_steps_share_the_period() {
        let mut sim = Sim::new(policy(), 1);
        assert_eq!(sim.at(0, backlog(300, 0)).desired, 3); // +2
        assert_eq!(sim.at(10, backlog(900, 0)).desired, 5); // +2 more, step used up
        assert_eq!(sim.at(20, backlog(900, 0)).desired, 5);
        assert_eq!(sim.at(61, backlog(900, 0)).desired, 7); // first +2 expired
        assert_eq!(sim.at(71, backlog(900, 0)).desired, 9);
    }

    #[test]
    fn scale_down_waits_for_the_window_then_goes_to_zero() {
        let mut sim = Sim::new(policy(), 0);
        assert_eq!(sim.at(0, backlog(400, 0)).desired, 4);
        // Queue drained; messages still in flight keep the Pods.
        assert_eq!(sim.at(15, backlog(0, 10)).desired, 4);
        let d = sim.at(30, backlog(0, 0));
        assert_eq!(d.desired, 4);
        assert!(
            d.reason
                .contains("held at 4 by scaleDownStabilizationSeconds 300"),
            "{}",
            d.reason
        );
        // 4 was wanted until t=15 (the 10 in flight wanted 1 after that)...
        assert_eq!(sim.at(299, backlog(0, 0)).desired, 4);
        assert_eq!(sim.at(300, backlog(0, 0)).desired, 4);
        // ... so down to 1 once t=15 left the window, and to 0 once t=30 (in flight 10
        // wanted 1 from t=15 to t=30) did.
        assert_eq!(sim.at(316, backlog(0, 0)).desired, 1);
        assert_eq!(sim.at(329, backlog(0, 0)).desired, 1);
        assert_eq!(sim.at(331, backlog(0, 0)).desired, 0);
    }

    #[test]
    fn one_message_brings_it_back_from_zero_at_once() {
        let mut sim = Sim::new(policy(), 0);
        assert_eq!(sim.at(0, backlog(0, 0)).desired, 0);
        let d = sim.at(15, backlog(1, 0));
        assert_eq!(d.desired, 1);
        assert!(
            d.reason.starts_with("backlog 1 (1 visible, 0 in flight)"),
            "{}",
            d.reason
        );
    }

    #[test]
    fn a_short_gap_between_bursts_keeps_the_pods() {
        let mut sim = Sim::new(policy(), 0);
        assert_eq!(sim.at(0, backlog(400, 0)).desired, 4);
        assert_eq!(sim.at(15, backlog(0, 0)).desired, 4);
        assert_eq!(sim.at(30, backlog(400, 0)).desired, 4);
        assert_eq!(sim.at(45, backlog(0, 0)).desired, 4);
        // The window restarts from the last time 4 were wanted.
        assert_eq!(sim.at(329, backlog(0, 0)).desired, 4);
        assert_eq!(sim.at(345, backlog(0, 0)).desired, 0);
    }

    #[test]
    fn a_new_leader_does_not_scale_down_before_a_full_window() {
        // History::new counts the current replicas as wanted until now.
        let mut sim = Sim::new(policy(), 6);
        assert_eq!(sim.at(0, backlog(0, 0)).desired, 6);
        assert_eq!(sim.at(299, backlog(0, 0)).desired, 6);
        assert_eq!(sim.at(300, backlog(0, 0)).desired, 0);
    }

    #[test]
    fn zero_window_scales_down_at_once() {
        let mut sim = Sim::new(
            Policy {
                scale_down_window: Duration::ZERO,
                ..policy()
            },
            5,
        );
        assert_eq!(sim.at(1, backlog(120, 0)).desired, 2);
        assert_eq!(sim.at(2, backlog(0, 0)).desired, 0);
    }

    #[test]
    fn min_and_max_bound_everything() {
        let mut sim = Sim::new(
            Policy {
                min_replicas: 2,
                max_replicas: 3,
                ..policy()
            },
            0,
        );
        // Below the minimum: straight to it, whatever the step.
        let d = sim.at(0, backlog(0, 0));
        assert_eq!(d.desired, 2);
        assert!(d.reason.contains("minReplicas 2"), "{}", d.reason);
        assert_eq!(sim.at(1, backlog(10_000, 0)).desired, 3);
        // Above a lowered maximum: down at once, no window.
        let mut sim = Sim::new(policy(), 20);
        assert_eq!(sim.at(0, backlog(10_000, 0)).desired, 10);
    }

    #[test]
    fn an_old_message_adds_a_replica() {
        let p = Policy {
            max_oldest_message_age_seconds: Some(60),
            ..policy()
        };
        let old = |age| Observation {
            visible: 5,
            in_flight: 0,
            oldest_age_seconds: Some(age),
        };
        let mut sim = Sim::new(p, 1);
        assert_eq!(sim.at(0, old(30)).desired, 1, "young enough");
        let d = sim.at(15, old(90));
        assert_eq!(d.desired, 2);
        assert!(
            d.reason
                .contains("oldest message 90s is past maxOldestMessageAgeSeconds 60"),
            "{}",
            d.reason
        );
        assert_eq!(sim.at(30, old(120)).desired, 3);
        // The age of an empty queue's last datapoint forces nothing.
        let mut sim = Sim::new(
            Policy {
                max_oldest_message_age_seconds: Some(60),
                ..policy()
            },
            0,
        );
        let empty = Observation {
            oldest_age_seconds: Some(500),
            ..Observation::default()
        };
        assert_eq!(sim.at(0, empty).desired, 0);
    }

    #[test]
    fn steady_state_changes_nothing() {
        let mut sim = Sim::new(policy(), 3);
        for t in 0..100 {
            assert_eq!(sim.at(t * 15, backlog(250, 0)).desired, 3);
        }
        // Remembered history stays bounded.
        assert!(
            sim.history.wanted.len() <= 22,
            "{}",
            sim.history.wanted.len()
        );
    }
}
