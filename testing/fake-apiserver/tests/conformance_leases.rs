//! Conformance scenarios for coordination.k8s.io/v1 Leases, as leader
//! election uses them (kube-lease-manager: server-side apply to take a free
//! Lease, merge patches to renew and release; client-go: updates with a
//! resourceVersion precondition). Run against the fake by default, against
//! a real cluster with `FAKE_APISERVER_CONFORMANCE_REAL=1` and `KUBECONFIG`.

mod common;

use common::{api_err, unique, Env};
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Patch, PatchParams, PostParams};
use kube::Api;
use serde_json::{json, Value};

const NOW: &str = "2025-03-01T12:00:00.123456Z";

fn lease(name: &str, spec: Value) -> Lease {
    serde_json::from_value(json!({"metadata": {"name": name}, "spec": spec})).unwrap()
}

fn take(holder: &str, at: &str) -> Value {
    json!({
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "spec": {
            "holderIdentity": holder,
            "acquireTime": at,
            "renewTime": at,
            "leaseDurationSeconds": 15,
        },
    })
}

fn manager(identity: &str) -> PatchParams {
    PatchParams {
        field_manager: Some(format!("kube-lease-manager-{identity}")),
        ..Default::default()
    }
}

fn owners_of(lease: &Lease, field: &str) -> Vec<String> {
    lease
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .filter(|entry| {
            serde_json::to_value(&entry.fields_v1).unwrap()["f:spec"]
                .get(field)
                .is_some()
        })
        .filter_map(|entry| entry.manager.clone())
        .collect()
}

#[tokio::test]
async fn a_free_lease_is_taken_by_one_apply_and_released_by_a_merge_patch() {
    let env = Env::new().await;
    let api: Api<Lease> = Api::namespaced(env.client.clone(), &env.ns);
    let name = unique("lease");
    api.create(&PostParams::default(), &lease(&name, json!({})))
        .await
        .unwrap();

    let taken = api
        .patch(&name, &manager("a"), &Patch::Apply(take("a", NOW)))
        .await
        .unwrap();
    let spec = taken.spec.clone().unwrap();
    assert_eq!(spec.holder_identity.as_deref(), Some("a"));
    assert_eq!(
        owners_of(&taken, "f:holderIdentity"),
        ["kube-lease-manager-a"]
    );
    let (_, raw) = env
        .raw_json(
            "GET",
            &format!(
                "/apis/coordination.k8s.io/v1/namespaces/{}/leases/{name}",
                env.ns
            ),
            &[],
            None,
        )
        .await;
    assert_eq!(
        raw["spec"]["renewTime"], NOW,
        "MicroTime keeps microseconds"
    );

    // A second candidate's apply of other values conflicts (no force).
    let later = "2025-03-01T12:00:01.000001Z";
    let e = api_err(
        api.patch(&name, &manager("b"), &Patch::Apply(take("b", later)))
            .await,
    );
    assert_eq!((e.code, e.reason.as_str()), (409, "Conflict"));
    assert!(e.message.contains("kube-lease-manager-a"), "{}", e.message);
    assert!(e.message.contains(".spec.holderIdentity"), "{}", e.message);

    // The holder renews and then releases with strategic merge patches.
    let renew = json!({"spec": {"renewTime": later}});
    let renewed = api
        .patch(&name, &manager("a"), &Patch::Strategic(renew))
        .await
        .unwrap();
    assert_eq!(
        renewed.spec.unwrap().renew_time.unwrap().0.to_string(),
        later
    );
    let release = json!({"spec": {
        "holderIdentity": null, "acquireTime": null, "renewTime": null, "leaseDurationSeconds": null,
    }});
    let released = api
        .patch(&name, &manager("a"), &Patch::Strategic(release))
        .await
        .unwrap();
    let spec = released.spec.clone().unwrap_or_default();
    assert_eq!(spec.holder_identity, None);
    assert_eq!(spec.lease_duration_seconds, None);
    assert!(owners_of(&released, "f:holderIdentity").is_empty());

    // Now the other candidate's apply takes it.
    let taken = api
        .patch(&name, &manager("b"), &Patch::Apply(take("b", later)))
        .await
        .unwrap();
    assert_eq!(taken.spec.unwrap().holder_identity.as_deref(), Some("b"));
    env.finish().await;
}

#[tokio::test]
async fn lease_updates_need_the_current_resource_version() {
    let env = Env::new().await;
    let api: Api<Lease> = Api::namespaced(env.client.clone(), &env.ns);
    let name = unique("lease");
    let spec = json!({"holderIdentity": "a", "renewTime": NOW, "leaseDurationSeconds": 15});
    let created = api
        .create(&PostParams::default(), &lease(&name, spec))
        .await
        .unwrap();
    let mut renewed = created.clone();
    renewed.spec.as_mut().unwrap().lease_transitions = Some(1);
    let current = api
        .replace(&name, &PostParams::default(), &renewed)
        .await
        .unwrap();

    let mut stale = created.clone();
    stale.spec.as_mut().unwrap().holder_identity = Some("b".into());
    let e = api_err(api.replace(&name, &PostParams::default(), &stale).await);
    assert_eq!((e.code, e.reason.as_str()), (409, "Conflict"));
    assert_eq!(
        e.message,
        format!("Operation cannot be fulfilled on leases.coordination.k8s.io \"{name}\": the object has been modified; please apply your changes to the latest version and try again")
    );

    let mut unconditional = current.clone();
    unconditional.metadata.resource_version = None;
    let e = api_err(
        api.replace(&name, &PostParams::default(), &unconditional)
            .await,
    );
    assert_eq!((e.code, e.reason.as_str()), (422, "Invalid"));
    // The generic store puts the resource where the kind would go, and
    // prints the missing resourceVersion as the number 0.
    assert_eq!(
        e.message,
        format!("leases.coordination.k8s.io \"{name}\" is invalid: metadata.resourceVersion: Invalid value: 0: must be specified for an update")
    );
    let details = e.details.as_ref().expect("details");
    assert_eq!(
        (details.kind.as_str(), details.group.as_str()),
        ("leases", "coordination.k8s.io")
    );
    env.finish().await;
}

#[tokio::test]
async fn lease_times_are_micro_times_and_durations_are_positive() {
    let env = Env::new().await;
    let path = format!("/apis/coordination.k8s.io/v1/namespaces/{}/leases", env.ns);
    let body = |name: &str, spec: Value| json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": name}, "spec": spec});

    let seconds_only = body(
        &unique("lease"),
        json!({"renewTime": "2025-03-01T12:00:00Z"}),
    );
    let (code, status) = env.raw_json("POST", &path, &[], Some(seconds_only)).await;
    assert_eq!(code, 400, "{status}");
    let message = status["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(
            "parsing time \"2025-03-01T12:00:00Z\" as \"2006-01-02T15:04:05.000000Z07:00\""
        ),
        "{message}"
    );

    let offset = body(
        &unique("lease"),
        json!({"renewTime": "2025-03-01T14:00:00.000001+02:00"}),
    );
    let (code, stored) = env.raw_json("POST", &path, &[], Some(offset)).await;
    assert_eq!(code, 201, "{stored}");
    assert_eq!(stored["spec"]["renewTime"], "2025-03-01T12:00:00.000001Z");

    let zero = body(&unique("lease"), json!({"leaseDurationSeconds": 0}));
    let (code, status) = env.raw_json("POST", &path, &[], Some(zero)).await;
    assert_eq!(
        (code, status["reason"].as_str()),
        (422, Some("Invalid")),
        "{status}"
    );
    assert_eq!(
        status["details"]["causes"][0]["field"],
        "spec.leaseDurationSeconds"
    );
    assert!(
        status["message"]
            .as_str()
            .unwrap_or_default()
            .contains("spec.leaseDurationSeconds: Invalid value: 0: must be greater than 0"),
        "{status}"
    );
    env.finish().await;
}
