//! Reasons of the Events kubestash publishes on a CredstashSync (and, for a
//! restart, on the workload), as `kubectl describe` shows them. An event
//! that reports a condition uses the condition's reason ([`super::reason`]).

/// A full sync could not read the table or the cluster.
pub const SYNC_FAILED: &str = "SyncFailed";
/// The plan of a dry-run sync.
pub const DRY_RUN_PLAN: &str = "DryRunPlan";
/// Secrets were created.
pub const CREATED: &str = "Created";
/// Secrets were updated.
pub const UPDATED: &str = "Updated";
/// Keys could not be decrypted; they keep their last good value.
pub const DECRYPT_FAILED: &str = "DecryptFailed";
/// Keys not written: two names normalise to one key, or another
/// CredstashSync owns it.
pub const KEY_CONFLICT: &str = "KeyConflict";
/// Writes of Secrets failed.
pub const UPDATE_FAILED: &str = "UpdateFailed";
/// Secrets not written (not Opaque, not adopted, namespace not selected...).
pub const SECRET_SKIPPED: &str = "SecretSkipped";
/// Table names not of the form `namespace/secret/KEY`.
pub const INVALID_NAME: &str = "InvalidName";
/// A managed Secret was put back after somebody else changed it.
pub const REPAIRED: &str = "Repaired";
/// A workload was restarted because Secrets it references changed
/// (`spec.rollout`).
pub const SECRETS_CHANGED: &str = "SecretsChanged";
