//! What the cluster has of a batch's Secrets, and the hand-over that
//! happens before planning: the keys of `kubestash/*` managers whose
//! CredstashSync no longer exists ([`crate::secrets::observed::ManagerKind::Dead`])
//! pass to this one, so that they can be taken over and pruned.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use super::Engine;
use crate::mapping::{DesiredState, SecretRef};
use crate::secrets::apply;
use crate::secrets::observed::{holds_orphaned_fields_of, owns_data_keys, secret_ref, ManagerKind};
use crate::secrets::{self, LiveSecret, ObservedSecret};

/// Why a sync could not observe the cluster.
pub enum Unobserved {
    /// A Secret could not be read.
    Cluster(String),
    /// The CredstashSync is gone: not even a handover is written.
    Outlived,
}

impl Engine<'_> {
    /// The live state of the Secrets of one batch the plan may touch: the
    /// desired ones and, of the `cached` ones, those where we own keys, in
    /// namespaces that can receive Secrets (within `only` when given). The
    /// managed-Secret cache answers for Secrets kubestash wrote; only the
    /// others cost a GET. Unless dry run, the entries of dead managers are
    /// released first where the scope lets anything be written.
    pub(super) async fn observe(
        &self,
        desired: &DesiredState,
        cached: Vec<(SecretRef, Arc<LiveSecret>)>,
        only: Option<&BTreeSet<SecretRef>>,
    ) -> Result<BTreeMap<SecretRef, ObservedSecret>, Unobserved> {
        let read_only = self.spec.dry_run;
        let managers = self.managers();
        let mut live: BTreeMap<SecretRef, Arc<LiveSecret>> = cached
            .into_iter()
            .filter(|(reference, secret)| {
                let writable = !read_only && !self.scope.is_frozen(&reference.namespace);
                desired.secrets.contains_key(reference)
                    || owns_data_keys(secret, &self.manager)
                    || (writable && holds_orphaned_fields_of(secret, managers, &self.spec.table))
            })
            .collect();
        let missing: Vec<SecretRef> = desired
            .secrets
            .keys()
            .filter(|secret| self.in_view(only, secret) && !live.contains_key(secret))
            .cloned()
            .collect();
        let fetched = apply::fetch_secrets(self.view.client(), missing)
            .await
            .map_err(Unobserved::Cluster)?;
        for secret in fetched {
            if let Some(reference) = secret_ref(&secret) {
                live.insert(reference, Arc::new(secret));
            }
        }
        if !read_only {
            if !self.view.still_exists() {
                return Err(Unobserved::Outlived);
            }
            let writable = live
                .iter_mut()
                .filter(|(reference, _)| !self.scope.is_frozen(&reference.namespace));
            for (_, secret) in writable {
                if let Some(released) = self.release_dead_managers(secret).await {
                    *secret = Arc::new(released);
                }
            }
        }
        Ok(secrets::observe_all(
            live.values().map(|s| s.as_ref()),
            managers,
        ))
    }

    /// Hands the keys of the dead managers of `secret` (a renamed or deleted
    /// CredstashSync, or `kubestash sync`) over to ours. A failure is logged
    /// and leaves the Secret as it was: its keys are then written (they are
    /// not owned against us) but may not be prunable yet.
    async fn release_dead_managers(&self, secret: &LiveSecret) -> Option<LiveSecret> {
        let managers = self.managers();
        let dead: BTreeSet<String> = secret
            .managed_fields
            .iter()
            .filter_map(|entry| entry.manager())
            .filter(|m| managers.kind(m) == ManagerKind::Dead)
            .map(str::to_owned)
            .collect();
        if dead.is_empty() {
            return None;
        }
        match apply::release_managers(self.view.client(), secret, &dead, &self.manager).await {
            Ok(Some(released)) => {
                tracing::info!(managers = ?dead, secret = ?secret_ref(&released), "released the keys of CredstashSyncs that no longer exist");
                self.view.wrote(released.clone());
                Some(released)
            }
            Ok(None) => None,
            Err(error) => {
                tracing::warn!(%error, "could not release a deleted CredstashSync's keys");
                None
            }
        }
    }
}
