//! Invariants judged on every sampled write, between checks: no key whose
//! name is in the table is ever removed, even for a moment; with `prune:
//! false` no operator key is removed at all; hand keys and non-Opaque
//! Secrets are only changed by the hand that made them; no value goes back
//! to an older version of its name.

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use super::model::{key_of, Latest};
use super::ops::SecretId;
use super::sampler::Sample;

/// The table as it was between two writes of the driver.
struct Epoch {
    start: Instant,
    end: Instant,
    table: BTreeMap<String, Latest>,
}

/// A change the driver itself made (or caused: a namespace deletion).
struct License {
    at: Instant,
    secret: SecretId,
    key: Option<String>,
}

/// A value becoming its name's latest: (name, order, the window in which
/// it did).
type Registration = (String, u64, (Instant, Instant));

/// What happened when, as far as the sampled writes need to know.
pub struct Timeline {
    epochs: Vec<Epoch>,
    /// (since, prune)
    prune: Vec<(Instant, bool)>,
    licenses: Vec<License>,
    /// value -> (name, order of the put)
    /// value -> its registrations as its name's latest: (name, order, the
    /// window in which it became the latest). A put's window is its batch's
    /// start; a rollback's is its whole batch (it became the latest at some
    /// moment in it: either order is right inside the window).
    puts: HashMap<String, Vec<Registration>>,
    registrations: u64,
    last_seen: HashMap<(SecretId, String), String>,
}

impl Timeline {
    pub fn new(prune: bool) -> Self {
        let now = Instant::now();
        Timeline {
            epochs: vec![Epoch {
                start: now,
                end: now,
                table: BTreeMap::new(),
            }],
            prune: vec![(now, prune)],
            licenses: Vec::new(),
            puts: HashMap::new(),
            registrations: 0,
            last_seen: HashMap::new(),
        }
    }

    /// The table after a batch of writes that ran from `start` to now.
    /// `latest`: the values that became their name's latest, in order,
    /// and whether by a rollback.
    pub fn table_written(
        &mut self,
        start: Instant,
        table: &BTreeMap<String, Latest>,
        latest: &[(String, String, bool)],
    ) {
        let end = Instant::now();
        for (name, value, rollback) in latest {
            self.registrations += 1;
            let window = if *rollback {
                (start, end)
            } else {
                (start, start)
            };
            self.puts.entry(value.clone()).or_default().push((
                name.clone(),
                self.registrations,
                window,
            ));
        }
        self.epochs.push(Epoch {
            start,
            end,
            table: table.clone(),
        });
    }

    pub fn prune_set(&mut self, prune: bool) {
        self.prune.push((Instant::now(), prune));
    }

    /// The driver is about to change `secret` (one key, or all of it).
    pub fn license(&mut self, secret: SecretId, key: Option<String>) {
        self.license_from(Instant::now(), secret, key);
    }

    /// A change of `secret` licensed from `at` (when the operation that
    /// allows it began).
    pub fn license_from(&mut self, at: Instant, secret: SecretId, key: Option<String>) {
        self.licenses.push(License { at, secret, key });
    }

    /// A check passed at `since`: older licenses are spent.
    pub fn checked(&mut self, since: Instant) {
        self.licenses.retain(|l| l.at >= since);
        if self.epochs.len() > 2 {
            self.epochs.drain(..self.epochs.len() - 2);
        }
    }

    /// Whether the driver had licensed a change of `key` (`""`: of the
    /// whole Secret) by `at`.
    pub fn licensed(&self, secret: &SecretId, key: &str, at: Instant) -> bool {
        self.licenses
            .iter()
            .any(|l| l.at <= at && &l.secret == secret && l.key.as_deref().is_none_or(|k| k == key))
    }

    /// Names in the table at every moment around `at` that map to the key.
    fn names_at(&self, secret: &SecretId, key: &str, at: Instant) -> Vec<String> {
        let maps = |epoch: &Epoch| -> Vec<String> {
            epoch
                .table
                .keys()
                .filter(|name| key_of(name).is_some_and(|(s, k)| &s == secret && k == key))
                .cloned()
                .collect()
        };
        let Some(before) = self.epochs.iter().rev().find(|e| e.end <= at) else {
            return Vec::new();
        };
        let names = maps(before);
        match self.epochs.iter().find(|e| e.start <= at && at < e.end) {
            Some(during) => {
                let during = maps(during);
                names.into_iter().filter(|n| during.contains(n)).collect()
            }
            None => names,
        }
    }

    fn prune_between(&self, from: Instant, to: Instant) -> bool {
        self.prune.iter().enumerate().any(|(i, (since, on))| {
            let until = self.prune.get(i + 1).map(|(t, _)| *t);
            *on && *since <= to && until.is_none_or(|u| u > from)
        })
    }

    /// The name of `value` and its order among the latest values as of
    /// `at`, a registration counting from the start (`early`) or the end of
    /// its window.
    fn order_at(&self, value: &str, at: Instant, early: bool) -> Option<(&str, u64)> {
        let registrations = self.puts.get(value)?;
        let since = |(from, to): (Instant, Instant)| if early { from } else { to };
        let found = registrations
            .iter()
            .rev()
            .find(|(_, _, window)| since(*window) <= at)
            .or(registrations.first())?;
        Some((found.0.as_str(), found.1))
    }

    /// Whether going from `previous` to `value` at `at` is a step back to
    /// an older version of the same name, however a rollback's window is
    /// read.
    fn went_back(&self, previous: &str, value: &str, at: Instant) -> Option<String> {
        let mut name = None;
        for early in [true, false] {
            let (name_new, order_new) = self.order_at(value, at, early)?;
            let (name_old, order_old) = self.order_at(previous, at, early)?;
            if name_old != name_new || order_new >= order_old {
                return None;
            }
            name = Some(name_new.to_owned());
        }
        name
    }

    /// Judges the writes sampled since the check at `period_start`.
    pub fn judge(&mut self, samples: &[Sample], period_start: Instant) -> Vec<String> {
        let mut out = Vec::new();
        for s in samples {
            self.judge_one(s, period_start, &mut out);
        }
        out
    }

    fn judge_one(&mut self, s: &Sample, period_start: Instant, out: &mut Vec<String>) {
        let (ns, name) = &s.secret;
        let empty = BTreeMap::new();
        let before = s.before.as_ref().map_or(&empty, |o| &o.data);
        let after = s.after.as_ref().map_or(&empty, |o| &o.data);
        let non_opaque = s.before.as_ref().is_some_and(|o| o.type_ != "Opaque");
        if non_opaque && s.before != s.after && !self.licensed(&s.secret, "", s.at) {
            out.push(format!(
                "non-Opaque Secret {ns}/{name} was changed (managers {:?})",
                s.managers
            ));
        }
        for (key, old) in before {
            let new = after.get(key);
            if new == Some(old) || self.licensed(&s.secret, key, s.at) {
                continue;
            }
            let what = if new.is_some() { "changed" } else { "removed" };
            if key.starts_with("HAND_") {
                out.push(format!(
                    "hand key {ns}/{name}:{key} was {what} (managers {:?})",
                    s.managers
                ));
                continue;
            }
            if new.is_some() {
                continue;
            }
            let names = self.names_at(&s.secret, key, s.at);
            if !names.is_empty() {
                out.push(format!(
                    "{ns}/{name}:{key} was removed while {names:?} {} in the table{}",
                    if names.len() == 1 { "was" } else { "were" },
                    if s.after.is_none() {
                        " (the whole Secret was deleted)"
                    } else {
                        ""
                    },
                ));
            } else if !self.prune_between(period_start, s.at) {
                out.push(format!("{ns}/{name}:{key} was removed with prune: false"));
            }
        }
        for (key, value) in after {
            let id = (s.secret.clone(), key.clone());
            let back = self
                .last_seen
                .get(&id)
                .and_then(|previous| Some((previous, self.went_back(previous, value, s.at)?)));
            if let Some((previous, name_new)) = back {
                out.push(format!(
                    "{ns}/{name}:{key} went back from a newer version of {name_new} ({previous}) to an older one ({value})"
                ));
            }
            self.last_seen.insert(id, value.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chaos::model::Observed;

    fn secret(pairs: &[(&str, &str)]) -> Option<Observed> {
        Some(Observed {
            type_: "Opaque".into(),
            data: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            owners: BTreeMap::new(),
            labels: BTreeMap::new(),
            annotations: BTreeMap::new(),
        })
    }

    fn write(before: Option<Observed>, after: Option<Observed>) -> Sample {
        Sample {
            at: Instant::now(),
            secret: ("ns-a".into(), "app".into()),
            before,
            after,
            managers: vec![],
            resource_version: None,
        }
    }

    fn table(pairs: &[(&str, &str)]) -> BTreeMap<String, Latest> {
        pairs
            .iter()
            .map(|(n, v)| (n.to_string(), Latest::Value(v.to_string())))
            .collect()
    }

    #[test]
    fn removing_a_key_whose_name_is_in_the_table_is_caught_even_for_a_moment() {
        let start = Instant::now();
        let mut timeline = Timeline::new(true);
        timeline.table_written(start, &table(&[("ns-a/app/user", "v1")]), &[]);
        let emptied = write(secret(&[("USER", "v1")]), secret(&[]));
        let refilled = write(secret(&[]), secret(&[("USER", "v1")]));
        let found = timeline.judge(&[emptied, refilled], start);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].contains("was removed while"), "{found:?}");
    }

    #[test]
    fn prune_false_keeps_keys_and_driver_changes_are_licensed() {
        let start = Instant::now();
        let mut timeline = Timeline::new(false);
        timeline.table_written(start, &table(&[]), &[]);
        let removed = write(secret(&[("TOKEN", "t")]), secret(&[]));
        assert_eq!(timeline.judge(&[removed], start).len(), 1);
        timeline.license(("ns-a".into(), "app".into()), Some("TOKEN".into()));
        let removed = write(secret(&[("TOKEN", "t")]), secret(&[]));
        assert!(timeline.judge(&[removed], start).is_empty());
        let hand = write(secret(&[("HAND_1", "h")]), secret(&[("HAND_1", "x")]));
        assert_eq!(
            timeline.judge(&[hand], start).len(),
            1,
            "hand keys are not ours"
        );
    }

    /// `ns-a/app/user` put as `v1`, then `v2`, in one batch from `start`;
    /// returns the name.
    fn v1_then_v2(timeline: &mut Timeline, start: Instant) -> String {
        let name = "ns-a/app/user".to_string();
        let puts = [
            (name.clone(), "v1".to_string(), false),
            (name.clone(), "v2".to_string(), false),
        ];
        timeline.table_written(start, &table(&[("ns-a/app/user", "v2")]), &puts);
        name
    }

    #[test]
    fn a_value_going_back_to_an_older_version_is_caught() {
        let start = Instant::now();
        let mut timeline = Timeline::new(false);
        v1_then_v2(&mut timeline, start);
        let forward = write(secret(&[("USER", "v1")]), secret(&[("USER", "v2")]));
        let back = write(secret(&[("USER", "v2")]), secret(&[("USER", "v1")]));
        assert!(timeline.judge(&[forward], start).is_empty());
        let found = timeline.judge(&[back], start);
        assert!(found.iter().any(|f| f.contains("went back")), "{found:?}");
    }

    /// Found by the soak on the real control plane (seed 481571620): a
    /// write of the newer value made before a rollback of it is no step
    /// back, even when judged after the rollback.
    #[test]
    fn a_rollback_makes_the_older_value_newest_only_from_then_on() {
        let start = Instant::now();
        let mut timeline = Timeline::new(false);
        let name = v1_then_v2(&mut timeline, start);
        let forward = write(secret(&[("USER", "v1")]), secret(&[("USER", "v2")]));
        timeline.table_written(
            Instant::now(),
            &table(&[("ns-a/app/user", "v1")]),
            &[(name, "v1".to_string(), true)],
        );
        let back_to_v1 = write(secret(&[("USER", "v2")]), secret(&[("USER", "v1")]));
        let found = timeline.judge(&[forward, back_to_v1], start);
        assert!(found.is_empty(), "{found:?}");
        let again = write(secret(&[("USER", "v1")]), secret(&[("USER", "v2")]));
        let found = timeline.judge(&[again], start);
        assert!(found.iter().any(|f| f.contains("went back")), "{found:?}");
    }

    /// Found by the soak (seed 349950989): `namespaceSelector` turned on
    /// with prune removes the operator's keys while the spec change is
    /// being awaited, before the operation ends: the license counts from
    /// the operation's start.
    #[test]
    fn a_change_licensed_from_its_operations_start_covers_writes_during_it() {
        let start = Instant::now();
        let mut timeline = Timeline::new(true);
        timeline.table_written(start, &table(&[("ns-a/app/user", "v1")]), &[]);
        let removed = write(secret(&[("USER", "v1")]), secret(&[]));
        assert_eq!(
            timeline.judge(std::slice::from_ref(&removed), start).len(),
            1
        );
        timeline.license_from(start, ("ns-a".into(), "app".into()), Some("USER".into()));
        assert!(timeline.judge(&[removed], start).is_empty());
    }

    /// Found by the soak on the real control plane (seed 59660529): the
    /// operator wrote the value a rollback made the latest before the
    /// rollback's batch ended; inside the batch either order is right.
    #[test]
    fn inside_a_rollbacks_batch_either_version_may_be_written() {
        let start = Instant::now();
        let mut timeline = Timeline::new(false);
        let name = v1_then_v2(&mut timeline, start);
        let forward = write(secret(&[("USER", "v1")]), secret(&[("USER", "v2")]));
        assert!(timeline.judge(&[forward], start).is_empty());
        let rollback = Instant::now();
        let during = |before: &str, after: &str| Sample {
            at: rollback,
            ..write(secret(&[("USER", before)]), secret(&[("USER", after)]))
        };
        timeline.table_written(
            rollback,
            &table(&[("ns-a/app/user", "v1")]),
            &[(name, "v1".to_string(), true)],
        );
        let found = timeline.judge(&[during("v2", "v1"), during("v1", "v2")], start);
        assert!(found.is_empty(), "{found:?}");
    }
}
