//! Sending a plan: server-side apply of each Secret, and reading Secrets the
//! managed-Secret cache does not hold.

use std::collections::{BTreeMap, BTreeSet};

use futures::stream::{self, StreamExt};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::Client;

use super::live::LiveSecret;
use super::plan::{ApplySecret, SecretAction, SecretPlan};
use crate::mapping::SecretRef;

/// Server-side applies in flight at once.
const APPLY_CONCURRENCY: usize = 8;
/// Secret GETs in flight at once (cache misses only).
const GET_CONCURRENCY: usize = 16;
/// Cache misses in one namespace read by GET alone; more cost a LIST first.
pub const GET_ONLY_UP_TO: usize = 2;
/// Page size of metadata LISTs.
const LIST_PAGE_SIZE: u32 = 500;

/// A write to a Secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretOperation {
    /// A Secret was created.
    Create,
    /// Keys of an existing Secret were set (and, with `spec.prune`, keys no
    /// longer in the table removed).
    Update,
}

impl SecretOperation {
    /// The name, as label `operation` of `kubestash_secret_writes_total`
    /// shows it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Create => "create",
            Self::Update => "update",
        }
    }
}

/// What happened to one planned write.
#[derive(Debug)]
pub struct WriteResult {
    pub secret: SecretRef,
    pub action: SecretAction,
    /// The Secret as the API server returned it (without values), or why
    /// it was not written.
    pub result: Result<Option<LiveSecret>, WriteError>,
}

/// Why a Secret was not written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WriteError {
    /// Its namespace is being deleted: the API server creates nothing in it
    /// any more (403, cause `NamespaceTerminating`). The namespace watch
    /// may not have told the operator yet; the key waits for the namespace
    /// like one whose namespace does not exist.
    #[error("namespace {0} is being terminated")]
    NamespaceTerminating(String),
    /// The server's message (never a value).
    #[error("{0}")]
    Refused(String),
}

impl WriteError {
    fn of(err: &kube::Error, namespace: &str) -> Self {
        match err {
            kube::Error::Api(status) if is_namespace_terminating(status) => {
                WriteError::NamespaceTerminating(namespace.to_owned())
            }
            other => WriteError::Refused(describe_error(other)),
        }
    }
}

/// Whether the API server refused a creation because the namespace is
/// terminating (the NamespaceLifecycle admission plugin's answer).
fn is_namespace_terminating(status: &kube::core::Status) -> bool {
    status.is_forbidden()
        && status.details.as_ref().is_some_and(|details| {
            details
                .causes
                .iter()
                .any(|cause| cause.reason == "NamespaceTerminating")
        })
}

/// Applies every write of `plans` with its field manager and `force`: the
/// plan never includes keys another CredstashSync owns, so force only takes
/// over keys written by hand or by other tools.
pub async fn apply_all<'p>(
    client: &Client,
    plans: impl IntoIterator<Item = &'p SecretPlan>,
) -> Vec<WriteResult> {
    // Owned items: borrowing closures here trip rustc's higher-ranked Send
    // checks once this future runs inside kube-runtime's controller.
    let writes: Vec<(SecretRef, SecretAction, ApplySecret)> = plans
        .into_iter()
        .filter_map(|plan| {
            let apply = plan.apply.clone()?;
            Some((plan.secret.clone(), plan.action.clone(), apply))
        })
        .collect();
    stream::iter(writes)
        .map(|(secret, action, apply)| {
            let client = client.clone();
            async move {
                let result = apply_one(&client, apply).await;
                WriteResult {
                    secret,
                    action,
                    result,
                }
            }
        })
        .buffer_unordered(APPLY_CONCURRENCY)
        .collect()
        .await
}

/// Applies one Secret; keys carried with their live value are read first
/// (one GET), so that the apply keeps them as they are.
async fn apply_one(client: &Client, apply: ApplySecret) -> Result<Option<LiveSecret>, WriteError> {
    let api: Api<Secret> = Api::namespaced(client.clone(), &apply.namespace);
    let mut apply = apply;
    if !apply.carried.is_empty() {
        let live = api.get_opt(&apply.name).await.map_err(|err| {
            WriteError::Refused(format!(
                "reading the values to keep before writing: {}",
                describe_error(&err)
            ))
        })?;
        match live {
            Some(live) => apply.carry_from(&live),
            None => apply.carried.clear(),
        }
    }
    let params = PatchParams::apply(&apply.field_manager).force();
    api.patch(&apply.name, &params, &Patch::Apply(apply.to_apply_body()))
        .await
        .map(|written| Some(written.into()))
        .map_err(|err| WriteError::of(&err, &apply.namespace))
}

/// Hands the `managedFields` entries of `managers` (deleted CredstashSyncs)
/// over to `heir` (see [`super::handover`]), leaving the data as it is.
/// Returns the patched Secret, or `None` when nothing changes. A JSON patch
/// that first tests the resourceVersion, so a concurrent change makes it
/// fail (409/422) rather than overwrite another manager's entry (the sync
/// then plans from the Secret as it was, and the next one hands over).
pub async fn release_managers(
    client: &Client,
    secret: &LiveSecret,
    managers: &BTreeSet<String>,
    heir: &str,
) -> Result<Option<LiveSecret>, String> {
    let (Some(namespace), Some(name)) = (&secret.metadata.namespace, &secret.metadata.name) else {
        return Ok(None);
    };
    let entries = secret.managed_fields_entries();
    let Some(replacement) = super::handover::hand_over(&entries, managers, heir) else {
        return Ok(None);
    };
    let listed = managers.iter().cloned().collect::<Vec<_>>().join(", ");
    let patch = serde_json::json!([
        {"op": "test", "path": "/metadata/resourceVersion", "value": secret.metadata.resource_version},
        {"op": "replace", "path": "/metadata/managedFields", "value": replacement},
    ]);
    let patch: json_patch::Patch = serde_json::from_value(patch)
        .map_err(|err| format!("building the release patch of Secret {namespace}/{name}: {err}"))?;
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    api.patch(name, &PatchParams::default(), &Patch::<()>::Json(patch))
        .await
        .map(|patched| Some(patched.into()))
        .map_err(|err| {
            format!(
                "releasing {listed} from Secret {namespace}/{name}: {}",
                describe_error(&err)
            )
        })
}

/// Reads the Secrets in `missing`; absent ones are left out. In a namespace
/// with more than [`GET_ONLY_UP_TO`] of them, one metadata-only LIST (names,
/// no data) first tells which exist, so that a first sync into empty
/// namespaces costs a LIST per namespace rather than a GET per Secret.
pub async fn fetch_secrets(
    client: &Client,
    missing: Vec<SecretRef>,
) -> Result<Vec<LiveSecret>, String> {
    let mut by_namespace: BTreeMap<String, Vec<SecretRef>> = BTreeMap::new();
    for secret in missing {
        by_namespace
            .entry(secret.namespace.clone())
            .or_default()
            .push(secret);
    }
    let mut to_get = Vec::new();
    for (namespace, secrets) in by_namespace {
        if secrets.len() <= GET_ONLY_UP_TO {
            to_get.extend(secrets);
            continue;
        }
        let existing = secret_names(client, &namespace).await?;
        to_get.extend(secrets.into_iter().filter(|s| existing.contains(&s.name)));
    }
    get_secrets(client, to_get).await
}

/// Names of the Secrets in `namespace` (metadata-only LIST, paginated).
async fn secret_names(client: &Client, namespace: &str) -> Result<BTreeSet<String>, String> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let mut names = BTreeSet::new();
    let mut params = ListParams::default().limit(LIST_PAGE_SIZE);
    loop {
        let page = api.list_metadata(&params).await.map_err(|err| {
            format!(
                "listing Secrets in namespace {namespace}: {}",
                describe_error(&err)
            )
        })?;
        names.extend(page.items.into_iter().filter_map(|s| s.metadata.name));
        match page.metadata.continue_ {
            Some(token) if !token.is_empty() => params = params.continue_token(&token),
            _ => return Ok(names),
        }
    }
}

async fn get_secrets(client: &Client, secrets: Vec<SecretRef>) -> Result<Vec<LiveSecret>, String> {
    let fetched: Vec<Result<Option<LiveSecret>, String>> = stream::iter(secrets)
        .map(|secret| {
            let api: Api<Secret> = Api::namespaced(client.clone(), &secret.namespace);
            async move {
                let found = api.get_opt(&secret.name).await;
                found
                    .map(|found| found.map(LiveSecret::from))
                    .map_err(|err| format!("reading Secret {secret}: {}", describe_error(&err)))
            }
        })
        .buffer_unordered(GET_CONCURRENCY)
        .collect()
        .await;
    let mut found = Vec::new();
    for result in fetched {
        found.extend(result?);
    }
    Ok(found)
}

/// The API server's message for a failed request; request bodies (which hold
/// values) are never part of kube's errors.
fn describe_error(err: &kube::Error) -> String {
    match err {
        kube::Error::Api(status) => format!("{} ({})", status.message, status.code),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api_error(status: serde_json::Value) -> kube::Error {
        let status: kube::core::Status = serde_json::from_value(status).expect("test Status");
        kube::Error::Api(Box::new(status))
    }

    #[test]
    fn a_create_in_a_terminating_namespace_is_told_apart() {
        // What kube-apiserver's NamespaceLifecycle admission answers.
        let terminating = api_error(serde_json::json!({
            "status": "Failure", "code": 403, "reason": "Forbidden",
            "message": "secrets \"app\" is forbidden: unable to create new content in namespace ns-b because it is being terminated",
            "details": {"name": "app", "kind": "secrets", "causes": [{
                "reason": "NamespaceTerminating",
                "message": "namespace ns-b is being terminated",
                "field": "metadata.namespace"}]}
        }));
        assert_eq!(
            WriteError::of(&terminating, "ns-b"),
            WriteError::NamespaceTerminating("ns-b".to_owned())
        );
        let forbidden = api_error(serde_json::json!({
            "status": "Failure", "code": 403, "reason": "Forbidden",
            "message": "secrets \"app\" is forbidden: User cannot patch resource"
        }));
        assert_eq!(
            WriteError::of(&forbidden, "ns-b"),
            WriteError::Refused(
                "secrets \"app\" is forbidden: User cannot patch resource (403)".to_owned()
            )
        );
    }
}
