//! The object lifecycle of writes: create, update (PUT and patches), delete,
//! with kube-apiserver's strategies (status subresource, generation, Secret
//! `stringData`, finalizers, namespaces, CRDs) and dry-run.

use base64::Engine;
use serde_json::{json, Map, Value};

use crate::errors::{ApiError, Cause};
use crate::managed::{self, Entry, Scope};
use crate::resources::{Class, ResourceInfo};
use crate::schema::{self, TypeInfo};
use crate::server::Inner;
use crate::util::{now_rfc3339, random_suffix};
use crate::validation;
use crate::{crd, events};

/// Options common to writes.
#[derive(Debug, Clone)]
pub struct WriteCtx {
    /// The resource written.
    pub res: ResourceInfo,
    /// `status` for /status writes (`finalize` for namespaces).
    pub subresource: Option<String>,
    /// `dryRun=All`.
    pub dry_run: bool,
    /// Field manager.
    pub manager: String,
    /// `fieldValidation=Strict`.
    pub strict: bool,
}

impl WriteCtx {
    fn scope(&self) -> Scope {
        Scope::of(&self.res, self.subresource.as_deref())
    }

    fn sub(&self) -> &str {
        self.subresource.as_deref().unwrap_or_default()
    }

    /// The managed-fields operation of this write.
    pub fn op<'a>(&'a self, api_version: &'a str, now: &'a str) -> managed::Op<'a> {
        managed::Op {
            ti: TypeInfo::new(&self.res),
            scope: self.scope(),
            manager: &self.manager,
            api_version,
            subresource: self.sub(),
            now,
        }
    }
}

/// How managedFields are computed for a write.
pub enum Ownership {
    /// An Update operation by the context's manager.
    Update,
    /// Entries already computed by server-side apply.
    Applied(Vec<Entry>),
}

/// Converts a stored object to the resource's external view.
pub fn external(res: &ResourceInfo, stored: &Value) -> Value {
    let mut v = match res.class {
        Class::EventsV1Event => events::to_events_v1(stored),
        Class::CoreEvent => events::core_view(stored),
        _ => stored.clone(),
    };
    // CRD defaults also apply when reading from storage (KEP-575).
    if let (Class::Custom, Some(s)) = (res.class, res.schema.as_ref()) {
        schema::apply_defaults(s, &mut v);
    }
    if let Some(m) = v.as_object_mut() {
        // apiVersion and kind first, as the real server serialises them.
        let mut out = Map::new();
        out.insert("kind".into(), json!(res.kind));
        out.insert("apiVersion".into(), json!(res.api_version()));
        for (k, val) in m.iter() {
            if k != "kind" && k != "apiVersion" {
                out.insert(k.clone(), val.clone());
            }
        }
        return Value::Object(out);
    }
    v
}

/// Converts an incoming object in the resource's external view to the stored form.
pub fn internal(res: &ResourceInfo, incoming: &Value) -> Value {
    match res.class {
        Class::EventsV1Event => events::without_zeros(&events::to_core(incoming)),
        Class::CoreEvent => events::without_zeros(incoming),
        _ => incoming.clone(),
    }
}

fn stored_api_version(res: &ResourceInfo) -> String {
    if res.class == Class::EventsV1Event {
        "v1".into()
    } else {
        res.api_version()
    }
}

/// The metadata map of an object (which must be a JSON object), created if missing.
fn meta_mut(obj: &mut Value) -> &mut Map<String, Value> {
    let slot = &mut obj["metadata"];
    if !slot.is_object() {
        *slot = Value::Object(Map::new());
    }
    match slot {
        Value::Object(m) => m,
        _ => unreachable!("metadata was just made an object"),
    }
}

/// Folds `stringData` into `data` and defaults `type` (Secret conversion).
fn fold_string_data(obj: &mut Value) {
    if let Some(sd) = obj.get("stringData").and_then(Value::as_object).cloned() {
        if !obj["data"].is_object() {
            obj["data"] = Value::Object(Map::new());
        }
        for (k, v) in sd {
            let s = v.as_str().unwrap_or_default();
            obj["data"][k.as_str()] =
                json!(base64::engine::general_purpose::STANDARD.encode(s.as_bytes()));
        }
    }
    if let Some(m) = obj.as_object_mut() {
        m.remove("stringData");
        if m.get("data")
            .is_some_and(|d| d.as_object().is_some_and(Map::is_empty))
        {
            m.remove("data");
        }
        if m.get("type")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
        {
            m.insert("type".into(), json!("Opaque"));
        }
    }
}

/// Built-in kinds are Go structs whose `labels` and `annotations` are
/// `omitempty`: an empty map is neither stored nor tracked as a field.
fn drop_empty_meta_maps(res: &ResourceInfo, obj: &mut Value) {
    if res.class == Class::Custom {
        // A custom resource's metadata goes through ObjectMeta all the same.
        if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
            drop_struct_nulls(meta, &TypeInfo::new(res), &mut vec!["metadata".into()]);
        }
    } else {
        go_shape(res, obj);
    }
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        for k in ["labels", "annotations"] {
            if meta
                .get(k)
                .and_then(Value::as_object)
                .is_some_and(Map::is_empty)
            {
                meta.remove(k);
            }
        }
    }
}

/// What a built-in object looks like after kube-apiserver's round trip
/// through its Go type and protobuf storage: a ConfigMap's empty `data` or
/// `binaryData` map is gone (`omitempty`), a Lease always has `spec` (a
/// struct value, `{}` when empty).
fn go_shape(res: &ResourceInfo, obj: &mut Value) {
    let Some(m) = obj.as_object_mut() else {
        return;
    };
    match res.class {
        Class::ConfigMap => {
            for k in ["data", "binaryData"] {
                if m.get(k)
                    .and_then(Value::as_object)
                    .is_some_and(Map::is_empty)
                {
                    m.remove(k);
                }
            }
        }
        Class::Lease => match m.get_mut("spec").and_then(Value::as_object_mut) {
            // Its fields are pointers left out when nil: a null is gone.
            Some(spec) => spec.retain(|_, v| !v.is_null()),
            None => {
                m.insert("spec".into(), json!({}));
            }
        },
        _ => {}
    }
}

/// ObjectMeta's fields are decoded into Go, where an explicit `null` in one
/// (a pointer, slice or map, all `omitempty`) leaves it nil and not
/// encoded. Nulls in its maps (labels, annotations) are values and stay for
/// their own rules.
fn drop_struct_nulls(m: &mut Map<String, Value>, ti: &TypeInfo, path: &mut Vec<String>) {
    if !ti.is_map(path) {
        m.retain(|_, v| !v.is_null());
    }
    for (k, v) in m.iter_mut() {
        path.push(k.clone());
        match v {
            Value::Object(child) => drop_struct_nulls(child, ti, path),
            Value::Array(items) => {
                path.push("[]".into());
                for item in items.iter_mut() {
                    if let Value::Object(child) = item {
                        drop_struct_nulls(child, ti, path);
                    }
                }
                path.pop();
            }
            _ => {}
        }
        path.pop();
    }
}

/// An object as the field manager of the request's API version sees it
/// (an Event's fields are named and shown per API).
fn in_api_view(res: &ResourceInfo, stored: &Value) -> Value {
    match res.class {
        Class::EventsV1Event | Class::CoreEvent => external(res, stored),
        _ => stored.clone(),
    }
}

/// The object the field manager sees: a Namespace's spec as the request
/// sent it (`spec`, when the strategy replaces it: it adds the `kubernetes`
/// finalizer on create and puts the stored spec back on update).
fn as_requested(res: &ResourceInfo, obj: &Value, spec: Option<Option<Value>>) -> Value {
    let mut tracked = obj.clone();
    if let (Class::Namespace, Some(spec), Some(m)) = (res.class, spec, tracked.as_object_mut()) {
        match spec {
            Some(s) => m.insert("spec".into(), s),
            None => m.remove("spec"),
        };
    }
    tracked
}

fn is_workload(ctx: &WriteCtx, kind: &str) -> bool {
    ctx.res.class == Class::Workload && ctx.res.kind == kind
}

/// Sets `keys` of `obj` to their values in `old` (removing them where `old`
/// has none).
fn keep_old(obj: &mut Value, old: &Value, keys: &[&str]) {
    for k in keys {
        match old.get(*k) {
            Some(v) => obj[*k] = v.clone(),
            None => {
                if let Some(m) = obj.as_object_mut() {
                    m.remove(*k);
                }
            }
        }
    }
}

fn without(obj: &Value, keys: &[&str]) -> Value {
    let mut o = obj.clone();
    if let Some(m) = o.as_object_mut() {
        for k in keys {
            m.remove(*k);
        }
    }
    o
}

fn spec_changed(res: &ResourceInfo, old: &Value, new: &Value) -> bool {
    let mut ignore = vec!["metadata", "apiVersion", "kind"];
    if res.status_subresource {
        ignore.push("status");
    }
    without(old, &ignore) != without(new, &ignore)
}

/// Defaulting, pruning and schema validation for custom resources.
/// A body that was decoded (a create, an update, a patched object) went
/// through the schema coercer: unknown fields and the nulls of fields that
/// are neither nullable nor defaulted are pruned. An apply's result is not
/// decoded: structured-merge-diff has refused unknown fields already, and
/// its nulls are only defaulted.
fn schema_checks(
    ctx: &WriteCtx,
    obj: &mut Value,
    decoded: bool,
    causes: &mut Vec<Cause>,
) -> Result<(), ApiError> {
    let Some(s) = ctx.res.schema.clone() else {
        return Ok(());
    };
    let mut unknown = vec![];
    schema::prune(&s, obj, "", true, &mut unknown);
    if decoded {
        schema::prune_nulls_without_defaults(&s, obj);
    }
    if ctx.strict && !unknown.is_empty() {
        let list: Vec<String> = unknown
            .iter()
            .map(|u| format!("unknown field \"{u}\""))
            .collect();
        return Err(ApiError::bad_request(format!(
            "strict decoding error: {}",
            list.join(", ")
        )));
    }
    schema::apply_defaults(&s, obj);
    schema::validate(&s, obj, "", causes);
    Ok(())
}

fn validate(
    ctx: &WriteCtx,
    obj: &mut Value,
    old: Option<&Value>,
    decoded: bool,
) -> Result<(), ApiError> {
    let mut causes = vec![];
    let is_event = matches!(ctx.res.class, Class::EventsV1Event | Class::CoreEvent);
    // Events check their metadata among their own rules.
    if !is_event {
        validation::validate_metadata(&ctx.res, obj, &mut causes);
    }
    validation::validate_kind(&ctx.res, obj, old, &mut causes);
    if ctx.res.class == Class::Custom {
        schema_checks(ctx, obj, decoded, &mut causes)?;
    }
    if ctx.res.class == Class::Crd {
        crd::validate(obj, &mut causes);
    }
    if ctx.res.class == Class::Workload && ctx.subresource.is_none() {
        crate::apps::apply_defaults(&ctx.res.kind, obj);
        crate::apps::validate(obj, old, &mut causes);
    }
    if is_event {
        validation::validate_event(&ctx.res, obj, old, &mut causes);
    }
    validation::to_error(&ctx.res, obj, causes)
}

/// Checks the namespace a namespaced object is created in.
pub fn check_namespace(
    inner: &Inner,
    res: &ResourceInfo,
    ns: &str,
    name: &str,
) -> Result<(), ApiError> {
    match inner.store.get("/namespaces", "", ns) {
        None => Err(ApiError::not_found(
            &crate::errors::GroupResource::new("", "namespaces"),
            ns,
        )),
        Some(n) if !n["metadata"]["deletionTimestamp"].is_null() => {
            let mut e = ApiError::forbidden(
                &res.gr(),
                name,
                &format!(
                    "unable to create new content in namespace {ns} because it is being terminated"
                ),
            );
            if let Some(d) = e.details.as_mut() {
                d["causes"] = json!([{"reason": "NamespaceTerminating", "message": format!("namespace {ns} is being terminated"), "field": "metadata.namespace"}]);
            }
            Err(e)
        }
        Some(_) => Ok(()),
    }
}

/// Creates an object. `obj` is in the stored form. Returns the stored (or dry-run) object.
pub fn create(
    inner: &mut Inner,
    ctx: &WriteCtx,
    ns: Option<&str>,
    mut obj: Value,
    own: Ownership,
) -> Result<Value, ApiError> {
    if !obj.is_object() {
        return Err(ApiError::bad_request(
            "Object 'Kind' is missing in request body",
        ));
    }
    let now = now_rfc3339();
    obj["apiVersion"] = json!(stored_api_version(&ctx.res));
    obj["kind"] = json!(ctx.res.kind);
    let meta = meta_mut(&mut obj);
    match ns {
        Some(ns) => {
            if let Some(bns) = meta.get("namespace").and_then(Value::as_str) {
                if !bns.is_empty() && bns != ns {
                    return Err(ApiError::bad_request(
                        "the namespace of the provided object does not match the namespace sent on the request",
                    ));
                }
            }
            meta.insert("namespace".into(), json!(ns));
        }
        None => {
            meta.remove("namespace");
        }
    }
    let has_name = meta
        .get("name")
        .and_then(Value::as_str)
        .is_some_and(|n| !n.is_empty());
    if !has_name {
        if let Some(g) = meta
            .get("generateName")
            .and_then(Value::as_str)
            .filter(|g| !g.is_empty())
        {
            let name = format!("{g}{}", random_suffix(5));
            meta.insert("name".into(), json!(name));
        }
    }
    for k in [
        "uid",
        "resourceVersion",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "generation",
        "managedFields",
        "selfLink",
    ] {
        meta.remove(k);
    }
    let name = obj["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    // The field manager sees a Namespace's spec as sent, before the
    // strategy adds the `kubernetes` finalizer.
    let requested_spec = Some(obj.get("spec").cloned());
    prepare_create(&ctx.res, &mut obj);
    drop_empty_meta_maps(&ctx.res, &mut obj);
    let decoded = matches!(own, Ownership::Update);
    validate(ctx, &mut obj, None, decoded)?;
    if let Some(ns) = ns {
        check_namespace(inner, &ctx.res, ns, &name)?;
    }
    if inner
        .store
        .get(&ctx.res.storage, ns.unwrap_or_default(), &name)
        .is_some()
    {
        return Err(ApiError::already_exists(&ctx.res.gr(), &name));
    }
    let api_version = ctx.res.api_version();
    let meta = meta_mut(&mut obj);
    meta.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
    meta.insert("creationTimestamp".into(), json!(now));
    if ctx.res.has_generation {
        meta.insert("generation".into(), json!(1));
    }
    // A DaemonSet's template generation starts at 1 (the client's, if
    // higher); the creator owns the annotation.
    let template_generation = is_workload(ctx, "DaemonSet").then(|| {
        let g = crate::apps::template_generation(&obj);
        crate::apps::set_template_generation(&mut obj, g);
        g.max(1)
    });
    let entries = match own {
        Ownership::Update => {
            let tracked = in_api_view(&ctx.res, &as_requested(&ctx.res, &obj, requested_spec));
            // Compared with a new, empty object of the kind (its Go zero values).
            let empty = in_api_view(&ctx.res, &json!({}));
            managed::update(vec![], &empty, &tracked, &ctx.op(&api_version, &now))
        }
        Ownership::Applied(e) => e,
    };
    managed::encode(&mut obj, entries);
    if let Some(g) = template_generation {
        crate::apps::set_template_generation(&mut obj, g);
    }
    if ctx.dry_run {
        return Ok(obj);
    }
    let stored = inner.store.put(&ctx.res.storage, obj);
    if ctx.res.class == Class::Crd {
        return Ok(crd::after_create(inner, stored));
    }
    Ok(stored)
}

fn prepare_create(res: &ResourceInfo, obj: &mut Value) {
    let m = obj.as_object_mut();
    match res.class {
        Class::Secret => fold_string_data(obj),
        Class::Namespace => {
            let name = obj["metadata"]["name"].clone();
            if name.is_string() {
                if !obj["metadata"]["labels"].is_object() {
                    obj["metadata"]["labels"] = json!({});
                }
                obj["metadata"]["labels"]["kubernetes.io/metadata.name"] = name;
            }
            match obj["spec"]["finalizers"].as_array_mut() {
                Some(f) if f.contains(&json!("kubernetes")) => {}
                Some(f) => f.push(json!("kubernetes")),
                None => obj["spec"] = json!({"finalizers": ["kubernetes"]}),
            }
            obj["status"] = json!({"phase": "Active"});
        }
        Class::Crd => crd::prepare_create(obj),
        Class::Workload => obj["status"] = json!({}),
        Class::Custom if res.status_subresource => {
            if let Some(m) = m {
                m.remove("status");
            }
        }
        _ => {}
    }
}

/// Updates `old` to `new` (both in stored form), applying the strategy of the
/// endpoint. Returns the stored object (unchanged `old` for a no-op).
pub fn update(
    inner: &mut Inner,
    ctx: &WriteCtx,
    old: &Value,
    mut new: Value,
    own: Ownership,
) -> Result<Value, ApiError> {
    if !new.is_object() {
        return Err(ApiError::bad_request(
            "Object 'Kind' is missing in request body",
        ));
    }
    let now = now_rfc3339();
    let api_version = ctx.res.api_version();
    // The field manager types the request's object (its unknown fields
    // already pruned by decoding): when that fails (a custom resource's
    // value of the wrong type, through /status where validation does not
    // see it), the object keeps its managedFields as they were.
    let untyped = match (&own, ctx.res.class, ctx.res.schema.as_ref()) {
        (Ownership::Update, Class::Custom, Some(schema)) => {
            let mut probe = new.clone();
            schema::prune(schema, &mut probe, "", true, &mut vec![]);
            let mut errors = vec![];
            schema::typed_errors(schema, &probe, "", &mut errors);
            !errors.is_empty()
        }
        _ => false,
    };
    // managedFields sent by the client replace the stored ones ([] and [{}]
    // reset them), except through a subresource, which ignores them
    // (the field manager's decodeLiveOrNew).
    // A custom resource's `[]` is gone once its metadata is coerced through
    // ObjectMeta (`omitempty`): it keeps the stored entries.
    let coerced_away = ctx.res.class == Class::Custom
        && new["metadata"]["managedFields"]
            .as_array()
            .is_some_and(Vec::is_empty);
    let base_entries = match ctx.subresource {
        Some(_) => managed::decode(old),
        None if coerced_away => managed::decode(old),
        None => managed::requested(&new).unwrap_or_else(|| managed::decode(old)),
    };
    new["apiVersion"] = json!(stored_api_version(&ctx.res));
    new["kind"] = json!(ctx.res.kind);
    // A Namespace's spec as sent, which the field manager sees before the
    // strategy puts the stored one back.
    let mut requested_spec = None;
    // Subresource and status handling.
    match ctx.subresource.as_deref() {
        Some("status") if matches!(ctx.scope(), Scope::NoSpec { .. }) => {
            // The status strategies of Deployments, StatefulSets, DaemonSets
            // and Namespaces reset only spec (a Deployment's labels too).
            let mut merged = new.clone();
            keep_old(&mut merged, old, &["spec"]);
            if ctx.res.kind == "Deployment" {
                keep_old(&mut merged["metadata"], &old["metadata"], &["labels"]);
            }
            new = merged;
        }
        Some("status") => {
            let mut merged = old.clone();
            // A custom resource keeps the null an apply can leave.
            match new.get("status") {
                Some(s) if !s.is_null() || ctx.res.class == Class::Custom => {
                    merged["status"] = s.clone()
                }
                _ => {
                    if let Some(m) = merged.as_object_mut() {
                        m.remove("status");
                    }
                }
            }
            merged["metadata"]["managedFields"] = new["metadata"]["managedFields"].clone();
            new = merged;
        }
        Some("finalize") => {
            let mut merged = old.clone();
            match new["spec"].get("finalizers") {
                Some(f) => merged["spec"]["finalizers"] = f.clone(),
                None => {
                    if let Some(spec) = merged["spec"].as_object_mut() {
                        spec.remove("finalizers");
                    }
                }
            }
            new = merged;
        }
        _ => {
            if ctx.res.status_subresource {
                match old.get("status") {
                    Some(s) => new["status"] = s.clone(),
                    None => {
                        if let Some(m) = new.as_object_mut() {
                            m.remove("status");
                        }
                    }
                }
            }
            if ctx.res.class == Class::Namespace {
                requested_spec = Some(new.get("spec").cloned());
                new["spec"] = old["spec"].clone();
            }
        }
    }
    if ctx.res.class == Class::Secret {
        fold_string_data(&mut new);
    }
    drop_empty_meta_maps(&ctx.res, &mut new);
    // Server-owned metadata.
    let old_meta = old["metadata"].clone();
    // A uid may be left out (the stored one is kept) but not changed.
    if let Some(uid) = new["metadata"]["uid"].as_str().filter(|u| !u.is_empty()) {
        if Some(uid) != old_meta["uid"].as_str() {
            return Err(ApiError::invalid(
                &ctx.res.kind,
                &ctx.res.group,
                old_meta["name"].as_str().unwrap_or_default(),
                vec![Cause {
                    reason: "FieldValueInvalid".into(),
                    message: format!("Invalid value: \"{uid}\": field is immutable"),
                    field: "metadata.uid".into(),
                }],
            ));
        }
    }
    {
        let meta = meta_mut(&mut new);
        for k in [
            "name",
            "namespace",
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "resourceVersion",
            "generation",
            "selfLink",
        ] {
            match old_meta.get(k) {
                Some(v) => {
                    meta.insert(k.into(), v.clone());
                }
                None => {
                    meta.remove(k);
                }
            }
        }
    }
    if ctx.res.class == Class::Namespace {
        new["metadata"]["labels"]["kubernetes.io/metadata.name"] = old_meta["name"].clone();
    }
    // No new finalizers while deleting.
    if !old_meta["deletionTimestamp"].is_null() {
        let old_f: Vec<&Value> = old_meta["finalizers"]
            .as_array()
            .map(|a| a.iter().collect())
            .unwrap_or_default();
        let added: Vec<String> = new["metadata"]["finalizers"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter(|f| !old_f.contains(f))
                    .filter_map(|f| f.as_str().map(|s| format!("{s:?}")))
                    .collect()
            })
            .unwrap_or_default();
        if !added.is_empty() {
            return Err(ApiError::invalid(
                &ctx.res.kind,
                &ctx.res.group,
                old_meta["name"].as_str().unwrap_or_default(),
                vec![Cause {
                    reason: "FieldValueForbidden".into(),
                    message: format!("Forbidden: no new finalizers can be added if the object is being deleted, found new finalizers []string{{{}}}", added.join(", ")),
                    field: "metadata.finalizers".into(),
                }],
            ));
        }
    }
    let decoded = matches!(own, Ownership::Update);
    validate(ctx, &mut new, Some(old), decoded)?;
    if ctx.res.class == Class::Crd {
        crd::prepare_update(old, &mut new);
    }
    if ctx.res.has_generation {
        let g = old_meta["generation"].as_i64().unwrap_or(1);
        // A Deployment's annotation changes count too: they are copied to
        // its ReplicaSets (deploymentStrategy.PrepareForUpdate).
        let annotations_changed = is_workload(ctx, "Deployment")
            && ctx.subresource.is_none()
            && old_meta["annotations"] != new["metadata"]["annotations"];
        let g = if spec_changed(&ctx.res, old, &new) || annotations_changed {
            g + 1
        } else {
            g
        };
        new["metadata"]["generation"] = json!(g);
    }
    // A DaemonSet's template generation: the field manager sees the
    // client's annotation (0 without one, as the conversion to apps/v1
    // writes it), the strategy then keeps the stored one, bumped when a
    // write through the main endpoint changes the template.
    let template_generation = is_workload(ctx, "DaemonSet").then(|| {
        let sent = crate::apps::template_generation(&new);
        crate::apps::set_template_generation(&mut new, sent);
        let g = crate::apps::template_generation(old);
        if ctx.subresource.is_none() && old["spec"]["template"] != new["spec"]["template"] {
            g + 1
        } else {
            g
        }
    });
    let entries = match own {
        // An existing object without managedFields: Updates are not tracked
        // (kube-apiserver's skipNonAppliedManager) until the first apply.
        Ownership::Update if base_entries.is_empty() => vec![],
        Ownership::Update if untyped => managed::decode(old),
        Ownership::Update => {
            let tracked = in_api_view(&ctx.res, &as_requested(&ctx.res, &new, requested_spec));
            let old = in_api_view(&ctx.res, old);
            managed::update(base_entries, &old, &tracked, &ctx.op(&api_version, &now))
        }
        Ownership::Applied(e) => e,
    };
    managed::encode(&mut new, entries);
    if let Some(g) = template_generation {
        crate::apps::set_template_generation(&mut new, g);
    }
    // kube-apiserver skips a write whose encoding equals the stored one;
    // a nil []byte stored in a Secret's data (see Inner::nil_bytes) is
    // re-encoded differently, as an empty one, by any later write.
    let uid = old["metadata"]["uid"].as_str().unwrap_or_default();
    if new == *old && !inner.nil_bytes.contains(uid) {
        return Ok(old.clone());
    }
    if ctx.dry_run {
        return Ok(new);
    }
    inner.nil_bytes.remove(uid);
    let deleting = !new["metadata"]["deletionTimestamp"].is_null();
    if deleting && !has_finalizers(&ctx.res, &new) {
        // kube-apiserver deletes without writing the emptied finalizers:
        // watchers see one DELETED carrying the last stored state, the
        // writer the object it sent (at the last stored resourceVersion).
        let (ns, name) = crate::store::object_key(&new);
        remove_object(inner, &ctx.res, &ns, &name);
        new["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"].clone();
        return Ok(new);
    }
    let stored = inner.store.put(&ctx.res.storage, new);
    if ctx.res.class == Class::Crd {
        inner.refresh_registry();
    }
    Ok(stored)
}

fn has_finalizers(res: &ResourceInfo, obj: &Value) -> bool {
    let meta = obj["metadata"]["finalizers"]
        .as_array()
        .is_some_and(|a| !a.is_empty());
    let ns = res.class == Class::Namespace
        && obj["spec"]["finalizers"]
            .as_array()
            .is_some_and(|a| !a.is_empty());
    meta || ns
}

/// Removes an object from storage, then runs follow-ups (namespace finalization, CRD cleanup).
pub fn remove_object(inner: &mut Inner, res: &ResourceInfo, ns: &str, name: &str) -> Option<Value> {
    let last = inner.store.remove(&res.storage, ns, name)?;
    if res.class == Class::Crd {
        inner.refresh_registry();
    }
    if !ns.is_empty() {
        maybe_finish_namespace(inner, ns);
    }
    Some(last)
}

/// Options of a delete.
#[derive(Debug, Default, Clone)]
pub struct DeleteOpts {
    /// dryRun=All.
    pub dry_run: bool,
    /// Precondition on uid.
    pub uid: Option<String>,
    /// Precondition on resourceVersion.
    pub resource_version: Option<String>,
}

/// Outcome of a delete.
pub enum Deleted {
    /// The object is gone (the `Status` answer).
    Gone(Value),
    /// The object waits for finalizers (answered with the object).
    Pending(Value),
}

/// Deletes an object (finalizers → deletionTimestamp; otherwise removal).
pub fn delete(
    inner: &mut Inner,
    res: &ResourceInfo,
    ns: &str,
    name: &str,
    opts: &DeleteOpts,
) -> Result<Deleted, ApiError> {
    let old = inner
        .store
        .get(&res.storage, ns, name)
        .cloned()
        .ok_or_else(|| ApiError::not_found(&res.gr(), name))?;
    // Preconditions: the namespace registry words them its own way; the
    // generic store (rest.BeforeDelete) names the Kind.
    let namespace = res.class == Class::Namespace;
    let gr = if namespace {
        res.gr()
    } else {
        crate::errors::GroupResource::new(&res.group, &res.kind)
    };
    if let Some(uid) = &opts.uid {
        let actual = old["metadata"]["uid"].as_str().unwrap_or_default();
        if uid != actual {
            let why = if namespace {
                format!(
                    "Precondition failed: UID in precondition: {uid}, UID in object meta: {actual}"
                )
            } else {
                format!("the UID in the precondition ({uid}) does not match the UID in record ({actual}). The object might have been deleted and then recreated")
            };
            return Err(ApiError::conflict(&gr, name, &why));
        }
    }
    if let Some(rv) = &opts.resource_version {
        let actual = old["metadata"]["resourceVersion"]
            .as_str()
            .unwrap_or_default();
        if rv != actual {
            let why = if namespace {
                format!("Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {actual}")
            } else {
                format!("the ResourceVersion in the precondition ({rv}) does not match the ResourceVersion in record ({actual}). The object might have been modified")
            };
            return Err(ApiError::conflict(&gr, name, &why));
        }
    }
    let gone_status = |obj: &Value| {
        let mut details = json!({"name": name, "kind": res.plural, "uid": obj["metadata"]["uid"]});
        if !res.group.is_empty() {
            details["group"] = json!(res.group);
        }
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details})
    };
    if namespace {
        // The namespace registry's own delete: the first one marks the
        // namespace Terminating (no grace period) and leaves the rest to
        // the namespace controller; later ones wait for its `kubernetes`
        // finalizer, then go to the generic store.
        let deleting = !old["metadata"]["deletionTimestamp"].is_null();
        let spec_finalizers = old["spec"]["finalizers"]
            .as_array()
            .is_some_and(|a| !a.is_empty());
        if !deleting {
            let mut new = old.clone();
            new["metadata"]["deletionTimestamp"] = json!(now_rfc3339());
            new["status"]["phase"] = json!("Terminating");
            if opts.dry_run {
                return Ok(Deleted::Pending(new));
            }
            let stored = inner.store.put(&res.storage, new);
            inner.pending_namespace_cleanups.push(name.to_string());
            return Ok(Deleted::Pending(stored));
        }
        if spec_finalizers {
            return Ok(Deleted::Pending(old));
        }
        // markAsDeleting: held by finalizers of its own, with no grace.
        if has_finalizers(res, &old) {
            let mut new = old.clone();
            new["metadata"]["deletionGracePeriodSeconds"] = json!(0);
            if new == old || opts.dry_run {
                return Ok(Deleted::Pending(new));
            }
            return Ok(Deleted::Pending(inner.store.put(&res.storage, new)));
        }
    }
    if has_finalizers(res, &old) {
        let mut new = old.clone();
        if new["metadata"]["deletionTimestamp"].is_null() {
            new["metadata"]["deletionTimestamp"] = json!(now_rfc3339());
            new["metadata"]["deletionGracePeriodSeconds"] = json!(0);
            // Its controllers must see that it is being deleted
            // (markAsDeleting, rest.BeforeDelete).
            if let Some(g) = new["metadata"]["generation"].as_i64().filter(|g| *g > 0) {
                new["metadata"]["generation"] = json!(g + 1);
            }
            if opts.dry_run {
                return Ok(Deleted::Pending(new));
            }
            let stored = inner.store.put(&res.storage, new);
            match res.class {
                Class::Namespace => inner.pending_namespace_cleanups.push(name.to_string()),
                Class::Crd => crd::cleanup(inner, &stored),
                _ => {}
            }
            let now = inner.store.get(&res.storage, ns, name).cloned();
            return Ok(Deleted::Pending(now.unwrap_or(stored)));
        }
        return Ok(Deleted::Pending(old));
    }
    if opts.dry_run {
        return Ok(Deleted::Gone(gone_status(&old)));
    }
    remove_object(inner, res, ns, name);
    Ok(Deleted::Gone(gone_status(&old)))
}

/// Namespace controller: deletes the namespace's content, then the namespace
/// once it is empty.
pub fn cleanup_namespace(inner: &mut Inner, ns: &str) {
    let objects = inner.store.namespace_objects(ns);
    for (storage, obj) in objects {
        let Some(res) = inner
            .registry
            .all()
            .iter()
            .find(|r| r.storage == storage && r.storage_version)
            .cloned()
        else {
            continue;
        };
        let name = obj["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let _ = delete(inner, &res, ns, &name, &DeleteOpts::default());
    }
    maybe_finish_namespace(inner, ns);
}

/// The conditions kube-controller-manager's namespace controller reports on
/// a terminating namespace once its content is gone: (type, reason, message),
/// all `False`.
const NAMESPACE_DELETION_CONDITIONS: &[(&str, &str, &str)] = &[
    (
        "NamespaceDeletionDiscoveryFailure",
        "ResourcesDiscovered",
        "All resources successfully discovered",
    ),
    (
        "NamespaceDeletionGroupVersionParsingFailure",
        "ParsedGroupVersions",
        "All legacy kube types successfully parsed",
    ),
    (
        "NamespaceDeletionContentFailure",
        "ContentDeleted",
        "All content successfully deleted, may be waiting on finalization",
    ),
    (
        "NamespaceContentRemaining",
        "ContentRemoved",
        "All content successfully removed",
    ),
    (
        "NamespaceFinalizersRemaining",
        "ContentHasNoFinalizers",
        "All content-preserving finalizers finished",
    ),
];

/// A write by kube-controller-manager's namespace controller through a
/// subresource of the namespace (`status`, `finalize`).
fn controller_write(
    inner: &mut Inner,
    old: &Value,
    new: Value,
    subresource: &str,
) -> Option<Value> {
    let res = inner.registry.find("", "v1", "namespaces").cloned()?;
    let ctx = WriteCtx {
        res,
        subresource: Some(subresource.into()),
        dry_run: false,
        manager: "kube-controller-manager".into(),
        strict: false,
    };
    update(inner, &ctx, old, new, Ownership::Update).ok()
}

/// The namespace controller's last steps once a terminating namespace is
/// empty: it reports its conditions (through `/status`), removes the
/// `kubernetes` finalizer (through `/finalize`), and the namespace goes
/// when no finalizer of its own holds it.
fn maybe_finish_namespace(inner: &mut Inner, ns: &str) {
    let Some(nsobj) = inner.store.get("/namespaces", "", ns).cloned() else {
        return;
    };
    if nsobj["metadata"]["deletionTimestamp"].is_null()
        || !inner.store.namespace_objects(ns).is_empty()
    {
        return;
    }
    let mut reported = nsobj.clone();
    let now = now_rfc3339();
    let old_conditions = nsobj["status"]["conditions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let conditions: Vec<Value> = NAMESPACE_DELETION_CONDITIONS
        .iter()
        .map(|(t, reason, message)| {
            // A condition that does not change keeps its transition time.
            let since = old_conditions
                .iter()
                .find(|c| c["type"] == *t && c["status"] == "False")
                .map_or(json!(now), |c| c["lastTransitionTime"].clone());
            json!({"type": t, "status": "False", "lastTransitionTime": since, "reason": reason, "message": message})
        })
        .collect();
    reported["status"]["conditions"] = json!(conditions);
    let nsobj = if reported != nsobj {
        match controller_write(inner, &nsobj, reported, "status") {
            Some(v) => v,
            None => return,
        }
    } else {
        nsobj
    };
    // Its own finalizer goes; others' stay for them to remove.
    let kubernetes = json!("kubernetes");
    if let Some(f) = nsobj["spec"]["finalizers"].as_array() {
        if f.contains(&kubernetes) {
            let rest: Vec<Value> = f.iter().filter(|x| **x != kubernetes).cloned().collect();
            let mut finalized = nsobj.clone();
            if let Some(spec) = finalized["spec"].as_object_mut() {
                if rest.is_empty() {
                    spec.remove("finalizers");
                } else {
                    spec.insert("finalizers".into(), json!(rest));
                }
            }
            controller_write(inner, &nsobj, finalized, "finalize");
        }
    }
}
