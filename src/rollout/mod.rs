//! Rollout on change: workloads annotated `kubestash.io/restart-on-change:
//! "true"` are restarted when the operator changed the data of a managed
//! Secret they reference.
//!
//! Pure logic only: which Secrets a workload references ([`workload`]), the
//! digest of their data that goes into the pod template ([`digest`]), and
//! the per-workload debounce ([`debounce`]). The watch of the workloads and
//! the patch live in `controller::rollout`.

pub mod debounce;
pub mod digest;
pub mod workload;

pub use debounce::RestartDebouncer;
pub use digest::{secret_key_digests, workload_digest, KeyDigest};
pub use workload::{Workload, WorkloadIndex, WorkloadKind, WorkloadRef};

/// Workload annotation that opts it in (value `"true"`).
pub const RESTART_ANNOTATION: &str = "kubestash.io/restart-on-change";
/// Pod-template annotation holding the digest of the referenced managed
/// Secrets' data; changing it is the restart.
pub const DIGEST_ANNOTATION: &str = "kubestash.io/secrets-digest";
/// Workload annotation (outside the pod template) with the RFC 3339 time of
/// the operator's last restart, so that the debounce window outlives an
/// operator restart or a new leader.
pub const ROLLED_AT_ANNOTATION: &str = "kubestash.io/restarted-at";
