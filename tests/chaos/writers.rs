//! "Exactly one replica writes", judged from the API server's log of
//! answered writes: a replica's Secret write must come while it holds the
//! Lease, that is while its own successful Lease write is the latest of any
//! replica's. Replicas are told apart by their User-Agent
//! (`kubestash/VERSION (IDENTITY)`).

use std::collections::BTreeMap;

use fake_apiserver::{RequestCounters, WriteRecord};

/// Follows the write log across checks.
#[derive(Debug, Default)]
pub struct Writers {
    judged: usize,
    holder: Option<String>,
    /// Successful Secret writes per replica (for the report).
    pub secret_writes: BTreeMap<String, usize>,
}

fn is_replica(record: &WriteRecord) -> bool {
    record.user_agent.starts_with("kubestash/")
}

fn succeeded(record: &WriteRecord) -> bool {
    (200..300).contains(&record.status)
}

impl Writers {
    /// Judges the writes answered since the last call.
    pub fn judge(&mut self, counters: &RequestCounters) -> Vec<String> {
        let log = counters.writes_log();
        let new = log.get(self.judged..).unwrap_or_default();
        self.judged = log.len();
        let mut out = Vec::new();
        for record in new.iter().filter(|r| is_replica(r) && succeeded(r)) {
            match record.resource.as_str() {
                "leases" => self.holder = Some(record.user_agent.clone()),
                "secrets" => {
                    *self
                        .secret_writes
                        .entry(record.user_agent.clone())
                        .or_default() += 1;
                    if self.holder.as_ref() != Some(&record.user_agent) {
                        out.push(format!(
                            "[7 one writer] {} {} a Secret while {} held the Lease",
                            record.user_agent,
                            record.verb,
                            self.holder.as_deref().unwrap_or("no replica")
                        ));
                    }
                }
                _ => {}
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_write_by_a_replica_without_the_lease_is_caught() {
        let mut counters = RequestCounters::default();
        let (a, b) = ("kubestash/1 (a)", "kubestash/1 (b)");
        counters.record("patch", "leases", 200, a);
        counters.record("patch", "secrets", 200, a);
        counters.record("patch", "secrets", 200, "chaos-driver");
        counters.record("patch", "leases", 409, b);
        counters.record("patch", "secrets", 201, a);
        let mut writers = Writers::default();
        assert!(writers.judge(&counters).is_empty());
        counters.record("patch", "leases", 200, b);
        counters.record("patch", "secrets", 429, a);
        counters.record("patch", "secrets", 200, b);
        assert!(
            writers.judge(&counters).is_empty(),
            "refused writes count for nothing"
        );
        counters.record("patch", "secrets", 200, a);
        let found = writers.judge(&counters);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(writers.secret_writes[a], 3);
    }
}
