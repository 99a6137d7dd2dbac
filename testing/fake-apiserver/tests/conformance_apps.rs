//! Conformance scenarios for apps/v1 Deployments, StatefulSets and
//! DaemonSets (storage only, no controllers): run against the fake by
//! default, against a real cluster with `FAKE_APISERVER_CONFORMANCE_REAL=1`
//! and `KUBECONFIG`.

mod common;

use std::time::Duration;

use common::{api_err, eventually, Env};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use kube::api::{ApiResource, DynamicObject, Patch, PatchParams, PostParams};
use kube::Api;
use serde_json::{json, Value};

fn workload(kind: &str, name: &str) -> Value {
    let mut spec = json!({
        "selector": {"matchLabels": {"app": name}},
        "template": {
            "metadata": {"labels": {"app": name}},
            "spec": {"containers": [
                {"name": "app", "image": "nginx:1.27", "env": [{"name": "A", "value": "1"}],
                 "ports": [{"containerPort": 80}]},
                {"name": "sidecar", "image": "busybox"}
            ]}
        }
    });
    if kind == "StatefulSet" {
        spec["serviceName"] = json!(name);
    }
    json!({"apiVersion": "apps/v1", "kind": kind, "metadata": {"name": name}, "spec": spec})
}

/// An apps/v1 API that takes and returns JSON values.
struct Untyped(Api<DynamicObject>);

impl Untyped {
    fn new<K: kube::Resource<DynamicType = ()>>(env: &Env) -> Self {
        let resource = ApiResource::erase::<K>(&());
        Untyped(Api::namespaced_with(env.client.clone(), &env.ns, &resource))
    }

    async fn create(&self, _: &PostParams, body: &Value) -> Result<Value, kube::Error> {
        let object: DynamicObject = serde_json::from_value(body.clone()).unwrap();
        let created = self.0.create(&PostParams::default(), &object).await?;
        Ok(serde_json::to_value(created).unwrap())
    }

    async fn patch(
        &self,
        name: &str,
        params: &PatchParams,
        patch: &Patch<Value>,
    ) -> Result<Value, kube::Error> {
        let patched = self.0.patch(name, params, patch).await?;
        Ok(serde_json::to_value(patched).unwrap())
    }
}

fn restart_patch(value: &str) -> Patch<Value> {
    Patch::Strategic(
        json!({"spec": {"template": {"metadata": {"annotations": {"kubestash.io/secrets-digest": value}}}}}),
    )
}

#[tokio::test]
async fn a_created_deployment_is_defaulted_with_generation_one_and_empty_status() {
    let env = Env::new().await;
    let api = Untyped::new::<Deployment>(&env);
    let mut body = workload("Deployment", "web");
    body["status"] = json!({"replicas": 5});
    let created = api.create(&PostParams::default(), &body).await.unwrap();
    assert_eq!(created["metadata"]["generation"], 1);
    assert_eq!(created["status"], json!({}), "create resets status");
    assert_eq!(created["spec"]["replicas"], 1);
    assert_eq!(created["spec"]["revisionHistoryLimit"], 10);
    assert_eq!(created["spec"]["strategy"]["type"], "RollingUpdate");
    let pod = &created["spec"]["template"]["spec"];
    assert_eq!(pod["restartPolicy"], "Always");
    assert_eq!(pod["dnsPolicy"], "ClusterFirst");
    assert_eq!(pod["containers"][0]["imagePullPolicy"], "IfNotPresent");
    assert_eq!(pod["containers"][1]["imagePullPolicy"], "Always");
    assert_eq!(pod["containers"][0]["ports"][0]["protocol"], "TCP");
    env.finish().await;
}

/// On a real cluster the deployment controller also writes the Deployment
/// (its status and the `deployment.kubernetes.io/revision` annotation,
/// through `/status`, which bumps nothing): the no-op check below retries
/// until no such write falls between its read and its patch.
#[tokio::test]
async fn a_pod_template_patch_bumps_the_generation_and_a_metadata_patch_does_not() {
    let env = Env::new().await;
    let api: Api<Deployment> = Api::namespaced(env.client.clone(), &env.ns);
    let body: Deployment = serde_json::from_value(workload("Deployment", "web")).unwrap();
    api.create(&PostParams::default(), &body).await.unwrap();
    let params = PatchParams::default();
    let rolled = api
        .patch("web", &params, &restart_patch("sha256:1"))
        .await
        .unwrap();
    assert_eq!(rolled.metadata.generation, Some(2));
    let template = rolled.spec.as_ref().unwrap().template.clone();
    let annotations = template.metadata.unwrap().annotations.unwrap();
    assert_eq!(annotations["kubestash.io/secrets-digest"], "sha256:1");
    assert_eq!(
        template.spec.unwrap().containers.len(),
        2,
        "containers kept"
    );
    // The same value again writes nothing: the answer is the stored object.
    let same = eventually(Duration::from_secs(10), || async {
        let before = api.get("web").await.unwrap();
        let same = api
            .patch("web", &params, &restart_patch("sha256:1"))
            .await
            .unwrap();
        (same.metadata.resource_version == before.metadata.resource_version).then_some(same)
    })
    .await;
    assert_eq!(same.metadata.generation, Some(2), "same value: no change");
    let labels = Patch::Merge(json!({"metadata": {"labels": {"team": "x"}}}));
    let labelled = api.patch("web", &params, &labels).await.unwrap();
    assert_eq!(labelled.metadata.generation, Some(2), "labels do not count");
    // A Deployment's annotations do count: kube-apiserver bumps the
    // generation for them, as they are copied to the ReplicaSets
    // (deploymentStrategy.PrepareForUpdate).
    let meta = Patch::Merge(json!({"metadata": {"annotations": {"note": "x"}}}));
    let noted = api.patch("web", &params, &meta).await.unwrap();
    assert_eq!(noted.metadata.generation, Some(3));
    let status = Patch::Merge(json!({"status": {"readyReplicas": 1, "replicas": 1}}));
    let with_status = api.patch_status("web", &params, &status).await.unwrap();
    assert_eq!(with_status.metadata.generation, Some(3));
    assert_eq!(with_status.status.unwrap().ready_replicas, Some(1));
    env.finish().await;
}

#[tokio::test]
async fn strategic_merge_patches_merge_containers_and_env_by_name() {
    let env = Env::new().await;
    let api = Untyped::new::<StatefulSet>(&env);
    api.create(&PostParams::default(), &workload("StatefulSet", "db"))
        .await
        .unwrap();
    let patch = json!({"spec": {"template": {"spec": {"containers": [
        {"name": "app", "env": [{"name": "B", "value": "2"}]}
    ]}}}});
    let patched = api
        .patch("db", &PatchParams::default(), &Patch::Strategic(patch))
        .await
        .unwrap();
    let containers = &patched["spec"]["template"]["spec"]["containers"];
    assert_eq!(containers.as_array().unwrap().len(), 2);
    assert_eq!(containers[0]["image"], "nginx:1.27");
    // Merged by name; as in every strategic merge of a list, the items new to
    // it come first (apimachinery's normalizeElementOrder).
    assert_eq!(
        containers[0]["env"],
        json!([{"name": "B", "value": "2"}, {"name": "A", "value": "1"}])
    );
    let delete = json!({"spec": {"template": {"spec": {"containers": [{"name": "sidecar", "$patch": "delete"}]}}}});
    let patched = api
        .patch("db", &PatchParams::default(), &Patch::Strategic(delete))
        .await
        .unwrap();
    assert_eq!(
        patched["spec"]["template"]["spec"]["containers"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(patched["metadata"]["generation"], 3);
    // A merge patch replaces lists whole.
    let merge =
        json!({"spec": {"template": {"spec": {"containers": [{"name": "only", "image": "x"}]}}}});
    let replaced = api
        .patch("db", &PatchParams::default(), &Patch::Merge(merge))
        .await
        .unwrap();
    assert_eq!(
        replaced["spec"]["template"]["spec"]["containers"][0]["name"],
        "only"
    );
    assert!(replaced["spec"]["template"]["spec"]["containers"][0]["env"].is_null());
    env.finish().await;
}

#[tokio::test]
async fn a_selector_that_does_not_match_the_template_is_refused() {
    let env = Env::new().await;
    let api = Untyped::new::<DaemonSet>(&env);
    let mut body = workload("DaemonSet", "agent");
    body["spec"]["selector"]["matchLabels"]["app"] = json!("other");
    let status = api_err(api.create(&PostParams::default(), &body).await);
    assert_eq!(status.code, 422);
    // 1.37 prints the labels as JSON (field.Invalid of a map).
    assert_eq!(
        status.message,
        "DaemonSet.apps \"agent\" is invalid: spec.template.metadata.labels: Invalid value: {\"app\":\"agent\"}: `selector` does not match template `labels`"
    );
    let created = api
        .create(&PostParams::default(), &workload("DaemonSet", "agent"))
        .await
        .unwrap();
    assert_eq!(
        created["spec"]["updateStrategy"]["rollingUpdate"]["maxUnavailable"],
        1
    );
    // apps/v1 keeps the internal templateGeneration in an annotation.
    assert_eq!(
        created["metadata"]["annotations"]["deprecated.daemonset.template.generation"],
        "1"
    );
    let moved = json!({"spec": {"selector": {"matchLabels": {"app": "agent", "tier": "x"}},
        "template": {"metadata": {"labels": {"tier": "x"}}}}});
    let status = api_err(
        api.patch("agent", &PatchParams::default(), &Patch::Merge(moved))
            .await,
    );
    assert_eq!(status.code, 422);
    assert_eq!(
        status.message,
        "DaemonSet.apps \"agent\" is invalid: spec.selector: Invalid value: {\"matchLabels\":{\"app\":\"agent\",\"tier\":\"x\"}}: field is immutable"
    );
    env.finish().await;
}
