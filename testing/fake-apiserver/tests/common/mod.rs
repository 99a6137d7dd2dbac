//! Shared test harness: the same scenarios run against the fake server (default)
//! or a real cluster (`FAKE_APISERVER_CONFORMANCE_REAL=1` with `KUBECONFIG`).
#![allow(dead_code)]

pub mod rng;

use std::time::Duration;

use fake_apiserver::FakeApiServer;
use futures::{Future, StreamExt};
use http::Request;
use http_body_util::BodyExt;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{DeleteParams, PostParams};
use kube::{Api, Client};
use serde_json::{json, Value};

/// Where the scenarios run.
pub struct Env {
    /// Client for the target cluster.
    pub client: Client,
    /// The fake server, when running against it.
    pub server: Option<FakeApiServer>,
    /// A fresh namespace for this test.
    pub ns: String,
}

/// Whether the suite targets a real cluster: `FAKE_APISERVER_CONFORMANCE_REAL=1`
/// with `KUBECONFIG` naming it. Asking for the real cluster without a
/// kubeconfig is an error, never a silent run against the fake.
pub fn real_cluster() -> bool {
    let real = std::env::var("FAKE_APISERVER_CONFORMANCE_REAL").is_ok_and(|v| v == "1");
    assert!(
        !real || std::env::var_os("KUBECONFIG").is_some(),
        "FAKE_APISERVER_CONFORMANCE_REAL=1 needs KUBECONFIG (scripts/control-plane.sh start DIR writes DIR/kubeconfig)"
    );
    real
}

/// A unique lowercase name.
pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    )
}

impl Env {
    /// Starts the fake server (or connects to the real cluster) and creates a namespace.
    pub async fn new() -> Env {
        let (client, server) = if real_cluster() {
            (
                Client::try_default().await.expect("KUBECONFIG client"),
                None,
            )
        } else {
            let s = FakeApiServer::start().await.expect("start fake");
            (s.client(), Some(s))
        };
        let ns = unique("conf");
        let nss: Api<Namespace> = Api::all(client.clone());
        nss.create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": ns}})).unwrap(),
        )
        .await
        .expect("create test namespace");
        Env { client, server, ns }
    }

    /// Deletes the test namespace (best effort) and stops the fake.
    pub async fn finish(self) {
        let nss: Api<Namespace> = Api::all(self.client.clone());
        let _ = nss.delete(&self.ns, &DeleteParams::default()).await;
        if let Some(s) = self.server {
            s.stop().await;
        }
    }

    /// Compacts the history the server keeps, as etcd's compaction does:
    /// on the fake `FakeApiServer::compact` (which drops its whole event
    /// log); on a real cluster a physical etcd compaction at the current
    /// revision, through etcd's HTTP gateway (see [`etcd_url`]). Note that
    /// on a real cluster this expires watches only where kube-apiserver reads
    /// etcd itself (resources without a watch cache, such as Events); the
    /// watch cache keeps serving its own window.
    pub async fn compact(&self) {
        if let Some(s) = &self.server {
            s.compact();
            return;
        }
        let etcd = etcd_url();
        let (_, header) = etcd_post(&etcd, "/v3/kv/range", &json!({"key": "AA=="})).await;
        let revision = header["header"]["revision"]
            .as_str()
            .expect("etcd revision")
            .to_string();
        let (code, body) = etcd_post(
            &etcd,
            "/v3/kv/compaction",
            &json!({"revision": revision, "physical": true}),
        )
        .await;
        assert_eq!(code, 200, "etcd compaction at {revision}: {body}");
    }

    /// A raw request: returns (status, content-type, body text).
    pub async fn raw(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<Value>,
    ) -> (u16, String, String) {
        raw_with(
            &self.client,
            method,
            path,
            headers,
            body.map(|b| b.to_string().into_bytes()).unwrap_or_default(),
        )
        .await
    }

    /// A raw request with a JSON answer.
    pub async fn raw_json(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<Value>,
    ) -> (u16, Value) {
        let (code, _, text) = self.raw(method, path, headers, body).await;
        (
            code,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }
}

/// Sends a raw request through a kube client.
pub async fn raw_with(
    client: &Client,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> (u16, String, String) {
    let mut b = Request::builder().method(method).uri(path);
    let mut has_ct = false;
    for (k, v) in headers {
        if k.eq_ignore_ascii_case("content-type") {
            has_ct = true;
        }
        b = b.header(*k, *v);
    }
    if !has_ct && !body.is_empty() {
        b = b.header("content-type", "application/json");
    }
    let resp = client
        .send(b.body(kube::client::Body::from(body)).unwrap())
        .await
        .expect("send");
    let code = resp.status().as_u16();
    let ct = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    (code, ct, String::from_utf8_lossy(&bytes).into_owned())
}

/// Reads watch lines from a raw watch request until `stop` says so or the stream ends.
pub async fn watch_lines(
    client: &Client,
    path: &str,
    headers: &[(&str, &str)],
    mut stop: impl FnMut(&[Value]) -> bool,
    limit: Duration,
) -> Vec<Value> {
    let mut b = Request::builder().method("GET").uri(path);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let resp = client
        .send(b.body(kube::client::Body::empty()).unwrap())
        .await
        .expect("send");
    assert_eq!(resp.status().as_u16(), 200, "watch status");
    let mut stream = resp.into_body().into_data_stream();
    let mut buf = Vec::new();
    let mut lines = Vec::new();
    let _ = tokio::time::timeout(limit, async {
        while let Some(chunk) = stream.next().await {
            let Ok(chunk) = chunk else { break };
            buf.extend_from_slice(&chunk);
            while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = buf.drain(..=pos).collect();
                if let Ok(v) = serde_json::from_slice::<Value>(&line) {
                    lines.push(v);
                }
            }
            if stop(&lines) {
                break;
            }
        }
    })
    .await;
    lines
}

/// The API error of a kube result.
pub fn api_err<T: std::fmt::Debug>(r: Result<T, kube::Error>) -> Box<kube::core::Status> {
    match r {
        Err(kube::Error::Api(s)) => s,
        other => panic!("expected an API error, got {other:?}"),
    }
}

/// Polls `f` until it returns Some, or panics after `limit`.
pub async fn eventually<T, F, Fut>(limit: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition not reached within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The etcd client URL of the real cluster's kube-apiserver:
/// `FAKE_APISERVER_CONFORMANCE_ETCD`, else the `--etcd-servers` flag that
/// kube-apiserver logs in `logs/kube-apiserver.log` beside the kubeconfig
/// (`scripts/control-plane.sh start DIR` writes both in DIR). Panics when
/// neither is there: a test that needs etcd must not pass without it.
pub fn etcd_url() -> String {
    if let Ok(url) = std::env::var("FAKE_APISERVER_CONFORMANCE_ETCD") {
        return url;
    }
    let kubeconfig = std::env::var("KUBECONFIG").expect("KUBECONFIG");
    let log = std::path::Path::new(&kubeconfig)
        .parent()
        .expect("the kubeconfig's folder")
        .join("logs/kube-apiserver.log");
    let text = std::fs::read_to_string(&log).unwrap_or_else(|e| {
        panic!(
            "this test compacts etcd: set FAKE_APISERVER_CONFORMANCE_ETCD to the etcd client URL \
             (no {}: {e})",
            log.display()
        )
    });
    let flag = "FLAG: --etcd-servers=\"[";
    let start = text
        .find(flag)
        .unwrap_or_else(|| panic!("no --etcd-servers flag in {}", log.display()))
        + flag.len();
    let rest = &text[start..];
    let end = rest
        .find([']', ' ', ','])
        .expect("the end of --etcd-servers");
    rest[..end].to_string()
}

/// A POST to etcd's HTTP gateway (plain HTTP/1.0, so no chunked answer):
/// returns (status, JSON body).
async fn etcd_post(base: &str, path: &str, body: &Value) -> (u16, Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let authority = base
        .strip_prefix("http://")
        .unwrap_or_else(|| panic!("etcd URL {base} is not plain http://"))
        .trim_end_matches('/');
    let mut stream = tokio::net::TcpStream::connect(authority)
        .await
        .unwrap_or_else(|e| panic!("connect to etcd at {authority}: {e}"));
    let body = body.to_string();
    let request = format!(
        "POST {path} HTTP/1.0\r\nHost: {authority}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream
        .write_all(request.as_bytes())
        .await
        .expect("write to etcd");
    let mut answer = Vec::new();
    stream
        .read_to_end(&mut answer)
        .await
        .expect("read from etcd");
    let answer = String::from_utf8_lossy(&answer);
    let (head, body) = answer.split_once("\r\n\r\n").expect("an HTTP answer");
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("an HTTP status");
    (
        code,
        serde_json::from_str(body).unwrap_or(Value::String(body.into())),
    )
}
