//! Deterministic, length-safe AWS names for a pipeline's resources.
//!
//! The readable form is `tp_<namespace>_<name>-<suffix>`: `_` can appear in neither a
//! namespace nor an object name, so the mapping is injective. When a service forbids a
//! character (a `.` in the name) or the name is too long, the readable part is shortened
//! and a hash of the exact `namespace/name` is appended, so distinct pipelines never share
//! a name and the same pipeline always gets the same one.

use sha2::{Digest, Sha256};

/// Length of the hex hash appended to shortened or sanitised names.
const HASH_LEN: usize = 10;

/// A service's name limits.
#[derive(Clone, Copy, Debug)]
pub struct Rules {
    pub max_len: usize,
    /// Characters allowed besides ASCII alphanumerics and `-`, `_`.
    pub extra: &'static str,
}

pub const SQS: Rules = Rules {
    max_len: 80,
    extra: "",
};
pub const SNS: Rules = Rules {
    max_len: 256,
    extra: "",
};
pub const DYNAMODB: Rules = Rules {
    max_len: 255,
    extra: ".",
};
pub const ALARM: Rules = Rules {
    max_len: 255,
    extra: "./",
};
pub const SCHEDULER: Rules = Rules {
    max_len: 64,
    extra: ".",
};
pub const IAM_ROLE: Rules = Rules {
    max_len: 64,
    extra: ".+=,@",
};
/// KMS alias names after `alias/`: alphanumerics, `/`, `_`, `-`; 256 in total with the prefix.
pub const KMS_ALIAS: Rules = Rules {
    max_len: 256 - "alias/".len(),
    extra: "/",
};

/// Every AWS name of one pipeline.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Names {
    pub queue: String,
    pub dead_letter_queue: String,
    pub table: String,
    pub topic: String,
    pub queue_key_alias: String,
    pub table_key_alias: String,
    pub alarm_queue_depth: String,
    pub alarm_oldest_message: String,
    pub alarm_worker_errors: String,
    pub alarm_worker_throttles: String,
    pub alarm_dead_letters: String,
    pub schedule: String,
    pub scheduler_role: String,
    pub worker_role: String,
}

impl Names {
    pub fn new(namespace: &str, name: &str) -> Names {
        let n = |suffix: &str, rules: Rules| resource_name(namespace, name, suffix, rules);
        let alias = |suffix: &str| {
            format!(
                "alias/{}",
                name_with(
                    &["tracking-operator", namespace, name],
                    "/",
                    suffix,
                    KMS_ALIAS,
                    namespace,
                    name
                )
            )
        };
        Names {
            queue: n("queue", SQS),
            dead_letter_queue: n("dlq", SQS),
            table: n("audit", DYNAMODB),
            topic: n("alerts", SNS),
            queue_key_alias: alias("sqs"),
            table_key_alias: alias("dynamodb"),
            alarm_queue_depth: n("queue-depth", ALARM),
            alarm_oldest_message: n("oldest-message-age", ALARM),
            alarm_worker_errors: n("worker-errors", ALARM),
            alarm_worker_throttles: n("worker-throttles", ALARM),
            alarm_dead_letters: n("dead-letters", ALARM),
            schedule: n("maintenance", SCHEDULER),
            scheduler_role: n("scheduler", IAM_ROLE),
            worker_role: n("worker", IAM_ROLE),
        }
    }

    /// The names with the account-global ones (IAM roles) made unique per cluster: two
    /// clusters in one account get different roles for the same namespace/name.
    pub fn for_cluster(mut self, namespace: &str, name: &str, cluster: Option<&str>) -> Names {
        if let Some(cluster) = cluster {
            let tag = &hex::encode(Sha256::digest(cluster.as_bytes()))[..6];
            // The part stays last: the operator's IAM policy scopes roles by `-scheduler`
            // and `-worker` at the end of the name.
            self.scheduler_role =
                resource_name(namespace, name, &format!("{tag}-scheduler"), IAM_ROLE);
            self.worker_role = resource_name(namespace, name, &format!("{tag}-worker"), IAM_ROLE);
        }
        self
    }

    pub fn alarms(&self) -> [&str; 5] {
        [
            &self.alarm_queue_depth,
            &self.alarm_oldest_message,
            &self.alarm_worker_errors,
            &self.alarm_worker_throttles,
            &self.alarm_dead_letters,
        ]
    }
}

/// `tp_<namespace>_<name>-<suffix>`, shortened with a hash when needed.
pub fn resource_name(namespace: &str, name: &str, suffix: &str, rules: Rules) -> String {
    name_with(
        &["tp", namespace, name],
        "_",
        suffix,
        rules,
        namespace,
        name,
    )
}

fn name_with(
    parts: &[&str],
    sep: &str,
    suffix: &str,
    rules: Rules,
    namespace: &str,
    name: &str,
) -> String {
    let allowed =
        |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_' || rules.extra.contains(c);
    let readable = parts.join(sep);
    let sanitised: String = readable
        .chars()
        .map(|c| if allowed(c) { c } else { '-' })
        .collect();
    let tail = format!("-{suffix}");
    if sanitised == readable && readable.len() + tail.len() <= rules.max_len {
        return format!("{readable}{tail}");
    }
    let hash = short_hash(namespace, name);
    // Room for the readable head: total minus "-<hash>" minus "-<suffix>".
    let room = rules.max_len.saturating_sub(1 + HASH_LEN + tail.len());
    let head: String = sanitised.chars().take(room).collect();
    let head = head.trim_end_matches(['-', '_', '.', '/']);
    format!("{head}-{hash}{tail}")
}

fn short_hash(namespace: &str, name: &str) -> String {
    let digest = Sha256::digest(format!("{namespace}/{name}").as_bytes());
    hex::encode(digest)[..HASH_LEN].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iam_role_names_differ_per_cluster_and_nothing_else_does() {
        let plain = Names::new("logistics", "parcels");
        let blue = plain
            .clone()
            .for_cluster("logistics", "parcels", Some("blue"));
        let green = plain
            .clone()
            .for_cluster("logistics", "parcels", Some("green"));
        assert_ne!(blue.worker_role, green.worker_role);
        assert_ne!(blue.scheduler_role, green.scheduler_role);
        assert!(blue.worker_role.len() <= IAM_ROLE.max_len);
        assert!(
            blue.worker_role.ends_with("-worker") && blue.scheduler_role.ends_with("-scheduler")
        );
        assert_eq!(blue.queue, plain.queue, "regional names stay readable");
        assert_eq!(
            plain.clone().for_cluster("logistics", "parcels", None),
            plain
        );
    }

    #[test]
    fn short_names_are_readable() {
        let n = Names::new("logistics", "parcels");
        assert_eq!(n.queue, "tp_logistics_parcels-queue");
        assert_eq!(n.dead_letter_queue, "tp_logistics_parcels-dlq");
        assert_eq!(n.table, "tp_logistics_parcels-audit");
        assert_eq!(
            n.queue_key_alias,
            "alias/tracking-operator/logistics/parcels-sqs"
        );
        assert_eq!(n.schedule, "tp_logistics_parcels-maintenance");
    }

    #[test]
    fn long_names_fit_every_limit_and_stay_distinct() {
        let ns = "n".repeat(63);
        let a = Names::new(&ns, &"a".repeat(253));
        let b = Names::new(&ns, &format!("{}b", "a".repeat(252)));
        for (names, other) in [(&a, &b), (&b, &a)] {
            assert!(names.queue.len() <= 80 && names.dead_letter_queue.len() <= 80);
            assert!(names.schedule.len() <= 64, "{}", names.schedule);
            assert!(names.scheduler_role.len() <= 64 && names.worker_role.len() <= 64);
            assert!(names.table.len() <= 255 && names.topic.len() <= 256);
            assert!(names.queue_key_alias.len() <= 256);
            assert!(names.alarms().iter().all(|a| a.len() <= 255));
            assert_ne!(names.queue, other.queue);
            assert_ne!(names.schedule, other.schedule);
            assert!(names.queue.ends_with("-queue"));
        }
        assert_eq!(a, Names::new(&ns, &"a".repeat(253)), "deterministic");
    }

    #[test]
    fn forbidden_characters_are_replaced_and_hashed() {
        let dotted = Names::new("ns", "a.b");
        let dashed = Names::new("ns", "a-b");
        assert!(
            dotted
                .queue
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        );
        assert_ne!(dotted.queue, dashed.queue);
        // DynamoDB allows dots, so that name stays readable.
        assert_eq!(dotted.table, "tp_ns_a.b-audit");
    }

    #[test]
    fn separators_keep_namespace_and_name_apart() {
        assert_ne!(Names::new("a-b", "c").queue, Names::new("a", "b-c").queue);
    }
}
