//! Writing Secrets: what the cluster has ([`live`], [`observed`]), what to
//! send ([`plan`](mod@plan)), whose fields deleted CredstashSyncs leave
//! ([`handover`]), the type rules of a Secret ([`typed`]), the operator's
//! own recent writes ([`ledger`]) and the
//! sending itself ([`apply`], the one module here that talks to the API
//! server; the rest is pure). The sync engine ([`crate::sync`]) runs them
//! in order.
//!
//! Writes are server-side apply with one field manager per CredstashSync
//! (`kubestash/<name>`), `force = true`, and a body that lists every key the
//! manager should still own (SSA removes owned fields a body omits).

pub mod apply;
pub mod handover;
pub mod ledger;
pub mod live;
pub mod observed;
pub mod plan;
pub mod typed;

pub use ledger::{Echo, OwnWrites};
pub use live::LiveSecret;
pub use observed::{observe_all, Managers, ObservedSecret};
pub use plan::{
    plan, plan_secret, ApplySecret, KeepReason, KeyChange, KeyChangeKind, NamespaceWrites, Plan,
    PlanCounts, PlanOptions, SecretAction, SecretPlan, SecretScope, SkipReason,
};

/// Label put on every Secret kubestash writes.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// Value of [`MANAGED_BY_LABEL`].
pub const MANAGED_BY_VALUE: &str = "kubestash";
/// Annotation: when the data last changed (RFC 3339, UTC).
pub const SYNCED_AT_ANNOTATION: &str = "kubestash.io/synced-at";
/// Annotation: `<CredstashSync name>/<table>`.
pub const SOURCE_ANNOTATION: &str = "kubestash.io/source";
/// Prefix of every kubestash field manager.
pub const MANAGER_PREFIX: &str = "kubestash/";
/// The Secret type kubestash writes unless `spec.secretTemplates` gives
/// another.
pub const OPAQUE: &str = "Opaque";

/// The field manager of a CredstashSync: `kubestash/<name>`.
pub fn field_manager(sync_name: &str) -> String {
    format!("{MANAGER_PREFIX}{sync_name}")
}

/// The value of [`SOURCE_ANNOTATION`]: `<CredstashSync name>/<table>`.
pub fn source_annotation(sync_name: &str, table: &str) -> String {
    format!("{sync_name}/{table}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manager_and_source_names() {
        assert_eq!(field_manager("prod"), "kubestash/prod");
        assert_eq!(
            source_annotation("prod", "credential-store"),
            "prod/credential-store"
        );
    }
}
