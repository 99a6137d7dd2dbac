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
    let ar = create_established(env, &crd, &group, &plural, "Gadget").await;
    Crd { group, plural, ar }
}

/// Creates `crd`, waits for it to be Established and for its resource to be
/// served (both may lag on a real server), and returns the resource.
async fn create_established(
    env: &Env,
    crd: &CustomResourceDefinition,
    group: &str,
    plural: &str,
    kind: &str,
) -> ApiResource {
    let crds: Api<CustomResourceDefinition> = Api::all(env.client.clone());
    let created = crds.create(&PostParams::default(), crd).await.unwrap();
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
    let client = env.client.clone();
    let path = format!("/apis/{group}/v1/{plural}");
    common::eventually(Duration::from_secs(30), || {
        let client = client.clone();
        let path = path.clone();
        async move {
            let (code, _, _) = common::raw_with(&client, "GET", &path, &[], vec![]).await;
            (code == 200).then_some(())
        }
    })
    .await;
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, "v1", kind), plural)
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
    assert_eq!(
        e.message,
        format!("gadgets.{} \"g1\" is invalid: metadata.resourceVersion: Invalid value: 0: must be specified for an update", crd.group)
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

/// Installs a namespaced CRD `valves.<unique group>` whose spec uses the
/// OpenAPI value validations kube-apiserver enforces.
async fn install_validated_crd(env: &Env) -> Crd {
    let group = format!("{}.conf.example.com", unique("v"));
    let plural = "valves".to_string();
    let spec = json!({"type": "object", "properties": {
        "waitTime": {"type": "string", "pattern": "^([0-9]+(ms|s|m|h))+$"},
        "arn": {"type": "string", "pattern": "^arn:"},
        "name": {"type": "string", "minLength": 3, "maxLength": 8},
        "replicas": {"type": "integer", "minimum": 1, "maximum": 10},
        "ratio": {"type": "number", "minimum": 0, "exclusiveMinimum": true,
            "maximum": 1, "exclusiveMaximum": true},
        "step": {"type": "integer", "multipleOf": 5},
        "tags": {"type": "array", "minItems": 1, "maxItems": 2,
            "items": {"type": "string", "maxLength": 4}},
        "labels": {"type": "object", "maxProperties": 2,
            "additionalProperties": {"type": "string"}},
        "selector": {"type": "object", "minProperties": 1,
            "additionalProperties": {"type": "string"}},
        "start": {"type": "string", "format": "date-time"}
    }});
    let crd: CustomResourceDefinition = serde_json::from_value(json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": format!("{plural}.{group}")},
        "spec": {"group": group, "scope": "Namespaced",
            "names": {"plural": plural, "singular": "valve", "kind": "Valve"},
            "versions": [{"name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object", "properties": {"spec": spec}}}}]}
    }))
    .unwrap();
    let ar = create_established(env, &crd, &group, &plural, "Valve").await;
    Crd { group, plural, ar }
}

/// The cause for `field`, asserting its reason and a message fragment.
fn assert_cause(body: &Value, field: &str, reason: &str, fragment: &str) {
    let causes = body["details"]["causes"].as_array().expect("causes");
    let c = causes
        .iter()
        .find(|c| c["field"] == field)
        .unwrap_or_else(|| panic!("no cause for {field}: {body}"));
    assert_eq!(c["reason"], reason, "{field}: {body}");
    let msg = c["message"].as_str().unwrap_or_default();
    assert!(
        msg.contains(fragment),
        "{field}: {msg:?} lacks {fragment:?}"
    );
    let top = body["message"].as_str().unwrap_or_default();
    assert!(
        top.contains(&format!("{field}: {msg}")),
        "top-level message lists {field}: {top}"
    );
}

#[tokio::test]
async fn crd_openapi_value_validations_reject_with_field_causes() {
    let env = Env::new().await;
    let crd = install_validated_crd(&env).await;
    let base = format!("/apis/{}/v1/namespaces/{}/valves", crd.group, env.ns);
    let valve = |name: &str, spec: Value| {
        json!({"apiVersion": format!("{}/v1", crd.group), "kind": "Valve",
            "metadata": {"name": name}, "spec": spec})
    };
    let good = json!({"waitTime": "1h30m", "arn": "arn:aws:kms:eu-west-1:1:key/x",
        "name": "abc", "replicas": 10, "ratio": 0.5, "step": 15, "tags": ["a", "bcde"],
        "labels": {"a": "1", "b": "2"}, "selector": {"k": "v"},
        "start": "2024-02-29T10:00:00Z"});

    // Valid values are accepted, with and without dryRun.
    let (code, body) = env
        .raw_json(
            "POST",
            &format!("{base}?dryRun=All"),
            &[],
            Some(valve("v0", good.clone())),
        )
        .await;
    assert_eq!(code, 201, "{body}");
    let (code, body) = env
        .raw_json("POST", &base, &[], Some(valve("v1", good.clone())))
        .await;
    assert_eq!(code, 201, "{body}");

    // One violation: the top-level message names the kind and the cause.
    let mut spec = good.clone();
    spec["waitTime"] = json!("10x");
    let (code, body) = env
        .raw_json("POST", &base, &[], Some(valve("bad", spec)))
        .await;
    assert_eq!(code, 422, "{body}");
    assert_eq!(body["reason"], "Invalid");
    assert_eq!(body["details"]["kind"], "Valve");
    assert_eq!(body["details"]["group"], crd.group.as_str());
    let top = body["message"].as_str().unwrap();
    assert!(
        top.starts_with(&format!("Valve.{} \"bad\" is invalid: ", crd.group)),
        "{top}"
    );
    assert_cause(
        &body,
        "spec.waitTime",
        "FieldValueInvalid",
        "Invalid value: \"10x\": spec.waitTime in body should match '^([0-9]+(ms|s|m|h))+$'",
    );

    // Every other violation at once, each reported on its own field.
    let bad = json!({"waitTime": "90", "arn": "urn:x", "name": "waytoolongname",
        "replicas": 0, "ratio": 1, "step": 7, "tags": ["a", "b", "c"],
        "labels": {"a": "1", "b": "2", "c": "3"}, "selector": {},
        "start": "yesterday"});
    let (code, body) = env
        .raw_json("POST", &base, &[], Some(valve("bad", bad)))
        .await;
    assert_eq!(code, 422, "{body}");
    assert_cause(&body, "spec.waitTime", "FieldValueInvalid", "should match");
    assert_cause(
        &body,
        "spec.arn",
        "FieldValueInvalid",
        "spec.arn in body should match '^arn:'",
    );
    assert_cause(&body, "spec.name", "FieldValueTooLong", "Too long");
    assert_cause(
        &body,
        "spec.replicas",
        "FieldValueInvalid",
        "Invalid value: 0: spec.replicas in body should be greater than or equal to 1",
    );
    assert_cause(
        &body,
        "spec.ratio",
        "FieldValueInvalid",
        "spec.ratio in body should be less than 1",
    );
    assert_cause(
        &body,
        "spec.step",
        "FieldValueInvalid",
        "Invalid value: 7: spec.step in body should be a multiple of 5",
    );
    assert_cause(
        &body,
        "spec.tags",
        "FieldValueTooMany",
        "must have at most 2",
    );
    assert_cause(
        &body,
        "spec.labels",
        "FieldValueTooMany",
        "must have at most 2",
    );
    assert_cause(
        &body,
        "spec.selector",
        "FieldValueInvalid",
        "spec.selector in body should have at least 1 properties",
    );
    assert_cause(
        &body,
        "spec.start",
        "FieldValueTypeInvalid",
        "spec.start in body must be of type date-time: \"yesterday\"",
    );

    // Lower bounds, item schemas and exclusive minimums.
    let bad = json!({"name": "ab", "replicas": 11, "ratio": 0, "tags": [],
        "labels": {"a": "1"}});
    let (code, body) = env
        .raw_json("POST", &base, &[], Some(valve("bad", bad)))
        .await;
    assert_eq!(code, 422, "{body}");
    assert_cause(
        &body,
        "spec.name",
        "FieldValueInvalid",
        "Invalid value: \"ab\": spec.name in body should be at least 3 chars long",
    );
    assert_cause(
        &body,
        "spec.replicas",
        "FieldValueInvalid",
        "spec.replicas in body should be less than or equal to 10",
    );
    assert_cause(
        &body,
        "spec.ratio",
        "FieldValueInvalid",
        "spec.ratio in body should be greater than 0",
    );
    assert_cause(
        &body,
        "spec.tags",
        "FieldValueInvalid",
        "spec.tags in body should have at least 1 items",
    );
    let (code, body) = env
        .raw_json(
            "POST",
            &base,
            &[],
            Some(valve("bad", json!({"tags": ["ok", "toolong"]}))),
        )
        .await;
    assert_eq!(code, 422, "{body}");
    assert_cause(&body, "spec.tags[1]", "FieldValueTooLong", "Too long");

    // dryRun=All validates too, and stores nothing.
    let (code, body) = env
        .raw_json(
            "POST",
            &format!("{base}?dryRun=All"),
            &[],
            Some(valve("dry", json!({"replicas": 0}))),
        )
        .await;
    assert_eq!(code, 422, "{body}");
    assert_cause(&body, "spec.replicas", "FieldValueInvalid", "greater than");
    let (code, _) = env.raw_json("GET", &format!("{base}/dry"), &[], None).await;
    assert_eq!(code, 404);

    // Updates are validated: a merge patch, dry-run or not.
    for q in ["", "?dryRun=All"] {
        let (code, body) = env
            .raw_json(
                "PATCH",
                &format!("{base}/v1{q}"),
                &[("content-type", "application/merge-patch+json")],
                Some(json!({"spec": {"waitTime": "5 minutes"}})),
            )
            .await;
        assert_eq!(code, 422, "{q}: {body}");
        assert_cause(&body, "spec.waitTime", "FieldValueInvalid", "should match");
    }
    let (code, body) = env
        .raw_json(
            "PATCH",
            &format!("{base}/v1"),
            &[("content-type", "application/merge-patch+json")],
            Some(json!({"spec": {"waitTime": "250ms"}})),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["spec"]["waitTime"], "250ms");
    let api: Api<DynamicObject> = Api::namespaced_with(env.client.clone(), &env.ns, &crd.ar);
    assert_eq!(
        api.get("v1").await.unwrap().data["spec"]["waitTime"],
        "250ms"
    );

    uninstall(&env, &crd).await;
    env.finish().await;
}

/// A server-side apply of `{}` over a map the applier owned entries of
/// leaves `null` behind, not `{}`: a schema that is not `nullable` refuses
/// it (the CredstashSync schema marks its maps nullable for this reason).
#[tokio::test]
async fn crd_apply_that_empties_an_owned_map_leaves_null_which_only_a_nullable_schema_accepts() {
    let env = Env::new().await;
    let group = format!("{}.conf.example.com", unique("n"));
    let plural = "notes".to_string();
    let map = |nullable: bool| json!({"type": "object", "nullable": nullable, "additionalProperties": {"type": "string"}});
    let crd: CustomResourceDefinition = serde_json::from_value(json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": format!("{plural}.{group}")},
        "spec": {"group": group, "scope": "Namespaced",
            "names": {"plural": plural, "singular": "note", "kind": "Note"},
            "versions": [{"name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object", "properties": {"spec": {
                    "type": "object", "properties": {"strict": map(false), "loose": map(true)}
                }}}}}]}
    }))
    .unwrap();
    let ar = create_established(&env, &crd, &group, &plural, "Note").await;
    let crd = Crd { group, plural, ar };
    let api: Api<DynamicObject> = Api::namespaced_with(env.client.clone(), &env.ns, &crd.ar);
    let apply = |spec: Value| {
        let body = json!({"apiVersion": format!("{}/v1", crd.group), "kind": "Note",
            "metadata": {"name": "n"}, "spec": spec});
        let api = api.clone();
        async move {
            api.patch("n", &PatchParams::apply("owner"), &Patch::Apply(&body))
                .await
        }
    };

    let full = json!({"strict": {"a": "1"}, "loose": {"b": "2"}});
    apply(full.clone()).await.expect("both maps set");
    let refused = api_err(apply(json!({"strict": {}, "loose": {"b": "2"}})).await);
    assert_eq!(refused.code, 422, "{refused:?}");
    assert!(
        refused
            .message
            .contains("spec.strict: Invalid value: \"null\": spec.strict in body must be of type object: \"null\""),
        "{}",
        refused.message
    );
    assert_eq!(
        api.get("n").await.unwrap().data["spec"],
        full,
        "nothing stored"
    );

    let emptied = apply(json!({"strict": {"a": "1"}, "loose": {}}))
        .await
        .expect("a nullable map may be emptied");
    assert_eq!(emptied.data["spec"]["loose"], Value::Null);
    assert!(
        emptied.data["spec"]
            .as_object()
            .unwrap()
            .contains_key("loose"),
        "stored as an explicit null: {}",
        emptied.data["spec"]
    );
    assert_eq!(
        api.get("n").await.unwrap().data["spec"],
        emptied.data["spec"]
    );

    uninstall(&env, &crd).await;
    env.finish().await;
}
