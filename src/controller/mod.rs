//! The operator: reconciles CredstashSyncs into Secrets.

pub mod triggers;
