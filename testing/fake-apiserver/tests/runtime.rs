//! kube::runtime against the server: watcher, reflector, Controller with a
//! finalizer and SSA status patches. Fake by default; a real cluster with
//! `FAKE_APISERVER_CONFORMANCE_REAL=1` and `KUBECONFIG`.

mod common;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::Env;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{finalizer, Event as FinalizerEvent};
use kube::runtime::wait::{await_condition, conditions};
use kube::runtime::{reflector, watcher, Controller, WatchStreamExt};
use kube::{Api, CustomResource, CustomResourceExt, ResourceExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

fn labelled_secret(name: &str, label: &str) -> Secret {
    serde_json::from_value(
        json!({"metadata": {"name": name, "labels": {"app": label}}, "stringData": {"k": name}}),
    )
    .unwrap()
}

async fn run_watcher_scenario(env: &Env, cfg: watcher::Config) {
    let api: Api<Secret> = Api::namespaced(env.client.clone(), &env.ns);
    api.create(&PostParams::default(), &labelled_secret("before", "w"))
        .await
        .unwrap();
    let (reader, writer) = reflector::store::<Secret>();
    let errors = Arc::new(Mutex::new(Vec::<String>::new()));
    let errs = errors.clone();
    let stream = watcher(api.clone(), cfg.labels("app=w"))
        .default_backoff()
        .reflect(writer)
        .applied_objects();
    let task = tokio::spawn(async move {
        futures::pin_mut!(stream);
        while let Some(ev) = stream.next().await {
            if let Err(e) = ev {
                errs.lock().unwrap().push(e.to_string());
            }
        }
    });
    reader.wait_until_ready().await.unwrap();
    if let Some(s) = &env.server {
        s.reset_counters();
    }
    api.create(&PostParams::default(), &labelled_secret("after", "w"))
        .await
        .unwrap();
    api.create(&PostParams::default(), &labelled_secret("other", "x"))
        .await
        .unwrap();
    api.delete("before", &DeleteParams::default())
        .await
        .unwrap();
    common::eventually(Duration::from_secs(20), || {
        let names: BTreeSet<String> = reader.state().iter().map(|s| s.name_any()).collect();
        async move { (names == BTreeSet::from(["after".to_string()])).then_some(()) }
    })
    .await;
    // Let the watch idle: bookmarks only, no relists, no reconnect storm.
    tokio::time::sleep(Duration::from_secs(2)).await;
    task.abort();
    assert!(
        errors.lock().unwrap().is_empty(),
        "watcher errors: {:?}",
        errors.lock().unwrap()
    );
    if let Some(s) = &env.server {
        let c = s.counters();
        assert_eq!(
            c.count("list", "secrets"),
            0,
            "no relist: {:?}",
            c.entries()
        );
        assert!(
            c.count("watch", "secrets") <= 1,
            "no watch hot loop: {:?}",
            c.entries()
        );
    }
}

#[tokio::test]
async fn watcher_and_reflector_list_watch_without_errors_or_hot_loops() {
    let env = Env::new().await;
    run_watcher_scenario(&env, watcher::Config::default()).await;
    env.finish().await;
}

#[tokio::test]
async fn watcher_with_streaming_lists_without_errors_or_hot_loops() {
    let env = Env::new().await;
    run_watcher_scenario(&env, watcher::Config::default().streaming_lists()).await;
    env.finish().await;
}

#[tokio::test]
async fn watcher_relists_after_an_expired_resource_version() {
    let env = Env::new().await;
    let Some(server) = &env.server else {
        return; // compaction cannot be forced on a real cluster
    };
    let api: Api<Secret> = Api::namespaced(env.client.clone(), &env.ns);
    let (reader, writer) = reflector::store::<Secret>();
    let stream = watcher(api.clone(), watcher::Config::default().timeout(1))
        .default_backoff()
        .reflect(writer)
        .applied_objects();
    let task = tokio::spawn(async move {
        futures::pin_mut!(stream);
        while stream.next().await.is_some() {}
    });
    reader.wait_until_ready().await.unwrap();
    server.reset_counters();
    // A write the namespaced watch does not see, then a compaction: when the
    // watch times out, its resourceVersion is too old and kube-rs relists.
    let cms: Api<k8s_openapi::api::core::v1::ConfigMap> =
        Api::namespaced(env.client.clone(), "default");
    let cm =
        serde_json::from_value(json!({"metadata": {"name": common::unique("elsewhere")}})).unwrap();
    cms.create(&PostParams::default(), &cm).await.unwrap();
    server.compact();
    common::eventually(Duration::from_secs(20), || {
        let lists = server.counters().count("list", "secrets");
        async move { (lists >= 1).then_some(()) }
    })
    .await;
    api.create(&PostParams::default(), &labelled_secret("late", "w"))
        .await
        .unwrap();
    common::eventually(Duration::from_secs(20), || {
        let has = reader
            .get(&reflector::ObjectRef::new("late").within(&env.ns))
            .is_some();
        async move { has.then_some(()) }
    })
    .await;
    task.abort();
    assert!(
        server.counters().count("list", "secrets") >= 1,
        "{:?}",
        server.counters().entries()
    );
    env.finish().await;
}

#[derive(CustomResource, Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "conf.example.com",
    version = "v1",
    kind = "Widget",
    namespaced,
    status = "WidgetStatus",
    shortname = "wd"
)]
#[kube(printcolumn = r#"{"name":"Size","type":"integer","jsonPath":".spec.size"}"#)]
pub struct WidgetSpec {
    size: i64,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WidgetStatus {
    phase: String,
    observed_generation: i64,
}

const FINALIZER: &str = "conf.example.com/cleanup";

struct Ctx {
    client: kube::Client,
    cleaned: Mutex<Vec<String>>,
}

#[derive(Debug, thiserror::Error)]
enum ReconcileError {
    #[error("{0}")]
    Kube(#[from] kube::Error),
    #[error("finalizer: {0}")]
    Finalizer(String),
}

async fn reconcile(w: Arc<Widget>, ctx: Arc<Ctx>) -> Result<Action, ReconcileError> {
    let ns = w.namespace().unwrap_or_default();
    let api: Api<Widget> = Api::namespaced(ctx.client.clone(), &ns);
    finalizer(&api, FINALIZER, w, |event| async {
        match event {
            FinalizerEvent::Apply(w) => {
                let status = json!({
                    "apiVersion": "conf.example.com/v1", "kind": "Widget",
                    "status": {"phase": "Ready", "observedGeneration": w.metadata.generation.unwrap_or(0)}
                });
                api.patch_status(&w.name_any(), &PatchParams::apply("conf-controller").force(), &Patch::Apply(status)).await?;
                Ok(Action::await_change())
            }
            FinalizerEvent::Cleanup(w) => {
                ctx.cleaned.lock().unwrap().push(w.name_any());
                Ok(Action::await_change())
            }
        }
    })
    .await
    .map_err(|e| match e {
        kube::runtime::finalizer::Error::ApplyFailed(e) | kube::runtime::finalizer::Error::CleanupFailed(e) => e,
        other => ReconcileError::Finalizer(other.to_string()),
    })
}

fn error_policy(_: Arc<Widget>, _: &ReconcileError, _: Arc<Ctx>) -> Action {
    Action::requeue(Duration::from_millis(200))
}

#[tokio::test]
async fn controller_with_finalizer_and_ssa_status_reconciles_and_cleans_up() {
    let env = Env::new().await;
    let crds: Api<CustomResourceDefinition> = Api::all(env.client.clone());
    match crds.create(&PostParams::default(), &Widget::crd()).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 409 => {}
        Err(e) => panic!("{e}"),
    }
    tokio::time::timeout(
        Duration::from_secs(30),
        await_condition(
            crds,
            "widgets.conf.example.com",
            conditions::is_crd_established(),
        ),
    )
    .await
    .unwrap()
    .unwrap();
    let api: Api<Widget> = Api::namespaced(env.client.clone(), &env.ns);
    let ctx = Arc::new(Ctx {
        client: env.client.clone(),
        cleaned: Mutex::new(vec![]),
    });
    let controller = Controller::new(api.clone(), watcher::Config::default())
        .run(reconcile, error_policy, ctx.clone())
        .for_each(|_| async {});
    let task = tokio::spawn(controller);
    api.create(
        &PostParams::default(),
        &Widget::new("w1", WidgetSpec { size: 3 }),
    )
    .await
    .unwrap();
    let ready = common::eventually(Duration::from_secs(30), || {
        let api = api.clone();
        async move {
            let w = api.get("w1").await.ok()?;
            (w.status.as_ref()?.phase == "Ready").then_some(w)
        }
    })
    .await;
    assert_eq!(ready.finalizers(), [FINALIZER.to_string()]);
    assert_eq!(ready.status.unwrap().observed_generation, 1);
    if let Some(s) = &env.server {
        // Steady state: the SSA status patch is a no-op, so nothing loops.
        s.reset_counters();
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let c = s.counters();
        assert_eq!(
            c.writes("widgets") + c.writes("widgets/status"),
            0,
            "{:?}",
            c.entries()
        );
    }
    api.patch(
        "w1",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"size": 4}})),
    )
    .await
    .unwrap();
    common::eventually(Duration::from_secs(30), || {
        let api = api.clone();
        async move { (api.get("w1").await.ok()?.status?.observed_generation == 2).then_some(()) }
    })
    .await;
    api.delete("w1", &DeleteParams::default()).await.unwrap();
    common::eventually(Duration::from_secs(30), || {
        let api = api.clone();
        async move {
            matches!(api.get("w1").await, Err(kube::Error::Api(s)) if s.code == 404).then_some(())
        }
    })
    .await;
    task.abort();
    assert_eq!(*ctx.cleaned.lock().unwrap(), vec!["w1".to_string()]);
    env.finish().await;
}
