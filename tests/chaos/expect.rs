//! The strict model of what every key may hold: exact wherever the table
//! decides, and where it does not (a conflict, a failed item, a frozen
//! namespace, a name deleted without prune) only the value the key held at
//! the last verified check or a value the operator could rightly have
//! written since. Each rule below is a rule of the product
//! (`docs/crd-reference.md`, "Rules where more than one value could be right"), each with a deterministic e2e test:
//!
//! | the key now                                   | accepted                              |
//! |-----------------------------------------------|---------------------------------------|
//! | added by hand (`HAND_*`)                      | exactly the hand value                |
//! | one good name, namespace writable             | exactly its latest value              |
//! | no name, prune, writable, no failed item there| absent (or the editor's, see below)   |
//! | in conflict                                   | held value: pinned or seen-alone value|
//! | failed to open                                | last good: pinned or seen-alone value |
//! | no name, no prune (or a failed item there)    | kept: pinned or seen-alone value      |
//! | excluded, dry run                             | frozen: pinned or seen-alone value    |
//!
//! "Seen-alone values" are the values of a name that was the only good name
//! of the key at some table state since the last check: the operator may
//! have seen it alone (the stream brings names in order) and then read any
//! later version of it before the colliding name's record arrived. A value
//! only counts once its namespace could receive it. A name never alone
//! since the last check (the second of two colliding names) never counts:
//! a last-writer-wins operator fails.
//!
//! A hand edit of an owned key takes the key's field from the operator
//! (server-side apply): until the operator repairs it (a sampled write puts
//! another value there), a deletion of its name leaves the key to its
//! editor, kept even with prune.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use super::model::{
    key_of, universe, Desired, Latest, Observed, Phase, World, MANAGED_BY_LABEL, METADATA_PREFIX,
};
use super::ops::{short, Op, SecretId};

/// A Secret's key.
pub type KeyId = (SecretId, String);

/// What one key may hold in the current period (since the last check).
#[derive(Debug, Default, Clone)]
struct KeyTrack {
    /// The value verified at the last check (`None`: absent).
    pinned: Option<String>,
    /// Values (`None`: absent) the operator could rightly have written
    /// since the last check, with the moment each became one.
    legit: BTreeMap<Option<String>, Instant>,
    /// Names that were the only good name of the key at some table state
    /// since the last check, with every value they have had since.
    seen_alone: BTreeMap<String, BTreeSet<String>>,
}

impl KeyTrack {
    fn allow(&mut self, value: Option<String>, at: Instant) {
        self.legit.entry(value).or_insert(at);
    }

    /// Whether the key may hold `value` at `at`.
    fn allows_at(&self, value: &Option<String>, at: Instant) -> bool {
        *value == self.pinned || self.legit.get(value).is_some_and(|since| *since <= at)
    }

    /// Every value accepted at a check where the table does not decide.
    fn held(&self) -> BTreeSet<Option<String>> {
        let mut out: BTreeSet<Option<String>> = self.legit.keys().cloned().collect();
        out.insert(self.pinned.clone());
        out
    }

    fn seen_values(&self) -> impl Iterator<Item = &String> {
        self.seen_alone.values().flatten()
    }
}

/// The strict model of every key, fed each operation as it starts.
#[derive(Debug, Default)]
pub struct Expectations {
    keys: BTreeMap<KeyId, KeyTrack>,
    /// Owned keys edited by hand, not yet repaired, with the hand value.
    hand_taken: BTreeMap<KeyId, (String, Instant)>,
}

/// One disagreement between the cluster and the model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    pub secret: SecretId,
    pub key: Option<String>,
    pub observed: Option<String>,
    pub expected: String,
}

impl std::fmt::Display for Mismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (ns, name) = &self.secret;
        match &self.key {
            Some(key) => write!(
                f,
                "{ns}/{name}:{key} is {}, expected {}",
                self.observed.as_deref().map_or("<absent>".into(), short),
                self.expected
            ),
            None => write!(
                f,
                "{ns}/{name}: {}, expected {}",
                self.observed.as_deref().unwrap_or("-"),
                self.expected
            ),
        }
    }
}

impl Expectations {
    /// Records what the operator may rightly write from `at` (the moment
    /// `op` started) now that `op` brought the world to `world`.
    pub fn after(&mut self, op: &Op, world: &World, at: Instant) {
        match op {
            Op::HandEdit { secret, key, value } => {
                let id = (secret.clone(), key.clone());
                self.track(&id).allow(Some(value.clone()), at);
                self.hand_taken.insert(id, (value.clone(), at));
            }
            Op::HandRemove { secret, key } => {
                self.track(&(secret.clone(), key.clone())).allow(None, at);
            }
            Op::DeleteSecret(secret) => self.allow_absent(|s| s == secret, at),
            Op::DeleteNamespace { namespace, .. } => self.allow_absent(|s| &s.0 == namespace, at),
            _ => {}
        }
        self.see_table(world);
        self.refresh(world, at);
    }

    fn track(&mut self, id: &KeyId) -> &mut KeyTrack {
        self.keys.entry(id.clone()).or_default()
    }

    fn allow_absent(&mut self, secret: impl Fn(&SecretId) -> bool, at: Instant) {
        for (_, track) in self.keys.iter_mut().filter(|((s, _), _)| secret(s)) {
            track.allow(None, at);
        }
    }

    /// Notes the names seen alone at this table state, and the values of
    /// names seen alone earlier.
    fn see_table(&mut self, world: &World) {
        let mut claims: BTreeMap<KeyId, Vec<(&String, &Latest)>> = BTreeMap::new();
        for (name, latest) in &world.table {
            if let Some(id) = key_of(name) {
                claims.entry(id).or_default().push((name, latest));
            }
        }
        for (id, names) in claims {
            let track = self.track(&id);
            if let [(name, Latest::Value(_))] = names.as_slice() {
                track.seen_alone.entry((*name).clone()).or_default();
            }
            for (name, latest) in names {
                if let (Some(values), Latest::Value(v)) = (track.seen_alone.get_mut(name), latest) {
                    values.insert(v.clone());
                }
            }
        }
    }

    /// Allows, in writable namespaces, what the table now lets the operator
    /// write: the values of names seen alone, and absence where prune
    /// removes a key no name maps to any more.
    fn refresh(&mut self, world: &World, at: Instant) {
        let desired = world.desired();
        for secret in universe() {
            if world.non_opaque.contains_key(&secret) {
                continue;
            }
            if world.prunes_unselected(&secret.0) {
                for (_, track) in self.keys.range_mut(secret_range(&secret)) {
                    track.allow(None, at);
                }
                continue;
            }
            if !world.writes_secret(&secret) {
                continue;
            }
            let wanted = desired.get(&secret);
            let prunes = world.prune_in(&secret.0) && !world.failed_in(&secret);
            for ((_, key), track) in self.keys.range_mut(secret_range(&secret)) {
                let seen: Vec<String> = track.seen_values().cloned().collect();
                for value in seen {
                    track.allow(Some(value), at);
                }
                if prunes && wanted.is_none_or(|w| !w.contains_key(key)) {
                    track.allow(None, at);
                }
            }
        }
    }

    /// The keys of `secret` the model follows (the operator's, not hand keys).
    pub fn keys_of(&self, secret: &SecretId) -> Vec<String> {
        self.keys
            .range(secret_range(secret))
            .map(|((_, key), _)| key.clone())
            .collect()
    }

    /// Whether a sampled write at `at` may put `value` (`None`: remove) in
    /// the key.
    pub fn allows_write(&self, id: &KeyId, value: &Option<String>, at: Instant) -> bool {
        self.keys
            .get(id)
            .is_some_and(|track| track.allows_at(value, at))
            || (value.is_none() && !self.keys.contains_key(id))
    }

    /// An operator write sampled at `at` gave the key `value`: a hand edit
    /// it repaired (made before, a value other than the hand's) is the
    /// operator's again, and the hand value no longer one it may write.
    pub fn operator_wrote(&mut self, id: &KeyId, value: Option<&String>, at: Instant) {
        let repaired = self
            .hand_taken
            .get(id)
            .is_some_and(|(hand, since)| *since <= at && Some(hand) != value);
        if !repaired {
            return;
        }
        if let Some((hand, _)) = self.hand_taken.remove(id) {
            if let Some(track) = self.keys.get_mut(id) {
                track.legit.remove(&Some(hand));
            }
        }
    }

    /// Compares the Secrets with the model; empty when they agree.
    pub fn check(&self, world: &World, observed: &BTreeMap<SecretId, Observed>) -> Vec<Mismatch> {
        let desired = world.desired();
        let mut out = Vec::new();
        for secret in universe() {
            let seen = observed.get(&secret);
            if world.namespaces.get(&secret.0) != Some(&Phase::Active) {
                if let Some(seen) = seen {
                    out.push(mismatch(
                        &secret,
                        None,
                        format!(
                            "exists with keys {:?}",
                            seen.data.keys().collect::<Vec<_>>()
                        ),
                        "no Secret (namespace absent or terminating)",
                    ));
                }
                continue;
            }
            if let Some(data) = world.non_opaque.get(&secret) {
                if !seen.is_some_and(|s| s.type_ != "Opaque" && &s.data == data) {
                    out.push(mismatch(
                        &secret,
                        None,
                        seen.map_or("absent".into(), |s| format!("{} {:?}", s.type_, s.data)),
                        &format!("the untouched non-Opaque Secret {data:?}"),
                    ));
                }
                continue;
            }
            if let Some(seen) = seen.filter(|s| s.type_ != "Opaque") {
                out.push(mismatch(&secret, None, seen.type_.clone(), "type Opaque"));
            }
            let wanted = desired.get(&secret);
            if world.writes_secret(&secret) {
                out.extend(ownership(world, &secret, seen, wanted));
                out.extend(metadata(world, &secret, seen));
            }
            out.extend(self.check_keys(world, &secret, seen, wanted));
        }
        out
    }

    fn check_keys(
        &self,
        world: &World,
        secret: &SecretId,
        seen: Option<&Observed>,
        wanted: Option<&BTreeMap<String, Desired>>,
    ) -> Vec<Mismatch> {
        let empty = BTreeMap::new();
        let data = seen.map_or(&empty, |s| &s.data);
        let hand = world.hand.get(secret);
        let mut keys: BTreeSet<&String> = data.keys().collect();
        keys.extend(wanted.into_iter().flatten().map(|(k, _)| k));
        keys.extend(hand.into_iter().flatten().map(|(k, _)| k));
        keys.extend(self.keys.range(secret_range(secret)).map(|((_, k), _)| k));
        let mut out = Vec::new();
        for key in keys {
            let desired = wanted.and_then(|w| w.get(key));
            let accepted = self.accepted(world, secret, key, desired, hand);
            let got = data.get(key).cloned();
            if !accepted.contains(&got) {
                out.push(Mismatch {
                    secret: secret.clone(),
                    key: Some(key.clone()),
                    observed: got,
                    expected: describe(&accepted),
                });
            }
        }
        out
    }

    /// The values `key` may hold now (the table in the module doc).
    fn accepted(
        &self,
        world: &World,
        secret: &SecretId,
        key: &str,
        desired: Option<&Desired>,
        hand: Option<&BTreeMap<String, String>>,
    ) -> BTreeSet<Option<String>> {
        if let Some(v) = hand.and_then(|h| h.get(key)) {
            return BTreeSet::from([Some(v.clone())]);
        }
        let id = (secret.clone(), key.to_owned());
        let writable = world.writes_secret(secret);
        let taken = self.hand_taken.get(&id).map(|(hand, _)| hand.clone());
        if world.prunes_unselected(&secret.0) {
            return BTreeSet::from([None, taken]);
        }
        match desired {
            Some(Desired::Value(v)) if writable => BTreeSet::from([Some(v.clone())]),
            None if writable && world.prune_in(&secret.0) && !world.failed_in(secret) => {
                BTreeSet::from([None, taken])
            }
            _ => self
                .keys
                .get(&id)
                .map(KeyTrack::held)
                .unwrap_or_else(|| BTreeSet::from([None])),
        }
    }

    /// After a passed check: the verified Secrets are the new baseline.
    pub fn pin(&mut self, world: &World, verified: &BTreeMap<SecretId, Observed>) {
        self.hand_taken.retain(|(secret, key), (value, _)| {
            verified.get(secret).and_then(|seen| seen.data.get(key)) == Some(value)
        });
        self.keys.clear();
        for (secret, seen) in verified {
            if world.non_opaque.contains_key(secret) {
                continue;
            }
            let hand = world.hand.get(secret);
            for (key, value) in &seen.data {
                if hand.is_none_or(|h| !h.contains_key(key)) {
                    self.track(&(secret.clone(), key.clone())).pinned = Some(value.clone());
                }
            }
        }
        self.see_table(world);
    }
}

/// Every key of `secret` in a map keyed by [`KeyId`].
fn secret_range(secret: &SecretId) -> std::ops::RangeInclusive<KeyId> {
    (secret.clone(), String::new())..=(secret.clone(), "\u{10FFFF}".into())
}

fn mismatch(secret: &SecretId, key: Option<&str>, observed: String, expected: &str) -> Mismatch {
    Mismatch {
        secret: secret.clone(),
        key: key.map(str::to_owned),
        observed: Some(observed),
        expected: expected.to_owned(),
    }
}

/// The field manager of the CredstashSync named `css`.
pub fn manager(css: &str) -> String {
    format!("kubestash/{css}")
}

/// Ownership follows the living CredstashSync: it owns every key it writes,
/// no key added by hand, and no other `kubestash/*` manager owns anything.
fn ownership(
    world: &World,
    secret: &SecretId,
    seen: Option<&Observed>,
    wanted: Option<&BTreeMap<String, Desired>>,
) -> Vec<Mismatch> {
    let css = world.css_for(&secret.0);
    let ours = manager(&css.name);
    let none = BTreeSet::new();
    let owned = seen.and_then(|s| s.owners.get(&ours)).unwrap_or(&none);
    let mut out = Vec::new();
    for (key, desired) in wanted.into_iter().flatten() {
        if matches!(desired, Desired::Value(_)) && !owned.contains(key) {
            out.push(mismatch(
                secret,
                Some(key),
                format!("not owned by {ours}"),
                &format!("owned by {ours}"),
            ));
        }
    }
    for key in world.hand.get(secret).into_iter().flatten().map(|(k, _)| k) {
        if owned.contains(key) {
            out.push(mismatch(
                secret,
                Some(key),
                format!("a hand key owned by {ours}"),
                "owned by its editor only",
            ));
        }
    }
    for (other, keys) in seen.map(|s| &s.owners).into_iter().flatten() {
        if other.starts_with("kubestash/") && *other != ours {
            out.push(mismatch(
                secret,
                None,
                format!("{other} still has a managedFields entry (keys {keys:?})"),
                &format!("only {ours} among kubestash managers"),
            ));
        }
    }
    out
}

/// A Secret holding keys of the operator carries its label and source.
fn metadata(world: &World, secret: &SecretId, seen: Option<&Observed>) -> Vec<Mismatch> {
    let Some(seen) = seen else {
        return Vec::new();
    };
    let css = world.css_for(&secret.0);
    let ours = manager(&css.name);
    if seen.owners.get(&ours).is_none_or(BTreeSet::is_empty) {
        return Vec::new();
    }
    let mut out = Vec::new();
    if seen.labels.get(MANAGED_BY_LABEL).map(String::as_str) != Some("kubestash") {
        out.push(mismatch(
            secret,
            None,
            format!("labels {:?}", seen.labels),
            &format!("{MANAGED_BY_LABEL}=kubestash"),
        ));
    }
    let ours = |map: &BTreeMap<String, String>| -> BTreeMap<String, String> {
        map.iter()
            .filter(|(k, _)| k.starts_with(METADATA_PREFIX))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    };
    for (what, seen, spec) in [
        ("labels", &seen.labels, &css.labels),
        ("annotations", &seen.annotations, &css.annotations),
    ] {
        if ours(seen) != *spec {
            out.push(mismatch(
                secret,
                None,
                format!("secretMetadata {what} {:?}", ours(seen)),
                &format!("{spec:?}"),
            ));
        }
    }
    out
}

fn describe(accepted: &BTreeSet<Option<String>>) -> String {
    let items: Vec<String> = accepted
        .iter()
        .map(|v| v.as_deref().map_or("<absent>".into(), short))
        .collect();
    if items.len() == 1 {
        items[0].clone()
    } else {
        format!("one of {items:?}")
    }
}
#[cfg(test)]
mod tests {
    use super::*;
    use crate::chaos::model::{MANAGED_BY_LABEL, SECOND_CSS, SECOND_NAMESPACE};
    use crate::chaos::ops::TableOp;

    fn put(name: &str, value: &str) -> Op {
        Op::Table(vec![TableOp::Put {
            name: name.into(),
            value: value.into(),
        }])
    }

    fn sid(ns: &str, name: &str) -> SecretId {
        (ns.into(), name.into())
    }

    fn observed(pairs: &[(&str, &str)]) -> Observed {
        let data: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let ours = data
            .keys()
            .filter(|k| !k.starts_with("HAND_"))
            .cloned()
            .collect();
        Observed {
            type_: "Opaque".into(),
            data,
            owners: BTreeMap::from([(manager("c"), ours)]),
            labels: BTreeMap::from([(MANAGED_BY_LABEL.into(), "kubestash".into())]),
            annotations: BTreeMap::new(),
        }
    }

    fn run(ops: &[Op]) -> (World, Expectations) {
        let mut world = World::new("c");
        let mut model = Expectations::default();
        for op in ops {
            step(&mut world, &mut model, op);
        }
        (world, model)
    }

    fn step(world: &mut World, model: &mut Expectations, op: &Op) {
        world.apply(op);
        model.after(op, world, Instant::now());
    }

    #[test]
    fn names_map_to_normalised_keys_and_collisions_conflict() {
        let (world, _) = run(&[
            put("ns-a/app/db.url", "1"),
            put("ns-a/app/db-url", "2"),
            put("ns-a/app/user", "3"),
        ]);
        let desired = world.desired();
        let app = &desired[&sid("ns-a", "app")];
        assert_eq!(app["DB_URL"], Desired::Conflict);
        assert_eq!(app["USER"], Desired::Value("3".into()));
        assert_eq!(world.key_counts().conflicting, 2);
    }

    #[test]
    fn a_value_key_must_hold_the_latest_value_exactly() {
        let (world, model) = run(&[put("ns-a/app/user", "1"), put("ns-a/app/user", "2")]);
        let good = BTreeMap::from([(sid("ns-a", "app"), observed(&[("USER", "2")]))]);
        let stale = BTreeMap::from([(sid("ns-a", "app"), observed(&[("USER", "1")]))]);
        assert!(model.check(&world, &good).is_empty());
        assert_eq!(model.check(&world, &stale).len(), 1);
        let missing = model.check(&world, &BTreeMap::new());
        assert_eq!(missing.len(), 2, "absent, and so not owned: {missing:?}");
    }

    /// Found by the soak (seed 1001): a namespace appeared after the first
    /// of two colliding names was put but before the stream brought the
    /// second; writing the first, then keeping it as a conflict, is right.
    #[test]
    fn a_conflict_may_keep_a_value_the_operator_saw_before_the_collision() {
        let (world, model) = run(&[
            put("ns-c/svc/Region", "1"),
            put("ns-c/svc/region", "2"),
            Op::CreateNamespace("ns-c".into()),
        ]);
        for kept in [Some("1"), None] {
            let data: Vec<(&str, &str)> = kept.map(|v| ("REGION", v)).into_iter().collect();
            let seen = BTreeMap::from([(sid("ns-c", "svc"), observed(&data))]);
            assert!(model.check(&world, &seen).is_empty(), "{kept:?}");
        }
        let made_up = BTreeMap::from([(sid("ns-c", "svc"), observed(&[("REGION", "3")]))]);
        assert_eq!(model.check(&world, &made_up).len(), 1);
    }

    /// Found by the soak (seed 1004): the first name was put before the
    /// last check, its namespace was absent then, and the colliding name
    /// came in the next period.
    #[test]
    fn a_conflict_may_keep_a_value_the_table_had_at_the_last_check() {
        let (mut world, mut model) = run(&[put("ns-c/svc/region", "1")]);
        model.pin(&world, &BTreeMap::new());
        for op in [
            put("ns-c/svc/REGION", "2"),
            Op::CreateNamespace("ns-c".into()),
        ] {
            world.apply(&op);
            model.after(&op, &world, Instant::now());
        }
        let kept = BTreeMap::from([(sid("ns-c", "svc"), observed(&[("REGION", "1")]))]);
        assert!(model.check(&world, &kept).is_empty());
    }

    /// Found by the soak (seed 1006): a stream batch held the first name's
    /// record but not yet the colliding name's; the operator read the first
    /// name's newest value (put after the collision) and wrote it.
    #[test]
    fn a_conflict_may_keep_a_value_put_after_the_collision() {
        let (world, model) = run(&[
            Op::CreateNamespace("ns-c".into()),
            put("ns-c/svc/Region", "1"),
            put("ns-c/svc/REGION", "2"),
            put("ns-c/svc/Region", "3"),
        ]);
        let kept = BTreeMap::from([(sid("ns-c", "svc"), observed(&[("REGION", "3")]))]);
        assert!(model.check(&world, &kept).is_empty());
        let made_up = BTreeMap::from([(sid("ns-c", "svc"), observed(&[("REGION", "4")]))]);
        assert_eq!(model.check(&world, &made_up).len(), 1);
    }

    #[test]
    fn keys_belong_to_the_living_credstashsync_only() {
        let (world, model) = run(&[put("ns-a/app/user", "1")]);
        let mut renamed = observed(&[("USER", "1")]);
        renamed.owners = BTreeMap::from([(manager("old"), BTreeSet::from(["USER".into()]))]);
        let mismatches = model.check(
            &world,
            &BTreeMap::from([(sid("ns-a", "app"), renamed.clone())]),
        );
        assert_eq!(
            mismatches.len(),
            2,
            "not owned by kubestash/c, owned by kubestash/old"
        );
        renamed
            .owners
            .insert(manager("c"), BTreeSet::from(["USER".into()]));
        renamed
            .owners
            .insert("kubectl-edit".into(), BTreeSet::new());
        let mismatches = model.check(&world, &BTreeMap::from([(sid("ns-a", "app"), renamed)]));
        assert_eq!(
            mismatches.len(),
            1,
            "kubestash/old still listed: {mismatches:?}"
        );
    }

    #[test]
    fn a_failed_key_keeps_its_last_good_value_and_prune_false_keeps_deleted_names() {
        let (mut world, mut model) = run(&[put("ns-a/app/user", "1"), put("ns-a/app/token", "t")]);
        let seen = BTreeMap::from([(
            sid("ns-a", "app"),
            observed(&[("USER", "1"), ("TOKEN", "t")]),
        )]);
        model.pin(&world, &seen);
        let op = Op::Table(vec![
            TableOp::Tamper {
                name: "ns-a/app/user".into(),
            },
            TableOp::Delete {
                name: "ns-a/app/token".into(),
            },
        ]);
        world.apply(&op);
        model.after(&op, &world, Instant::now());
        assert!(model.check(&world, &seen).is_empty());
        let emptied = BTreeMap::from([(sid("ns-a", "app"), observed(&[("TOKEN", "t")]))]);
        assert_eq!(model.check(&world, &emptied).len(), 1);
    }

    #[test]
    fn prune_removes_deleted_names_unless_an_item_of_the_secret_failed() {
        let (mut world, mut model) = run(&[Op::SetPrune(true), put("ns-a/app/token", "t")]);
        let seen = BTreeMap::from([(sid("ns-a", "app"), observed(&[("TOKEN", "t")]))]);
        model.pin(&world, &seen);
        let op = Op::Table(vec![TableOp::Delete {
            name: "ns-a/app/token".into(),
        }]);
        world.apply(&op);
        model.after(&op, &world, Instant::now());
        assert_eq!(model.check(&world, &seen).len(), 1);
        assert!(model.check(&world, &BTreeMap::new()).is_empty());
        let op = put("ns-b/app/x", "1");
        world.apply(&op);
        let op = Op::Table(vec![TableOp::Tamper {
            name: "ns-b/app/x".into(),
        }]);
        world.apply(&op);
        model.after(&op, &world, Instant::now());
        assert_eq!(
            model.check(&world, &seen).len(),
            1,
            "a failed item in another Secret does not stop pruning"
        );
        let op = put("ns-a/app/other", "o");
        world.apply(&op);
        let op = Op::Table(vec![TableOp::Tamper {
            name: "ns-a/app/other".into(),
        }]);
        world.apply(&op);
        model.after(&op, &world, Instant::now());
        assert!(
            model.check(&world, &seen).is_empty(),
            "a failed item of the Secret stops pruning there"
        );
    }

    #[test]
    fn hand_keys_must_stay_and_excluded_namespaces_are_frozen() {
        let (mut world, mut model) = run(&[put("ns-a/app/user", "1")]);
        let seen = BTreeMap::from([(sid("ns-a", "app"), observed(&[("USER", "1")]))]);
        model.pin(&world, &seen);
        for op in [
            Op::HandAdd {
                secret: sid("ns-a", "app"),
                key: "HAND_1".into(),
                value: "h".into(),
            },
            Op::SetExcluded(vec!["ns-a".into()]),
            put("ns-a/app/user", "2"),
        ] {
            world.apply(&op);
            model.after(&op, &world, Instant::now());
        }
        let frozen = BTreeMap::from([(
            sid("ns-a", "app"),
            observed(&[("USER", "1"), ("HAND_1", "h")]),
        )]);
        assert!(model.check(&world, &frozen).is_empty());
        assert_eq!(
            model.check(&world, &seen).len(),
            1,
            "the hand key is missing"
        );
    }

    #[test]
    fn a_hand_edited_key_whose_name_goes_before_its_repair_may_stay() {
        let (mut world, mut model) = run(&[Op::SetPrune(true), put("ns-a/app/user", "1")]);
        let secret = sid("ns-a", "app");
        model.pin(
            &world,
            &BTreeMap::from([(secret.clone(), observed(&[("USER", "1")]))]),
        );
        let hand_edit = Op::HandEdit {
            secret: secret.clone(),
            key: "USER".into(),
            value: "h".into(),
        };
        let delete = Op::Table(vec![TableOp::Delete {
            name: "ns-a/app/user".into(),
        }]);
        for op in [&hand_edit, &delete] {
            world.apply(op);
            model.after(op, &world, Instant::now());
        }
        let edited = BTreeMap::from([(secret.clone(), observed(&[("USER", "h")]))]);
        assert!(model.check(&world, &edited).is_empty(), "the editor's key");
        assert!(
            model.check(&world, &BTreeMap::new()).is_empty(),
            "repaired, then pruned"
        );
        let table_value = BTreeMap::from([(secret.clone(), observed(&[("USER", "1")]))]);
        assert_eq!(model.check(&world, &table_value).len(), 1);

        // Once a check has seen the key repaired, it is the operator's again.
        let (mut world, mut model) = run(&[Op::SetPrune(true), put("ns-a/app/user", "1")]);
        world.apply(&hand_edit);
        model.after(&hand_edit, &world, Instant::now());
        model.pin(&world, &table_value);
        world.apply(&delete);
        model.after(&delete, &world, Instant::now());
        assert_eq!(model.check(&world, &edited).len(), 1);
    }

    #[test]
    fn secrets_of_absent_namespaces_and_non_opaque_ones() {
        let (world, model) = run(&[
            Op::CreateNonOpaque {
                secret: sid("ns-b", "svc"),
                key: "K".into(),
                value: "v".into(),
            },
            put("ns-b/svc/k2", "1"),
            put("ns-c/app/user", "1"),
        ]);
        let mut non_opaque = observed(&[("K", "v")]);
        non_opaque.type_ = "example.com/other".into();
        let good = BTreeMap::from([(sid("ns-b", "svc"), non_opaque.clone())]);
        assert!(model.check(&world, &good).is_empty());
        let mut written = non_opaque;
        written.data.insert("K2".into(), "1".into());
        let bad = BTreeMap::from([
            (sid("ns-b", "svc"), written),
            (sid("ns-c", "app"), observed(&[("USER", "1")])),
        ]);
        assert_eq!(model.check(&world, &bad).len(), 2);
        assert_eq!(world.key_counts().waiting, 1);
    }

    /// The planted bug "last writer wins on a conflict" must fail the model.
    #[test]
    fn the_second_of_two_colliding_names_never_wins() {
        let (mut world, mut model) =
            run(&[put("ns-a/app/db.url", "1"), put("ns-a/app/DB-URL", "2")]);
        let app = sid("ns-a", "app");
        let at = |v: &str| BTreeMap::from([(app.clone(), observed(&[("DB_URL", v)]))]);
        assert!(model.check(&world, &at("1")).is_empty(), "seen alone first");
        assert!(
            model.check(&world, &BTreeMap::new()).is_empty(),
            "never written"
        );
        assert_eq!(model.check(&world, &at("2")).len(), 1, "last writer wins");

        // A conflict that lasts through a check: only the verified value.
        model.pin(&world, &at("1"));
        step(&mut world, &mut model, &put("ns-a/app/db.url", "3"));
        step(&mut world, &mut model, &put("ns-a/app/DB-URL", "4"));
        assert!(model.check(&world, &at("1")).is_empty());
        for wrong in ["3", "4"] {
            assert_eq!(model.check(&world, &at(wrong)).len(), 1, "{wrong}");
        }
        let id = (app.clone(), "DB_URL".to_string());
        assert!(!model.allows_write(&id, &Some("3".into()), Instant::now()));
        assert!(!model.allows_write(&id, &None, Instant::now()));
    }

    #[test]
    fn a_value_is_rightly_written_only_after_it_was_put_and_only_where_writable() {
        let before = Instant::now();
        let (mut world, mut model) = run(&[put("ns-a/app/user", "1")]);
        let id = (sid("ns-a", "app"), "USER".to_string());
        assert!(model.allows_write(&id, &Some("1".into()), Instant::now()));
        assert!(
            !model.allows_write(&id, &Some("1".into()), before),
            "before the put"
        );
        step(
            &mut world,
            &mut model,
            &Op::SetExcluded(vec!["ns-a".into()]),
        );
        step(&mut world, &mut model, &put("ns-a/app/user", "2"));
        assert!(
            !model.allows_write(&id, &Some("2".into()), Instant::now()),
            "excluded"
        );
        step(&mut world, &mut model, &Op::SetExcluded(vec![]));
        assert!(
            model.allows_write(&id, &Some("2".into()), Instant::now()),
            "included again"
        );
        step(&mut world, &mut model, &Op::SetDryRun(true));
        step(&mut world, &mut model, &put("ns-a/app/user", "3"));
        assert!(
            !model.allows_write(&id, &Some("3".into()), Instant::now()),
            "dry run"
        );
    }

    #[test]
    fn a_hand_edit_is_excused_only_until_it_is_repaired() {
        let (mut world, mut model) = run(&[Op::SetPrune(true), put("ns-a/app/user", "1")]);
        let app = sid("ns-a", "app");
        model.pin(
            &world,
            &BTreeMap::from([(app.clone(), observed(&[("USER", "1")]))]),
        );
        let id = (app.clone(), "USER".to_string());
        let edit = Op::HandEdit {
            secret: app.clone(),
            key: "USER".into(),
            value: "h".into(),
        };
        step(&mut world, &mut model, &edit);
        assert!(model.allows_write(&id, &Some("h".into()), Instant::now()));
        model.operator_wrote(&id, Some(&"1".to_string()), Instant::now());
        assert!(
            !model.allows_write(&id, &Some("h".into()), Instant::now()),
            "repaired"
        );
        let delete = Op::Table(vec![TableOp::Delete {
            name: "ns-a/app/user".into(),
        }]);
        step(&mut world, &mut model, &delete);
        let kept = BTreeMap::from([(app.clone(), observed(&[("USER", "h")]))]);
        assert_eq!(
            model.check(&world, &kept).len(),
            1,
            "no longer the editor's"
        );
        assert!(model.check(&world, &BTreeMap::new()).is_empty(), "pruned");
    }

    #[test]
    fn hand_keys_are_never_owned_by_the_operator_and_written_secrets_are_labelled() {
        let (mut world, mut model) = run(&[put("ns-a/app/user", "1")]);
        let app = sid("ns-a", "app");
        let add = Op::HandAdd {
            secret: app.clone(),
            key: "HAND_1".into(),
            value: "h".into(),
        };
        step(&mut world, &mut model, &add);
        let mut seen = observed(&[("USER", "1"), ("HAND_1", "h")]);
        assert!(model
            .check(&world, &BTreeMap::from([(app.clone(), seen.clone())]))
            .is_empty());
        seen.owners
            .get_mut(&manager("c"))
            .map(|o| o.insert("HAND_1".into()));
        assert_eq!(
            model
                .check(&world, &BTreeMap::from([(app.clone(), seen.clone())]))
                .len(),
            1
        );
        seen.owners
            .get_mut(&manager("c"))
            .map(|o| o.remove("HAND_1"));
        seen.labels.clear();
        assert_eq!(
            model.check(&world, &BTreeMap::from([(app, seen)])).len(),
            1,
            "no label"
        );
    }

    #[test]
    fn a_rollback_makes_the_version_before_the_latest_and_invalid_names_map_nowhere() {
        let rollback = Op::Table(vec![TableOp::Rollback {
            name: "ns-a/app/user".into(),
        }]);
        let (world, model) = run(&[
            put("ns-a/app/user", "1"),
            put("ns-a/app/user", "2"),
            rollback.clone(),
            put("ns-a/app/bad key", "x"),
            put("NS-A/app/user", "y"),
        ]);
        let app = sid("ns-a", "app");
        let seen = |v: &str| BTreeMap::from([(app.clone(), observed(&[("USER", v)]))]);
        assert!(model.check(&world, &seen("1")).is_empty());
        assert_eq!(model.check(&world, &seen("2")).len(), 1);
        assert_eq!(world.key_counts().invalid, 2);
        assert_eq!(world.key_counts().total, 3);
        let (world, _) = run(&[put("ns-a/app/user", "1"), rollback]);
        assert!(
            world.table.is_empty(),
            "the only version gone: the name is gone"
        );
    }

    #[test]
    fn unselected_namespaces_freeze_or_lose_the_keys_with_prune_and_foreign_secrets_wait_for_adoption(
    ) {
        let (mut world, mut model) = run(&[put("ns-a/app/user", "1")]);
        let app = sid("ns-a", "app");
        let seen = |pairs: &[(&str, &str)]| BTreeMap::from([(app.clone(), observed(pairs))]);
        model.pin(&world, &seen(&[("USER", "1")]));
        step(&mut world, &mut model, &Op::SetSelector(true));
        step(&mut world, &mut model, &put("ns-a/app/user", "2"));
        assert!(
            model.check(&world, &seen(&[("USER", "1")])).is_empty(),
            "frozen"
        );
        assert_eq!(model.check(&world, &seen(&[("USER", "2")])).len(), 1);
        step(&mut world, &mut model, &Op::SetPrune(true));
        assert!(model.check(&world, &BTreeMap::new()).is_empty(), "pruned");
        assert_eq!(model.check(&world, &seen(&[("USER", "1")])).len(), 1);
        let label = Op::LabelNamespace {
            namespace: "ns-a".into(),
            selected: true,
        };
        step(&mut world, &mut model, &label);
        assert!(
            model.check(&world, &seen(&[("USER", "2")])).is_empty(),
            "selected again"
        );

        let (mut world, mut model) = run(&[Op::SetAdopt(false)]);
        world.foreign.insert(app.clone());
        step(&mut world, &mut model, &put("ns-a/app/user", "1"));
        let mut foreign = observed(&[]);
        foreign.owners.clear();
        foreign.labels.clear();
        let untouched = BTreeMap::from([(app.clone(), foreign)]);
        assert!(model.check(&world, &untouched).is_empty(), "left alone");
        step(&mut world, &mut model, &Op::SetAdopt(true));
        assert_eq!(
            model.check(&world, &untouched).len(),
            2,
            "adopted: the value, owned"
        );
    }

    #[test]
    fn the_second_credstashsync_alone_writes_its_namespace() {
        let (mut world, mut model) = run(&[
            Op::CreateNamespace(SECOND_NAMESPACE.into()),
            put("ns-e/app/user", "1"),
        ]);
        let app = sid(SECOND_NAMESPACE, "app");
        assert!(
            model.check(&world, &BTreeMap::new()).is_empty(),
            "nobody writes it"
        );
        assert_eq!(world.key_counts().excluded, 1, "the first one excludes it");
        step(&mut world, &mut model, &Op::SetSecondCss(true));
        let mut seen = observed(&[("USER", "1")]);
        assert_eq!(
            model
                .check(&world, &BTreeMap::from([(app.clone(), seen.clone())]))
                .len(),
            2,
            "owned by the first one's manager, not the second's"
        );
        seen.owners = BTreeMap::from([(manager(SECOND_CSS), BTreeSet::from(["USER".into()]))]);
        assert!(model
            .check(&world, &BTreeMap::from([(app, seen)]))
            .is_empty());
    }

    #[test]
    fn the_invalid_names_of_the_schedule_are_invalid_by_the_mapping() {
        for name in crate::chaos::ops::INVALID_NAMES {
            assert!(crate::chaos::model::is_invalid(name), "{name}");
        }
        assert!(!crate::chaos::model::is_invalid("ns-a/app/db.url"));
    }

    /// Found by the soak on the real control plane (seed 642794244): the
    /// writes of a period are judged at the check, after every operation;
    /// only an operator write made after the hand edit repairs it.
    #[test]
    fn only_an_operator_write_after_a_hand_edit_repairs_it() {
        let before = Instant::now();
        let (mut world, mut model) = run(&[put("ns-a/app/user", "1")]);
        let app = sid("ns-a", "app");
        let id = (app.clone(), "USER".to_string());
        for value in ["h1", "h2"] {
            let edit = Op::HandEdit {
                secret: app.clone(),
                key: "USER".into(),
                value: value.into(),
            };
            step(&mut world, &mut model, &edit);
        }
        model.operator_wrote(&id, Some(&"1".to_string()), before);
        for value in ["h1", "h2"] {
            assert!(
                model.allows_write(&id, &Some(value.into()), Instant::now()),
                "{value}"
            );
        }
        model.operator_wrote(&id, Some(&"1".to_string()), Instant::now());
        assert!(
            !model.allows_write(&id, &Some("h2".into()), Instant::now()),
            "repaired"
        );
    }
}
