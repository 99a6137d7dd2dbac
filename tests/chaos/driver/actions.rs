//! Executing the operations of a schedule against moto, the API server and
//! the operator processes.

use super::*;

impl Harness<'_> {
    pub(super) async fn execute(&mut self, op: &Op, settings: &Settings) -> Result<(), String> {
        match op {
            Op::Table(ops) => self.table(ops).await,
            Op::CreateNamespace(ns) => self.create_namespace(ns).await,
            Op::DeleteNamespace { namespace, held } => {
                self.delete_namespace(namespace, *held).await
            }
            Op::ReleaseNamespace(ns) => self.release_namespace(ns).await,
            Op::HandAdd { secret, key, value } | Op::HandEdit { secret, key, value } => {
                self.timeline.license(secret.clone(), Some(key.clone()));
                let create = matches!(op, Op::HandAdd { .. });
                self.hand_set(secret, key, Some(value), create).await
            }
            Op::HandRemove { secret, key } => {
                self.timeline.license(secret.clone(), Some(key.clone()));
                self.hand_set(secret, key, None, false).await
            }
            Op::DeleteSecret(secret) => {
                self.timeline.license(secret.clone(), None);
                let api: Api<Secret> = Api::namespaced(self.client.clone(), &secret.0);
                let params = DeleteParams::default();
                retry("delete the Secret", || api.delete(&secret.1, &params), true).await
            }
            Op::CreateNonOpaque { secret, key, value } => {
                // Its key only: a change of the Secret after its creation
                // is still judged.
                self.timeline.license(secret.clone(), Some(key.clone()));
                self.create_non_opaque(secret, key, value).await
            }
            // An edit of the first CredstashSync's spec: the world's own
            // rule gives the new spec, applied and awaited as a user would.
            Op::SetExcluded(_)
            | Op::SetDryRun(_)
            | Op::SetPrune(_)
            | Op::SetSelector(_)
            | Op::SetAdopt(_)
            | Op::SetMetadata { .. } => {
                let mut next = self.world.clone();
                next.apply(op);
                self.world.css = next.css;
                self.apply_css().await;
                if let Op::SetPrune(on) = op {
                    self.timeline.prune_set(*on);
                }
                self.await_main_spec(settings).await
            }
            Op::SetSecondCss(true) => {
                self.world.second.exists = true;
                self.apply_second_css().await;
                self.await_spec(SECOND_CSS, settings).await
            }
            Op::SetSecondCss(false) => self.delete_css(SECOND_CSS).await,
            Op::LabelNamespace {
                namespace,
                selected,
            } => {
                let api: Api<Namespace> = Api::all(self.client.clone());
                let value = selected.then_some("yes");
                let patch = json!({"metadata": {"labels": {SELECT_LABEL: value}}});
                let (params, patch) = (PatchParams::default(), Patch::Merge(&patch));
                retry(
                    "label the namespace",
                    || api.patch(namespace, &params, &patch),
                    false,
                )
                .await
            }
            Op::RecreateTable => {
                let start = Instant::now();
                self.env.moto.fixture(&["drop-table", TABLE]);
                self.env.table(TABLE);
                self.env.moto.fixture(&["enable-stream", TABLE]);
                self.timeline.table_written(start, &BTreeMap::new(), &[]);
                Ok(())
            }
            Op::ReplaceStream => {
                self.env.moto.fixture(&["replace-stream", TABLE]);
                Ok(())
            }
            Op::Resync => {
                self.request_resync().await;
                Ok(())
            }
            Op::Rename => {
                self.delete_css(&self.world.css.name.clone()).await?;
                self.create_css(settings).await
            }
            Op::DeleteCss => self.delete_css(&self.world.css.name.clone()).await,
            Op::CreateCss => self.create_css(settings).await,
            Op::Restart { kill } => {
                self.stop_operator(*kill).await;
                self.start_operator().await;
                Ok(())
            }
            Op::ApiFault {
                verb,
                resource,
                count,
                code,
            } => {
                self.faults
                    .inject_fault(Fault::status(verb, resource, *count, *code));
                Ok(())
            }
            Op::ApiDelay {
                verb,
                resource,
                millis,
            } => {
                self.faults.inject_fault(Fault::delay(
                    verb,
                    resource,
                    1,
                    Duration::from_millis(*millis),
                ));
                Ok(())
            }
            Op::Compact => {
                self.faults.expire_watches();
                Ok(())
            }
            Op::DropWatches => {
                self.faults.drop_watches();
                Ok(())
            }
            Op::Aws(fault) => {
                self.proxy.inject(fault);
                Ok(())
            }
            Op::Check => self.check(settings, false).await,
            Op::StormCheck(storm) => {
                self.storm(storm);
                self.check(settings, true).await
            }
        }
    }

    pub(super) async fn table(&mut self, ops: &[TableOp]) -> Result<(), String> {
        let start = Instant::now();
        let batch: Vec<serde_json::Value> = ops.iter().map(TableOp::to_json).collect();
        let input = serde_json::to_vec(&batch).expect("batch JSON");
        let mut command = self.env.moto.command(venv().join("bin/python"));
        command
            .arg(repo_root().join("tests/support/fixture.py"))
            .args(["batch", TABLE])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let output = tokio::task::spawn_blocking(move || {
            use std::io::Write;
            let mut child = command.spawn().expect("start fixture.py batch");
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(&input)
                .expect("write the batch");
            child.wait_with_output().expect("fixture.py batch")
        })
        .await
        .expect("batch task");
        if !output.status.success() {
            return Err(format!(
                "credstash batch failed: {}",
                String::from_utf8_lossy(&output.stderr)
            ));
        }
        // The values that became a name's latest, in order: a put's, or
        // after a rollback the version before (newest again).
        let mut next = self.world.clone();
        let mut puts = Vec::new();
        for op in ops {
            next.apply(&Op::Table(vec![op.clone()]));
            if let (TableOp::Put { .. } | TableOp::Rollback { .. }, Some(Latest::Value(v))) =
                (op, next.table.get(op.name()))
            {
                let rollback = matches!(op, TableOp::Rollback { .. });
                puts.push((op.name().to_owned(), v.clone(), rollback));
            }
        }
        self.timeline.table_written(start, &next.table, &puts);
        Ok(())
    }

    pub(super) async fn create_namespace(&mut self, ns: &str) -> Result<(), String> {
        let api: Api<Namespace> = Api::all(self.client.clone());
        let namespace: Namespace =
            serde_json::from_value(json!({"metadata": {"name": ns}})).expect("namespace");
        let params = PostParams::default();
        retry(
            "create the namespace",
            || api.create(&params, &namespace),
            false,
        )
        .await
    }

    pub(super) async fn delete_namespace(&mut self, ns: &str, held: bool) -> Result<(), String> {
        if held {
            let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), ns);
            let hold: ConfigMap = serde_json::from_value(
                json!({"metadata": {"name": "hold", "finalizers": [HOLD_FINALIZER]}}),
            )
            .expect("configmap");
            let params = PostParams::default();
            retry(
                "create the holding ConfigMap",
                || api.create(&params, &hold),
                false,
            )
            .await?;
        }
        for secret in universe().filter(|(n, _)| n == ns) {
            self.timeline.license(secret, None);
        }
        let api: Api<Namespace> = Api::all(self.client.clone());
        let params = DeleteParams::default();
        retry("delete the namespace", || api.delete(ns, &params), false).await?;
        if !held {
            self.wait_namespace_gone(ns).await?;
        }
        Ok(())
    }

    pub(super) async fn release_namespace(&mut self, ns: &str) -> Result<(), String> {
        let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), ns);
        let patch = json!({"metadata": {"finalizers": null}});
        let (params, patch) = (PatchParams::default(), Patch::Merge(&patch));
        retry(
            "release the finalizer",
            || api.patch("hold", &params, &patch),
            true,
        )
        .await?;
        self.wait_namespace_gone(ns).await
    }

    pub(super) async fn wait_namespace_gone(&self, ns: &str) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.namespace_exists(ns).await {
            if Instant::now() > deadline {
                return Err(format!("namespace {ns} was not deleted within 30 s"));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }

    /// Sets (or with `None` removes) one key by hand, like `kubectl patch`;
    /// with `create`, creates the Secret when it does not exist.
    pub(super) async fn hand_set(
        &mut self,
        secret: &SecretId,
        key: &str,
        value: Option<&String>,
        create: bool,
    ) -> Result<(), String> {
        let api: Api<Secret> = Api::namespaced(self.client.clone(), &secret.0);
        let encoded = value.map(|v| base64::engine::general_purpose::STANDARD.encode(v));
        let patch = json!({"data": {key: encoded}});
        let params = PatchParams {
            field_manager: Some(HAND_MANAGER.into()),
            ..Default::default()
        };
        let patch = Patch::Merge(&patch);
        let patched = retry_value("patch the Secret by hand", || {
            api.patch(&secret.1, &params, &patch)
        })
        .await?;
        if let Some(written) = patched {
            self.driver_wrote(&written);
            return Ok(());
        }
        if !create {
            return Ok(());
        }
        let body: Secret = serde_json::from_value(
            json!({"metadata": {"name": secret.1}, "type": "Opaque", "data": {key: encoded}}),
        )
        .expect("secret");
        let post = PostParams {
            field_manager: Some(HAND_MANAGER.into()),
            ..Default::default()
        };
        match retry_value("create the Secret by hand", || api.create(&post, &body)).await {
            Ok(created) => {
                created.iter().for_each(|c| self.driver_wrote(c));
                // Not the operator's: with adoptExisting false it stays so.
                self.world.foreign.insert(secret.clone());
                Ok(())
            }
            // Created by the operator meanwhile: patch it after all.
            Err(e) if e.ends_with("AlreadyExists") => {
                let patched = retry_value("patch the Secret by hand", || {
                    api.patch(&secret.1, &params, &patch)
                })
                .await?;
                patched.iter().for_each(|p| self.driver_wrote(p));
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Remembers a Secret write of the driver's own (by the resourceVersion
    /// it answered), so that its sample is not taken for the operator's.
    fn driver_wrote(&mut self, secret: &Secret) {
        if let Some(version) = secret.metadata.resource_version.clone() {
            self.driver_writes.insert(version);
        }
    }

    pub(super) async fn create_non_opaque(
        &mut self,
        secret: &SecretId,
        key: &str,
        value: &str,
    ) -> Result<(), String> {
        let api: Api<Secret> = Api::namespaced(self.client.clone(), &secret.0);
        let encoded = base64::engine::general_purpose::STANDARD.encode(value);
        let body: Secret = serde_json::from_value(json!({"metadata": {"name": secret.1}, "type": "example.com/not-opaque", "data": {key: encoded}})).expect("secret");
        let post = PostParams {
            field_manager: Some(HAND_MANAGER.into()),
            ..Default::default()
        };
        let created = retry_value("create the non-Opaque Secret", || api.create(&post, &body))
            .await?
            .ok_or("driver: create the non-Opaque Secret: 404 Not Found")?;
        self.driver_wrote(&created);
        Ok(())
    }

    /// Deletes CredstashSync `name` and waits until it is gone (its
    /// finalizer handled).
    pub(super) async fn delete_css(&mut self, name: &str) -> Result<(), String> {
        let api: Api<DynamicObject> = Api::all_with(self.client.clone(), &css_resource());
        let params = DeleteParams::default();
        retry(
            "delete the CredstashSync",
            || api.delete(name, &params),
            true,
        )
        .await?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while !matches!(api.get_opt(name).await, Ok(None)) {
            if Instant::now() > deadline {
                return Err(format!(
                    "CredstashSync {name} was not gone within 30 s of its deletion"
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // Gone: nothing of it may be written from now on.
        self.observed_at = Some(Instant::now());
        Ok(())
    }

    pub(super) async fn await_main_spec(&mut self, settings: &Settings) -> Result<(), String> {
        let name = self.world.css.name.clone();
        self.await_spec(&name, settings).await
    }

    /// Creates the CredstashSync under the next name, as a user would after
    /// deleting it, and waits until its spec is observed.
    pub(super) async fn create_css(&mut self, settings: &Settings) -> Result<(), String> {
        self.world.css.name = World::css_name(CSS, self.world.renames + 1);
        self.world.css.exists = true;
        self.apply_css().await;
        self.await_main_spec(settings).await
    }

    /// The first CredstashSync's spec: every namespace but the second's.
    pub(super) fn css_spec(&self) -> serde_json::Value {
        let css = &self.world.css;
        let mut excluded: Vec<&str> = css.excluded.iter().map(String::as_str).collect();
        excluded.push(SECOND_NAMESPACE);
        let mut spec = json!({
            "table": TABLE,
            "dryRun": css.dry_run,
            "prune": css.prune,
            "adoptExisting": css.adopt,
            "excludedNamespaces": excluded,
            "waitTime": "1s",
            "minResyncInterval": "1s",
            "syncTimeout": "30s",
        });
        if css.selector {
            spec["namespaceSelector"] = json!({"matchLabels": {SELECT_LABEL: "yes"}});
        }
        // Applied even when empty: kube-apiserver stores a map emptied by
        // an applied `{}` as null (found by the soak on the real control
        // plane, when the CRD's schema still refused it).
        spec["secretMetadata"] = json!({"labels": css.labels, "annotations": css.annotations});
        if self.rollout.is_some() {
            spec["rollout"] = json!({"enabled": true, "debounce": "1s"});
        }
        if typed_on() {
            spec["secretTemplates"] = typed_templates();
        }
        spec
    }

    /// The second CredstashSync's spec: the same table, its namespace only.
    pub(super) fn second_spec(&self) -> serde_json::Value {
        let others: Vec<&str> = NAMESPACES
            .iter()
            .copied()
            .filter(|ns| *ns != SECOND_NAMESPACE)
            .collect();
        let mut spec = json!({
            "table": TABLE,
            "dryRun": false,
            "prune": self.world.second.prune,
            "excludedNamespaces": others,
            "waitTime": "1s",
            "minResyncInterval": "1s",
            "syncTimeout": "30s",
        });
        if typed_on() {
            spec["secretTemplates"] = typed_templates();
        }
        spec
    }

    pub(super) async fn apply_second_css(&self) {
        self.apply_spec(SECOND_CSS, self.second_spec()).await;
    }

    pub(super) async fn apply_css(&self) {
        self.apply_spec(&self.world.css.name, self.css_spec()).await;
    }

    pub(super) async fn apply_spec(&self, name: &str, spec: serde_json::Value) {
        let api: Api<DynamicObject> = Api::all_with(self.client.clone(), &css_resource());
        let body = json!({"apiVersion": "kubestash.io/v1alpha1", "kind": "CredstashSync", "metadata": {"name": name}, "spec": spec});
        let (params, body) = (
            PatchParams::apply("chaos-driver").force(),
            Patch::Apply(&body),
        );
        retry(
            "apply the CredstashSync",
            || api.patch(name, &params, &body),
            false,
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    }

    pub(super) async fn request_resync(&self) -> String {
        let value = format!("chaos-{}", self.started.elapsed().as_nanos());
        let api: Api<DynamicObject> = Api::all_with(self.client.clone(), &css_resource());
        let patch =
            json!({"metadata": {"annotations": {"kubestash.io/resync-requested-at": value}}});
        let name = &self.world.css.name;
        let (params, patch) = (PatchParams::default(), Patch::Merge(&patch));
        retry(
            "request a resync",
            || api.patch(name, &params, &patch),
            false,
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
        value
    }

    /// Waits, as a user's `kubectl wait` would, until the operator has
    /// observed the spec just applied to `name`; from then on it must not
    /// write where the spec forbids.
    pub(super) async fn await_spec(
        &mut self,
        name: &str,
        settings: &Settings,
    ) -> Result<(), String> {
        self.wait_spec_observed(name, settings).await?;
        self.observed_at = Some(Instant::now());
        Ok(())
    }

    /// A storm of faults for a check to converge through.
    pub(super) fn storm(&mut self, storm: &Storm) {
        self.faults
            .inject_fault(Fault::status("patch", "secrets", storm.patch_429s, 429));
        self.faults.inject_fault(Fault::delay(
            "list",
            "secrets",
            1,
            Duration::from_millis(storm.slow_list_ms),
        ));
        self.proxy.inject(&AwsFault::Throttle(storm.aws_throttles));
    }
}

/// Retries a driver request through injected faults (429, 500, 409
/// Conflict); with `absent_ok`, a 404 counts as done.
pub(super) async fn retry<T, F, Fut>(what: &str, call: F, absent_ok: bool) -> Result<(), String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, kube::Error>>,
{
    match retry_opt(what, call).await? {
        false if !absent_ok => Err(format!("driver: {what}: 404 Not Found")),
        _ => Ok(()),
    }
}

/// [`retry`] that reports a 404 as `Ok(false)`; AlreadyExists is an error.
pub(super) async fn retry_opt<T, F, Fut>(what: &str, call: F) -> Result<bool, String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, kube::Error>>,
{
    retry_value(what, call).await.map(|found| found.is_some())
}

/// [`retry_opt`] that keeps the answer (`None`: 404).
pub(super) async fn retry_value<T, F, Fut>(what: &str, mut call: F) -> Result<Option<T>, String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, kube::Error>>,
{
    for _ in 0..20 {
        match call().await {
            Ok(answer) => return Ok(Some(answer)),
            Err(kube::Error::Api(s)) if s.code == 404 => return Ok(None),
            Err(kube::Error::Api(s)) if s.reason == "AlreadyExists" => {
                return Err(format!("driver: {what}: AlreadyExists"))
            }
            Err(kube::Error::Api(s)) if [409, 429, 500].contains(&s.code) => {}
            Err(e) if e.to_string().contains("429") => {}
            Err(e) => return Err(format!("driver: {what}: {e}")),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(format!("driver: {what}: still failing after 20 tries"))
}
