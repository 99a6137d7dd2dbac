//! Conformance scenarios for core resources: run against the fake by default,
//! against a real cluster with `FAKE_APISERVER_CONFORMANCE_REAL=1` and `KUBECONFIG`.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{api_err, unique, watch_lines, Env};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use k8s_openapi::ByteString;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::Api;
use serde_json::{json, Value};

fn secret(name: &str, data: &[(&str, &str)], labels: &[(&str, &str)]) -> Secret {
    Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(name.into()),
            labels: Some(
                labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            ..Default::default()
        },
        data: Some(
            data.iter()
                .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
                .collect(),
        ),
        ..Default::default()
    }
}

#[tokio::test]
async fn secret_create_get_delete_roundtrip_sets_server_metadata() {
    let env = Env::new().await;
    let api: Api<Secret> = Api::namespaced(env.client.clone(), &env.ns);
    let created = api
        .create(
            &PostParams::default(),
            &secret("s1", &[("A", "one")], &[("app", "x")]),
        )
        .await
        .unwrap();
    let meta = &created.metadata;
    assert!(meta.uid.as_ref().is_some_and(|u| u.len() == 36));
    assert!(meta
        .resource_version
        .as_ref()
        .is_some_and(|rv| rv.parse::<u64>().is_ok()));
    assert!(meta.creation_timestamp.is_some());
    assert_eq!(meta.generation, None, "secrets have no generation");
    assert_eq!(created.type_.as_deref(), Some("Opaque"));
    let mf = meta.managed_fields.as_ref().unwrap();
    assert_eq!(mf.len(), 1);
    assert_eq!(mf[0].operation.as_deref(), Some("Update"));
    let fields = serde_json::to_value(&mf[0].fields_v1).unwrap();
    assert_eq!(fields["f:data"]["f:A"], json!({}));
    let got = api.get("s1").await.unwrap();
    assert_eq!(got.data.unwrap()["A"].0, b"one");
    let deleted = api.delete("s1", &DeleteParams::default()).await.unwrap();
    let status = deleted
        .right()
        .expect("a Status for a delete without finalizers");
    assert_eq!(status.details.as_ref().unwrap().name, "s1");
    assert_eq!(status.details.as_ref().unwrap().kind, "secrets");
    let e = api_err(api.get("s1").await);
    assert_eq!((e.code, e.reason.as_str()), (404, "NotFound"));
    assert_eq!(e.message, "secrets \"s1\" not found");
    env.finish().await;
}

#[tokio::test]
async fn resource_versions_increase_globally_across_resources() {
    let env = Env::new().await;
    let secrets: Api<Secret> = Api::namespaced(env.client.clone(), &env.ns);
    let cms: Api<ConfigMap> = Api::namespaced(env.client.clone(), &env.ns);
    let a = secrets
        .create(&PostParams::default(), &secret("a", &[], &[]))
        .await
        .unwrap();
    let cm: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "c"}, "data": {"k": "v"}})).unwrap();
    let c = cms.create(&PostParams::default(), &cm).await.unwrap();
    let b = secrets
        .create(&PostParams::default(), &secret("b", &[], &[]))
        .await
        .unwrap();
    let rv =
        |m: &kube::api::ObjectMeta| m.resource_version.as_ref().unwrap().parse::<u64>().unwrap();
    assert!(rv(&a.metadata) < rv(&c.metadata) && rv(&c.metadata) < rv(&b.metadata));
    let list = secrets.list(&ListParams::default()).await.unwrap();
    assert!(
        list.metadata
            .resource_version
            .unwrap()
            .parse::<u64>()
            .unwrap()
            >= rv(&b.metadata)
    );
    env.finish().await;
}

#[tokio::test]
async fn create_errors_match_kube_apiserver() {
    let env = Env::new().await;
    let api: Api<Secret> = Api::namespaced(env.client.clone(), &env.ns);
    api.create(&PostParams::default(), &secret("dup", &[], &[]))
        .await
        .unwrap();
    let e = api_err(
        api.create(&PostParams::default(), &secret("dup", &[], &[]))
            .await,
    );
    assert_eq!(
        (e.code, e.reason.as_str(), e.message.as_str()),
        (409, "AlreadyExists", "secrets \"dup\" already exists")
    );

    let missing: Api<Secret> = Api::namespaced(env.client.clone(), "no-such-namespace-x");
    let e = api_err(
        missing
            .create(&PostParams::default(), &secret("s", &[], &[]))
            .await,
    );
    assert_eq!((e.code, e.reason.as_str()), (404, "NotFound"));
    assert_eq!(e.message, "namespaces \"no-such-namespace-x\" not found");

    let e = api_err(
        api.create(&PostParams::default(), &secret("Bad_Name", &[], &[]))
            .await,
    );
    assert_eq!((e.code, e.reason.as_str()), (422, "Invalid"));
    assert!(e.message.starts_with("Secret \"Bad_Name\" is invalid: metadata.name: Invalid value: \"Bad_Name\": a lowercase RFC 1123 subdomain"), "{}", e.message);

    // Namespace names are RFC 1123 labels. A valid subdomain that is not a
    // label can only have dots, and kube-apiserver says just that
    // (IsDNS1123Label); other names get the label pattern.
    let nss: Api<Namespace> = Api::all(env.client.clone());
    let bad_ns: Namespace = serde_json::from_value(json!({"metadata": {"name": "a.b"}})).unwrap();
    let e = api_err(nss.create(&PostParams::default(), &bad_ns).await);
    assert_eq!((e.code, e.reason.as_str()), (422, "Invalid"));
    assert_eq!(
        e.message,
        "Namespace \"a.b\" is invalid: metadata.name: Invalid value: \"a.b\": must not contain dots"
    );
    let bad_ns: Namespace =
        serde_json::from_value(json!({"metadata": {"name": "bad_ns"}})).unwrap();
    let e = api_err(nss.create(&PostParams::default(), &bad_ns).await);
    assert_eq!(e.code, 422);
    assert_eq!(
        e.message,
        "Namespace \"bad_ns\" is invalid: metadata.name: Invalid value: \"bad_ns\": a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
    );
    env.finish().await;
}

#[tokio::test]
async fn secret_string_data_is_folded_and_validated() {
    let env = Env::new().await;
    let api: Api<Secret> = Api::namespaced(env.client.clone(), &env.ns);
    let s: Secret = serde_json::from_value(json!({"metadata": {"name": "sd"}, "data": {"A": "b2xk"}, "stringData": {"A": "new", "B": "two"}})).unwrap();
    let created = api.create(&PostParams::default(), &s).await.unwrap();
    let data = created.data.unwrap();
    assert_eq!(data["A"].0, b"new");
    assert_eq!(data["B"].0, b"two");
    assert!(created.string_data.is_none());

    let (code, body) = env
        .raw_json("POST", &format!("/api/v1/namespaces/{}/secrets", env.ns), &[], Some(json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "b64"}, "data": {"A": "not base64!"}})))
        .await;
    assert_eq!(code, 400, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("illegal base64 data at input byte"),
        "{body}"
    );

    let patch = json!({"type": "kubernetes.io/basic-auth"});
    let e = api_err(
        api.patch("sd", &PatchParams::default(), &Patch::Merge(&patch))
            .await,
    );
    assert_eq!(e.code, 422);
    assert!(e.message.contains("field is immutable"), "{}", e.message);

    let big = "x".repeat(1024 * 1024 + 1);
    let big_secret = secret("big", &[("k", &big)], &[]);
    let e = api_err(api.create(&PostParams::default(), &big_secret).await);
    assert_eq!(e.code, 422);
    assert!(
        e.message
            .contains("Too long: may not be more than 1048576 bytes"),
        "{}",
        e.message
    );

    let bad_key = secret("badkey", &[("a/b", "x")], &[]);
    let e = api_err(api.create(&PostParams::default(), &bad_key).await);
    assert_eq!(e.code, 422);
    assert!(
        e.message
            .contains("a valid config key must consist of alphanumeric characters"),
        "{}",
        e.message
    );
    env.finish().await;
}

#[tokio::test]
async fn update_with_stale_resource_version_conflicts() {
    let env = Env::new().await;
    let api: Api<Secret> = Api::namespaced(env.client.clone(), &env.ns);
    let s = api
        .create(&PostParams::default(), &secret("u", &[("A", "1")], &[]))
        .await
        .unwrap();
    let mut first = s.clone();
    first.data = Some(BTreeMap::from([(
        "A".to_string(),
        ByteString(b"2".to_vec()),
    )]));
    let updated = api
        .replace("u", &PostParams::default(), &first)
        .await
        .unwrap();
    assert_ne!(
        updated.metadata.resource_version,
        s.metadata.resource_version
    );
    let mut stale = s.clone();
    stale.data = Some(BTreeMap::from([(
        "A".to_string(),
        ByteString(b"3".to_vec()),
    )]));
    let e = api_err(api.replace("u", &PostParams::default(), &stale).await);
    assert_eq!((e.code, e.reason.as_str()), (409, "Conflict"));
    assert_eq!(e.message, "Operation cannot be fulfilled on secrets \"u\": the object has been modified; please apply your changes to the latest version and try again");
    // Secrets allow unconditional updates.
    let mut unconditional = updated.clone();
    unconditional.metadata.resource_version = None;
    unconditional.data = Some(BTreeMap::from([(
        "A".to_string(),
        ByteString(b"4".to_vec()),
    )]));
    let u = api
        .replace("u", &PostParams::default(), &unconditional)
        .await
        .unwrap();
    assert_eq!(u.data.unwrap()["A"].0, b"4");
    // A no-op update does not write.
    let again = api
        .replace("u", &PostParams::default(), &api.get("u").await.unwrap())
        .await
        .unwrap();
    assert_eq!(again.metadata.resource_version, u.metadata.resource_version);
    env.finish().await;
}

/// The handlers' checks of a written object against the URL: its name and
/// namespace (400s), and its uid (a PUT's uid is a storage precondition, a
/// patch's a change of an immutable field, an apply's to a missing object a
/// conflict).
#[tokio::test]
async fn writes_must_name_the_object_of_the_url() {
    let env = Env::new().await;
    let api: Api<Secret> = Api::namespaced(env.client.clone(), &env.ns);
    let created = api
        .create(&PostParams::default(), &secret("named", &[], &[]))
        .await
        .unwrap();
    let uid = created.metadata.uid.clone().unwrap();
    let path = format!("/api/v1/namespaces/{}/secrets/named", env.ns);
    let merge = [("content-type", "application/merge-patch+json")];
    let cases = [
        ("PUT", &[][..], json!({"metadata": {}}), 400, "the name of the object (named based on URL) was undeterminable: name must be provided".to_string()),
        ("PUT", &[][..], json!({"metadata": {"name": "other"}}), 400, "the name of the object (other) does not match the name on the URL (named)".to_string()),
        ("PUT", &[][..], json!({"metadata": {"name": "named", "namespace": "elsewhere"}}), 400, "the namespace of the provided object does not match the namespace sent on the request".to_string()),
        ("PUT", &[][..], json!({"metadata": {"name": "named", "uid": "abc"}}), 409, format!("Operation cannot be fulfilled on secrets \"named\": StorageError: invalid object, Code: 4, Key: /registry/secrets/{}/named, ResourceVersion: 0, AdditionalErrorMsg: Precondition failed: UID in precondition: abc, UID in object meta: {uid}", env.ns)),
        ("PATCH", &merge[..], json!({"metadata": {"name": null}}), 400, "the name of the object (named based on URL) was undeterminable: name must be provided".to_string()),
        ("PATCH", &merge[..], json!({"metadata": {"namespace": "elsewhere"}}), 400, "the namespace of the provided object does not match the namespace sent on the request".to_string()),
        ("PATCH", &merge[..], json!({"metadata": {"uid": "abc"}}), 422, "Secret \"named\" is invalid: metadata.uid: Invalid value: \"abc\": field is immutable".to_string()),
    ];
    for (method, headers, body, code, message) in cases {
        let (got, status) = env
            .raw_json(method, &path, headers, Some(body.clone()))
            .await;
        assert_eq!(
            (got, status["message"].as_str()),
            (code, Some(message.as_str())),
            "{method} {body}"
        );
    }
    let apply = [("content-type", "application/apply-patch+yaml")];
    let (code, status) = env
        .raw_json(
            "PATCH",
            &format!("/api/v1/namespaces/{}/secrets/new?fieldManager=m", env.ns),
            &apply,
            Some(json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "new", "uid": "abc"}})),
        )
        .await;
    assert_eq!(code, 409, "{status}");
    assert_eq!(status["message"], "Operation cannot be fulfilled on secrets \"new\": uid mismatch: the provided object specified uid abc, and no existing object was found");
    let (code, status) = env
        .raw_json(
            "PATCH",
            &format!("/api/v1/namespaces/{}/secrets/new?fieldManager=m", env.ns),
            &apply,
            Some(json!({"apiVersion": "v1", "kind": "Secret"})),
        )
        .await;
    assert_eq!(code, 400, "{status}");
    assert_eq!(
        status["message"],
        "the name of the object (new based on URL) was undeterminable: name must be provided"
    );
    env.finish().await;
}

/// Request options are checked as apimachinery's `Validate*Options` check
/// them (422 `<Kind>Options.meta.k8s.io "" is invalid`, one cause per rule),
/// and delete preconditions as the generic store's `BeforeDelete` does
/// (409 naming the Kind).
#[tokio::test]
async fn request_options_and_delete_preconditions_are_checked_as_by_kube_apiserver() {
    let env = Env::new().await;
    let api: Api<Secret> = Api::namespaced(env.client.clone(), &env.ns);
    let created = api
        .create(&PostParams::default(), &secret("opts", &[], &[]))
        .await
        .unwrap();
    let collection = format!("/api/v1/namespaces/{}/secrets", env.ns);
    let (code, status) = env
        .raw_json(
            "POST",
            &format!("{collection}?dryRun=Bogus&fieldValidation=Loose"),
            &[],
            Some(json!({"metadata": {"name": "x"}})),
        )
        .await;
    assert_eq!(code, 422, "{status}");
    assert_eq!(
        status["message"],
        "CreateOptions.meta.k8s.io \"\" is invalid: [dryRun: Unsupported value: [\"Bogus\"]: supported values: \"All\", fieldValidation: Unsupported value: \"Loose\": supported values: \"\", \"Ignore\", \"Strict\", \"Warn\"]"
    );
    assert_eq!(
        status["details"],
        json!({"group": "meta.k8s.io", "kind": "CreateOptions", "causes": [
            {"reason": "FieldValueNotSupported", "message": "Unsupported value: [\"Bogus\"]: supported values: \"All\"", "field": "dryRun"},
            {"reason": "FieldValueNotSupported", "message": "Unsupported value: \"Loose\": supported values: \"\", \"Ignore\", \"Strict\", \"Warn\"", "field": "fieldValidation"}]})
    );
    let one = format!("{collection}/opts");
    let (code, status) = env
        .raw_json(
            "DELETE",
            &one,
            &[],
            Some(json!({"propagationPolicy": "Later"})),
        )
        .await;
    assert_eq!(code, 422, "{status}");
    assert_eq!(
        status["message"],
        "DeleteOptions.meta.k8s.io \"\" is invalid: propagationPolicy: Unsupported value: \"Later\": supported values: \"Foreground\", \"Background\", \"Orphan\", \"nil\""
    );
    let uid = created.metadata.uid.unwrap();
    let rv = created.metadata.resource_version.unwrap();
    let (code, status) = env
        .raw_json(
            "DELETE",
            &one,
            &[],
            Some(json!({"preconditions": {"uid": "abc"}})),
        )
        .await;
    assert_eq!((code, &status["details"]["kind"]), (409, &json!("Secret")));
    assert_eq!(
        status["message"],
        format!("Operation cannot be fulfilled on Secret \"opts\": the UID in the precondition (abc) does not match the UID in record ({uid}). The object might have been deleted and then recreated")
    );
    let (code, status) = env
        .raw_json(
            "DELETE",
            &one,
            &[],
            Some(json!({"preconditions": {"resourceVersion": "1"}})),
        )
        .await;
    assert_eq!(code, 409, "{status}");
    assert_eq!(
        status["message"],
        format!("Operation cannot be fulfilled on Secret \"opts\": the ResourceVersion in the precondition (1) does not match the ResourceVersion in record ({rv}). The object might have been modified")
    );
    let (code, _) = env
        .raw_json(
            "DELETE",
            &one,
            &[],
            Some(json!({"preconditions": {"uid": uid, "resourceVersion": rv}})),
        )
        .await;
    assert_eq!(code, 200);
    env.finish().await;
}

#[tokio::test]
async fn list_filters_by_label_and_field_selectors() {
    let env = Env::new().await;
    let api: Api<Secret> = Api::namespaced(env.client.clone(), &env.ns);
    for (n, env_label, tier) in [
        ("a", "prod", Some("web")),
        ("b", "dev", Some("db")),
        ("c", "prod", None),
    ] {
        let mut labels = vec![("env", env_label)];
        if let Some(t) = tier {
            labels.push(("tier", t));
        }
        api.create(&PostParams::default(), &secret(n, &[], &labels))
            .await
            .unwrap();
    }
    let names = |l: kube::core::ObjectList<Secret>| {
        l.items
            .into_iter()
            .map(|s| s.metadata.name.unwrap())
            .collect::<Vec<_>>()
    };
    let cases = [
        ("env=prod", vec!["a", "c"]),
        ("env==prod", vec!["a", "c"]),
        ("env!=prod", vec!["b"]),
        ("env in (dev,prod),tier", vec!["a", "b"]),
        ("tier notin (web)", vec!["b", "c"]),
        ("!tier", vec!["c"]),
        ("env=prod,tier=web", vec!["a"]),
    ];
    for (sel, want) in cases {
        let got = names(api.list(&ListParams::default().labels(sel)).await.unwrap());
        assert_eq!(got, want, "selector {sel}");
    }
    // Bad selectors are 400s in the words of apimachinery's label parser.
    let refused = [
        ("env===prod", "unable to parse requirement: found '=', expected: identifier"),
        ("env in (a", "unable to parse requirement: found '', expected: ',' or ')'"),
        ("env,", "found '', expected: identifier after ','"),
        ("tier>web", "unable to parse requirement: values[0]: Invalid value: \"web\": for 'Gt', 'Lt' operators, the value must be an integer"),
    ];
    for (sel, message) in refused {
        let e = api_err(api.list(&ListParams::default().labels(sel)).await);
        assert_eq!(
            (e.code, e.message.as_str()),
            (400, message),
            "selector {sel}"
        );
    }
    let got = names(
        api.list(&ListParams::default().fields("metadata.name=b"))
            .await
            .unwrap(),
    );
    assert_eq!(got, vec!["b"]);
    let fs = format!("metadata.name!=b,metadata.namespace={}", env.ns);
    let got = names(api.list(&ListParams::default().fields(&fs)).await.unwrap());
    assert_eq!(got, vec!["a", "c"]);
    let e = api_err(api.list(&ListParams::default().fields("data.foo=x")).await);
    assert_eq!(e.code, 400);
    assert!(
        e.message.contains("field label not supported: data.foo"),
        "{}",
        e.message
    );
    let empty = api
        .list(&ListParams::default().labels("env=none"))
        .await
        .unwrap();
    assert!(empty.items.is_empty());
    let (_, raw) = env
        .raw_json(
            "GET",
            &format!(
                "/api/v1/namespaces/{}/secrets?labelSelector=env%3Dnone",
                env.ns
            ),
            &[],
            None,
        )
        .await;
    assert_eq!(raw["items"], json!([]), "empty lists carry items: []");
    assert_eq!(raw["kind"], "SecretList");
    env.finish().await;
}

/// Secrets, not ConfigMaps: on a real cluster the controller manager's
/// root-CA publisher adds a `kube-root-ca.crt` ConfigMap to every new
/// namespace (at a moment of its choosing), which would be one more item in
/// the pages; nothing adds Secrets.
#[tokio::test]
async fn list_pages_share_the_first_page_resource_version() {
    let env = Env::new().await;
    let api: Api<Secret> = Api::namespaced(env.client.clone(), &env.ns);
    for i in 0..5 {
        api.create(&PostParams::default(), &secret(&format!("s{i}"), &[], &[]))
            .await
            .unwrap();
    }
    let first = api.list(&ListParams::default().limit(2)).await.unwrap();
    assert_eq!(first.items.len(), 2);
    let token = first.metadata.continue_.clone().expect("continue token");
    assert_eq!(first.metadata.remaining_item_count, Some(3));
    // A write between pages is not visible in later pages.
    api.create(&PostParams::default(), &secret("s9", &[], &[]))
        .await
        .unwrap();
    let mut names: Vec<String> = first
        .items
        .iter()
        .map(|c| c.metadata.name.clone().unwrap())
        .collect();
    let mut token = Some(token);
    while let Some(t) = token {
        let page = api
            .list(&ListParams::default().limit(2).continue_token(&t))
            .await
            .unwrap();
        assert_eq!(
            page.metadata.resource_version,
            first.metadata.resource_version
        );
        names.extend(page.items.iter().map(|c| c.metadata.name.clone().unwrap()));
        token = page.metadata.continue_.filter(|c| !c.is_empty());
    }
    assert_eq!(names, vec!["s0", "s1", "s2", "s3", "s4"]);
    env.finish().await;
}

#[tokio::test]
async fn watch_from_list_resource_version_sees_changes_in_order() {
    let env = Env::new().await;
    let api: Api<Secret> = Api::namespaced(env.client.clone(), &env.ns);
    let list = api.list(&ListParams::default()).await.unwrap();
    let rv = list.metadata.resource_version.unwrap();
    api.create(
        &PostParams::default(),
        &secret("w", &[("A", "1")], &[("app", "w")]),
    )
    .await
    .unwrap();
    api.patch(
        "w",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"app": "other"}}})),
    )
    .await
    .unwrap();
    api.patch(
        "w",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"app": "w"}}})),
    )
    .await
    .unwrap();
    api.delete("w", &DeleteParams::default()).await.unwrap();
    let path = format!("/api/v1/namespaces/{}/secrets?watch=true&resourceVersion={rv}&labelSelector=app%3Dw&timeoutSeconds=5", env.ns);
    let lines = watch_lines(
        &env.client,
        &path,
        &[],
        |l| l.len() >= 4,
        Duration::from_secs(10),
    )
    .await;
    let types: Vec<&str> = lines.iter().map(|l| l["type"].as_str().unwrap()).collect();
    // Leaving the selector is a DELETED, coming back is an ADDED.
    assert_eq!(types, vec!["ADDED", "DELETED", "ADDED", "DELETED"]);
    for l in &lines {
        assert_eq!(l["object"]["kind"], "Secret");
        assert_eq!(l["object"]["apiVersion"], "v1");
    }
    let rvs: Vec<u64> = lines
        .iter()
        .map(|l| {
            l["object"]["metadata"]["resourceVersion"]
                .as_str()
                .unwrap()
                .parse()
                .unwrap()
        })
        .collect();
    assert!(rvs.windows(2).all(|w| w[0] < w[1]), "{rvs:?}");
    env.finish().await;
}

#[tokio::test]
async fn watch_with_send_initial_events_ends_initial_state_with_a_bookmark() {
    let env = Env::new().await;
    let api: Api<Secret> = Api::namespaced(env.client.clone(), &env.ns);
    api.create(&PostParams::default(), &secret("i1", &[], &[]))
        .await
        .unwrap();
    api.create(&PostParams::default(), &secret("i2", &[], &[]))
        .await
        .unwrap();
    let path = format!(
        "/api/v1/namespaces/{}/secrets?watch=true&timeoutSeconds=10&allowWatchBookmarks=true&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&resourceVersion=0",
        env.ns
    );
    let lines = watch_lines(
        &env.client,
        &path,
        &[],
        |l| l.iter().any(|e| e["type"] == "BOOKMARK"),
        Duration::from_secs(10),
    )
    .await;
    let added: Vec<&str> = lines
        .iter()
        .filter(|l| l["type"] == "ADDED")
        .map(|l| l["object"]["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(added, vec!["i1", "i2"]);
    let bm = lines
        .iter()
        .find(|l| l["type"] == "BOOKMARK")
        .expect("bookmark");
    assert_eq!(
        bm["object"]["metadata"]["annotations"]["k8s.io/initial-events-end"],
        "true"
    );
    assert_eq!(bm["object"]["kind"], "Secret");
    assert!(bm["object"]["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse::<u64>()
        .is_ok());

    let (code, body) = env
        .raw_json(
            "GET",
            &format!(
                "/api/v1/namespaces/{}/secrets?watch=true&sendInitialEvents=true",
                env.ns
            ),
            &[],
            None,
        )
        .await;
    assert_eq!(code, 422, "{body}");
    assert_eq!(
        body["details"]["causes"],
        json!([{"reason": "FieldValueForbidden", "field": "resourceVersionMatch",
            "message": "Forbidden: sendInitialEvents requires setting resourceVersionMatch to NotOlderThan"}])
    );
    let (code, _) = env
        .raw_json(
            "GET",
            &format!(
                "/api/v1/namespaces/{}/secrets?sendInitialEvents=true",
                env.ns
            ),
            &[],
            None,
        )
        .await;
    assert_eq!(code, 422, "sendInitialEvents is forbidden on list");
    env.finish().await;
}

/// Watches Secrets, of which a new namespace has none (a real cluster puts
/// a `kube-root-ca.crt` ConfigMap in it, which would come as ADDED).
#[tokio::test]
async fn watch_ends_after_timeout_seconds() {
    let env = Env::new().await;
    let start = std::time::Instant::now();
    let path = format!(
        "/api/v1/namespaces/{}/secrets?watch=true&timeoutSeconds=1&resourceVersion=0",
        env.ns
    );
    let lines = watch_lines(&env.client, &path, &[], |_| false, Duration::from_secs(15)).await;
    assert!(lines.is_empty());
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(10),
        "{took:?}"
    );
    env.finish().await;
}

/// A watch from before a compaction ends with a 410 `Expired` ERROR event
/// (HTTP 200). `Env::compact` compacts each backend's history: a physical
/// etcd compaction on a real cluster, the fake's event log on the fake.
///
/// On a real cluster only watches that kube-apiserver serves from etcd see
/// the compaction: Events (which have no watch cache) get etcd's message.
/// Secrets are served from the watch cache, whose window does not move with
/// etcd's compaction, so the watch replays the Secret. The fake has one
/// event log for everything, and expires the Secret watch too, with the
/// watch cache's message, and its continue tokens: a deliberate difference
/// (DIFFERENCES.md, "Compaction and the watch cache"), asserted for each
/// backend below.
#[tokio::test]
async fn watch_from_a_compacted_resource_version_gets_an_expired_error_event() {
    let env = Env::new().await;
    let events: Api<k8s_openapi::api::core::v1::Event> =
        Api::namespaced(env.client.clone(), &env.ns);
    events
        .create(
            &PostParams::default(),
            &core_event(&env.ns, "old", "before the compaction", false),
        )
        .await
        .unwrap();
    let api: Api<Secret> = Api::namespaced(env.client.clone(), &env.ns);
    let created = api
        .create(&PostParams::default(), &secret("old", &[], &[]))
        .await
        .unwrap();
    let secret_rv: u64 = created.metadata.resource_version.unwrap().parse().unwrap();
    api.create(&PostParams::default(), &secret("older", &[], &[]))
        .await
        .unwrap();
    let page = api.list(&ListParams::default().limit(1)).await.unwrap();
    let token = page.metadata.continue_.expect("a continue token");
    env.compact().await;

    let path = format!(
        "/api/v1/namespaces/{}/events?watch=true&resourceVersion=1&timeoutSeconds=5",
        env.ns
    );
    let first = |l: &[Value]| !l.is_empty();
    let lines = watch_lines(&env.client, &path, &[], first, Duration::from_secs(10)).await;
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["type"], "ERROR");
    assert_eq!(lines[0]["object"]["code"], 410);
    assert_eq!(lines[0]["object"]["reason"], "Expired");
    assert_eq!(
        lines[0]["object"]["message"],
        "The resourceVersion for the provided watch is too old."
    );

    let before = secret_rv - 1;
    let path = format!(
        "/api/v1/namespaces/{}/secrets?watch=true&resourceVersion={before}&timeoutSeconds=5",
        env.ns
    );
    let lines = watch_lines(&env.client, &path, &[], first, Duration::from_secs(10)).await;
    assert!(!lines.is_empty(), "the watch ended without an event");
    if env.server.is_none() {
        // kube-apiserver: the watch cache still holds the create.
        assert_eq!(lines[0]["type"], "ADDED", "{lines:?}");
        assert_eq!(lines[0]["object"]["metadata"]["name"], "old");
    } else {
        // The fake: its only history is gone.
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert_eq!(lines[0]["type"], "ERROR");
        assert_eq!(lines[0]["object"]["code"], 410);
        assert_eq!(lines[0]["object"]["reason"], "Expired");
        let message = lines[0]["object"]["message"].as_str().unwrap();
        assert!(
            message.starts_with(&format!("too old resource version: {before} (")),
            "{message}"
        );
    }

    // The list continues from the watch cache's snapshot on a real cluster;
    // the fake's continue tokens went with its history.
    let rest = api
        .list(&ListParams::default().limit(1).continue_token(&token))
        .await;
    if env.server.is_none() {
        let rest = rest.expect("kube-apiserver continues the list");
        assert_eq!(
            rest.metadata.resource_version,
            page.metadata.resource_version
        );
        assert_eq!(rest.items.len(), 1);
    } else {
        let e = api_err(rest);
        assert_eq!((e.code, e.reason.as_str()), (410, "Expired"));
    }
    env.finish().await;
}

#[tokio::test]
async fn patches_merge_strategic_and_json_follow_apiserver_rules() {
    let env = Env::new().await;
    let api: Api<ConfigMap> = Api::namespaced(env.client.clone(), &env.ns);
    let cm: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "p", "labels": {"a": "1", "b": "2"}, "finalizers": ["x.io/one"]}, "data": {"k1": "v1", "k2": "v2"}})).unwrap();
    api.create(&PostParams::default(), &cm).await.unwrap();
    let merged = api
        .patch(
            "p",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"labels": {"b": null, "c": "3"}}, "data": {"k2": null}}),
            ),
        )
        .await
        .unwrap();
    assert_eq!(
        merged.metadata.labels.unwrap(),
        BTreeMap::from([("a".into(), "1".into()), ("c".into(), "3".into())])
    );
    assert_eq!(
        merged.data.unwrap(),
        BTreeMap::from([("k1".into(), "v1".into())])
    );

    // Strategic merge patch unions finalizers (a merge patch would replace the list).
    // The merged list puts the items new to it first: apimachinery's
    // mergeSortedSlice lets a live item go first only ahead of another live one.
    let smp = api
        .patch(
            "p",
            &PatchParams::default(),
            &Patch::Strategic(json!({"metadata": {"finalizers": ["x.io/two"]}})),
        )
        .await
        .unwrap();
    assert_eq!(
        smp.metadata.finalizers.unwrap(),
        vec!["x.io/two", "x.io/one"]
    );
    let smp = api
        .patch(
            "p",
            &PatchParams::default(),
            &Patch::Strategic(
                json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["x.io/one"]}}),
            ),
        )
        .await
        .unwrap();
    assert_eq!(smp.metadata.finalizers.unwrap(), vec!["x.io/two"]);

    // JSON patch: `test` of a missing key against null succeeds.
    let jp = json!([
        {"op": "test", "path": "/metadata/annotations", "value": null},
        {"op": "add", "path": "/metadata/annotations", "value": {"n": "1"}},
        {"op": "replace", "path": "/data/k1", "value": "changed"}
    ]);
    let p = api
        .patch(
            "p",
            &PatchParams::default(),
            &Patch::Json::<()>(serde_json::from_value(jp).unwrap()),
        )
        .await
        .unwrap();
    assert_eq!(p.metadata.annotations.unwrap()["n"], "1");
    assert_eq!(p.data.unwrap()["k1"], "changed");
    let failing = json!([{"op": "test", "path": "/data/k1", "value": "nope"}]);
    let e = api_err(
        api.patch(
            "p",
            &PatchParams::default(),
            &Patch::Json::<()>(serde_json::from_value(failing).unwrap()),
        )
        .await,
    );
    assert_eq!((e.code, e.reason.as_str()), (422, "Invalid"));
    assert_eq!(
        e.message,
        "the server rejected our request due to an error in our request"
    );
    let missing_parent = json!([{"op": "test", "path": "/nope/x", "value": null}]);
    let e = api_err(
        api.patch(
            "p",
            &PatchParams::default(),
            &Patch::Json::<()>(serde_json::from_value(missing_parent).unwrap()),
        )
        .await,
    );
    assert_eq!(e.code, 422);
    let e = api_err(
        api.patch(
            "missing",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"a": "b"}})),
        )
        .await,
    );
    assert_eq!(e.code, 404);
    // Clean up the finalizer so the namespace can go.
    api.patch(
        "p",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    env.finish().await;
}

#[tokio::test]
async fn finalizers_hold_deletion_until_removed() {
    let env = Env::new().await;
    let api: Api<ConfigMap> = Api::namespaced(env.client.clone(), &env.ns);
    let cm: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "f", "finalizers": ["x.io/hold"]}}))
            .unwrap();
    let created = api.create(&PostParams::default(), &cm).await.unwrap();
    let rv0 = created.metadata.resource_version.clone().unwrap();
    let deleted = api.delete("f", &DeleteParams::default()).await.unwrap();
    let obj = deleted
        .left()
        .expect("the object is returned while finalizers remain");
    assert!(obj.metadata.deletion_timestamp.is_some());
    assert_eq!(obj.metadata.deletion_grace_period_seconds, Some(0));
    let e = api_err(
        api.patch(
            "f",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": ["x.io/hold", "x.io/new"]}})),
        )
        .await,
    );
    assert_eq!(e.code, 422);
    assert!(
        e.message
            .contains("no new finalizers can be added if the object is being deleted"),
        "{}",
        e.message
    );
    api.patch(
        "f",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    let e = api_err(api.get("f").await);
    assert_eq!(e.code, 404);
    // Only this ConfigMap: on a real cluster the root-CA publisher may add
    // `kube-root-ca.crt` to the namespace after it.
    let path = format!(
        "/api/v1/namespaces/{}/configmaps?watch=true&resourceVersion={rv0}&timeoutSeconds=5&fieldSelector=metadata.name%3Df",
        env.ns
    );
    let lines = watch_lines(
        &env.client,
        &path,
        &[],
        |l| l.iter().any(|e| e["type"] == "DELETED"),
        Duration::from_secs(10),
    )
    .await;
    let types: Vec<&str> = lines.iter().map(|l| l["type"].as_str().unwrap()).collect();
    assert_eq!(types, vec!["MODIFIED", "DELETED"]);
    env.finish().await;
}

#[tokio::test]
async fn dry_run_validates_but_stores_nothing() {
    let env = Env::new().await;
    let api: Api<Secret> = Api::namespaced(env.client.clone(), &env.ns);
    let dry = PostParams {
        dry_run: true,
        ..Default::default()
    };
    let out = api
        .create(&dry, &secret("dry", &[("A", "1")], &[]))
        .await
        .unwrap();
    assert!(out.metadata.uid.is_some() && out.metadata.creation_timestamp.is_some());
    assert_eq!(out.metadata.resource_version, None);
    assert_eq!(api_err(api.get("dry").await).code, 404);
    let e = api_err(api.create(&dry, &secret("Bad_Name", &[], &[])).await);
    assert_eq!(e.code, 422);
    let real = api
        .create(&PostParams::default(), &secret("dry", &[("A", "1")], &[]))
        .await
        .unwrap();
    let pp = PatchParams {
        dry_run: true,
        ..Default::default()
    };
    let patched = api
        .patch("dry", &pp, &Patch::Merge(json!({"stringData": {"A": "2"}})))
        .await
        .unwrap();
    assert_eq!(patched.data.unwrap()["A"].0, b"2");
    assert_eq!(
        patched.metadata.resource_version,
        real.metadata.resource_version
    );
    let dp = DeleteParams {
        dry_run: true,
        ..Default::default()
    };
    api.delete("dry", &dp).await.unwrap();
    let still = api.get("dry").await.unwrap();
    assert_eq!(still.data.unwrap()["A"].0, b"1");
    env.finish().await;
}

#[tokio::test]
async fn server_side_apply_tracks_per_key_ownership_of_secret_data() {
    let env = Env::new().await;
    let api: Api<Secret> = Api::namespaced(env.client.clone(), &env.ns);
    let apply = |m: &str| PatchParams::apply(m);
    let cfg = |keys: &[(&str, &str)]| {
        let data: serde_json::Map<String, Value> = keys
            .iter()
            .map(|(k, v)| (k.to_string(), json!(base64_encode(v))))
            .collect();
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "ssa", "labels": {"owner": "a"}}, "data": data})
    };
    // Create if missing (201 on the wire; kube returns the object).
    let created = api
        .patch(
            "ssa",
            &apply("kubestash/a"),
            &Patch::Apply(cfg(&[("A", "1"), ("B", "2")])),
        )
        .await
        .unwrap();
    assert_eq!(created.data.as_ref().unwrap().len(), 2);
    let mf = created.metadata.managed_fields.unwrap();
    assert_eq!(mf[0].manager.as_deref(), Some("kubestash/a"));
    assert_eq!(mf[0].operation.as_deref(), Some("Apply"));
    // A second manager owns C.
    let other = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "ssa"}, "data": {"C": base64_encode("3")}});
    api.patch("ssa", &apply("kubestash/b"), &Patch::Apply(other))
        .await
        .unwrap();
    // Changing a key another manager owns conflicts.
    let steal = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "ssa"}, "data": {"A": base64_encode("x")}});
    let e = api_err(
        api.patch("ssa", &apply("kubestash/b"), &Patch::Apply(steal.clone()))
            .await,
    );
    assert_eq!((e.code, e.reason.as_str()), (409, "Conflict"));
    assert_eq!(
        e.message,
        "Apply failed with 1 conflict: conflict with \"kubestash/a\": .data.A"
    );
    // Same value: shared, no conflict.
    let share = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "ssa"}, "data": {"C": base64_encode("3"), "B": base64_encode("2")}});
    api.patch("ssa", &apply("kubestash/b"), &Patch::Apply(share))
        .await
        .unwrap();
    // Manager a drops A and B: A is removed, B stays (b owns it too).
    let s = api
        .patch("ssa", &apply("kubestash/a"), &Patch::Apply(cfg(&[])))
        .await
        .unwrap();
    let keys: Vec<String> = s.data.unwrap().keys().cloned().collect();
    assert_eq!(keys, vec!["B", "C"]);
    // force=true takes ownership.
    let forced = api
        .patch(
            "ssa",
            &apply("kubestash/a").force(),
            &Patch::Apply(cfg(&[("C", "forced")])),
        )
        .await
        .unwrap();
    assert_eq!(forced.data.unwrap()["C"].0, b"forced");
    let mf = forced.metadata.managed_fields.unwrap();
    let b = mf
        .iter()
        .find(|e| e.manager.as_deref() == Some("kubestash/b"))
        .unwrap();
    let bf = serde_json::to_value(&b.fields_v1).unwrap();
    assert!(bf["f:data"].get("f:C").is_none(), "{bf}");
    assert!(bf["f:data"].get("f:B").is_some(), "{bf}");
    env.finish().await;
}

#[tokio::test]
async fn server_side_apply_reports_conflicts_with_update_managers() {
    let env = Env::new().await;
    let api: Api<ConfigMap> = Api::namespaced(env.client.clone(), &env.ns);
    let cm: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "c"}, "data": {"A": "1", "B": "2"}}))
            .unwrap();
    api.create(
        &PostParams {
            field_manager: Some("kubectl-create".into()),
            ..Default::default()
        },
        &cm,
    )
    .await
    .unwrap();
    let cfg = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"A": "x", "B": "y"}});
    let e = api_err(
        api.patch("c", &PatchParams::apply("mine"), &Patch::Apply(cfg.clone()))
            .await,
    );
    assert_eq!(e.code, 409);
    assert_eq!(e.message, "Apply failed with 2 conflicts: conflicts with \"kubectl-create\" using v1:\n- .data.A\n- .data.B");
    let (code, body) = env
        .raw_json(
            "PATCH",
            &format!("/api/v1/namespaces/{}/configmaps/c", env.ns),
            &[("content-type", "application/apply-patch+yaml")],
            Some(cfg.clone()),
        )
        .await;
    assert_eq!(code, 422, "apply without fieldManager: {body}");
    assert!(body["message"]
        .as_str()
        .unwrap()
        .contains("fieldManager: Required value: is required for apply patch"));
    let (code, body) = env
        .raw_json(
            "PATCH",
            &format!(
                "/api/v1/namespaces/{}/configmaps/c?fieldManager=m&force=true",
                env.ns
            ),
            &[("content-type", "application/merge-patch+json")],
            Some(json!({})),
        )
        .await;
    assert_eq!(code, 422, "{body}");
    assert!(body["message"]
        .as_str()
        .unwrap()
        .contains("force: Forbidden: may not be specified for non-apply patch"));
    let (code, _) = env
        .raw_json("PATCH", &format!("/api/v1/namespaces/{}/configmaps/created-by-apply?fieldManager=m", env.ns), &[("content-type", "application/apply-patch+yaml")], Some(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "created-by-apply"}})))
        .await;
    assert_eq!(code, 201);
    let (code, _) = env
        .raw_json("PATCH", &format!("/api/v1/namespaces/{}/configmaps/created-by-apply?fieldManager=m", env.ns), &[("content-type", "application/apply-patch+yaml")], Some(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "created-by-apply"}})))
        .await;
    assert_eq!(code, 200);
    env.finish().await;
}

fn base64_encode(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

#[tokio::test]
async fn namespace_deletion_removes_content_then_the_namespace() {
    let env = Env::new().await;
    let nss: Api<Namespace> = Api::all(env.client.clone());
    let name = unique("gone");
    nss.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": name}})).unwrap(),
    )
    .await
    .unwrap();
    let created = nss.get(&name).await.unwrap();
    assert_eq!(
        created.metadata.labels.unwrap()["kubernetes.io/metadata.name"],
        name
    );
    assert_eq!(created.status.unwrap().phase.as_deref(), Some("Active"));
    let secrets: Api<Secret> = Api::namespaced(env.client.clone(), &name);
    secrets
        .create(&PostParams::default(), &secret("inside", &[], &[]))
        .await
        .unwrap();
    let resp = nss.delete(&name, &DeleteParams::default()).await.unwrap();
    let ns = resp.left().expect("namespace returned while terminating");
    assert_eq!(ns.status.unwrap().phase.as_deref(), Some("Terminating"));
    common::eventually(Duration::from_secs(60), || {
        let nss = nss.clone();
        let name = name.clone();
        async move {
            matches!(nss.get(&name).await, Err(kube::Error::Api(s)) if s.code == 404).then_some(())
        }
    })
    .await;
    env.finish().await;
}

#[tokio::test]
async fn legacy_and_aggregated_discovery_list_the_served_resources() {
    let env = Env::new().await;
    let core = env.client.list_core_api_resources("v1").await.unwrap();
    for r in ["namespaces", "secrets", "configmaps", "events"] {
        assert!(core.resources.iter().any(|x| x.name == r), "{r}");
    }
    let groups = env.client.list_api_groups().await.unwrap();
    for g in [
        "events.k8s.io",
        "coordination.k8s.io",
        "apiextensions.k8s.io",
    ] {
        assert!(groups.groups.iter().any(|x| x.name == g), "{g}");
    }
    let discovery = kube::Discovery::new(env.client.clone())
        .run_aggregated()
        .await
        .unwrap();
    assert!(discovery.has_group("coordination.k8s.io"));
    let accept = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json";
    let (code, ct, body) = env.raw("GET", "/apis", &[("accept", accept)], None).await;
    assert_eq!(code, 200);
    assert!(
        ct.starts_with("application/json;g=apidiscovery.k8s.io;v=v2"),
        "{ct}"
    );
    assert!(body.contains("\"APIGroupDiscoveryList\""));
    let (code, v) = env.raw_json("GET", "/version", &[], None).await;
    assert_eq!(code, 200);
    assert!(v["minor"].as_str().is_some());
    let (code, ct, body) = env.raw("GET", "/no/such/path", &[], None).await;
    assert_eq!(
        (code, ct.starts_with("text/plain"), body.trim()),
        (404, true, "404 page not found")
    );
    env.finish().await;
}

#[tokio::test]
async fn kubectl_get_asks_for_tables_and_gets_secret_columns() {
    let env = Env::new().await;
    let api: Api<Secret> = Api::namespaced(env.client.clone(), &env.ns);
    api.create(
        &PostParams::default(),
        &secret("t", &[("A", "1"), ("B", "2")], &[]),
    )
    .await
    .unwrap();
    let accept = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";
    let (code, ct, body) = env
        .raw(
            "GET",
            &format!("/api/v1/namespaces/{}/secrets?limit=500", env.ns),
            &[("accept", accept)],
            None,
        )
        .await;
    assert_eq!(code, 200);
    assert_eq!(ct, "application/json");
    let t: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(t["kind"], "Table");
    let cols: Vec<&str> = t["columnDefinitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(cols, vec!["Name", "Type", "Data", "Age"]);
    assert_eq!(t["rows"][0]["cells"][0], "t");
    assert_eq!(t["rows"][0]["cells"][1], "Opaque");
    assert_eq!(t["rows"][0]["cells"][2], 2);
    assert_eq!(t["rows"][0]["object"]["kind"], "PartialObjectMetadata");
    assert_eq!(t["rows"][0]["object"]["metadata"]["name"], "t");
    env.finish().await;
}

#[tokio::test]
async fn delete_collection_removes_only_selected_objects() {
    let env = Env::new().await;
    let api: Api<Secret> = Api::namespaced(env.client.clone(), &env.ns);
    for (n, l) in [("d1", "x"), ("d2", "x"), ("keep", "y")] {
        api.create(&PostParams::default(), &secret(n, &[], &[("grp", l)]))
            .await
            .unwrap();
    }
    api.delete_collection(
        &DeleteParams::default(),
        &ListParams::default().labels("grp=x"),
    )
    .await
    .unwrap();
    let left: Vec<String> = api
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|s| s.metadata.name.unwrap())
        .collect();
    assert_eq!(left, vec!["keep"]);
    let (code, body) = env
        .raw_json(
            "PUT",
            &format!("/api/v1/namespaces/{}/secrets", env.ns),
            &[],
            Some(json!({})),
        )
        .await;
    assert_eq!(code, 405, "{body}");
    assert_eq!(body["reason"], "MethodNotAllowed");
    env.finish().await;
}

/// An Event as kube-runtime's `Recorder` sends it to events.k8s.io/v1,
/// regarding a ConfigMap in `ns`.
fn events_v1_event(ns: &str, name: &str, note: &str) -> k8s_openapi::api::events::v1::Event {
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": ns},
        "eventTime": "2026-05-09T10:00:00.000000Z",
        "action": "Sync",
        "reason": "DecryptFailed",
        "note": note,
        "type": "Warning",
        "regarding": {"kind": "ConfigMap", "apiVersion": "v1", "namespace": ns, "name": "regarding"},
        "reportingController": "conf-ctl",
        "reportingInstance": "conf-ctl-0",
    }))
    .unwrap()
}

fn core_event(
    ns: &str,
    name: &str,
    message: &str,
    event_time: bool,
) -> k8s_openapi::api::core::v1::Event {
    let mut event = json!({
        "metadata": {"name": name, "namespace": ns},
        "involvedObject": {"kind": "ConfigMap", "apiVersion": "v1", "namespace": ns, "name": "regarding"},
        "reason": "DecryptFailed",
        "message": message,
        "type": "Warning",
    });
    if event_time {
        event["eventTime"] = json!("2026-05-09T10:00:00.000000Z");
        event["action"] = json!("Sync");
        event["reportingComponent"] = json!("conf-ctl");
        event["reportingInstance"] = json!("conf-ctl-0");
    }
    serde_json::from_value(event).unwrap()
}

#[tokio::test]
async fn events_over_the_length_limits_are_refused_as_by_kube_apiserver() {
    let env = Env::new().await;
    let limit_message = "Invalid value: \"\": can have at most 1024 characters";
    // 1024 bytes in 513 characters: the limit counts bytes.
    let at_limit = format!("{}ab", "é".repeat(511));
    assert_eq!((at_limit.len(), at_limit.chars().count()), (1024, 513));
    let over = format!("{at_limit}d");

    let v1: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(env.client.clone(), &env.ns);
    let pp = PostParams::default();
    let created = v1
        .create(&pp, &events_v1_event(&env.ns, "fits", &at_limit))
        .await
        .unwrap();
    assert_eq!(created.note.as_deref(), Some(at_limit.as_str()));
    let e = api_err(
        v1.create(&pp, &events_v1_event(&env.ns, "too-long", &over))
            .await,
    );
    assert_eq!((e.code, e.reason.as_str()), (422, "Invalid"));
    // An events.k8s.io/v1 Event is validated as the internal core Event,
    // whose kind has no group: the error says `Event`, not
    // `Event.events.k8s.io`, and the field is `message`, not `note`.
    assert_eq!(
        e.message,
        format!("Event \"too-long\" is invalid: message: {limit_message}")
    );
    let details = e.details.as_ref().expect("details");
    assert_eq!(
        (details.kind.as_str(), details.group.as_str()),
        ("Event", "")
    );
    let causes: Vec<(&str, &str, &str)> = details
        .causes
        .iter()
        .map(|c| (c.reason.as_str(), c.field.as_str(), c.message.as_str()))
        .collect();
    assert_eq!(causes, [("FieldValueInvalid", "message", limit_message)]);

    // Every limit at once: one cause each, in kube-apiserver's order.
    let mut all_over = events_v1_event(&env.ns, "all-over", &over);
    all_over.reason = Some("r".repeat(129));
    all_over.action = Some("a".repeat(129));
    all_over.reporting_instance = Some("i".repeat(129));
    let e = api_err(v1.create(&pp, &all_over).await);
    let causes: Vec<(&str, &str)> = e
        .details
        .as_ref()
        .expect("details")
        .causes
        .iter()
        .map(|c| (c.field.as_str(), c.message.as_str()))
        .collect();
    let at_most_128 = "Invalid value: \"\": can have at most 128 characters";
    assert_eq!(
        causes,
        [
            ("reportingInstance", at_most_128),
            ("action", at_most_128),
            ("reason", at_most_128),
            ("message", limit_message)
        ]
    );

    let core: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(env.client.clone(), &env.ns);
    let e = api_err(
        core.create(&pp, &core_event(&env.ns, "core-new", &over, true))
            .await,
    );
    assert_eq!(e.code, 422);
    assert_eq!(
        e.message,
        format!("Event \"core-new\" is invalid: message: {limit_message}")
    );
    let long = "x".repeat(4096);
    let legacy = core
        .create(&pp, &core_event(&env.ns, "core-legacy", &long, false))
        .await
        .unwrap();
    assert_eq!(
        legacy.message.map(|m| m.len()),
        Some(4096),
        "no limit without eventTime"
    );
    env.finish().await;
}
