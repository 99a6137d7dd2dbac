//! The operator: reconciles CredstashSyncs into Secrets.

pub mod report;
pub mod triggers;
