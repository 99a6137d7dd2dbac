//! The fake's own test API: start/stop, kubeconfig, counters, fault injection,
//! protobuf creates. These have no real-cluster counterpart.

mod common;

use std::time::{Duration, Instant};

use fake_apiserver::{Config, FakeApiServer, Fault};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use kube::api::{ListParams, PostParams};
use kube::{Api, Client};
use serde_json::json;

fn cm(name: &str) -> ConfigMap {
    serde_json::from_value(json!({"metadata": {"name": name}})).unwrap()
}

#[tokio::test]
async fn starts_with_the_namespaces_of_a_real_cluster() {
    let s = FakeApiServer::start().await.unwrap();
    let nss: Api<Namespace> = Api::all(s.client());
    let names: Vec<String> = nss
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|n| n.metadata.name.unwrap())
        .collect();
    assert_eq!(
        names,
        vec!["default", "kube-node-lease", "kube-public", "kube-system"]
    );
    assert!(s.url().starts_with("http://127.0.0.1:"));
    s.stop().await;
}

#[tokio::test]
async fn kubeconfig_yields_a_working_kube_client() {
    let s = FakeApiServer::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config");
    s.write_kubeconfig(&path).unwrap();
    let kc = kube::config::Kubeconfig::read_from(&path).unwrap();
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .unwrap();
    assert_eq!(cfg.default_namespace, "default");
    let client = Client::try_from(cfg).unwrap();
    let api: Api<ConfigMap> = Api::default_namespaced(client);
    api.create(&PostParams::default(), &cm("via-kubeconfig"))
        .await
        .unwrap();
    assert!(s
        .get_object("", "v1", "configmaps", "default", "via-kubeconfig")
        .is_some());
    s.stop().await;
}

#[tokio::test]
async fn counters_count_requests_by_verb_resource_and_status() {
    let s = FakeApiServer::start().await.unwrap();
    let api: Api<ConfigMap> = Api::default_namespaced(s.client());
    s.reset_counters();
    api.create(&PostParams::default(), &cm("a")).await.unwrap();
    let _ = api.create(&PostParams::default(), &cm("a")).await;
    api.get("a").await.unwrap();
    let _ = api.get("missing").await;
    api.list(&ListParams::default()).await.unwrap();
    let c = s.counters();
    assert_eq!(c.count("create", "configmaps"), 2);
    assert_eq!(c.count_status("create", "configmaps", 201), 1);
    assert_eq!(c.count_status("create", "configmaps", 409), 1);
    assert_eq!(c.count("get", "configmaps"), 2);
    assert_eq!(c.count_status("get", "configmaps", 404), 1);
    assert_eq!(c.count("list", "configmaps"), 1);
    assert_eq!(c.writes("configmaps"), 2);
    assert_eq!(c.total(), 5);
    s.reset_counters();
    assert_eq!(s.counters().total(), 0);
    s.stop().await;
}

#[tokio::test]
async fn injected_status_faults_fail_the_next_matching_requests() {
    let s = FakeApiServer::start().await.unwrap();
    let api: Api<ConfigMap> = Api::default_namespaced(s.client());
    s.inject_fault(Fault::status("create", "configmaps", 1, 500));
    let e = common::api_err(api.create(&PostParams::default(), &cm("x")).await);
    assert_eq!((e.code, e.reason.as_str()), (500, "InternalError"));
    api.create(&PostParams::default(), &cm("x")).await.unwrap();
    s.inject_fault(Fault::status("update", "configmaps", 1, 409));
    let cur = api.get("x").await.unwrap();
    let e = common::api_err(api.replace("x", &PostParams::default(), &cur).await);
    assert_eq!(e.code, 409);
    // Other verbs and resources are not affected.
    s.inject_fault(Fault::status("list", "secrets", 1, 500));
    api.list(&ListParams::default()).await.unwrap();
    s.stop().await;
}

#[tokio::test]
async fn injected_429_is_plain_text_with_retry_after_and_kube_retries_it() {
    let s = FakeApiServer::start().await.unwrap();
    s.inject_fault(Fault::status("get", "configmaps", 1, 429));
    // kube's client retries 429s itself, so look at the wire with a plain TCP request.
    let raw = plain_http_get(s.addr(), "/api/v1/namespaces/default/configmaps/x").await;
    assert!(raw.starts_with("HTTP/1.1 429"), "{raw}");
    let lower = raw.to_lowercase();
    assert!(lower.contains("retry-after: 1\r\n"), "{raw}");
    assert!(lower.contains("content-type: text/plain"), "{raw}");
    assert!(
        raw.ends_with("\r\n\r\nToo many requests, please try again later.\n"),
        "{raw}"
    );
    let api: Api<ConfigMap> = Api::default_namespaced(s.client());
    api.create(&PostParams::default(), &cm("x")).await.unwrap();
    s.reset_counters();
    s.inject_fault(Fault::status("get", "configmaps", 2, 429));
    api.get("x").await.unwrap();
    let c = s.counters();
    assert_eq!(c.count_status("get", "configmaps", 429), 2);
    assert_eq!(c.count_status("get", "configmaps", 200), 1);
    s.stop().await;
}

#[tokio::test]
async fn injected_delays_hold_the_request() {
    let s = FakeApiServer::start().await.unwrap();
    let api: Api<Secret> = Api::default_namespaced(s.client());
    s.inject_fault(Fault::delay(
        "list",
        "secrets",
        1,
        Duration::from_millis(400),
    ));
    let t = Instant::now();
    api.list(&ListParams::default()).await.unwrap();
    assert!(t.elapsed() >= Duration::from_millis(400));
    let t = Instant::now();
    api.list(&ListParams::default()).await.unwrap();
    assert!(t.elapsed() < Duration::from_millis(400));
    s.stop().await;
}

#[tokio::test]
async fn stop_ends_open_watches() {
    let s = FakeApiServer::start_with(Config {
        bookmark_interval: Duration::from_millis(100),
        ..Config::default()
    })
    .await
    .unwrap();
    let client = s.client();
    let watch = tokio::spawn(async move {
        common::watch_lines(&client, "/api/v1/namespaces/default/secrets?watch=true&allowWatchBookmarks=true&resourceVersion=1", &[], |_| false, Duration::from_secs(20)).await
    });
    tokio::time::sleep(Duration::from_millis(350)).await;
    let t = Instant::now();
    s.stop().await;
    let lines = tokio::time::timeout(Duration::from_secs(5), watch)
        .await
        .expect("watch ended")
        .unwrap();
    assert!(t.elapsed() < Duration::from_secs(4));
    assert!(lines.iter().any(|l| l["type"] == "BOOKMARK"), "{lines:?}");
}

#[tokio::test]
async fn kubectl_protobuf_creates_are_decoded() {
    use prost::Message;
    let s = FakeApiServer::start().await.unwrap();
    let secret = k8s_pb::api::core::v1::Secret {
        metadata: Some(k8s_pb::apimachinery::pkg::apis::meta::v1::ObjectMeta {
            name: Some("pb".into()),
            labels: [("a".to_string(), "b".to_string())].into(),
            ..Default::default()
        }),
        data: [("k".to_string(), b"v".to_vec())].into(),
        r#type: Some("Opaque".into()),
        ..Default::default()
    };
    let unknown = k8s_pb::apimachinery::pkg::runtime::Unknown {
        type_meta: Some(k8s_pb::apimachinery::pkg::runtime::TypeMeta {
            api_version: Some("v1".into()),
            kind: Some("Secret".into()),
        }),
        raw: Some(secret.encode_to_vec()),
        content_encoding: Some(String::new()),
        content_type: Some(String::new()),
    };
    let mut body = b"k8s\0".to_vec();
    body.extend(unknown.encode_to_vec());
    let (code, ct, text) = common::raw_with(
        &s.client(),
        "POST",
        "/api/v1/namespaces/default/secrets?fieldManager=kubectl-create",
        &[
            ("content-type", "application/vnd.kubernetes.protobuf"),
            (
                "accept",
                "application/vnd.kubernetes.protobuf,application/json",
            ),
        ],
        body,
    )
    .await;
    assert_eq!(code, 201, "{text}");
    assert_eq!(ct, "application/json");
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["data"]["k"], "dg==");
    assert_eq!(v["metadata"]["labels"]["a"], "b");
    assert_eq!(
        v["metadata"]["managedFields"][0]["manager"],
        "kubectl-create"
    );
    s.stop().await;
}

async fn plain_http_get(addr: std::net::SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    conn.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut out = String::new();
    conn.read_to_string(&mut out).await.unwrap();
    out
}

/// A client of the fake that sends `user_agent`.
async fn client_as(s: &FakeApiServer, user_agent: &str) -> Client {
    let mut config = kube::Config::new(s.url().parse().unwrap());
    config.default_namespace = "default".into();
    config
        .headers
        .push((http::header::USER_AGENT, user_agent.parse().unwrap()));
    Client::try_from(config).unwrap()
}

#[tokio::test]
async fn counters_and_faults_tell_clients_apart_by_user_agent() {
    let s = FakeApiServer::start().await.unwrap();
    let a: Api<ConfigMap> = Api::default_namespaced(client_as(&s, "op/1 (pod-a_1)").await);
    let b: Api<ConfigMap> = Api::default_namespaced(client_as(&s, "op/1 (pod-b_2)").await);
    s.inject_fault(Fault::status("create", "configmaps", 5, 500).for_user_agent("(pod-a_"));
    assert!(a
        .create(&PostParams::default(), &cm("from-a"))
        .await
        .is_err());
    b.create(&PostParams::default(), &cm("from-b"))
        .await
        .unwrap();
    b.get("from-b").await.unwrap();
    let c = s.counters();
    assert_eq!(
        c.writes_by("(pod-a_", "configmaps"),
        1,
        "the refused create counts"
    );
    assert_eq!(c.writes_by("(pod-b_", "configmaps"), 1, "a get is no write");
    assert_eq!(c.writes("configmaps"), 2);
    assert_eq!(c.writes_by("(pod-c_", "configmaps"), 0);
    s.stop().await;
}
