//! The rollout family: Deployment `web` in `ns-a`, opted in to restart on
//! change, reads Secret `ns-a/db`. Judged at every passed check: it
//! restarted at most once per operator write that changed the Secret's data
//! (debouncing makes it fewer, never more: none for unchanged data), and
//! when the Secret's data changed since the last check, its pod template
//! carries the digest of the Secret as it is now.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams};
use kubestash::rollout::{secret_key_digests, workload_digest, DIGEST_ANNOTATION};
use kubestash::secrets::LiveSecret;
use serde_json::json;

/// Where the Deployment lives and the Secret it reads.
pub const ROLLOUT_SECRET: (&str, &str) = ("ns-a", "db");
const DEPLOYMENT: &str = "web";

/// What the last passed check saw of the Deployment.
#[derive(Debug, Default)]
pub struct Rollout {
    /// (uid, generation): a re-created Deployment starts again.
    seen: Option<(String, i64)>,
}

fn deployment() -> Result<Deployment, String> {
    serde_json::from_value(json!({
        "metadata": {"name": DEPLOYMENT, "annotations": {"kubestash.io/restart-on-change": "true"}},
        "spec": {
            "selector": {"matchLabels": {"app": DEPLOYMENT}},
            "template": {
                "metadata": {"labels": {"app": DEPLOYMENT}},
                "spec": {"containers": [{"name": "app", "image": "busybox:1.36",
                    "envFrom": [{"secretRef": {"name": ROLLOUT_SECRET.1, "optional": true}}]}]}
            }
        }
    }))
    .map_err(|e| format!("driver: the Deployment: {e}"))
}

impl Rollout {
    /// Creates the Deployment (its namespace was just created).
    pub async fn create(client: &kube::Client) -> Result<(), String> {
        let api: Api<Deployment> = Api::namespaced(client.clone(), ROLLOUT_SECRET.0);
        match api.create(&PostParams::default(), &deployment()?).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
            Err(e) => Err(format!("driver: create the Deployment: {e}")),
        }
    }

    /// Judges the Deployment at a check: `data_writes` operator writes
    /// changed the Secret's data since the last check, and `data_changed`
    /// tells whether its data differ from the last check's.
    /// The digest may lag the data by the debounce: it is awaited for up
    /// to `patience`.
    pub async fn judge(
        &mut self,
        client: &kube::Client,
        data_writes: usize,
        data_changed: bool,
        patience: std::time::Duration,
    ) -> Result<(), String> {
        let api: Api<Deployment> = Api::namespaced(client.clone(), ROLLOUT_SECRET.0);
        let deadline = std::time::Instant::now() + patience;
        loop {
            let found = api
                .get_opt(DEPLOYMENT)
                .await
                .map_err(|e| format!("driver: get the Deployment: {e}"))?;
            let Some(found) = found else {
                self.seen = None;
                return Ok(());
            };
            let uid = found.metadata.uid.clone().unwrap_or_default();
            let generation = found.metadata.generation.unwrap_or_default();
            let before = match &self.seen {
                Some((seen_uid, seen_generation)) if *seen_uid == uid => *seen_generation,
                _ => 1,
            };
            let restarts = usize::try_from(generation - before).unwrap_or(0);
            if restarts > data_writes {
                return Err(format!(
                    "[8 rollout] {DEPLOYMENT} restarted {restarts} times for {data_writes} writes that changed the data of {}/{}",
                    ROLLOUT_SECRET.0, ROLLOUT_SECRET.1
                ));
            }
            if data_changed && data_writes > 0 {
                let digest = found
                    .spec
                    .and_then(|s| s.template.metadata)
                    .and_then(|m| m.annotations)
                    .and_then(|a| a.get(DIGEST_ANNOTATION).cloned());
                let want = self.expected_digest(client).await?;
                if digest.as_deref() != Some(want.as_str()) {
                    if std::time::Instant::now() < deadline {
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                        continue;
                    }
                    return Err(format!(
                        "[8 rollout] {DEPLOYMENT} carries digest {digest:?}, not the one of {}/{} as it is now",
                        ROLLOUT_SECRET.0, ROLLOUT_SECRET.1
                    ));
                }
            }
            self.seen = Some((uid, generation));
            return Ok(());
        }
    }

    async fn expected_digest(&self, client: &kube::Client) -> Result<String, String> {
        let api: Api<Secret> = Api::namespaced(client.clone(), ROLLOUT_SECRET.0);
        let secret = api
            .get_opt(ROLLOUT_SECRET.1)
            .await
            .map_err(|e| format!("driver: get the Secret: {e}"))?;
        let live: Vec<LiveSecret> = secret.into_iter().map(LiveSecret::from).collect();
        Ok(workload_digest(live.iter().flat_map(secret_key_digests)))
    }
}
