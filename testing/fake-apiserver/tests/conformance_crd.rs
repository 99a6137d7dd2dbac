//! Conformance scenarios for CustomResourceDefinitions and custom resources,
//! events and leases. Fake by default; a real cluster with
//! `FAKE_APISERVER_CONFORMANCE_REAL=1` and `KUBECONFIG`.

mod common;

use std::time::Duration;

use common::{api_err, unique, Env};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{
    ApiResource, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams, PostParams,
};
use kube::runtime::wait::{await_condition, conditions};
use kube::Api;
use serde_json::{json, Value};

struct Crd {
    group: String,
    plural: String,
    ar: ApiResource,
}

async fn install_crd(env: &Env, scope: &str, status: bool) -> Crd {
    let group = format!("{}.conf.example.com", unique("g"));
    let plural = "gadgets".to_string();
    let mut version = json!({
        "name": "v1", "served": true, "storage": true,
        "schema": {"openAPIV3Schema": {"type": "object", "properties": {
            "spec": {"type": "object", "properties": {
                "size": {"type": "integer"},
                "color": {"type": "string", "default": "blue"},
                "tags": {"type": "array", "items": {"type": "string"}}
            }, "required": ["size"]},
            "status": {"type": "object", "properties": {"phase": {"type": "string"}, "observed": {"type": "integer"}}}
        }}},
        "additionalPrinterColumns": [
            {"name": "Size", "type": "integer", "jsonPath": ".spec.size"},
            {"name": "Color", "type": "string", "jsonPath": ".spec.color"},
            {"name": "Phase", "type": "string", "jsonPath": ".status.phase", "priority": 1}
        ]
    });
    if status {
        version["subresources"] = json!({"status": {}});
    }
    let crd: CustomResourceDefinition = serde_json::from_value(json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": format!("{plural}.{group}")},
        "spec": {"group": group, "scope": scope,
            "names": {"plural": plural, "singular": "gadget", "kind": "Gadget", "shortNames": ["gd"]},
            "versions": [version]}
    }))
    .unwrap();
    let crds: Api<CustomResourceDefinition> = Api::all(env.client.clone());
    let created = crds.create(&PostParams::default(), &crd).await.unwrap();
    assert!(created.metadata.uid.is_some());
    tokio::time::timeout(
        Duration::from_secs(30),
        await_condition(
            crds,
            &format!("{plural}.{group}"),
            conditions::is_crd_established(),
        ),
    )
    .await
    .expect("CRD established in time")
    .unwrap();
    let ar =
        ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(&group, "v1", "Gadget"), &plural);
    // Discovery may lag CRD establishment on a real server.
    let client = env.client.clone();
    let g = group.clone();
    common::eventually(Duration::from_secs(30), || {
        let client = client.clone();
        let g = g.clone();
        async move {
            client
                .list_api_group_resources(&format!("{g}/v1"))
                .await
                .ok()
                .map(|_| ())
        }
    })
    .await;
    Crd { group, plural, ar }
}

async fn uninstall(env: &Env, crd: &Crd) {
    let crds: Api<CustomResourceDefinition> = Api::all(env.client.clone());
    let _ = crds
        .delete(
            &format!("{}.{}", crd.plural, crd.group),
            &Default::default(),
        )
        .await;
}

fn gadget(name: &str, spec: Value) -> DynamicObject {
    serde_json::from_value(
        json!({"apiVersion": "x/v1", "kind": "Gadget", "metadata": {"name": name}, "spec": spec}),
    )
    .unwrap()
}

fn with_gv(mut o: DynamicObject, crd: &Crd) -> DynamicObject {
    o.types = Some(kube::api::TypeMeta {
        api_version: format!("{}/v1", crd.group),
        kind: "Gadget".into(),
    });
    o
}

#[tokio::test]
async fn crd_serves_namespaced_resources_with_generation_defaults_and_status() {
    let env = Env::new().await;
    let crd = install_crd(&env, "Namespaced", true).await;
    let api: Api<DynamicObject> = Api::namespaced_with(env.client.clone(), &env.ns, &crd.ar);
    let mut g = with_gv(gadget("g1", json!({"size": 1})), &crd);
    g.data["status"] = json!({"phase": "ignored-on-create"});
    let created = api.create(&PostParams::default(), &g).await.unwrap();
    assert_eq!(created.metadata.generation, Some(1));
    assert_eq!(
        created.data["spec"]["color"], "blue",
        "schema default applied"
    );
    assert!(created.data.get("status").is_none(), "create drops status");

    // Metadata-only change: no generation bump.
    let p = api
        .patch(
            "g1",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"l": "1"}}})),
        )
        .await
        .unwrap();
    assert_eq!(p.metadata.generation, Some(1));
    // Status through the main endpoint is ignored.
    let p = api
        .patch(
            "g1",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "x"}})),
        )
        .await
        .unwrap();
    assert!(p.data.get("status").is_none());
    assert_eq!(p.metadata.generation, Some(1));
    // Spec change bumps.
    let p = api
        .patch(
            "g1",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"size": 2}})),
        )
        .await
        .unwrap();
    assert_eq!(p.metadata.generation, Some(2));
    // /status writes only status, and do not bump generation.
    let s = api
        .patch_status(
            "g1",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"size": 99}, "status": {"phase": "Ready"}})),
        )
        .await
        .unwrap();
    assert_eq!(s.data["status"]["phase"], "Ready");
    assert_eq!(s.data["spec"]["size"], 2);
    assert_eq!(s.metadata.generation, Some(2));
    // SSA status patch with a field manager.
    let ssa = json!({"apiVersion": format!("{}/v1", crd.group), "kind": "Gadget", "status": {"phase": "Applied", "observed": 2}});
    let s = api
        .patch_status("g1", &PatchParams::apply("ctl").force(), &Patch::Apply(ssa))
        .await
        .unwrap();
    assert_eq!(s.data["status"]["observed"], 2);
    let mf = s.metadata.managed_fields.unwrap();
    let ctl = mf
        .iter()
        .find(|e| e.manager.as_deref() == Some("ctl"))
        .unwrap();
    assert_eq!(ctl.subresource.as_deref(), Some("status"));
    // CRs reject strategic merge patch.
    let (code, body) = env
        .raw_json(
            "PATCH",
            &format!("/apis/{}/v1/namespaces/{}/gadgets/g1", crd.group, env.ns),
            &[("content-type", "application/strategic-merge-patch+json")],
            Some(json!({"spec": {"size": 3}})),
        )
        .await;
    assert_eq!(code, 415, "{body}");
    assert_eq!(body["reason"], "UnsupportedMediaType");
    // PUT needs a resourceVersion on CRs.
    let mut cur = api.get("g1").await.unwrap();
    cur.metadata.resource_version = None;
    let e = api_err(api.replace("g1", &PostParams::default(), &cur).await);
    assert_eq!(e.code, 422);
    assert!(
        e.message.contains(
            "metadata.resourceVersion: Invalid value: 0x0: must be specified for an update"
        ),
        "{}",
        e.message
    );
    // Schema validation.
    let e = api_err(
        api.create(
            &PostParams::default(),
            &with_gv(gadget("bad", json!({"size": "big"})), &crd),
        )
        .await,
    );
    assert_eq!(e.code, 422, "{}", e.message);
    let e = api_err(
        api.create(
            &PostParams::default(),
            &with_gv(gadget("bad", json!({"color": "red"})), &crd),
        )
        .await,
    );
    assert_eq!(e.code, 422, "{}", e.message);
    assert!(
        e.message.contains("spec.size: Required value"),
        "{}",
        e.message
    );
    // Unknown fields are pruned, or rejected with fieldValidation=Strict.
    let pruned = api
        .create(
            &PostParams::default(),
            &with_gv(gadget("pruned", json!({"size": 1, "extra": true})), &crd),
        )
        .await
        .unwrap();
    assert!(pruned.data["spec"].get("extra").is_none());
    let (code, body) = env
        .raw_json(
            "POST",
            &format!("/apis/{}/v1/namespaces/{}/gadgets?fieldValidation=Strict", crd.group, env.ns),
            &[],
            Some(json!({"apiVersion": format!("{}/v1", crd.group), "kind": "Gadget", "metadata": {"name": "strict"}, "spec": {"size": 1, "extra": true}})),
        )
        .await;
    assert_eq!(code, 400, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("unknown field \"spec.extra\""),
        "{body}"
    );
    // Lists carry kind/apiVersion on CR items; cross-namespace list works.
    let all: Api<DynamicObject> = Api::all_with(env.client.clone(), &crd.ar);
    assert_eq!(
        all.list(&ListParams::default()).await.unwrap().items.len(),
        2
    );
    uninstall(&env, &crd).await;
    env.finish().await;
}

#[tokio::test]
async fn crd_printer_columns_render_in_tables() {
    let env = Env::new().await;
    let crd = install_crd(&env, "Namespaced", true).await;
    let api: Api<DynamicObject> = Api::namespaced_with(env.client.clone(), &env.ns, &crd.ar);
    api.create(
        &PostParams::default(),
        &with_gv(gadget("t1", json!({"size": 7})), &crd),
    )
    .await
    .unwrap();
    let accept = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";
    let (code, t) = env
        .raw_json(
            "GET",
            &format!(
                "/apis/{}/v1/namespaces/{}/gadgets?limit=500",
                crd.group, env.ns
            ),
            &[("accept", accept)],
            None,
        )
        .await;
    assert_eq!(code, 200);
    let cols: Vec<(&str, &str, i64)> = t["columnDefinitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap(),
                c["type"].as_str().unwrap(),
                c["priority"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        cols,
        vec![
            ("Name", "string", 0),
            ("Size", "integer", 0),
            ("Color", "string", 0),
            ("Phase", "string", 1)
        ]
    );
    assert_eq!(t["rows"][0]["cells"], json!(["t1", 7, "blue", null]));
    assert_eq!(
        t["columnDefinitions"][1]["description"],
        "Custom resource definition column (in JSONPath format): .spec.size"
    );
    uninstall(&env, &crd).await;
    env.finish().await;
}

#[tokio::test]
async fn crd_serves_cluster_scoped_resources_and_deleting_it_removes_them() {
    let env = Env::new().await;
    let crd = install_crd(&env, "Cluster", false).await;
    let api: Api<DynamicObject> = Api::all_with(env.client.clone(), &crd.ar);
    let mut g = with_gv(gadget("c1", json!({"size": 1})), &crd);
    g.data["status"] = json!({"phase": "kept"});
    let created = api.create(&PostParams::default(), &g).await.unwrap();
    assert_eq!(
        created.data["status"]["phase"], "kept",
        "no status subresource: status is ordinary"
    );
    assert!(created.metadata.namespace.is_none());
    let (code, _) = env
        .raw_json(
            "GET",
            &format!("/apis/{}/v1/namespaces/{}/gadgets/c1", crd.group, env.ns),
            &[],
            None,
        )
        .await;
    assert_eq!(code, 404, "scope mismatch");
    let p = api
        .patch(
            "c1",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "changed"}})),
        )
        .await
        .unwrap();
    assert_eq!(
        p.metadata.generation,
        Some(2),
        "without a status subresource status changes bump generation"
    );
    uninstall(&env, &crd).await;
    let client = env.client.clone();
    let group = crd.group.clone();
    common::eventually(Duration::from_secs(60), || {
        let client = client.clone();
        let group = group.clone();
        async move {
            let (code, _, _) = common::raw_with(
                &client,
                "GET",
                &format!("/apis/{group}/v1/gadgets"),
                &[],
                vec![],
            )
            .await;
            (code == 404).then_some(())
        }
    })
    .await;
    env.finish().await;
}

#[tokio::test]
async fn events_k8s_io_recorder_series_patch_and_core_view() {
    use k8s_openapi::api::core::v1::{ConfigMap, Event as CoreEvent};
    use kube::runtime::events::{Event, EventType, Recorder, Reporter};
    let env = Env::new().await;
    let cms: Api<ConfigMap> = Api::namespaced(env.client.clone(), &env.ns);
    let cm: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "regarding"}})).unwrap();
    let cm = cms.create(&PostParams::default(), &cm).await.unwrap();
    let reporter = Reporter {
        controller: "conf-ctl".into(),
        instance: Some("conf-ctl-0".into()),
    };
    let recorder = Recorder::new(env.client.clone(), reporter);
    let oref = kube::Resource::object_ref(&cm, &());
    let ev = Event {
        type_: EventType::Normal,
        reason: "Synced".into(),
        note: Some("all good".into()),
        action: "Sync".into(),
        secondary: None,
    };
    recorder.publish(&ev, &oref).await.unwrap();
    recorder.publish(&ev, &oref).await.unwrap();
    let core: Api<CoreEvent> = Api::namespaced(env.client.clone(), &env.ns);
    let fs = format!("involvedObject.name=regarding,involvedObject.namespace={},involvedObject.kind=ConfigMap,involvedObject.uid={}", env.ns, cm.metadata.uid.clone().unwrap());
    let list = core.list(&ListParams::default().fields(&fs)).await.unwrap();
    assert_eq!(
        list.items.len(),
        1,
        "the repeat is a series patch, not a new event"
    );
    let e = &list.items[0];
    assert_eq!(e.reason.as_deref(), Some("Synced"));
    assert_eq!(e.message.as_deref(), Some("all good"));
    assert_eq!(e.reporting_component.as_deref(), Some("conf-ctl"));
    assert_eq!(e.series.as_ref().and_then(|s| s.count), Some(2));
    let v1: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(env.client.clone(), &env.ns);
    let got = v1.get(e.metadata.name.as_deref().unwrap()).await.unwrap();
    assert_eq!(got.note.as_deref(), Some("all good"));
    assert_eq!(got.regarding.unwrap().name.as_deref(), Some("regarding"));
    env.finish().await;
}

#[tokio::test]
async fn leases_support_optimistic_concurrency() {
    use k8s_openapi::api::coordination::v1::Lease;
    let env = Env::new().await;
    let api: Api<Lease> = Api::namespaced(env.client.clone(), &env.ns);
    let lease: Lease = serde_json::from_value(json!({"metadata": {"name": "leader"}, "spec": {"holderIdentity": "a", "leaseDurationSeconds": 15}})).unwrap();
    let l = api.create(&PostParams::default(), &lease).await.unwrap();
    let mut mine = l.clone();
    mine.spec.as_mut().unwrap().holder_identity = Some("b".into());
    api.replace("leader", &PostParams::default(), &mine)
        .await
        .unwrap();
    let mut stale = l.clone();
    stale.spec.as_mut().unwrap().holder_identity = Some("c".into());
    let e = api_err(api.replace("leader", &PostParams::default(), &stale).await);
    assert_eq!(e.code, 409);
    assert_eq!(
        api.get("leader")
            .await
            .unwrap()
            .spec
            .unwrap()
            .holder_identity
            .as_deref(),
        Some("b")
    );
    env.finish().await;
}
