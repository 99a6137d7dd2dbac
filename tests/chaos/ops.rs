//! The operations of a chaos schedule, as printed in a failure report.

use std::collections::BTreeMap;
use std::fmt;

/// A Secret by namespace and name.
pub type SecretId = (String, String);

/// What the AWS proxy does to the operator's next requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AwsFault {
    /// `400` ThrottlingException (KMS, Streams) / ProvisionedThroughputExceededException (DynamoDB).
    Throttle(u32),
    /// `500` InternalServerError.
    ServerError(u32),
    /// The connection is closed without an answer.
    Drop(u32),
    /// Every connection is dropped for this many milliseconds.
    Outage(u64),
}

/// One step of a schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Table writes, in order, through the real credstash library (one process).
    Table(Vec<TableOp>),
    CreateNamespace(String),
    /// Delete a namespace; `held`: a ConfigMap finalizer keeps it Terminating.
    DeleteNamespace {
        namespace: String,
        held: bool,
    },
    /// Remove the finalizer holding a Terminating namespace.
    ReleaseNamespace(String),
    /// A key nobody else writes, added by hand to an existing Secret.
    HandAdd {
        secret: SecretId,
        key: String,
        value: String,
    },
    /// A key the operator owns, changed by hand.
    HandEdit {
        secret: SecretId,
        key: String,
        value: String,
    },
    /// A key the operator owns, removed by hand.
    HandRemove {
        secret: SecretId,
        key: String,
    },
    DeleteSecret(SecretId),
    /// A Secret of another type where the table will want an Opaque one.
    CreateNonOpaque {
        secret: SecretId,
        key: String,
        value: String,
    },
    SetExcluded(Vec<String>),
    SetPrune(bool),
    SetDryRun(bool),
    Resync,
    /// Delete the CredstashSync and create the same spec under a new name.
    Rename,
    /// Delete the CredstashSync (its Secrets stay, nothing is written).
    DeleteCss,
    /// Create the CredstashSync again, under a new name.
    CreateCss,
    /// Create (`true`) or delete the second CredstashSync on the same table,
    /// which writes [`super::model::SECOND_NAMESPACE`] alone.
    SetSecondCss(bool),
    /// Label a namespace for the selector (`selected`), or remove the label.
    LabelNamespace {
        namespace: String,
        selected: bool,
    },
    /// `spec.namespaceSelector` on (namespaces with the label) or off.
    SetSelector(bool),
    /// `spec.adoptExisting`.
    SetAdopt(bool),
    /// Delete the table and create it again, empty, with a new stream.
    RecreateTable,
    /// Disable the table's stream and enable a new one (a new ARN).
    ReplaceStream,
    /// Set `spec.secretMetadata`.
    SetMetadata {
        labels: BTreeMap<String, String>,
        annotations: BTreeMap<String, String>,
    },
    /// Stop the leader, or the only replica (SIGKILL when `kill`: a leader
    /// kill; else SIGTERM: a hand-over), and start a new replica.
    Restart {
        kill: bool,
    },
    /// The API server answers the next `count` `verb`s on `resource` with `code`.
    ApiFault {
        verb: String,
        resource: String,
        count: u32,
        code: u16,
    },
    /// The API server holds the next `verb` on `resource` for `millis`.
    ApiDelay {
        verb: String,
        resource: String,
        millis: u64,
    },
    /// Compact the API server's event log (watches get 410 Gone).
    Compact,
    /// Every open watch ends, as a dropped connection would (no 410).
    DropWatches,
    Aws(AwsFault),
    /// Quiet period: wait for convergence, then check every invariant.
    Check,
    /// A check whose convergence runs through a storm of faults (and the
    /// faults of earlier operations, not cleared): the operator must
    /// converge within the same bound.
    StormCheck(Storm),
}

/// The faults a [`Op::StormCheck`] converges through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Storm {
    /// Secret patches answered 429 Too Many Requests.
    pub patch_429s: u32,
    /// The next LIST of Secrets held this long.
    pub slow_list_ms: u64,
    /// AWS requests throttled.
    pub aws_throttles: u32,
}

/// One table write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TableOp {
    /// A new version (version 1 for a new name).
    Put { name: String, value: String },
    /// Every version of a name.
    Delete { name: String },
    /// A newer version whose ciphertext fails its HMAC.
    Tamper { name: String },
    /// A newer version sealed with an encryption context the operator does not use.
    WrongContext { name: String, value: String },
    /// Only the newest version of a name deleted: the one before is the
    /// latest again.
    Rollback { name: String },
}

/// Names the operator must count as invalid, never map (DESIGN.md, the
/// mapping: a DNS label, a DNS subdomain, `[-._a-zA-Z0-9]+`).
pub const INVALID_NAMES: [&str; 4] = [
    "ns-a/app/bad key",
    "ns-b/App/user",
    "NS-C/app/user",
    "ns-a/app/x+y",
];

/// Kinds of operation a run must exercise at least once each, with the
/// feature (`CHAOS_FEATURES`) that enables them.
pub const REQUIRED_KINDS: [(&str, &str); 14] = [
    ("rollback", "rollback"),
    ("invalid-name", "invalid-names"),
    ("odd-value", "odd-values"),
    ("second-css", "second-css"),
    ("delete-css", "delete-css"),
    ("label-namespace", "selector"),
    ("selector", "selector"),
    ("metadata", "metadata"),
    ("adopt", "adopt"),
    ("recreate-table", "table-lifecycle"),
    ("replace-stream", "table-lifecycle"),
    ("watch-drop", "watch-drops"),
    ("lease-fault", "leader"),
    ("storm", "storm"),
];

impl TableOp {
    /// The required kind this write is, if any.
    pub fn kind(&self) -> Option<&'static str> {
        match self {
            TableOp::Rollback { .. } => Some("rollback"),
            TableOp::Put { name, .. } if INVALID_NAMES.contains(&name.as_str()) => {
                Some("invalid-name")
            }
            TableOp::Put { value, .. } | TableOp::WrongContext { value, .. } if is_odd(value) => {
                Some("odd-value")
            }
            _ => None,
        }
    }

    /// The credstash name written.
    pub fn name(&self) -> &str {
        match self {
            TableOp::Put { name, .. }
            | TableOp::Delete { name }
            | TableOp::Tamper { name }
            | TableOp::Rollback { name }
            | TableOp::WrongContext { name, .. } => name,
        }
    }

    /// The operation as `fixture.py batch` reads it.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::json;
        match self {
            TableOp::Put { name, value } => json!({"op": "put", "name": name, "value": value}),
            TableOp::Delete { name } => json!({"op": "delete", "name": name}),
            TableOp::Tamper { name } => json!({"op": "tamper", "name": name}),
            TableOp::Rollback { name } => json!({"op": "rollback", "name": name}),
            TableOp::WrongContext { name, value } => {
                json!({"op": "wrong-context", "name": name, "value": value})
            }
        }
    }
}

impl Op {
    /// Whether this operation injects a fault (for the soak report): one
    /// that has a [`Op::fault_kind`], checks aside.
    pub fn is_fault(&self) -> bool {
        !self.is_check() && self.fault_kind().is_some()
    }

    /// The kinds of operation every run must exercise (see
    /// [`REQUIRED_KINDS`]) that this one is.
    pub fn kinds(&self) -> Vec<&'static str> {
        let kind = match self {
            Op::Table(writes) => return writes.iter().filter_map(TableOp::kind).collect(),
            Op::SetSecondCss(_) => "second-css",
            Op::DeleteCss => "delete-css",
            Op::LabelNamespace { .. } => "label-namespace",
            Op::SetSelector(_) => "selector",
            Op::SetMetadata { .. } => "metadata",
            Op::SetAdopt(_) => "adopt",
            Op::RecreateTable => "recreate-table",
            Op::ReplaceStream => "replace-stream",
            Op::DropWatches => "watch-drop",
            Op::ApiFault { resource, .. } if resource == "leases" => "lease-fault",
            Op::StormCheck(_) => "storm",
            _ => return Vec::new(),
        };
        vec![kind]
    }

    /// Whether this is a check (a step, not an operation).
    pub fn is_check(&self) -> bool {
        matches!(self, Op::Check | Op::StormCheck(_))
    }

    /// The kind of fault injected, for the counters (`None`: no fault).
    pub fn fault_kind(&self) -> Option<String> {
        Some(match self {
            Op::ApiFault {
                verb,
                resource,
                code,
                ..
            } => format!("api {code} on {verb} {resource}"),
            Op::ApiDelay { verb, resource, .. } => format!("api delay on {verb} {resource}"),
            Op::Compact => "api watch expiry (410)".into(),
            Op::DropWatches => "api watch disconnect".into(),
            Op::Aws(AwsFault::Throttle(_)) => "aws throttle".into(),
            Op::Aws(AwsFault::ServerError(_)) => "aws 500".into(),
            Op::Aws(AwsFault::Drop(_)) => "aws dropped connection".into(),
            Op::Aws(AwsFault::Outage(_)) => "aws outage".into(),
            Op::Restart { kill: true } => "operator SIGKILL".into(),
            Op::Restart { kill: false } => "operator SIGTERM".into(),
            Op::StormCheck(_) => "storm during convergence".into(),
            _ => return None,
        })
    }

    /// A short family name (for counting).
    pub fn family(&self) -> &'static str {
        match self {
            Op::Table(_) => "table",
            Op::CreateNamespace(_) | Op::DeleteNamespace { .. } | Op::ReleaseNamespace(_) => {
                "namespace"
            }
            Op::HandAdd { .. }
            | Op::HandEdit { .. }
            | Op::HandRemove { .. }
            | Op::DeleteSecret(_)
            | Op::CreateNonOpaque { .. } => "hand",
            Op::SetExcluded(_) | Op::SetPrune(_) | Op::SetDryRun(_) | Op::Resync | Op::Rename => {
                "credstashsync"
            }
            Op::DeleteCss | Op::CreateCss => "credstashsync-lifecycle",
            Op::SetSecondCss(_) => "second-credstashsync",
            Op::LabelNamespace { .. } | Op::SetSelector(_) => "namespace-selector",
            Op::SetAdopt(_) => "adopt-existing",
            Op::RecreateTable | Op::ReplaceStream => "table-lifecycle",
            Op::SetMetadata { .. } => "secret-metadata",
            Op::Restart { .. } => "restart",
            Op::ApiFault { .. } | Op::ApiDelay { .. } | Op::Compact | Op::DropWatches => {
                "api-fault"
            }
            Op::Aws(_) => "aws-fault",
            Op::Check | Op::StormCheck(_) => "check",
        }
    }
}

impl fmt::Display for TableOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TableOp::Put { name, value } => write!(f, "put {name}={}", short(value)),
            TableOp::Delete { name } => write!(f, "delete {name}"),
            TableOp::Tamper { name } => write!(f, "tamper {name}"),
            TableOp::Rollback { name } => write!(f, "delete the newest version of {name}"),
            TableOp::WrongContext { name, value } => {
                write!(f, "wrong-context {name}={}", short(value))
            }
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::Table(ops) => {
                let ops: Vec<String> = ops.iter().map(ToString::to_string).collect();
                write!(f, "table [{}]", ops.join("; "))
            }
            Op::CreateNamespace(ns) => write!(f, "create namespace {ns}"),
            Op::DeleteNamespace { namespace, held } => {
                let held = if *held { " (held by a finalizer)" } else { "" };
                write!(f, "delete namespace {namespace}{held}")
            }
            Op::ReleaseNamespace(ns) => write!(f, "release the finalizer of namespace {ns}"),
            Op::HandAdd { secret, key, value } => {
                write!(f, "hand: add {key}={value} to {}/{}", secret.0, secret.1)
            }
            Op::HandEdit { secret, key, value } => {
                write!(
                    f,
                    "hand: set owned {key}={value} in {}/{}",
                    secret.0, secret.1
                )
            }
            Op::HandRemove { secret, key } => {
                write!(f, "hand: remove owned {key} from {}/{}", secret.0, secret.1)
            }
            Op::DeleteSecret(secret) => write!(f, "hand: delete Secret {}/{}", secret.0, secret.1),
            Op::CreateNonOpaque { secret, key, value } => write!(
                f,
                "hand: create non-Opaque Secret {}/{} with {key}={value}",
                secret.0, secret.1
            ),
            Op::SetExcluded(list) => write!(f, "css: excludedNamespaces={list:?}"),
            Op::SetPrune(on) => write!(f, "css: prune={on}"),
            Op::SetDryRun(on) => write!(f, "css: dryRun={on}"),
            Op::Resync => write!(f, "css: request a resync"),
            Op::Rename => write!(f, "css: delete and re-create under a new name"),
            Op::DeleteCss => write!(f, "css: delete (not re-created)"),
            Op::SetSecondCss(true) => write!(f, "css: create the second CredstashSync"),
            Op::SetSecondCss(false) => write!(f, "css: delete the second CredstashSync"),
            Op::LabelNamespace {
                namespace,
                selected,
            } => write!(
                f,
                "{} namespace {namespace}",
                if *selected { "label" } else { "unlabel" }
            ),
            Op::SetSelector(on) => write!(f, "css: namespaceSelector {}", if *on { "on" } else { "off" }),
            Op::SetAdopt(on) => write!(f, "css: adoptExisting={on}"),
            Op::RecreateTable => write!(f, "table: delete it and create it again, empty"),
            Op::ReplaceStream => write!(f, "table: replace its stream (new ARN)"),
            Op::CreateCss => write!(f, "css: create again under a new name"),
            Op::SetMetadata {
                labels,
                annotations,
            } => write!(
                f,
                "css: secretMetadata labels={labels:?} annotations={annotations:?}"
            ),
            Op::Restart { kill } => {
                write!(
                    f,
                    "stop the leader ({}) and start a replica",
                    if *kill { "SIGKILL: killed" } else { "SIGTERM: hand-over" }
                )
            }
            Op::ApiFault {
                verb,
                resource,
                count,
                code,
            } => {
                write!(f, "api fault: next {count} {verb} {resource} -> {code}")
            }
            Op::ApiDelay {
                verb,
                resource,
                millis,
            } => {
                write!(f, "api delay: next {verb} {resource} held {millis} ms")
            }
            Op::Compact => write!(f, "api: compact the event log (watches get 410)"),
            Op::DropWatches => write!(f, "api: drop every watch connection (no 410)"),
            Op::Aws(fault) => write!(f, "aws fault: {fault:?}"),
            Op::Check => write!(f, "CHECK (quiet period, convergence, invariants)"),
            Op::StormCheck(storm) => write!(
                f,
                "CHECK UNDER FAULTS ({} Secret patches 429, a Secret LIST held {} ms, {} AWS throttles, earlier faults kept)",
                storm.patch_429s, storm.slow_list_ms, storm.aws_throttles
            ),
        }
    }
}

/// A value as printed: long or odd values shortened and escaped.
pub fn short(value: &str) -> String {
    let escaped: String = value.escape_default().collect();
    if escaped.chars().count() > 60 {
        let head: String = escaped.chars().take(40).collect();
        format!("{head}…({} bytes)", value.len())
    } else {
        escaped
    }
}

/// A value that is large or holds control and multi-byte characters.
pub fn is_odd(value: &str) -> bool {
    value.len() > 1024 || value.chars().any(|c| c.is_control() || !c.is_ascii())
}
