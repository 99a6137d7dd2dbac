//! The checks: convergence to the model, the quiet window, every sampled
//! write, the status of a full sync, leaks, one writer, the rollout.

use super::*;

impl Harness<'_> {
    /// Every Secret of the universe: on the fake read from its store (not
    /// counted, no fault), on the real control plane listed by the
    /// harness's own client (which the fault proxy does not see). A list
    /// that fails fails the run: a check never passes on a read it did not
    /// make.
    pub(super) async fn observe(&self) -> Result<BTreeMap<SecretId, Observed>, String> {
        if let Some(fake) = &self.env.fake {
            return Ok(universe()
                .filter_map(|(ns, name)| {
                    let object = fake.get_object("", "v1", "secrets", &ns, &name)?;
                    Some(((ns, name), observed(&object)))
                })
                .collect());
        }
        let api: Api<Secret> = Api::all(self.client.clone());
        let list = api
            .list(&Default::default())
            .await
            .map_err(|e| format!("driver: list Secrets to check them: {e}"))?;
        let wanted: std::collections::BTreeSet<SecretId> = universe().collect();
        Ok(list
            .items
            .iter()
            .filter_map(|secret| {
                let id = (
                    secret.metadata.namespace.clone()?,
                    secret.metadata.name.clone()?,
                );
                let object = serde_json::to_value(secret).ok()?;
                wanted.contains(&id).then(|| (id, observed(&object)))
            })
            .collect())
    }

    /// Whether namespace `ns` still exists (in any phase).
    pub(super) async fn namespace_exists(&self, ns: &str) -> bool {
        if let Some(fake) = &self.env.fake {
            return fake.get_object("", "v1", "namespaces", "", ns).is_some();
        }
        let api: Api<Namespace> = Api::all(self.client.clone());
        !matches!(api.get_opt(ns).await, Ok(None))
    }

    pub(super) async fn check(
        &mut self,
        settings: &Settings,
        under_faults: bool,
    ) -> Result<(), String> {
        if !under_faults {
            self.clear_faults();
        }
        self.outcome.checks += 1;
        let mut problems = Vec::new();
        if let Some(exit) = self.kubelet().await {
            problems.push(exit);
        }
        // The operator has acted on the latest spec (as `kubectl wait` on
        // observedGeneration would tell a user): a reconcile that began
        // with the previous spec may still write until then.
        for css in [&self.world.css, &self.world.second] {
            if css.exists {
                if let Err(problem) = self.wait_spec_observed(&css.name, settings).await {
                    problems.push(problem);
                }
            }
        }
        // 1, 2: the Secrets converge to the model (through the faults of a
        // check under faults: the bound is the same).
        let start = Instant::now();
        let mut seen = self.observe().await?;
        let mut mismatches = self.model.check(&self.world, &seen);
        while !mismatches.is_empty() && start.elapsed() < settings.converge {
            tokio::time::sleep(Duration::from_millis(100)).await;
            seen = self.observe().await?;
            mismatches = self.model.check(&self.world, &seen);
        }
        if under_faults {
            self.clear_faults();
        }
        if mismatches.is_empty() {
            self.outcome.convergence.push(start.elapsed());
            self.passed("convergence");
        } else {
            problems.push(format!(
                "[1/2 convergence] not converged after {:?}{}:\n    {}",
                settings.converge,
                if under_faults { " under faults" } else { "" },
                mismatches
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("\n    ")
            ));
        }
        // 5: quiet means no writes, and the Secrets stay as verified.
        if mismatches.is_empty() {
            loop {
                let before = self.faults.counters();
                let window = Instant::now();
                tokio::time::sleep(settings.quiet).await;
                let after = self.faults.counters();
                let writes = after.writes_arrived("secrets") - before.writes_arrived("secrets");
                let again = self.observe().await?;
                if writes > 0 {
                    let late = self.sampler.since(window);
                    let catching_up = start.elapsed() < settings.converge
                        && self.model.check(&self.world, &again).is_empty()
                        && only_scope_exits_unobserved(writes, &late, |ns| {
                            !self.world.receives_writes(ns) && !self.frozen_since.contains_key(ns)
                        });
                    if catching_up {
                        seen = again;
                        continue;
                    }
                    problems.push(format!(
                        "[5 quiet] {writes} Secret writes in {:?} after convergence: {}; sampled: {:?}",
                        settings.quiet,
                        write_diff(&before, &after),
                        late.iter().map(describe).collect::<Vec<_>>()
                    ));
                } else {
                    self.passed("quiet");
                }
                if again != seen {
                    let drift = self.model.check(&self.world, &again);
                    problems.push(format!(
                        "[1 convergence] changed again while quiet: {}",
                        drift
                            .iter()
                            .map(ToString::to_string)
                            .collect::<Vec<_>>()
                            .join("; ")
                    ));
                }
                break;
            }
        }
        // 2, 3: every write sampled since the last check.
        let samples = self.sampler.take();
        let judged = self.judge_writes(&samples);
        if judged.is_empty() {
            self.passed("every write");
        }
        problems.extend(judged);
        if self.sampler.lagged() > 0 {
            problems.push(format!(
                "the sampler missed {} writes",
                self.sampler.lagged()
            ));
        }
        if self.elect {
            let two_writers = self.writers.judge(&self.faults.counters());
            if two_writers.is_empty() {
                self.passed("one writer");
            }
            problems.extend(two_writers);
        }
        // 6: a full sync reports what the model says, and writes nothing.
        if problems.is_empty() && self.world.css.exists {
            match self.check_status(settings).await {
                Ok(()) => self.passed("status"),
                Err(p) => problems.push(p),
            }
        }
        // 4: no value anywhere it must not be.
        if let Some(exit) = self.kubelet().await {
            problems.push(exit);
        }
        let leaks = self.leaks().await;
        if leaks.is_empty() {
            self.passed("no leak");
        }
        problems.extend(leaks);
        if problems.is_empty() {
            if let Err(problem) = self.judge_rollout(&seen, settings).await {
                problems.push(problem);
            }
        }
        if problems.is_empty() {
            self.outcome.checks_passed += 1;
            self.outcome.keys_verified += seen.values().map(|s| s.data.len()).sum::<usize>();
            self.model.pin(&self.world, &seen);
            self.rollout_writes = 0;
            let now = Instant::now();
            self.timeline.checked(now);
            self.freeze_unwritten_namespaces(now);
            self.world.foreign.retain(|secret| {
                seen.get(secret).is_none_or(|o| {
                    o.labels.get(MANAGED_BY_LABEL).map(String::as_str) != Some("kubestash")
                })
            });
            self.verified = seen;
            self.period_start = now;
            Ok(())
        } else {
            Err(problems.join("\n  "))
        }
    }

    /// The rollout family's invariants (when on).
    pub(super) async fn judge_rollout(
        &mut self,
        seen: &BTreeMap<SecretId, Observed>,
        settings: &Settings,
    ) -> Result<(), String> {
        let Some(rollout) = self.rollout.as_mut() else {
            return Ok(());
        };
        let id: SecretId = (ROLLOUT_SECRET.0.into(), ROLLOUT_SECRET.1.into());
        let data = |map: &BTreeMap<SecretId, Observed>| map.get(&id).map(|o| o.data.clone());
        // The Deployment carries the digest of the operator's last write:
        // after a hand edit or deletion it did not repair, there is none
        // newer to carry.
        let changed =
            data(seen) != data(&self.verified) && self.rollout_secret_written_last_by_operator;
        rollout
            .judge(
                &self.client,
                self.rollout_writes,
                changed,
                settings.converge,
            )
            .await?;
        self.passed("rollout");
        Ok(())
    }

    /// Ends every API and AWS fault still pending.
    fn clear_faults(&mut self) {
        self.faults.clear_faults();
        self.proxy.clear();
    }

    pub(super) fn passed(&mut self, invariant: &'static str) {
        *self.outcome.invariants_passed.entry(invariant).or_default() += 1;
    }

    /// Judges the sampled writes: the removals and hand keys by the
    /// timeline, every new value by the model, and where they landed.
    pub(super) fn judge_writes(&mut self, samples: &[Sample]) -> Vec<String> {
        let mut out: Vec<String> = self
            .timeline
            .judge(samples, self.period_start)
            .into_iter()
            .map(|p| format!("[2/3 sampled] {p}"))
            .collect();
        let known: std::collections::BTreeSet<SecretId> = universe().collect();
        for sample in samples {
            let (ns, name) = &sample.secret;
            if !known.contains(&sample.secret) {
                out.push(format!(
                    "[3 sampled] a write to {ns}/{name}, a Secret no CredstashSync maps to (managers {:?})",
                    sample.managers
                ));
                continue;
            }
            let changed = changed_keys(sample);
            // The operator never deletes a Secret: a deletion is the
            // driver's, or the namespace controller's.
            let by_driver = sample
                .resource_version
                .as_ref()
                .is_none_or(|version| self.driver_writes.contains(version));
            if !by_driver {
                if let Some(since) = self.frozen_since.get(ns).filter(|t| **t <= sample.at) {
                    out.push(format!(
                        "[3 sampled] {ns}/{name} written ({changed:?}) {:?} after the operator \
                         had observed that {ns} must not be written",
                        sample.at - *since
                    ));
                }
            }
            if sample.after.as_ref().is_some_and(|o| o.type_ != "Opaque") {
                continue;
            }
            let operator_data = !by_driver && changed.iter().any(|k| !k.starts_with("HAND_"));
            if sample.secret == (ROLLOUT_SECRET.0.into(), ROLLOUT_SECRET.1.into()) {
                if operator_data {
                    self.rollout_writes += 1;
                    self.rollout_secret_written_last_by_operator = true;
                } else if by_driver {
                    self.rollout_secret_written_last_by_operator = false;
                }
            }
            for key in changed.iter().filter(|k| !k.starts_with("HAND_")) {
                let id: KeyId = (sample.secret.clone(), key.clone());
                let value = sample.after.as_ref().and_then(|o| o.data.get(key)).cloned();
                if value.is_some() && !self.model.allows_write(&id, &value, sample.at) {
                    out.push(format!(
                        "[3 sampled] {ns}/{name}:{key} was given a value it could not rightly hold then \
                         (managers {:?})",
                        sample.managers
                    ));
                }
                if !by_driver {
                    self.model.operator_wrote(&id, value.as_ref(), sample.at);
                }
            }
        }
        out
    }

    /// At a passed check: the operator has seen every namespace it must
    /// not write to (gone, unlabelled) and writes nothing there any more.
    pub(super) fn freeze_unwritten_namespaces(&mut self, now: Instant) {
        for ns in NAMESPACES {
            if !self.world.receives_writes(ns) {
                self.frozen_since.entry(ns.to_string()).or_insert(now);
            }
        }
    }

    /// After the operator observed a spec (or a deletion) at `now`, or a
    /// namespace changed: namespaces it must not write to are frozen from
    /// then on, the others thawed. (Gone and unlabelled namespaces freeze at
    /// the next passed check: no generation tells when they were seen.)
    pub(super) fn scope_changed(&mut self, now: Instant) {
        for ns in NAMESPACES {
            if self.world.receives_writes(ns) {
                self.frozen_since.remove(ns);
            } else if self.world.namespaces.get(ns) == Some(&Phase::Active)
                && self.world.selected(ns)
            {
                self.frozen_since.entry(ns.to_string()).or_insert(now);
            }
        }
    }

    pub(super) async fn wait_spec_observed(
        &self,
        name: &str,
        settings: &Settings,
    ) -> Result<(), String> {
        let api: Api<DynamicObject> = Api::all_with(self.client.clone(), &css_resource());
        let deadline = Instant::now() + settings.converge;
        loop {
            let css = api.get(name).await.ok();
            let observed = css.as_ref().is_some_and(|css| {
                let generation = css.metadata.generation;
                generation.is_some()
                    && css.data["status"]["observedGeneration"].as_i64() == generation
            });
            if observed {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "[6 status] {name}: the latest spec was not observed within {:?}",
                    settings.converge
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub(super) async fn check_status(&mut self, settings: &Settings) -> Result<(), String> {
        let writes_before = self.faults.counters();
        let resync_start = Instant::now();
        let requested = self.request_resync().await;
        let api: Api<DynamicObject> = Api::all_with(self.client.clone(), &css_resource());
        let name = self.world.css.name.clone();
        let deadline = Instant::now() + settings.converge;
        let css = loop {
            let css = api
                .get(&name)
                .await
                .ok()
                .map(|o| serde_json::to_value(o).unwrap_or_default());
            if let Some(css) = css.filter(|c| c["status"]["lastResyncRequest"] == requested) {
                break css;
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "[6 status] the resync {requested} was not handled within {:?}",
                    settings.converge
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let mut problems = Vec::new();
        let counters = self.faults.counters();
        let writes = counters.writes_arrived("secrets") - writes_before.writes_arrived("secrets");
        if writes > 0 {
            problems.push(format!(
                "a full sync of a converged cluster wrote {writes} times: {}; sampled: {:?}",
                write_diff(&writes_before, &counters),
                self.sampler
                    .since(resync_start)
                    .iter()
                    .map(describe)
                    .collect::<Vec<_>>()
            ));
        }
        let model = self.world.key_counts();
        let keys = &css["status"]["keys"];
        let got = |field: &str| keys[field].as_u64().unwrap_or(0) as usize;
        for (field, want) in [
            ("total", model.total),
            ("invalid", model.invalid),
            ("failed", model.failed),
            ("conflicting", model.conflicting),
            ("waitingForNamespace", model.waiting),
            ("excluded", model.excluded),
        ] {
            if got(field) != want {
                problems.push(format!(
                    "status.keys.{field} is {}, the model says {want}",
                    got(field)
                ));
            }
        }
        if let Some(pending) = css["status"]["pendingSecrets"].as_u64().filter(|n| *n > 0) {
            problems.push(format!("status.pendingSecrets is {pending} once converged"));
        }
        let ready = condition(&css, "Ready").map(|c| c["status"].clone());
        let want_ready = if model.failed == 0 && model.conflicting == 0 {
            "True"
        } else {
            "False"
        };
        if ready.as_ref().and_then(|r| r.as_str()) != Some(want_ready) {
            problems.push(format!("Ready is {ready:?}, the model says {want_ready}"));
        }
        let dry_run = condition(&css, "DryRun").map(|c| c["status"].clone());
        let want_dry = if self.world.css.dry_run {
            "True"
        } else {
            "False"
        };
        if dry_run.as_ref().and_then(|r| r.as_str()) != Some(want_dry) {
            problems.push(format!("DryRun is {dry_run:?}, the model says {want_dry}"));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(format!("[6 status] {}", problems.join("; ")))
        }
    }

    /// Secret values (marked) in logs, events, status or metrics; a place
    /// that cannot be read is a failure, not a pass.
    pub(super) async fn leaks(&mut self) -> Vec<String> {
        let marks = leak_marks();
        let mut places: Vec<(String, String)> = Vec::new();
        let mut unread = Vec::new();
        let logs = std::fs::read_dir(self.logs.path()).map_err(|e| e.to_string());
        for entry in logs.into_iter().flatten().flatten() {
            let bytes = match std::fs::read(entry.path()) {
                Ok(bytes) => bytes,
                Err(e) => {
                    unread.push(format!("log {}: {e}", entry.path().display()));
                    continue;
                }
            };
            let scanned = self.scanned.entry(entry.path()).or_insert(0);
            let from = scanned.saturating_sub(64).min(bytes.len());
            *scanned = bytes.len();
            let text = String::from_utf8_lossy(&bytes[from..]).into_owned();
            places.push((format!("log {}", entry.path().display()), text));
        }
        for operator in &self.operators {
            match http_get(operator.port, "/metrics") {
                Some((200, body)) => places.push(("metrics".into(), body)),
                other => unread.push(format!("metrics on port {}: {other:?}", operator.port)),
            }
        }
        let events: Api<k8s_openapi::api::events::v1::Event> = Api::all(self.client.clone());
        match events.list(&Default::default()).await {
            Ok(list) => places.push((
                "events".into(),
                serde_json::to_string(&list.items).unwrap_or_default(),
            )),
            Err(e) => unread.push(format!("events: {e}")),
        }
        let css: Api<DynamicObject> = Api::all_with(self.client.clone(), &css_resource());
        match css.list(&Default::default()).await {
            Ok(list) => places.push((
                "CredstashSync status".into(),
                serde_json::to_string(&list.items).unwrap_or_default(),
            )),
            Err(e) => unread.push(format!("CredstashSyncs: {e}")),
        }
        let mut out = Vec::new();
        for (place, text) in places {
            for mark in &marks {
                if let Some(at) = text.find(mark.as_str()) {
                    let from = text[..at]
                        .char_indices()
                        .rev()
                        .nth(80)
                        .map_or(0, |(i, _)| i);
                    let context: String = text[from..].chars().take(200).collect();
                    out.push(format!(
                        "[4 leak] a secret value ({mark}) in {place}: …{context}…"
                    ));
                    break;
                }
            }
        }
        out.extend(
            unread
                .into_iter()
                .map(|place| format!("[4 leak] could not read {place}")),
        );
        out
    }
}

/// The data keys a write changed (added, changed or removed).
pub(super) fn changed_keys(sample: &Sample) -> Vec<String> {
    let empty = BTreeMap::new();
    let before = sample.before.as_ref().map_or(&empty, |o| &o.data);
    let after = sample.after.as_ref().map_or(&empty, |o| &o.data);
    let keys: std::collections::BTreeSet<&String> = before.keys().chain(after.keys()).collect();
    keys.into_iter()
        .filter(|k| before.get(*k) != after.get(*k))
        .cloned()
        .collect()
}

/// The Secret writes between two counter snapshots, as `verb status xN`.
pub(super) fn write_diff(before: &RequestCounters, after: &RequestCounters) -> String {
    after
        .entries()
        .iter()
        .filter(|((verb, resource, _), _)| {
            resource == "secrets" && !["get", "list", "watch"].contains(&verb.as_str())
        })
        .filter_map(|(key, n)| {
            let grew = n - before.entries().get(key).copied().unwrap_or(0);
            (grew > 0).then(|| format!("{} {} x{grew}", key.0, key.2))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Forms a marked value can take in text: plain, base64, a Rust byte list.
pub(super) fn leak_marks() -> Vec<String> {
    let b64 = base64::engine::general_purpose::STANDARD.encode(VALUE_MARK);
    let bytes: Vec<String> = VALUE_MARK.bytes().map(|b| b.to_string()).collect();
    vec![VALUE_MARK.to_owned(), b64, bytes.join(", ")]
}

/// Whether the `writes` that landed in a quiet window are all sampled and
/// all went to namespaces that left the operator's scope (unlabelled, gone)
/// since the last passed check. No signal tells when the operator saw that
/// (as `observedGeneration` does for a spec), so a write it decided just
/// before is still right, and either outcome converges: the window shows
/// the operator catching up, not churning, and the check starts it again.
/// The values written are judged with every other sampled write.
fn only_scope_exits_unobserved(
    writes: u64,
    late: &[Sample],
    left_scope_unobserved: impl Fn(&str) -> bool,
) -> bool {
    late.len() as u64 == writes && late.iter().all(|s| left_scope_unobserved(&s.secret.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_to(ns: &str) -> Sample {
        Sample {
            at: Instant::now(),
            secret: (ns.to_string(), "svc".to_string()),
            before: None,
            after: None,
            managers: vec!["kubestash/chaos-1".into()],
            resource_version: Some("7".into()),
        }
    }

    #[test]
    fn a_quiet_window_is_caught_up_only_by_sampled_writes_to_namespaces_that_left_scope() {
        let left = |ns: &str| ns == "ns-d";
        let late = [write_to("ns-d"), write_to("ns-d")];
        assert!(only_scope_exits_unobserved(2, &late, left));
        // A write nobody sampled (a no-op patch) is churn.
        assert!(!only_scope_exits_unobserved(3, &late, left));
        // A write anywhere else is churn.
        assert!(!only_scope_exits_unobserved(
            2,
            &[write_to("ns-d"), write_to("ns-a")],
            left
        ));
        assert!(!only_scope_exits_unobserved(1, &[write_to("ns-a")], left));
    }
}
