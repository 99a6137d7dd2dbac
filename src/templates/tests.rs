use super::*;

fn renames(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
        .collect()
}

fn tls(namespace: &str, name: &str) -> Template {
    Template::new(
        namespace,
        name,
        SecretType::Tls,
        renames(&[("TLS_CRT", "tls.crt"), ("TLS_KEY", "tls.key")]),
        None,
    )
    .expect("a valid rule")
}

fn registry(namespace: &str, name: &str) -> Template {
    Template::new(
        namespace,
        name,
        SecretType::DockerConfigJson,
        BTreeMap::new(),
        Some(DockerConfigSources::default()),
    )
    .expect("a valid rule")
}

#[test]
fn types_serialize_as_kubernetes_spells_them() {
    for (t, text) in [
        (SecretType::Opaque, "Opaque"),
        (SecretType::Tls, "kubernetes.io/tls"),
        (
            SecretType::DockerConfigJson,
            "kubernetes.io/dockerconfigjson",
        ),
    ] {
        assert_eq!(t.as_str(), text);
        assert_eq!(serde_json::to_value(t).expect("serializes"), text);
        let back: SecretType = serde_json::from_value(text.into()).expect("deserializes");
        assert_eq!(back, t);
    }
    assert!(serde_json::from_value::<SecretType>("kubernetes.io/basic-auth".into()).is_err());
}

#[test]
fn a_rule_selects_by_namespace_and_name_and_renames_keys() {
    let templates = SecretTemplates::new(vec![tls("web", "*-tls"), registry("*", "registry")])
        .expect("no overlap");
    assert_eq!(templates.secret_type("web", "site-tls"), SecretType::Tls);
    assert_eq!(templates.secret_type("api", "site-tls"), SecretType::Opaque);
    assert_eq!(
        templates.secret_type("api", "registry"),
        SecretType::DockerConfigJson
    );
    assert_eq!(
        templates.key_for("web", "site-tls", "TLS_CRT".into()),
        "tls.crt"
    );
    assert_eq!(
        templates.key_for("web", "site-tls", "CA_CRT".into()),
        "CA_CRT"
    );
    assert_eq!(templates.key_for("api", "app", "TLS_CRT".into()), "TLS_CRT");
    assert!(SecretTemplates::default()
        .rule_for("web", "site-tls")
        .is_none());
}

#[test]
fn overlapping_rules_are_refused() {
    let problems = SecretTemplates::new(vec![tls("web", "*-tls"), registry("*", "site-*")])
        .expect_err("web/site-tls matches both");
    assert_eq!(
        problems,
        ["rule 1 (*/site-*) overlaps rule 0 (web/*-tls): a Secret may match one rule only"]
    );
    assert!(SecretTemplates::new(vec![tls("web", "*-tls"), tls("api", "*-tls")]).is_ok());
    assert!(SecretTemplates::new(vec![tls("web", "a"), tls("web", "a")]).is_err());
}

#[test]
fn renames_that_collide_or_cannot_match_are_refused() {
    let problems = Template::new(
        "web",
        "site",
        SecretType::Tls,
        renames(&[
            ("A", "tls.crt"),
            ("B", "tls.crt"),
            ("tls.key", "tls.key"),
            ("C", "a/b"),
        ]),
        None,
    )
    .expect_err("invalid");
    assert_eq!(
        problems,
        [
            "keys: A and B are both renamed to tls.crt",
            "keys: C -> \"a/b\": a Secret key is 1-253 characters of [-._a-zA-Z0-9]",
            "keys: \"tls.key\" is not a normalised credstash key (upper case, digits and '_'; e.g. \"TLS_KEY\")",
        ]
    );
}

#[test]
fn composition_needs_its_type_distinct_inputs_and_its_key_free() {
    let sources = DockerConfigSources {
        registry: "REG".into(),
        username: "USER".into(),
        password: "USER".into(),
    };
    let problems = Template::new(
        "web",
        "pull",
        SecretType::Opaque,
        renames(&[("REG", "registry"), ("JSON", ".dockerconfigjson")]),
        Some(sources),
    )
    .expect_err("invalid");
    assert_eq!(
        problems,
        [
            "dockerConfigJson needs type kubernetes.io/dockerconfigjson",
            "keys: REG is an input of dockerConfigJson and cannot be renamed",
            "dockerConfigJson: USER is used twice",
            "keys: JSON is renamed to .dockerconfigjson, which dockerConfigJson composes",
        ]
    );
}

#[test]
fn selectors_must_be_names_or_globs() {
    let problems = Template::new("Web", "a/b", SecretType::Opaque, BTreeMap::new(), None)
        .expect_err("invalid");
    assert_eq!(problems.len(), 2);
    assert!(
        problems[0].starts_with("namespace: \"Web\""),
        "{problems:?}"
    );
    assert!(problems[1].starts_with("name: \"a/b\""), "{problems:?}");
    assert!(Template::new("*", "a.b-?", SecretType::Opaque, BTreeMap::new(), None).is_ok());
}

/// The rules as the mapping applies them.
mod through_the_mapping {
    use super::*;
    use crate::mapping::{
        map_table, DesiredKey, DesiredState, MappingScope, SecretRef, TableValue,
    };
    use crate::value::SecretValue;

    fn scope() -> MappingScope {
        MappingScope {
            templates: SecretTemplates::new(vec![tls("web", "*-tls"), registry("web", "registry")])
                .expect("no overlap"),
            ..Default::default()
        }
    }

    fn map(entries: &[(&str, Result<&str, &str>)]) -> DesiredState {
        crate::mapping::tests::map(entries, &scope())
    }

    fn keys(state: &DesiredState, name: &str) -> BTreeMap<String, DesiredKey> {
        state.secrets[&SecretRef::new("web", name)].keys.clone()
    }

    #[test]
    fn renames_apply_to_the_selected_secrets_only() {
        let state = map(&[
            ("web/site-tls/tls.crt", Ok("C")),
            ("web/site-tls/TLS_KEY", Ok("K")),
            ("web/site-tls/ca.crt", Ok("A")),
            ("web/app/tls.crt", Ok("C")),
        ]);
        assert_eq!(
            keys(&state, "site-tls").keys().collect::<Vec<_>>(),
            ["CA_CRT", "tls.crt", "tls.key"]
        );
        assert_eq!(keys(&state, "app").keys().collect::<Vec<_>>(), ["TLS_CRT"]);
        assert_eq!(state.secrets[&SecretRef::new("web", "site-tls")].names, 3);
    }

    #[test]
    fn two_names_renamed_to_one_key_conflict() {
        let rules = vec![Template::new(
            "web",
            "s",
            SecretType::Opaque,
            renames(&[("A", "key")]),
            None,
        )
        .expect("valid")];
        let scope = MappingScope {
            templates: SecretTemplates::new(rules).expect("one rule"),
            ..Default::default()
        };
        let one = SecretValue::from(&b"1"[..]);
        let state = map_table(
            [
                ("web/s/a", TableValue::Value(&one)),
                ("web/s/key", TableValue::Value(&one)),
                ("web/s/KEY", TableValue::Value(&one)),
            ],
            &scope,
        );
        let secret = &state.secrets[&SecretRef::new("web", "s")];
        assert!(matches!(secret.keys["key"], DesiredKey::Value { .. }));
        // key and KEY both normalise to KEY (not renamed): an ordinary conflict.
        assert!(matches!(secret.keys["KEY"], DesiredKey::Conflict { .. }));
        let scope = MappingScope {
            templates: SecretTemplates::new(vec![Template::new(
                "web",
                "s",
                SecretType::Opaque,
                renames(&[("A", "KEY")]),
                None,
            )
            .expect("valid")])
            .expect("one rule"),
            ..Default::default()
        };
        let state = map_table(
            [
                ("web/s/a", TableValue::Value(&one)),
                ("web/s/key", TableValue::Value(&one)),
            ],
            &scope,
        );
        assert_eq!(
            state.secrets[&SecretRef::new("web", "s")].keys["KEY"],
            DesiredKey::Conflict {
                sources: vec!["web/s/a".into(), "web/s/key".into()]
            }
        );
        assert_eq!(state.report.conflicts.len(), 1);
    }

    #[test]
    fn the_registry_secret_is_composed_and_its_inputs_are_not_written() {
        let state = map(&[
            ("web/registry/registry", Ok("registry.example.com")),
            ("web/registry/username", Ok("robot")),
            ("web/registry/password", Ok("s3cr3t")),
            ("web/registry/extra", Ok("x")),
        ]);
        let keys = keys(&state, "registry");
        assert_eq!(
            keys.keys().collect::<Vec<_>>(),
            [".dockerconfigjson", "EXTRA"]
        );
        let DesiredKey::Value { value, source } = &keys[".dockerconfigjson"] else {
            panic!("not composed: {keys:?}");
        };
        assert_eq!(
            source,
            "web/registry/password, web/registry/registry, web/registry/username"
        );
        let json: serde_json::Value = serde_json::from_slice(value.expose()).expect("JSON");
        assert_eq!(json["auths"]["registry.example.com"]["username"], "robot");
        assert_eq!(state.report.values, 4, "every name counts as a value");
    }

    #[test]
    fn a_missing_failed_or_conflicting_input_decides_the_composed_key() {
        let state = map(&[
            ("web/registry/REGISTRY", Ok("r")),
            ("web/registry/USERNAME", Ok("u")),
        ]);
        assert_eq!(
            keys(&state, "registry")[".dockerconfigjson"],
            DesiredKey::Invalid {
                sources: vec![
                    "web/registry/REGISTRY".into(),
                    "web/registry/USERNAME".into()
                ],
                reason: "composed from REGISTRY, USERNAME, PASSWORD; missing: PASSWORD".into(),
            }
        );
        let state = map(&[
            ("web/registry/REGISTRY", Ok("r")),
            ("web/registry/USERNAME", Ok("u")),
            ("web/registry/PASSWORD", Err("integrity check failed")),
        ]);
        assert_eq!(
            keys(&state, "registry")[".dockerconfigjson"],
            DesiredKey::Failed {
                source: "web/registry/PASSWORD".into(),
                reason: "integrity check failed".into(),
            }
        );
        let state = map(&[
            ("web/registry/REGISTRY", Ok("r")),
            ("web/registry/USERNAME", Ok("u")),
            ("web/registry/PASSWORD", Ok("p")),
            ("web/registry/pass-word", Ok("p")),
        ]);
        // PASS_WORD is not PASSWORD: no conflict there, and it stays a key.
        assert!(matches!(
            keys(&state, "registry")[".dockerconfigjson"],
            DesiredKey::Value { .. }
        ));
        let state = map(&[
            ("web/registry/REGISTRY", Ok("r")),
            ("web/registry/USERNAME", Ok("u")),
            ("web/registry/password", Ok("p")),
            ("web/registry/PASSWORD", Ok("q")),
        ]);
        assert!(matches!(
            keys(&state, "registry")[".dockerconfigjson"],
            DesiredKey::Conflict { .. }
        ));
        // No input at all: nothing is composed.
        let state = map(&[("web/registry/OTHER", Ok("o"))]);
        assert!(!keys(&state, "registry").contains_key(".dockerconfigjson"));
    }

    #[test]
    fn a_binary_input_is_named_never_shown() {
        let binary = SecretValue::from(&[0xff, 0x00, 0x68][..]);
        let text = SecretValue::from(&b"t"[..]);
        let state = map_table(
            [
                ("web/registry/REGISTRY", TableValue::Value(&text)),
                ("web/registry/USERNAME", TableValue::Value(&text)),
                ("web/registry/PASSWORD", TableValue::Value(&binary)),
            ],
            &scope(),
        );
        let composed = &keys(&state, "registry")[".dockerconfigjson"];
        assert!(
            matches!(composed, DesiredKey::Invalid { reason, .. } if reason == "PASSWORD is not UTF-8 text"),
            "{composed:?}"
        );
    }
}
