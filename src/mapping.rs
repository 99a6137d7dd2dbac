//! The mapping: credstash names -> the Secrets they should become.
//!
//! Pure functions, no I/O. A credstash name `namespace/secret-name/KEY` maps
//! to key `KEY'` of Secret `secret-name` in `namespace`, where `KEY'` is `KEY`
//! upper-cased with `.` and `-` replaced by `_`.
//!
//! Every name passed in lands in exactly one bucket of the [`MappingReport`]:
//! ignored (not three `/`-separated parts), invalid (three parts, one of them
//! not allowed), excluded (namespace excluded), waiting (namespace does not
//! exist yet) or mapped (a key of a desired Secret: a value, a failure or a
//! conflict). Nothing printable here ever holds a secret value.
//!
//! A rule of `spec.secretTemplates` ([`crate::templates`]) selecting the
//! Secret renames the normalised key to an exact Secret key before claims
//! are resolved (so two names renamed to one key are a conflict like any
//! other), and may compose `.dockerconfigjson` from three of the Secret's
//! keys, which are then not written on their own ([`compose_keys`]).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::templates::SecretTemplates;
use crate::value::SecretValue;

mod compose;

pub use compose::compose_keys;

/// Longest namespace name (DNS-1123 label).
const MAX_LABEL: usize = 63;
/// Longest Secret name (DNS-1123 subdomain) and longest Secret data key.
const MAX_SUBDOMAIN: usize = 253;
/// Longest Secret data key Kubernetes accepts.
const MAX_KEY: usize = 253;

/// What reading one credstash name gave: its latest value or why it failed.
///
/// The failure reason is a short description (e.g. "integrity check
/// failed"), never a value.
#[derive(Debug, Clone, Copy)]
pub enum TableValue<'a> {
    /// The decrypted plaintext.
    Value(&'a SecretValue),
    /// The item could not be opened; the reason.
    Failed(&'a str),
}

/// Where the mapping may write: which namespaces are excluded and which exist.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MappingScope {
    /// Namespaces that are never written.
    pub excluded: BTreeSet<String>,
    /// Namespaces that exist; `None` assumes every namespace exists.
    pub existing_namespaces: Option<BTreeSet<String>>,
    /// `spec.secretTemplates`: key renames and composed keys.
    pub templates: SecretTemplates,
}

impl MappingScope {
    /// Whether `namespace` is excluded.
    pub fn is_excluded(&self, namespace: &str) -> bool {
        self.excluded.contains(namespace)
    }

    /// Whether `namespace` exists (always true without a namespace list).
    pub fn exists(&self, namespace: &str) -> bool {
        self.existing_namespaces
            .as_ref()
            .is_none_or(|set| set.contains(namespace))
    }
}

/// A Secret, by namespace and name. Displays as `namespace/name`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SecretRef {
    /// The Secret's namespace.
    pub namespace: String,
    /// The Secret's name.
    pub name: String,
}

impl SecretRef {
    /// A reference to Secret `name` in `namespace`.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// One data key of one Secret (the key already normalised).
/// Displays as `namespace/name:KEY`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KeyRef {
    /// The Secret.
    pub secret: SecretRef,
    /// The normalised data key.
    pub key: String,
}

impl fmt::Display for KeyRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.secret, self.key)
    }
}

/// Which part of a `namespace/secret-name/KEY` name is invalid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NamePart {
    /// The namespace (a DNS-1123 label).
    Namespace,
    /// The Secret name (a DNS-1123 subdomain).
    SecretName,
    /// The key (`[-._a-zA-Z0-9]+`).
    Key,
}

impl fmt::Display for NamePart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NamePart::Namespace => "namespace",
            NamePart::SecretName => "secret name",
            NamePart::Key => "key",
        })
    }
}

/// What is wrong with one part of a name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameProblem {
    /// The part is empty.
    Empty,
    /// The part is longer than allowed.
    TooLong {
        /// Its length in bytes.
        len: usize,
        /// The maximum.
        max: usize,
    },
    /// A character not allowed in this part.
    InvalidChar(char),
    /// A label (dot-separated for subdomains) does not start with `[a-z0-9]`.
    BadStart,
    /// A label (dot-separated for subdomains) does not end with `[a-z0-9]`.
    BadEnd,
    /// A subdomain has an empty dot-separated label (`a..b`, `.a`, `a.`).
    EmptyLabel,
}

impl fmt::Display for NameProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NameProblem::Empty => f.write_str("is empty"),
            NameProblem::TooLong { len, max } => {
                write!(f, "is {len} characters long (at most {max})")
            }
            NameProblem::InvalidChar(c) => write!(f, "contains {c:?}"),
            NameProblem::BadStart => f.write_str("must start with [a-z0-9]"),
            NameProblem::BadEnd => f.write_str("must end with [a-z0-9]"),
            NameProblem::EmptyLabel => f.write_str("has an empty dot-separated part"),
        }
    }
}

/// Why a three-part name is invalid: the part and the problem.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidReason {
    /// Which part.
    pub part: NamePart,
    /// What is wrong with it.
    pub problem: NameProblem,
}

impl fmt::Display for InvalidReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.part {
            NamePart::Namespace => "a DNS-1123 label",
            NamePart::SecretName => "a DNS-1123 subdomain",
            NamePart::Key => "[-._a-zA-Z0-9]+",
        };
        write!(f, "{} {} (must be {what})", self.part, self.problem)
    }
}

/// What a credstash name means for the mapping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParsedName {
    /// Not of the form `a/b/c`: not ours (other applications' names).
    Ignored,
    /// Of the form `a/b/c` but one part is not allowed.
    Invalid(InvalidReason),
    /// A valid name and the key it maps to.
    Key(KeyRef),
}

/// The three parts of a name `namespace/secret/KEY`, checked or not
/// (`None`: not three parts, so not ours).
pub fn name_parts(name: &str) -> Option<[&str; 3]> {
    let mut parts = name.split('/');
    let three = [parts.next()?, parts.next()?, parts.next()?];
    parts.next().is_none().then_some(three)
}

/// Parses a credstash name into the Secret key it maps to.
pub fn parse_name(name: &str) -> ParsedName {
    let Some([namespace, secret, key]) = name_parts(name) else {
        return ParsedName::Ignored;
    };
    let checks = [
        (NamePart::Namespace, check_label(namespace)),
        (NamePart::SecretName, check_subdomain(secret)),
        (NamePart::Key, check_key(key)),
    ];
    for (part, check) in checks {
        if let Err(problem) = check {
            return ParsedName::Invalid(InvalidReason { part, problem });
        }
    }
    ParsedName::Key(KeyRef {
        secret: SecretRef::new(namespace, secret),
        key: normalise_key(key),
    })
}

/// `KEY'`: upper-cased, with `.` and `-` replaced by `_`.
pub fn normalise_key(key: &str) -> String {
    key.chars()
        .map(|c| match c {
            '.' | '-' => '_',
            c => c.to_ascii_uppercase(),
        })
        .collect()
}

fn is_lower_alnum(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit()
}

fn check_length(text: &str, max: usize) -> Result<(), NameProblem> {
    if text.is_empty() {
        Err(NameProblem::Empty)
    } else if text.len() > max {
        Err(NameProblem::TooLong {
            len: text.len(),
            max,
        })
    } else {
        Ok(())
    }
}

/// `[a-z0-9]([-a-z0-9]*[a-z0-9])?`, without the length check.
fn check_label_chars(label: &str) -> Result<(), NameProblem> {
    if let Some(c) = label.chars().find(|&c| !(is_lower_alnum(c) || c == '-')) {
        return Err(NameProblem::InvalidChar(c));
    }
    match (label.chars().next(), label.chars().last()) {
        (None, _) | (_, None) => Err(NameProblem::EmptyLabel),
        (Some(first), _) if !is_lower_alnum(first) => Err(NameProblem::BadStart),
        (_, Some(last)) if !is_lower_alnum(last) => Err(NameProblem::BadEnd),
        _ => Ok(()),
    }
}

/// A DNS-1123 label: at most 63 characters of `[a-z0-9]([-a-z0-9]*[a-z0-9])?`.
fn check_label(text: &str) -> Result<(), NameProblem> {
    check_length(text, MAX_LABEL)?;
    check_label_chars(text)
}

/// A DNS-1123 subdomain: at most 253 characters, dot-separated labels.
fn check_subdomain(text: &str) -> Result<(), NameProblem> {
    check_length(text, MAX_SUBDOMAIN)?;
    if let Some(c) = text
        .chars()
        .find(|&c| !(is_lower_alnum(c) || c == '-' || c == '.'))
    {
        return Err(NameProblem::InvalidChar(c));
    }
    text.split('.').try_for_each(check_label_chars)
}

/// A Secret data key: `[-._a-zA-Z0-9]+`, at most 253 characters.
fn check_key(text: &str) -> Result<(), NameProblem> {
    check_length(text, MAX_KEY)?;
    match text
        .chars()
        .find(|&c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_')))
    {
        Some(c) => Err(NameProblem::InvalidChar(c)),
        None => Ok(()),
    }
}

/// What one key of a desired Secret should be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DesiredKey {
    /// Write this value.
    Value {
        /// The credstash name it comes from.
        source: String,
        /// The plaintext (redacted in `Debug`).
        value: SecretValue,
    },
    /// The item failed to open: keep the last good value, report.
    Failed {
        /// The credstash name.
        source: String,
        /// Why it failed (never a value).
        reason: String,
    },
    /// Several names normalise to this key: write nothing, report.
    Conflict {
        /// The credstash names, sorted.
        sources: Vec<String>,
    },
    /// A composed key that cannot be built (an input is missing or not
    /// text): the Secret would not pass its type's validation, so it is
    /// not written; reported.
    Invalid {
        /// The credstash names of the inputs that are there, sorted.
        sources: Vec<String>,
        /// Why, naming keys only.
        reason: String,
    },
}

/// The keys one Secret should have, by Secret key (normalised, or
/// renamed by `spec.secretTemplates`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DesiredSecret {
    /// By Secret key.
    pub keys: BTreeMap<String, DesiredKey>,
    /// How many credstash names map into the Secret.
    pub names: usize,
}

impl DesiredSecret {
    /// Whether an item of this Secret failed to open: which keys it would
    /// hold is unknown, so none of the Secret's keys is pruned.
    pub fn has_failed_key(&self) -> bool {
        self.keys
            .values()
            .any(|key| matches!(key, DesiredKey::Failed { .. }))
    }
}

/// An invalid name and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidName {
    /// The credstash name.
    pub name: String,
    /// Which part is wrong and how.
    pub reason: InvalidReason,
}

impl fmt::Display for InvalidName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.name, self.reason)
    }
}

/// Names that normalise to the same key of the same Secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyConflict {
    /// The Secret and key.
    pub key: KeyRef,
    /// The credstash names, sorted.
    pub sources: Vec<String>,
}

impl fmt::Display for KeyConflict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} is claimed by several names: {}",
            self.key,
            self.sources.join(", ")
        )
    }
}

/// A name that failed to open and maps to a (non-conflicting) key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailedName {
    /// The credstash name.
    pub name: String,
    /// Why (never a value).
    pub reason: String,
}

impl fmt::Display for FailedName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.name, self.reason)
    }
}

/// What the mapping did with each name. Names and counts only, never values.
///
/// `total == ignored + invalid.len() + excluded + waiting + mapped`, and
/// `mapped == values + failed.len() + names in conflicts`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MappingReport {
    /// Names passed in.
    pub total: usize,
    /// Names not of the form `namespace/secret-name/KEY`.
    pub ignored: usize,
    /// Three-part names with an invalid part, sorted by name.
    pub invalid: Vec<InvalidName>,
    /// Names in excluded namespaces.
    pub excluded: usize,
    /// Names whose namespace does not exist, counted per namespace.
    pub waiting_for_namespace: BTreeMap<String, usize>,
    /// Names mapped to a key with a value to write.
    pub values: usize,
    /// Names that failed to open (not part of a conflict), sorted by name.
    pub failed: Vec<FailedName>,
    /// Keys claimed by several names, sorted by key.
    pub conflicts: Vec<KeyConflict>,
}

impl MappingReport {
    /// Names waiting for their namespace, over all namespaces.
    pub fn waiting(&self) -> usize {
        self.waiting_for_namespace.values().sum()
    }

    /// Names involved in conflicts.
    pub fn conflicting_names(&self) -> usize {
        self.conflicts.iter().map(|c| c.sources.len()).sum()
    }

    /// Names that map to a key of a Secret that may be written.
    pub fn mapped(&self) -> usize {
        self.values + self.failed.len() + self.conflicting_names()
    }
}

impl fmt::Display for MappingReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} names: {} mapped ({} values, {} failed, {} conflicting), {} ignored, \
             {} invalid, {} excluded, {} waiting for their namespace",
            self.total,
            self.mapped(),
            self.values,
            self.failed.len(),
            self.conflicting_names(),
            self.ignored,
            self.invalid.len(),
            self.excluded,
            self.waiting()
        )?;
        for invalid in &self.invalid {
            write!(f, "\n  invalid: {invalid}")?;
        }
        for failed in &self.failed {
            write!(f, "\n  failed: {failed}")?;
        }
        for conflict in &self.conflicts {
            write!(f, "\n  conflict: {conflict}")?;
        }
        for (namespace, count) in &self.waiting_for_namespace {
            write!(f, "\n  waiting: namespace {namespace} ({count} keys)")?;
        }
        Ok(())
    }
}

/// The Secrets the table asks for, and how each name was handled.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DesiredState {
    /// Secrets that may be written (namespace exists, not excluded).
    pub secrets: BTreeMap<SecretRef, DesiredSecret>,
    /// What happened to each name.
    pub report: MappingReport,
}

impl fmt::Display for DesiredState {
    /// One line per Secret with its key names and states, then the report.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (secret, desired) in &self.secrets {
            let keys: Vec<String> = desired
                .keys
                .iter()
                .map(|(key, state)| match state {
                    DesiredKey::Value { .. } => key.clone(),
                    DesiredKey::Failed { .. } => format!("{key} (failed)"),
                    DesiredKey::Conflict { .. } => format!("{key} (conflict)"),
                    DesiredKey::Invalid { .. } => format!("{key} (invalid)"),
                })
                .collect();
            writeln!(f, "{secret}: {}", keys.join(", "))?;
        }
        write!(f, "{}", self.report)
    }
}

/// Maps the latest value of each credstash name to the Secrets it should
/// become. `entries` holds each name once (later duplicates are ignored and
/// not counted).
pub fn map_table<'a, I>(entries: I, scope: &MappingScope) -> DesiredState
where
    I: IntoIterator<Item = (&'a str, TableValue<'a>)>,
{
    let mut report = MappingReport::default();
    let mut seen = BTreeSet::new();
    let mut claims: BTreeMap<KeyRef, Vec<(&'a str, TableValue<'a>)>> = BTreeMap::new();
    for (name, value) in entries {
        if !seen.insert(name) {
            continue;
        }
        report.total += 1;
        if let Some(key) = classify(name, scope, &mut report) {
            claims.entry(key).or_default().push((name, value));
        }
    }
    let mut secrets: BTreeMap<SecretRef, DesiredSecret> = BTreeMap::new();
    for (key_ref, claimants) in claims {
        let desired = resolve(&key_ref, &claimants, &mut report);
        let secret = secrets.entry(key_ref.secret).or_default();
        secret.names += claimants.len();
        secret.keys.insert(key_ref.key, desired);
    }
    for (secret, desired) in &mut secrets {
        let rule = scope.templates.rule_for(&secret.namespace, &secret.name);
        if let Some(sources) = rule.and_then(|rule| rule.docker_config.as_ref()) {
            compose_keys(desired, sources);
        }
    }
    report.invalid.sort_by(|a, b| a.name.cmp(&b.name));
    report.failed.sort_by(|a, b| a.name.cmp(&b.name));
    DesiredState { secrets, report }
}

/// Sorts a name into ignored / invalid / excluded / waiting (counted in the
/// report) or returns the key it claims.
fn classify(name: &str, scope: &MappingScope, report: &mut MappingReport) -> Option<KeyRef> {
    match parse_name(name) {
        ParsedName::Ignored => report.ignored += 1,
        ParsedName::Invalid(reason) => report.invalid.push(InvalidName {
            name: name.to_owned(),
            reason,
        }),
        ParsedName::Key(key) if scope.is_excluded(&key.secret.namespace) => report.excluded += 1,
        ParsedName::Key(key) if !scope.exists(&key.secret.namespace) => {
            *report
                .waiting_for_namespace
                .entry(key.secret.namespace)
                .or_default() += 1;
        }
        ParsedName::Key(KeyRef { secret, key }) => {
            let key = scope
                .templates
                .key_for(&secret.namespace, &secret.name, key);
            return Some(KeyRef { secret, key });
        }
    }
    None
}

/// The desired state of one key from the names claiming it (more than one
/// claimant is a conflict).
fn resolve(
    key: &KeyRef,
    claimants: &[(&str, TableValue<'_>)],
    report: &mut MappingReport,
) -> DesiredKey {
    let [(name, value)] = claimants else {
        let mut sources: Vec<String> = claimants.iter().map(|(n, _)| (*n).to_owned()).collect();
        sources.sort();
        report.conflicts.push(KeyConflict {
            key: key.clone(),
            sources: sources.clone(),
        });
        return DesiredKey::Conflict { sources };
    };
    let source = (*name).to_owned();
    match value {
        TableValue::Value(value) => {
            report.values += 1;
            DesiredKey::Value {
                source,
                value: (*value).clone(),
            }
        }
        TableValue::Failed(reason) => {
            report.failed.push(FailedName {
                name: source.clone(),
                reason: (*reason).to_owned(),
            });
            DesiredKey::Failed {
                source,
                reason: (*reason).to_owned(),
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    const SECRET: &str = "hunter2-Sup3rSecret";

    fn value(text: &str) -> SecretValue {
        SecretValue::from(text.as_bytes())
    }

    /// A test entry: a name and `Ok(value)` or `Err(reason)`.
    pub(crate) type Entry<'a> = (&'a str, Result<&'a str, &'a str>);

    /// Maps `(name, Ok(value) | Err(reason))` entries.
    pub(crate) fn map(entries: &[Entry<'_>], scope: &MappingScope) -> DesiredState {
        let values: Vec<(&str, Result<SecretValue, &str>)> = entries
            .iter()
            .map(|(name, v)| (*name, v.map(value)))
            .collect();
        map_table(
            values.iter().map(|(name, v)| {
                let v = match v {
                    Ok(value) => TableValue::Value(value),
                    Err(reason) => TableValue::Failed(reason),
                };
                (*name, v)
            }),
            scope,
        )
    }

    fn all() -> MappingScope {
        MappingScope::default()
    }

    fn sref(namespace: &str, name: &str) -> SecretRef {
        SecretRef::new(namespace, name)
    }

    fn key_of(state: &DesiredState, ns: &str, name: &str, key: &str) -> Option<DesiredKey> {
        state.secrets.get(&sref(ns, name))?.keys.get(key).cloned()
    }

    #[test]
    fn keys_are_upper_cased_with_dots_and_dashes_as_underscores() {
        for (key, expected) in [
            ("key", "KEY"),
            ("TEST_KEY", "TEST_KEY"),
            ("a.b", "A_B"),
            ("a-b", "A_B"),
            ("Mixed_case-1.x", "MIXED_CASE_1_X"),
            ("-._", "___"),
            ("123", "123"),
        ] {
            assert_eq!(normalise_key(key), expected, "{key}");
            assert_eq!(
                parse_name(&format!("ns/s/{key}")),
                ParsedName::Key(KeyRef {
                    secret: sref("ns", "s"),
                    key: expected.to_owned()
                }),
                "{key}"
            );
        }
    }

    #[test]
    fn names_without_exactly_three_parts_are_ignored() {
        for name in ["", "plain", "a/b", "a/b/c/d", "a/b/c/", "/a/b/c", "a//b//c"] {
            assert_eq!(parse_name(name), ParsedName::Ignored, "{name:?}");
        }
    }

    #[test]
    fn valid_names_at_the_limits() {
        let label63 = "a".repeat(63);
        let sub253 = format!("{}.{}", "b".repeat(126), "c".repeat(126));
        let key253 = "K".repeat(253);
        for name in [
            format!("{label63}/s/k"),
            format!("ns/{sub253}/k"),
            format!("ns/s/{key253}"),
            "0/1/2".to_owned(),
            "n-s/a.b-c.d/-._aZ9".to_owned(),
            "ns/x/.".to_owned(),
        ] {
            assert!(
                matches!(parse_name(&name), ParsedName::Key(_)),
                "{name} should be valid: {:?}",
                parse_name(&name)
            );
        }
    }

    #[test]
    fn each_invalid_part_has_its_own_reason() {
        use NamePart::*;
        use NameProblem::*;
        let long_ns = format!("{}/s/k", "a".repeat(64));
        let long_secret = format!("ns/{}/k", "a".repeat(254));
        let long_key = format!("ns/s/{}", "k".repeat(254));
        let cases: Vec<(&str, NamePart, NameProblem)> = vec![
            ("/s/K", Namespace, Empty),
            ("//", Namespace, Empty),
            ("Test/s/K", Namespace, InvalidChar('T')),
            ("te_st/s/K", Namespace, InvalidChar('_')),
            ("a.b/s/K", Namespace, InvalidChar('.')),
            ("-ns/s/K", Namespace, BadStart),
            ("ns-/s/K", Namespace, BadEnd),
            (&long_ns, Namespace, TooLong { len: 64, max: 63 }),
            ("ns//K", SecretName, Empty),
            ("ns/My/K", SecretName, InvalidChar('M')),
            ("ns/a_b/K", SecretName, InvalidChar('_')),
            ("ns/a..b/K", SecretName, EmptyLabel),
            ("ns/.a/K", SecretName, EmptyLabel),
            ("ns/a./K", SecretName, EmptyLabel),
            ("ns/-a/K", SecretName, BadStart),
            ("ns/a.-b/K", SecretName, BadStart),
            ("ns/a.b-/K", SecretName, BadEnd),
            (&long_secret, SecretName, TooLong { len: 254, max: 253 }),
            ("ns/s/", Key, Empty),
            ("ns/s/a b", Key, InvalidChar(' ')),
            ("ns/s/k$", Key, InvalidChar('$')),
            ("ns/s/clé", Key, InvalidChar('é')),
            (&long_key, Key, TooLong { len: 254, max: 253 }),
        ];
        for (name, part, problem) in cases {
            assert_eq!(
                parse_name(name),
                ParsedName::Invalid(InvalidReason { part, problem }),
                "{name}"
            );
        }
    }

    #[test]
    fn invalid_reasons_name_the_part() {
        for (name, expected) in [
            (
                "Test/s/K",
                "namespace contains 'T' (must be a DNS-1123 label)",
            ),
            (
                "ns/a..b/K",
                "secret name has an empty dot-separated part (must be a DNS-1123 subdomain)",
            ),
            ("ns/s/k$", "key contains '$' (must be [-._a-zA-Z0-9]+)"),
            (
                "ns//K",
                "secret name is empty (must be a DNS-1123 subdomain)",
            ),
        ] {
            let state = map(&[(name, Ok(SECRET))], &all());
            assert_eq!(state.report.invalid.len(), 1, "{name}");
            assert_eq!(
                state.report.invalid[0].to_string(),
                format!("{name}: {expected}")
            );
            assert!(state.secrets.is_empty());
        }
    }

    #[test]
    fn values_map_to_normalised_keys_of_their_secrets() {
        let state = map(
            &[
                ("test/mysecret/test-key", Ok("v1")),
                ("test/mysecret/other.key", Ok("v2")),
                ("prod/db/password", Ok("v3")),
            ],
            &all(),
        );
        assert_eq!(state.secrets.len(), 2);
        assert_eq!(
            key_of(&state, "test", "mysecret", "TEST_KEY"),
            Some(DesiredKey::Value {
                source: "test/mysecret/test-key".into(),
                value: value("v1")
            })
        );
        assert_eq!(
            key_of(&state, "test", "mysecret", "OTHER_KEY"),
            Some(DesiredKey::Value {
                source: "test/mysecret/other.key".into(),
                value: value("v2")
            })
        );
        assert_eq!(
            key_of(&state, "prod", "db", "PASSWORD"),
            Some(DesiredKey::Value {
                source: "prod/db/password".into(),
                value: value("v3")
            })
        );
        assert_eq!(state.report.values, 3);
        assert_eq!(state.report.total, 3);
    }

    #[test]
    fn names_normalising_to_one_key_conflict_and_write_nothing() {
        let cases: Vec<(Vec<Entry>, &str, Vec<&str>)> = vec![
            (
                vec![("ns/s/a.b", Ok("1")), ("ns/s/a-b", Ok("2"))],
                "A_B",
                vec!["ns/s/a-b", "ns/s/a.b"],
            ),
            (
                vec![("ns/s/key", Ok("1")), ("ns/s/KEY", Ok("1"))],
                "KEY",
                vec!["ns/s/KEY", "ns/s/key"],
            ),
            (
                vec![
                    ("ns/s/A_B", Ok("1")),
                    ("ns/s/a.b", Ok("2")),
                    ("ns/s/a-B", Ok("3")),
                ],
                "A_B",
                vec!["ns/s/A_B", "ns/s/a-B", "ns/s/a.b"],
            ),
            (
                // a failure still takes part in conflict detection
                vec![
                    ("ns/s/x", Err("integrity check failed")),
                    ("ns/s/X", Ok("1")),
                ],
                "X",
                vec!["ns/s/X", "ns/s/x"],
            ),
        ];
        for (mut entries, key, sources) in cases {
            entries.push(("ns/s/unrelated", Ok("u")));
            let state = map(&entries, &all());
            let sources: Vec<String> = sources.into_iter().map(String::from).collect();
            assert_eq!(
                key_of(&state, "ns", "s", key),
                Some(DesiredKey::Conflict {
                    sources: sources.clone()
                }),
                "{entries:?}"
            );
            assert!(matches!(
                key_of(&state, "ns", "s", "UNRELATED"),
                Some(DesiredKey::Value { .. })
            ));
            assert_eq!(
                state.report.conflicts,
                vec![KeyConflict {
                    key: KeyRef {
                        secret: sref("ns", "s"),
                        key: key.into()
                    },
                    sources: sources.clone()
                }]
            );
            assert!(state.report.failed.is_empty(), "{entries:?}");
            assert_eq!(state.report.values, 1);
            assert_eq!(state.report.conflicting_names(), sources.len());
            let printed = state.report.to_string();
            for source in &sources {
                assert!(printed.contains(source.as_str()), "{printed}");
            }
        }
    }

    #[test]
    fn same_key_in_different_secrets_is_no_conflict() {
        let state = map(
            &[
                ("ns/a/key", Ok("1")),
                ("ns/b/key", Ok("2")),
                ("other/a/key", Ok("3")),
            ],
            &all(),
        );
        assert!(state.report.conflicts.is_empty());
        assert_eq!(state.report.values, 3);
        assert_eq!(state.secrets.len(), 3);
    }

    #[test]
    fn failed_items_become_failed_keys() {
        let state = map(
            &[
                ("ns/s/good", Ok("1")),
                ("ns/s/bad", Err("integrity check failed")),
            ],
            &all(),
        );
        assert_eq!(
            key_of(&state, "ns", "s", "BAD"),
            Some(DesiredKey::Failed {
                source: "ns/s/bad".into(),
                reason: "integrity check failed".into()
            })
        );
        assert_eq!(
            state.report.failed,
            vec![FailedName {
                name: "ns/s/bad".into(),
                reason: "integrity check failed".into()
            }]
        );
        assert_eq!(state.report.values, 1);
    }

    #[test]
    fn excluded_namespaces_are_never_written() {
        let scope = MappingScope {
            excluded: ["kube-system".to_owned()].into(),
            existing_namespaces: None,
            templates: SecretTemplates::default(),
        };
        let state = map(
            &[
                ("kube-system/s/a", Ok("1")),
                ("kube-system/t/b", Err("bad")),
                ("ns/s/a", Ok("2")),
            ],
            &scope,
        );
        assert_eq!(state.report.excluded, 2);
        assert!(!state.secrets.keys().any(|s| s.namespace == "kube-system"));
        assert_eq!(state.secrets.len(), 1);
        assert!(state.report.failed.is_empty());
    }

    #[test]
    fn missing_namespaces_wait_and_are_counted_per_namespace() {
        let scope = MappingScope {
            excluded: BTreeSet::new(),
            existing_namespaces: Some(["ns".to_owned()].into()),
            templates: SecretTemplates::default(),
        };
        let state = map(
            &[
                ("ns/s/a", Ok("1")),
                ("later/s/a", Ok("1")),
                ("later/t/b", Err("bad")),
                ("never/s/a", Ok("1")),
            ],
            &scope,
        );
        assert_eq!(
            state.report.waiting_for_namespace,
            BTreeMap::from([("later".to_owned(), 2), ("never".to_owned(), 1)])
        );
        assert_eq!(state.report.waiting(), 3);
        assert_eq!(
            state.secrets.keys().cloned().collect::<Vec<_>>(),
            vec![sref("ns", "s")]
        );
        // without a namespace list every namespace is assumed to exist
        let state = map(&[("later/s/a", Ok("1"))], &all());
        assert!(state.report.waiting_for_namespace.is_empty());
        assert_eq!(state.secrets.len(), 1);
    }

    #[test]
    fn exclusion_wins_over_a_missing_namespace() {
        let scope = MappingScope {
            excluded: ["gone".to_owned()].into(),
            existing_namespaces: Some(BTreeSet::new()),
            templates: SecretTemplates::default(),
        };
        let state = map(&[("gone/s/a", Ok("1"))], &scope);
        assert_eq!(state.report.excluded, 1);
        assert_eq!(state.report.waiting(), 0);
    }

    #[test]
    fn every_name_lands_in_exactly_one_bucket() {
        let scope = MappingScope {
            excluded: ["ex".to_owned()].into(),
            existing_namespaces: Some(["ns".to_owned(), "ex".to_owned()].into()),
            templates: SecretTemplates::default(),
        };
        let state = map(
            &[
                ("other-app.password", Ok("1")),
                ("a/b", Ok("1")),
                ("Bad/s/k", Ok("1")),
                ("ex/s/k", Ok("1")),
                ("missing/s/k", Ok("1")),
                ("ns/s/ok", Ok("1")),
                ("ns/s/failed", Err("bad")),
                ("ns/s/c.x", Ok("1")),
                ("ns/s/c-x", Ok("1")),
                ("ns/s/ok", Ok("duplicate name: ignored")),
            ],
            &scope,
        );
        let r = &state.report;
        assert_eq!(r.total, 9);
        assert_eq!(r.ignored, 2);
        assert_eq!(r.invalid.len(), 1);
        assert_eq!(r.excluded, 1);
        assert_eq!(r.waiting(), 1);
        assert_eq!((r.values, r.failed.len(), r.conflicting_names()), (1, 1, 2));
        assert_eq!(
            r.total,
            r.ignored + r.invalid.len() + r.excluded + r.waiting() + r.mapped()
        );
        assert_eq!(
            key_of(&state, "ns", "s", "OK"),
            Some(DesiredKey::Value {
                source: "ns/s/ok".into(),
                value: value("1")
            })
        );
    }

    #[test]
    fn nothing_printable_holds_a_value() {
        let state = map(
            &[
                ("ns/s/a", Ok(SECRET)),
                ("ns/s/b.x", Ok(SECRET)),
                ("ns/s/b-x", Ok(SECRET)),
                ("ns/s/c", Err("integrity check failed")),
                ("ns/t/d", Ok(SECRET)),
            ],
            &all(),
        );
        let printed = format!(
            "{state}\n{state:?}\n{state:#?}\n{}\n{:?}",
            state.report, state.report
        );
        assert!(!printed.contains(SECRET), "{printed}");
        assert!(!printed.contains("hunter2"), "{printed}");
        // but the names and states are there
        for needle in ["ns/s: A, B_X (conflict), C (failed)", "ns/t: D", "ns/s/b-x"] {
            assert!(printed.contains(needle), "{needle} missing in {printed}");
        }
    }

    #[test]
    fn secret_and_key_refs_display_and_order() {
        let a = sref("a", "z");
        let b = sref("b", "a");
        assert!(a < b);
        assert_eq!(a.to_string(), "a/z");
        let key = KeyRef {
            secret: b,
            key: "K".into(),
        };
        assert_eq!(key.to_string(), "b/a:K");
    }
}
