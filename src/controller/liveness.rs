//! What `/healthz` judges: a process that answers HTTP but whose controller no longer makes
//! progress is not alive. Restarting it is the only cure a liveness probe offers, so only
//! states that a restart fixes count: a reconcile that never returns (a hung call, a lock
//! never released) and a pipeline watch that has failed without pause for a long time.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Progress marks, shared by the controller (writer) and the HTTP handler (reader).
#[derive(Debug)]
pub struct Liveness {
    /// A reconcile (or a failing watch) older than this means the loop is wedged.
    stuck_after: Duration,
    next_id: AtomicU64,
    in_flight: Mutex<HashMap<u64, Instant>>,
    /// Since when the pipeline watch has answered only errors (None while it works).
    watch_failing_since: Mutex<Option<Instant>>,
}

impl Default for Liveness {
    fn default() -> Self {
        Self::new(Duration::from_secs(15 * 60))
    }
}

impl Liveness {
    pub fn new(stuck_after: Duration) -> Self {
        Self {
            stuck_after,
            next_id: AtomicU64::new(0),
            in_flight: Mutex::new(HashMap::new()),
            watch_failing_since: Mutex::new(None),
        }
    }

    /// Marks a reconcile as started; it counts as finished when the guard drops (on return,
    /// error, panic or cancellation alike).
    pub fn reconcile_started(&self) -> ReconcileGuard<'_> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        lock(&self.in_flight).insert(id, Instant::now());
        ReconcileGuard { liveness: self, id }
    }

    /// The pipeline watch delivered an event (`ok`) or an error.
    pub fn watch_result(&self, ok: bool) {
        let mut since = lock(&self.watch_failing_since);
        match (ok, *since) {
            (true, _) => *since = None,
            (false, None) => *since = Some(Instant::now()),
            (false, Some(_)) => {}
        }
    }

    /// Why the controller counts as wedged at `now`, if it does.
    pub fn wedged(&self, now: Instant) -> Option<String> {
        let oldest = lock(&self.in_flight).values().min().copied();
        let watch = *lock(&self.watch_failing_since);
        judge(oldest, watch, now, self.stuck_after)
    }
}

/// See [`Liveness::reconcile_started`].
pub struct ReconcileGuard<'a> {
    liveness: &'a Liveness,
    id: u64,
}

impl Drop for ReconcileGuard<'_> {
    fn drop(&mut self) {
        lock(&self.liveness.in_flight).remove(&self.id);
    }
}

/// The pure judgement: the oldest reconcile still running and the start of an unbroken run
/// of watch errors, against the limit.
pub fn judge(
    oldest_reconcile: Option<Instant>,
    watch_failing_since: Option<Instant>,
    now: Instant,
    stuck_after: Duration,
) -> Option<String> {
    let age = |t: Instant| now.saturating_duration_since(t);
    if let Some(started) = oldest_reconcile.filter(|t| age(*t) >= stuck_after) {
        return Some(format!(
            "a reconcile has been running for {}s (limit {}s)",
            age(started).as_secs(),
            stuck_after.as_secs()
        ));
    }
    if let Some(since) = watch_failing_since.filter(|t| age(*t) >= stuck_after) {
        return Some(format!(
            "the TrackingPipeline watch has failed for {}s (limit {}s)",
            age(since).as_secs(),
            stuck_after.as_secs()
        ));
    }
    None
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: Duration = Duration::from_secs(60);

    #[test]
    fn a_reconcile_past_the_limit_wedges_the_loop() {
        let now = Instant::now();
        let start = now.checked_sub(Duration::from_secs(61)).unwrap();
        let recent = now.checked_sub(Duration::from_secs(5)).unwrap();
        assert!(
            judge(Some(start), None, now, LIMIT)
                .unwrap()
                .contains("reconcile")
        );
        assert_eq!(judge(Some(recent), None, now, LIMIT), None);
        assert_eq!(judge(None, None, now, LIMIT), None);
    }

    #[test]
    fn a_watch_failing_past_the_limit_wedges_the_loop() {
        let now = Instant::now();
        let since = now.checked_sub(Duration::from_secs(120)).unwrap();
        assert!(
            judge(None, Some(since), now, LIMIT)
                .unwrap()
                .contains("watch")
        );
    }

    #[test]
    fn finished_reconciles_and_a_recovered_watch_are_forgotten() {
        let liveness = Liveness::new(Duration::ZERO);
        {
            let _guard = liveness.reconcile_started();
            assert!(liveness.wedged(Instant::now()).is_some());
        }
        assert_eq!(liveness.wedged(Instant::now()), None);
        liveness.watch_result(false);
        assert!(liveness.wedged(Instant::now()).is_some());
        liveness.watch_result(true);
        assert_eq!(liveness.wedged(Instant::now()), None);
    }
}
