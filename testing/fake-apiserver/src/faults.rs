//! Request counters and fault injection.

use std::collections::BTreeMap;
use std::time::Duration;

/// What an injected fault does.
#[derive(Debug, Clone, PartialEq)]
pub enum FaultAction {
    /// Fail with this HTTP status, as kube-apiserver reports it (429 is plain
    /// text with `Retry-After: 1`; others are `Status` objects).
    Status(u16),
    /// Delay the request, then serve it normally.
    Delay(Duration),
}

/// A fault: the next `count` requests matching `verb` and `resource` get `action`.
#[derive(Debug, Clone, PartialEq)]
pub struct Fault {
    /// Verb as kube-apiserver names it (`get`, `list`, `watch`, `create`,
    /// `update`, `patch`, `delete`, `deletecollection`), or `*`.
    pub verb: String,
    /// Resource (`secrets`, `widgets`, `widgets/status`), or `*`.
    pub resource: String,
    /// How many matching requests are affected.
    pub count: u32,
    /// What happens to them.
    pub action: FaultAction,
    /// Only requests whose User-Agent contains this (one client among
    /// several); `None` matches every client.
    pub user_agent: Option<String>,
}

impl Fault {
    /// The next `count` `verb` requests on `resource` fail with `code`.
    pub fn status(verb: &str, resource: &str, count: u32, code: u16) -> Self {
        Fault {
            verb: verb.into(),
            resource: resource.into(),
            count,
            action: FaultAction::Status(code),
            user_agent: None,
        }
    }

    /// The next `count` `verb` requests on `resource` are delayed by `delay`.
    pub fn delay(verb: &str, resource: &str, count: u32, delay: Duration) -> Self {
        Fault {
            verb: verb.into(),
            resource: resource.into(),
            count,
            action: FaultAction::Delay(delay),
            user_agent: None,
        }
    }

    /// The same fault, for requests whose User-Agent contains `part` only.
    pub fn for_user_agent(self, part: &str) -> Self {
        Fault {
            user_agent: Some(part.into()),
            ..self
        }
    }

    fn matches(&self, verb: &str, resource: &str, user_agent: &str) -> bool {
        (self.verb == "*" || self.verb == verb)
            && (self.resource == "*" || self.resource == resource)
            && self
                .user_agent
                .as_deref()
                .is_none_or(|part| user_agent.contains(part))
    }
}

/// Pending faults.
#[derive(Debug, Default)]
pub struct Faults {
    pending: Vec<Fault>,
}

impl Faults {
    /// Adds a fault.
    pub fn push(&mut self, f: Fault) {
        if f.count > 0 {
            self.pending.push(f);
        }
    }

    /// Takes one use of the first fault matching the request.
    pub fn take(&mut self, verb: &str, resource: &str, user_agent: &str) -> Option<FaultAction> {
        let idx = self
            .pending
            .iter()
            .position(|f| f.matches(verb, resource, user_agent))?;
        let f = &mut self.pending[idx];
        f.count -= 1;
        let action = f.action.clone();
        if f.count == 0 {
            self.pending.remove(idx);
        }
        Some(action)
    }

    /// Removes all pending faults.
    pub fn clear(&mut self) {
        self.pending.clear();
    }
}

const WRITE_VERBS: [&str; 5] = ["create", "update", "patch", "delete", "deletecollection"];

/// One answered write, as logged in the order answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteRecord {
    pub user_agent: String,
    pub verb: String,
    pub resource: String,
    pub status: u16,
}

/// A snapshot of request counts.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RequestCounters {
    by_key: BTreeMap<(String, String, u16), u64>,
    /// Every answered write, in the order answered (who wrote while whom
    /// held a Lease).
    writes_log: Vec<WriteRecord>,
    by_user_agent: BTreeMap<(String, String, String), u64>,
    /// Requests by verb and resource, counted when they arrive (before they
    /// are delayed or served), so that a snapshot taken after seeing a
    /// write's effect always includes it, and a test can tell that a request
    /// it delays is under way.
    arrived: BTreeMap<(String, String), u64>,
}

impl RequestCounters {
    /// Records the arrival of a request, before it is served.
    pub fn arrived(&mut self, verb: &str, resource: &str) {
        *self
            .arrived
            .entry((verb.to_string(), resource.to_string()))
            .or_default() += 1;
    }

    /// Writes to the resource that have arrived, answered or not: unlike
    /// [`RequestCounters::writes`], a write whose effect a client has seen
    /// is always included.
    pub fn writes_arrived(&self, resource: &str) -> u64 {
        WRITE_VERBS
            .iter()
            .map(|verb| self.requests_arrived(verb, resource))
            .sum()
    }

    /// Requests with this verb on this resource that have arrived, answered
    /// or not.
    pub fn requests_arrived(&self, verb: &str, resource: &str) -> u64 {
        self.arrived
            .get(&(verb.to_string(), resource.to_string()))
            .copied()
            .unwrap_or(0)
    }

    /// Records one answered request of the client sending `user_agent`.
    pub fn record(&mut self, verb: &str, resource: &str, status: u16, user_agent: &str) {
        if WRITE_VERBS.contains(&verb) {
            self.writes_log.push(WriteRecord {
                user_agent: user_agent.to_string(),
                verb: verb.to_string(),
                resource: resource.to_string(),
                status,
            });
        }
        *self
            .by_key
            .entry((verb.to_string(), resource.to_string(), status))
            .or_default() += 1;
        *self
            .by_user_agent
            .entry((
                user_agent.to_string(),
                verb.to_string(),
                resource.to_string(),
            ))
            .or_default() += 1;
    }

    /// Every answered write so far, in the order answered.
    pub fn writes_log(&self) -> &[WriteRecord] {
        &self.writes_log
    }

    /// Writes to the resource by clients whose User-Agent contains `part`
    /// (any status).
    pub fn writes_by(&self, part: &str, resource: &str) -> u64 {
        self.by_user_agent
            .iter()
            .filter(|((agent, verb, r), _)| {
                agent.contains(part) && r == resource && WRITE_VERBS.contains(&verb.as_str())
            })
            .map(|(_, n)| n)
            .sum()
    }

    /// Requests with this verb on this resource (any status).
    pub fn count(&self, verb: &str, resource: &str) -> u64 {
        self.by_key
            .iter()
            .filter(|((v, r, _), _)| v == verb && r == resource)
            .map(|(_, n)| n)
            .sum()
    }

    /// Requests with this verb on this resource answered with `status`.
    pub fn count_status(&self, verb: &str, resource: &str, status: u16) -> u64 {
        self.by_key
            .get(&(verb.to_string(), resource.to_string(), status))
            .copied()
            .unwrap_or(0)
    }

    /// Requests with this verb on any resource.
    pub fn count_verb(&self, verb: &str) -> u64 {
        self.by_key
            .iter()
            .filter(|((v, _, _), _)| v == verb)
            .map(|(_, n)| n)
            .sum()
    }

    /// All writes (create, update, patch, delete, deletecollection) to the resource.
    pub fn writes(&self, resource: &str) -> u64 {
        WRITE_VERBS.iter().map(|v| self.count(v, resource)).sum()
    }

    /// Total requests.
    pub fn total(&self) -> u64 {
        self.by_key.values().sum()
    }

    /// Every (verb, resource, status) → count.
    pub fn entries(&self) -> &BTreeMap<(String, String, u16), u64> {
        &self.by_key
    }
}

/// A server whose requests can be made to fail or wait, and are counted: the
/// fake itself, or a [`crate::FaultProxy`] in front of a real kube-apiserver.
/// Tests written against this run on both.
pub trait FaultInjection {
    /// Makes the next `fault.count` matching requests fail or wait.
    fn inject_fault(&self, fault: Fault);
    /// Drops all pending faults.
    fn clear_faults(&self);
    /// A snapshot of the request counters.
    fn counters(&self) -> RequestCounters;
    /// Zeroes the request counters.
    fn reset_counters(&self);
    /// Ends every watch open now, as a dropped connection would.
    fn drop_watches(&self);
    /// Ends every watch open now and makes their resumption fail with
    /// 410, as after an etcd compaction: the clients must list again.
    fn expire_watches(&self);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_count_on_arrival_and_only_writes_count_as_writes() {
        let mut counters = RequestCounters::default();
        counters.arrived("patch", "secrets");
        counters.arrived("get", "secrets");
        assert_eq!(counters.writes_arrived("secrets"), 1);
        assert_eq!(counters.requests_arrived("get", "secrets"), 1);
        assert_eq!(counters.count("get", "secrets"), 0, "not answered yet");
        assert_eq!(counters.writes("secrets"), 0, "not answered yet");
        counters.record("patch", "secrets", 200, "kubestash");
        assert_eq!(counters.writes("secrets"), 1);
        assert_eq!(counters.writes_arrived("configmaps"), 0);
    }
}
