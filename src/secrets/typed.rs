//! The type rules of a planned Secret (`spec.secretTemplates`): an
//! existing Secret keeps its type (Kubernetes refuses to change it, so
//! kubestash does not try: `TypeMismatch`), and a Secret is written only
//! as it passes the API server's validation for its type
//! ([`crate::templates::check`]). Pure; called by [`super::plan`] alone.

use std::collections::BTreeSet;

use super::observed::ObservedSecret;
use super::plan::{KeyChange, KeyChangeKind, SkipReason};
use crate::mapping::{DesiredKey, DesiredSecret};
use crate::templates::check::{self, TypeProblem};
use crate::templates::{SecretType, DOCKER_CONFIG_JSON_KEY};

/// Why the Secret may not be written as planned because of its type, if
/// so: the live type differs from the wanted one (without a rule:
/// [`SkipReason::NotOpaque`], as ever; with one: [`SkipReason::TypeMismatch`]),
/// or the Secret as it would be written fails its type's validation
/// ([`SkipReason::InvalidForType`]).
pub fn type_verdict(
    wanted: SecretType,
    ruled: bool,
    desired: Option<&DesiredSecret>,
    observed: Option<&ObservedSecret>,
    keys: &[KeyChange],
) -> Option<SkipReason> {
    if let Some(live) = observed.filter(|live| live.type_ != wanted.as_str()) {
        return Some(if ruled {
            SkipReason::TypeMismatch {
                live: live.type_.clone(),
                wanted,
            }
        } else {
            SkipReason::NotOpaque(live.type_.clone())
        });
    }
    let problems = problems(wanted, desired, observed, keys);
    (!problems.is_empty()).then(|| SkipReason::InvalidForType {
        secret_type: wanted,
        problems: problems.iter().map(ToString::to_string).collect(),
    })
}

/// The type problems of the Secret as the plan would leave it: its live
/// keys, plus the keys added, minus the keys removed.
fn problems(
    wanted: SecretType,
    desired: Option<&DesiredSecret>,
    observed: Option<&ObservedSecret>,
    keys: &[KeyChange],
) -> Vec<TypeProblem> {
    let mut after: BTreeSet<&str> = observed
        .map(|live| live.data.keys().map(String::as_str).collect())
        .unwrap_or_default();
    for change in keys {
        match change.change {
            KeyChangeKind::Add => {
                after.insert(&change.key);
            }
            KeyChangeKind::Remove => {
                after.remove(change.key.as_str());
            }
            _ => {}
        }
    }
    let desired_keys = desired.map(|d| &d.keys);
    let unbuildable = desired_keys
        .into_iter()
        .flatten()
        .filter_map(|(key, state)| match state {
            DesiredKey::Invalid { reason, .. } => Some(TypeProblem::Unbuildable {
                key: key.clone(),
                reason: reason.clone(),
            }),
            _ => None,
        });
    // A .dockerconfigjson this write changes is checked; one the Secret
    // keeps passed the API server already.
    let written = keys.iter().any(|k| {
        k.key == DOCKER_CONFIG_JSON_KEY
            && matches!(k.change, KeyChangeKind::Add | KeyChangeKind::Change)
    });
    let new_docker_config = desired_keys
        .and_then(|keys| keys.get(DOCKER_CONFIG_JSON_KEY))
        .and_then(|state| match state {
            DesiredKey::Value { value, .. } if written => Some(value),
            _ => None,
        });
    let mut found: Vec<TypeProblem> = unbuildable.collect();
    let missing_is_unbuildable = |problem: &TypeProblem| {
        matches!(problem, TypeProblem::MissingKey(key)
            if found.iter().any(|f| matches!(f, TypeProblem::Unbuildable { key: k, .. } if k == key)))
    };
    let checked: Vec<TypeProblem> = check::problems(wanted, &after, new_docker_config)
        .into_iter()
        .filter(|problem| !missing_is_unbuildable(problem))
        .collect();
    found.extend(checked);
    found
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use chrono::{TimeZone, Utc};

    use super::*;
    use crate::crd::SecretMetadata;
    use crate::mapping::SecretRef;
    use crate::secrets::plan::{
        plan_secret, NamespaceWrites, PlanOptions, PruneGate, SecretAction, SecretPlan, SecretScope,
    };
    use crate::secrets::{MANAGED_BY_LABEL, MANAGED_BY_VALUE, SOURCE_ANNOTATION};
    use crate::templates::{DockerConfigSources, SecretTemplates, Template};
    use crate::value::SecretValue;

    const OURS: &str = "kubestash/typed";

    fn options() -> PlanOptions {
        let renames = BTreeMap::from([
            ("TLS_CRT".to_owned(), "tls.crt".to_owned()),
            ("TLS_KEY".to_owned(), "tls.key".to_owned()),
        ]);
        let rules = vec![
            Template::new("web", "*-tls", SecretType::Tls, renames, None).expect("valid"),
            Template::new(
                "web",
                "registry",
                SecretType::DockerConfigJson,
                BTreeMap::new(),
                Some(DockerConfigSources::default()),
            )
            .expect("valid"),
            Template::new(
                "web",
                "raw",
                SecretType::DockerConfigJson,
                BTreeMap::new(),
                None,
            )
            .expect("valid"),
        ];
        PlanOptions {
            manager: OURS.into(),
            source: "typed/table".into(),
            now: Utc
                .with_ymd_and_hms(2024, 5, 6, 7, 8, 9)
                .single()
                .expect("a time"),
            secret_metadata: SecretMetadata::default(),
            adopt_existing: true,
            templates: SecretTemplates::new(rules).expect("no overlap"),
        }
    }

    fn scope(prune: bool) -> SecretScope {
        SecretScope {
            writes: NamespaceWrites::All,
            prune: PruneGate {
                prune,
                every_item_named: true,
                item_failed: false,
                name_unread: false,
            },
        }
    }

    fn value(text: &str) -> DesiredKey {
        DesiredKey::Value {
            source: format!("web/x/{text}"),
            value: SecretValue::from(text.as_bytes()),
        }
    }

    fn desired(keys: Vec<(&str, DesiredKey)>) -> DesiredSecret {
        DesiredSecret {
            names: keys.len(),
            keys: keys.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
        }
    }

    /// A live Secret of `type_` with `keys` (`owned`: by our manager).
    fn live(type_: &str, keys: &[&str], owned: &[&str]) -> ObservedSecret {
        ObservedSecret {
            type_: type_.to_owned(),
            data: keys
                .iter()
                .map(|k| ((*k).to_owned(), SecretValue::from(k.as_bytes()).digest()))
                .collect(),
            owned_keys: owned.iter().map(|k| (*k).to_owned()).collect(),
            labels: BTreeMap::from([(MANAGED_BY_LABEL.to_owned(), MANAGED_BY_VALUE.to_owned())]),
            annotations: BTreeMap::from([(SOURCE_ANNOTATION.to_owned(), "typed/table".to_owned())]),
            ..Default::default()
        }
    }

    fn plan(
        name: &str,
        wanted: Option<DesiredSecret>,
        observed: Option<ObservedSecret>,
        prune: bool,
    ) -> SecretPlan {
        plan_secret(
            &SecretRef::new("web", name),
            wanted.as_ref(),
            observed.as_ref(),
            &options(),
            &scope(prune),
        )
        .expect("a plan")
    }

    fn invalid(problems: &[&str], secret_type: SecretType) -> SecretAction {
        SecretAction::Skip(SkipReason::InvalidForType {
            secret_type,
            problems: problems.iter().map(|p| (*p).to_owned()).collect(),
        })
    }

    #[test]
    fn a_complete_tls_secret_is_created_with_its_type() {
        let wanted = desired(vec![("tls.crt", value("C")), ("tls.key", value("K"))]);
        let p = plan("site-tls", Some(wanted), None, false);
        assert_eq!(p.action, SecretAction::Create);
        assert_eq!(
            p.summary(),
            "create web/site-tls as kubernetes.io/tls (keys: tls.crt, tls.key)"
        );
        let body = p.apply.expect("applied").to_apply_body();
        assert_eq!(body["type"], "kubernetes.io/tls");
    }

    #[test]
    fn a_tls_secret_without_its_key_is_not_written() {
        let p = plan(
            "site-tls",
            Some(desired(vec![("tls.crt", value("C"))])),
            None,
            false,
        );
        assert_eq!(p.action, invalid(&["tls.key missing"], SecretType::Tls));
        assert!(p.apply.is_none());
        assert_eq!(
            p.summary(),
            "skip web/site-tls as kubernetes.io/tls: invalid kubernetes.io/tls Secret: tls.key missing (add: tls.crt)"
        );
    }

    #[test]
    fn a_hand_added_key_counts_as_the_api_server_would_see_it() {
        let hand = live("kubernetes.io/tls", &["tls.key"], &[]);
        let p = plan(
            "site-tls",
            Some(desired(vec![("tls.crt", value("C"))])),
            Some(hand),
            false,
        );
        assert_eq!(p.action, SecretAction::Update);
    }

    #[test]
    fn pruning_a_required_key_is_not_written() {
        let ours = live(
            "kubernetes.io/tls",
            &["tls.crt", "tls.key"],
            &["tls.crt", "tls.key"],
        );
        let wanted = desired(vec![("tls.crt", value("tls.crt"))]);
        let p = plan("site-tls", Some(wanted.clone()), Some(ours.clone()), true);
        assert_eq!(p.action, invalid(&["tls.key missing"], SecretType::Tls));
        // Without prune the key stays, and the Secret is fine as it is.
        let p = plan("site-tls", Some(wanted), Some(ours), false);
        assert_eq!(p.action, SecretAction::Unchanged);
    }

    #[test]
    fn a_type_is_never_changed() {
        let opaque = live("Opaque", &["TLS_CRT"], &["TLS_CRT"]);
        let wanted = desired(vec![("tls.crt", value("C")), ("tls.key", value("K"))]);
        let p = plan("site-tls", Some(wanted), Some(opaque), false);
        assert_eq!(
            p.action,
            SecretAction::Skip(SkipReason::TypeMismatch {
                live: "Opaque".into(),
                wanted: SecretType::Tls,
            })
        );
        assert!(
            p.summary().contains(
                "type mismatch: the Secret is Opaque, secretTemplates want kubernetes.io/tls"
            ),
            "{}",
            p.summary()
        );
        // Without a rule, a typed Secret stays "not Opaque", as ever.
        let tls = live("kubernetes.io/tls", &["tls.crt", "tls.key"], &[]);
        let p = plan(
            "app",
            Some(desired(vec![("A", value("a"))])),
            Some(tls),
            false,
        );
        assert_eq!(
            p.action,
            SecretAction::Skip(SkipReason::NotOpaque("kubernetes.io/tls".into()))
        );
    }

    #[test]
    fn a_composed_key_that_cannot_be_built_is_reported_once() {
        let wanted = desired(vec![(
            ".dockerconfigjson",
            DesiredKey::Invalid {
                sources: vec!["web/registry/REGISTRY".into()],
                reason: "composed from REGISTRY, USERNAME, PASSWORD; missing: USERNAME, PASSWORD"
                    .into(),
            },
        )]);
        let p = plan("registry", Some(wanted), None, false);
        assert_eq!(
            p.action,
            invalid(
                &[".dockerconfigjson: composed from REGISTRY, USERNAME, PASSWORD; missing: USERNAME, PASSWORD"],
                SecretType::DockerConfigJson
            )
        );
    }

    #[test]
    fn a_dockerconfigjson_that_is_not_json_is_not_written_nor_quoted() {
        let wanted = desired(vec![(".dockerconfigjson", value("hunter2"))]);
        let p = plan("raw", Some(wanted), None, false);
        let SecretAction::Skip(reason) = &p.action else {
            panic!("written: {p:?}");
        };
        let text = reason.to_string();
        assert!(text.starts_with("invalid kubernetes.io/dockerconfigjson Secret: .dockerconfigjson is not valid JSON"), "{text}");
        assert!(!text.contains("hunter2") && !p.summary().contains("hunter2"));
        let good = desired(vec![(".dockerconfigjson", value(r#"{"auths":{}}"#))]);
        assert_eq!(
            plan("raw", Some(good), None, false).action,
            SecretAction::Create
        );
    }

    #[test]
    fn a_secret_with_only_failed_keys_is_not_created_and_not_called_invalid() {
        let failed = DesiredKey::Failed {
            source: "web/site-tls/TLS_CRT".into(),
            reason: "integrity check failed".into(),
        };
        let p = plan(
            "site-tls",
            Some(desired(vec![("tls.crt", failed)])),
            None,
            false,
        );
        assert_eq!(p.action, SecretAction::Skip(SkipReason::NothingToWrite));
    }
}
