//! Ownership proven once is not re-read on every pass. A steady resync used to list the tags
//! of every resource (13 of its 30 reads) only to find the same ownership tags again; at
//! 1,000 pipelines that is most of the account's tag-read quota. After a read shows every
//! desired tag in place, the resource is remembered for `every` (the controller passes 12
//! resync intervals); within that window the pass uses the desired tags instead of reading.
//! Out-of-band tag drift is therefore repaired within `every` rather than at the next resync.
//! Deletes never use this: they always read the tags before deleting. Observe mode always reads.
//!
//! The same window covers settings that drift only by hand and cost a read each to compare
//! (a key's policy and rotation, a table's PITR and TTL, a role's inline policy): once seen as
//! desired they are compared again when the window ends ([`settled`] / [`settle`]). What a
//! pass needs every time stays read every time: existence and state (a key pending deletion,
//! a table not ACTIVE), the queues' attributes (their depths go to status), the alarms, the
//! schedule.
//!
//! After a restart the window is empty, and reading everything again made the first pass
//! of 1,000 pipelines cost 35 calls each (5 of them CloudWatch tag reads sharing one small
//! quota). So a pipeline whose status says its AWS parts were in place at its current
//! generation ([`Desired::trusted`]) is taken at its word the first time this process meets
//! each of its resources: the resource counts as seen at a moment spread over the last
//! window, so its first re-read comes somewhere within the next one instead of all at once.
//! A changed spec (a new generation) is never trusted; existence and state are read anyway.
//!
//! Where AWS gives a resource an identity beyond its name (a KMS key id, the creation time of
//! a queue or table, a role id), it is part of the key, so a resource deleted and recreated
//! by someone else under our name is read afresh.

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::hash::{Hash, Hasher};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::desired::Desired;
use super::tags::missing_tags;
use super::{AwsClients, Result};

/// Resources whose tags were last seen complete, and when.
#[derive(Debug, Default)]
pub struct Verified {
    every: Duration,
    seen: Mutex<HashMap<String, (Instant, u64)>>,
}

impl Verified {
    /// `Duration::ZERO` reads the tags on every pass.
    pub fn new(every: Duration) -> Self {
        Verified {
            every,
            seen: Mutex::default(),
        }
    }

    /// `trusted`: an id this process has not met yet counts as seen at a moment spread over
    /// the last window (by its hash), so trusted resources are re-read evenly across the
    /// next one.
    fn fresh(&self, id: &str, desired: u64, now: Instant, trusted: bool) -> bool {
        if self.every.is_zero() {
            return false;
        }
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((at, seen)) = seen.get(id) {
            return *seen == desired && now.duration_since(*at) < self.every;
        }
        let offset = Duration::from_nanos(digest(&id) % self.every.as_nanos().max(1) as u64);
        match now.checked_sub(offset).filter(|_| trusted) {
            Some(at) => {
                seen.insert(id.to_string(), (at, desired));
                true
            }
            None => false,
        }
    }

    fn remember(&self, id: &str, desired: u64, now: Instant) {
        if self.every.is_zero() {
            return;
        }
        self.seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.to_string(), (now, desired));
    }
}

fn digest(value: &impl Hash) -> u64 {
    let mut hasher = DefaultHasher::new();
    value.hash(&mut hasher);
    hasher.finish()
}

/// Whether the settings `id` were seen equal to `desired` within the window (never while
/// observing: observe reports every difference, so it always reads).
pub(crate) fn settled(c: &AwsClients, d: &Desired, id: &str, desired: &impl Hash) -> bool {
    !d.observe
        && c.verified
            .fresh(id, digest(desired), Instant::now(), d.trusted)
}

/// Records that the settings `id` are as `desired` now (after a read, or a repair that
/// succeeded).
pub(crate) fn settle(c: &AwsClients, d: &Desired, id: &str, desired: &impl Hash) {
    if !d.observe {
        c.verified.remember(id, digest(desired), Instant::now());
    }
}

/// The resource's tags: read with `read`, or, when they were complete less than `every`
/// ago, the desired tags (which hold the ownership tags, so the owner check passes and
/// nothing is missing).
pub(crate) async fn tags_of<Fut>(
    c: &AwsClients,
    d: &Desired,
    id: &str,
    read: impl FnOnce() -> Fut,
) -> Result<BTreeMap<String, String>>
where
    Fut: Future<Output = Result<BTreeMap<String, String>>>,
{
    let id = format!("{id}/tags");
    if settled(c, d, &id, &d.tags) {
        return Ok(d.tags.clone());
    }
    let tags = read().await?;
    if missing_tags(&d.tags, &tags).is_empty() {
        settle(c, d, &id, &d.tags);
    }
    Ok(tags)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(v: &str) -> BTreeMap<String, String> {
        BTreeMap::from([(
            "tracking-operator.io/pipeline-uid".to_string(),
            v.to_string(),
        )])
    }

    #[test]
    fn remembered_until_the_window_ends_or_the_desired_tags_change() {
        let v = Verified::new(Duration::from_secs(60));
        let t0 = Instant::now();
        let (a, b) = (digest(&tags("a")), digest(&tags("b")));
        assert!(!v.fresh("q", a, t0, false));
        v.remember("q", a, t0);
        assert!(v.fresh("q", a, t0 + Duration::from_secs(59), false));
        assert!(!v.fresh("q", a, t0 + Duration::from_secs(60), false));
        assert!(
            !v.fresh("q", b, t0, false),
            "new desired tags are read again"
        );
        assert!(!v.fresh("other", a, t0, false));
    }

    #[test]
    fn zero_reads_every_time() {
        let v = Verified::new(Duration::ZERO);
        let t0 = Instant::now();
        v.remember("q", digest(&tags("a")), t0);
        assert!(!v.fresh("q", digest(&tags("a")), t0, false));
        assert!(
            !v.fresh("new", digest(&tags("a")), t0, true),
            "trust needs a window"
        );
    }

    #[test]
    fn trusted_at_first_then_reread_spread_over_one_window() {
        let every = Duration::from_secs(3600);
        let v = Verified::new(every);
        // Far enough from the clock's origin for any offset.
        let t0 = Instant::now() + every;
        let a = digest(&tags("a"));
        let ids: Vec<String> = (0..200).map(|i| format!("queue-{i}")).collect();
        assert!(ids.iter().all(|id| v.fresh(id, a, t0, true)));
        // Each is re-read once within the next window, not all at the same moment.
        let mut due: Vec<u64> = ids
            .iter()
            .map(|id| {
                (1..=60)
                    .find(|m| !v.fresh(id, a, t0 + Duration::from_secs(m * 60), true))
                    .expect("re-read within one window")
            })
            .collect();
        due.sort();
        due.dedup();
        assert!(due.len() > 30, "re-reads spread over the window: {due:?}");
        // Once met, trust plays no part: an id read and found wanting stays unread-fresh.
        assert!(!v.fresh("queue-0", digest(&tags("b")), t0, true));
        // An untrusted pipeline's resources are read the first time.
        assert!(!v.fresh("untrusted", a, t0, false));
    }
}
