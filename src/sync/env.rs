//! What a sync sees of the cluster besides the table: a [`ClusterView`].
//! The operator answers from its watch caches (`controller`); `kubestash
//! sync` from one LIST each ([`ListedCluster`]). The engine asks; it never
//! reaches into its caller.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt};

use super::scope::Labels;
use crate::crd::CredstashSync;
use crate::secrets::{self, LiveSecret};
use crate::write_gate::WriteGate;

/// The cluster as a sync finds it when it begins.
#[derive(Debug, Clone, Default)]
pub struct ClusterPicture {
    /// The namespaces that exist and are not terminating, with their labels.
    pub namespaces: BTreeMap<String, Labels>,
    /// Secrets labelled as managed by kubestash (without values), our own
    /// recent writes included; others are read with GET.
    pub managed_secrets: Vec<Arc<LiveSecret>>,
    /// Field managers of the CredstashSyncs that exist (`kubestash/<name>`):
    /// only they can own a key against us.
    pub living_managers: BTreeSet<String>,
}

/// The cluster as one sync of one CredstashSync sees it.
pub trait ClusterView: Send + Sync {
    /// The client that reads and writes Secrets.
    fn client(&self) -> &Client;
    /// The cluster now.
    fn picture(&self) -> ClusterPicture;
    /// Passed from plan to last write; closed, it parks a batch before it
    /// writes (a leader handing over).
    fn write_gate(&self) -> &WriteGate;
    /// Whether the CredstashSync being synced still exists, asked right
    /// before anything is written: a sync that outlived its CredstashSync
    /// (deleted, or replaced under another name, while it read or planned)
    /// writes nothing, so that no dead manager's entry appears after its
    /// heir has taken the keys over.
    fn still_exists(&self) -> bool;
    /// Whether a namespace exists and is not terminating, asked right
    /// before a batch writes: a namespace deleted while the sync ran takes
    /// no new Secret, and its keys wait for it.
    fn namespace_active(&self, namespace: &str) -> bool;
    /// A write succeeded and the API server returned `secret`: the next
    /// sync must see it even before the watch cache does (read-your-writes).
    fn wrote(&self, secret: LiveSecret);
}

/// Whether a namespace can receive Secrets: it exists and is not being
/// deleted (kube-apiserver refuses new objects in a terminating namespace).
pub fn is_active(namespace: &Namespace) -> bool {
    let terminating_phase = namespace
        .status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .is_some_and(|phase| phase == "Terminating");
    namespace.metadata.deletion_timestamp.is_none() && !terminating_phase
}

/// The cluster as one LIST of namespaces, of managed Secrets and of
/// CredstashSyncs shows it (for one-shot syncs, which have no caches).
pub struct ListedCluster {
    client: Client,
    picture: ClusterPicture,
    write_gate: WriteGate,
}

impl ListedCluster {
    /// Lists the cluster. Without the CredstashSync resource installed, no
    /// CredstashSync lives.
    pub async fn list(client: Client) -> Result<Self, kube::Error> {
        let namespaces = Api::<Namespace>::all(client.clone())
            .list(&ListParams::default())
            .await?;
        let selector = format!(
            "{}={}",
            secrets::MANAGED_BY_LABEL,
            secrets::MANAGED_BY_VALUE
        );
        let managed = Api::<Secret>::all(client.clone())
            .list(&ListParams::default().labels(&selector))
            .await?;
        let living = match Api::<CredstashSync>::all(client.clone())
            .list(&ListParams::default())
            .await
        {
            Ok(list) => list.items.iter().map(|css| css.name_any()).collect(),
            Err(kube::Error::Api(status)) if status.is_not_found() => Vec::new(),
            Err(err) => return Err(err),
        };
        let namespaces = namespaces.items.iter().filter(|ns| is_active(ns));
        let picture = ClusterPicture {
            namespaces: namespaces
                .map(|ns| (ns.name_any(), ns.labels().clone()))
                .collect(),
            managed_secrets: managed
                .items
                .into_iter()
                .map(|secret| Arc::new(secret.into()))
                .collect(),
            living_managers: living.iter().map(|n| secrets::field_manager(n)).collect(),
        };
        Ok(Self {
            client,
            picture,
            write_gate: WriteGate::default(),
        })
    }
}

impl ClusterView for ListedCluster {
    fn client(&self) -> &Client {
        &self.client
    }

    fn picture(&self) -> ClusterPicture {
        self.picture.clone()
    }

    fn write_gate(&self) -> &WriteGate {
        &self.write_gate
    }

    fn still_exists(&self) -> bool {
        true
    }

    fn namespace_active(&self, namespace: &str) -> bool {
        self.picture.namespaces.contains_key(namespace)
    }

    /// A one-shot sync plans once: nothing reads its writes back.
    fn wrote(&self, _secret: LiveSecret) {}
}
