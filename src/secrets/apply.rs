//! Sending a plan: server-side apply of each Secret, and reading Secrets the
//! managed-Secret cache does not hold.

use futures::stream::{self, StreamExt};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams};
use kube::Client;

use super::plan::{ApplySecret, SecretAction, SecretPlan};
use crate::mapping::SecretRef;

/// Server-side applies in flight at once.
const APPLY_CONCURRENCY: usize = 8;
/// Secret GETs in flight at once (cache misses only).
const GET_CONCURRENCY: usize = 16;

/// What happened to one planned write.
#[derive(Debug)]
pub struct WriteResult {
    pub secret: SecretRef,
    pub action: SecretAction,
    /// `Err` holds the API server's message (never a value).
    pub result: Result<(), String>,
}

/// Applies every write of `plans` with its field manager and `force`: the
/// plan never includes keys another CredstashSync owns, so force only takes
/// over keys written by hand or by other tools.
pub async fn apply_all(client: &Client, plans: &[SecretPlan]) -> Vec<WriteResult> {
    // Owned items: borrowing closures here trip rustc's higher-ranked Send
    // checks once this future runs inside kube-runtime's controller.
    let writes: Vec<(SecretRef, SecretAction, ApplySecret)> = plans
        .iter()
        .filter_map(|plan| {
            let apply = plan.apply.clone()?;
            Some((plan.secret.clone(), plan.action.clone(), apply))
        })
        .collect();
    stream::iter(writes)
        .map(|(secret, action, apply)| {
            let client = client.clone();
            async move {
                let result = apply_one(&client, &apply).await;
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

async fn apply_one(client: &Client, apply: &ApplySecret) -> Result<(), String> {
    let api: Api<Secret> = Api::namespaced(client.clone(), &apply.namespace);
    let params = PatchParams::apply(&apply.field_manager).force();
    api.patch(&apply.name, &params, &Patch::Apply(apply.to_apply_body()))
        .await
        .map(|_| ())
        .map_err(|err| describe_error(&err))
}

/// Reads the Secrets in `missing` (by GET); absent ones are left out.
pub async fn fetch_secrets(
    client: &Client,
    missing: Vec<SecretRef>,
) -> Result<Vec<Secret>, String> {
    let fetched: Vec<Result<Option<Secret>, String>> = stream::iter(missing)
        .map(|secret| {
            let api: Api<Secret> = Api::namespaced(client.clone(), &secret.namespace);
            async move {
                let found = api.get_opt(&secret.name).await;
                found.map_err(|err| format!("reading Secret {secret}: {}", describe_error(&err)))
            }
        })
        .buffer_unordered(GET_CONCURRENCY)
        .collect()
        .await;
    let mut secrets = Vec::new();
    for result in fetched {
        secrets.extend(result?);
    }
    Ok(secrets)
}

/// The API server's message for a failed request; request bodies (which hold
/// values) are never part of kube's errors.
fn describe_error(err: &kube::Error) -> String {
    match err {
        kube::Error::Api(status) => format!("{} ({})", status.message, status.code),
        other => other.to_string(),
    }
}
