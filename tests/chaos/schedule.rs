//! Choosing the next operation: seeded, weighted, and only among the
//! enabled families. Choices depend on the seed and the model's world only,
//! never on what the operator did, so a seed replays the same schedule.

use std::collections::{BTreeMap, BTreeSet};

use super::model::{
    key_of, normalise, Phase, World, METADATA_PREFIX, NAMESPACES, NON_OPAQUE_SECRET, SECRETS,
};
use super::ops::{AwsFault, Op, Storm, TableOp, INVALID_NAMES, REQUIRED_KINDS};
use super::rng::Rng;

/// Every operation family; `CHAOS_FEATURES` picks among them.
pub const ALL_FEATURES: [&str; 33] = [
    "table",
    "conflict",
    "tamper",
    "namespaces",
    "finalizer",
    "hand-add",
    "hand-edit",
    "delete-secret",
    "non-opaque",
    "exclude",
    "prune",
    "dry-run",
    "resync",
    "rename",
    "restart",
    "api-faults",
    "api-delays",
    "compact",
    "aws-faults",
    "storm",
    "leader",
    "rollback",
    "invalid-names",
    "odd-values",
    "watch-drops",
    "delete-css",
    "metadata",
    "second-css",
    "selector",
    "adopt",
    "table-lifecycle",
    "rollout",
    "typed",
];

/// Key names the table uses; some pairs normalise onto one key.
const KEYS: [&str; 6] = ["user", "password", "db.url", "token", "api-key", "Region"];
/// Marks every secret value, so that a leak is found by one search.
pub const VALUE_MARK: &str = "sEcReT";

/// The enabled families, from `CHAOS_FEATURES` (`all`, the default, or a
/// comma list) minus `CHAOS_WITHOUT` (to switch off a family whose failure
/// is a known bug while it is being fixed).
pub fn features_from_env() -> BTreeSet<String> {
    let list = |var: &str| -> Option<Vec<String>> {
        std::env::var(var).ok().map(|v| {
            v.split(',')
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect()
        })
    };
    let mut enabled: BTreeSet<String> = match list("CHAOS_FEATURES") {
        Some(v) if v.iter().any(|f| f == "all") => {
            ALL_FEATURES.iter().map(|s| s.to_string()).collect()
        }
        Some(v) => v.into_iter().collect(),
        None => ALL_FEATURES.iter().map(|s| s.to_string()).collect(),
    };
    for f in list("CHAOS_WITHOUT").unwrap_or_default() {
        enabled.remove(&f);
    }
    for f in &enabled {
        assert!(
            ALL_FEATURES.contains(&f.as_str()),
            "unknown chaos feature {f:?}; known: {ALL_FEATURES:?}"
        );
    }
    enabled
}

/// Picks operations for one seed.
pub struct Scheduler {
    rng: Rng,
    seed: u64,
    features: BTreeSet<String>,
    /// Operator replicas (more than one elect a leader).
    replicas: usize,
    values: u64,
    until_check: u64,
    /// Required kinds this seed has run (see [`Scheduler::unexercised`]).
    exercised: BTreeSet<&'static str>,
    /// Steps the seed runs, and steps chosen so far.
    steps: usize,
    chosen: usize,
}

impl Scheduler {
    pub fn new(seed: u64, features: BTreeSet<String>, replicas: usize, steps: usize) -> Self {
        let mut rng = Rng::new(seed);
        let until_check = rng.between(3, 8);
        Scheduler {
            rng,
            seed,
            features,
            replicas,
            values: 0,
            until_check,
            exercised: BTreeSet::new(),
            steps,
            chosen: 0,
        }
    }

    fn on(&self, feature: &str) -> bool {
        self.features.contains(feature)
    }

    /// A fresh, unique, marked secret value; with `odd-values`, now and
    /// then a large one (48 KiB) or one of control characters and
    /// multi-byte text.
    fn value(&mut self) -> String {
        self.values += 1;
        let value = format!(
            "{VALUE_MARK}-{}-{}-{}",
            self.seed,
            self.values,
            self.rng.hex(8)
        );
        if !self.on("odd-values") {
            return value;
        }
        match self.rng.below(10) {
            0 => format!("{value}:{}", self.rng.hex(48 * 1024)),
            1 => format!("{value}\n\t\u{0}\r\n é ✓ 🔑 \u{7f}\"'\\"),
            _ => value,
        }
    }

    /// The next operation (a check after every few), now and then one of a
    /// required kind the seed has not run yet, so that every run exercises
    /// each of them.
    pub fn next(&mut self, world: &World) -> Op {
        let op = self.pick(world);
        self.chosen += 1;
        self.exercised.extend(op.kinds());
        op
    }

    /// Required kinds still to run, enabled and not run yet.
    fn missing(&self) -> Vec<&'static str> {
        REQUIRED_KINDS
            .iter()
            .filter(|(kind, feature)| self.on(feature) && !self.exercised.contains(kind))
            .filter(|(kind, _)| *kind != "lease-fault" || self.replicas > 1)
            .map(|(kind, _)| *kind)
            .collect()
    }

    /// Whether the steps left would not otherwise leave room for every
    /// missing kind (and the checks between them).
    fn pressed(&self) -> bool {
        let left = self.steps.saturating_sub(self.chosen);
        left <= self.missing().len() * 3 / 2 + 2
    }

    /// An operation of a required kind not run yet, if one can run now.
    fn unexercised(&mut self, world: &World) -> Option<Op> {
        let missing = self.missing();
        let names: Vec<String> = world.table.keys().cloned().collect();
        let active: Vec<String> = world
            .namespaces
            .iter()
            .filter(|(_, p)| **p == Phase::Active)
            .map(|(ns, _)| ns.clone())
            .collect();
        // In a random order: every kind gets its turn across seeds.
        let mut missing = missing;
        for i in (1..missing.len()).rev() {
            let j = self.rng.below(i as u64 + 1) as usize;
            missing.swap(i, j);
        }
        for kind in missing {
            let op = match kind {
                "rollback" if !names.is_empty() => Op::Table(vec![TableOp::Rollback {
                    name: self.rng.pick(&names).clone(),
                }]),
                "invalid-name" => Op::Table(vec![TableOp::Put {
                    name: self.rng.pick(&INVALID_NAMES).to_string(),
                    value: self.value(),
                }]),
                "odd-value" => Op::Table(vec![TableOp::Put {
                    name: self.new_name(),
                    value: format!("{}\n\t\u{0} é ✓ {}", self.value(), self.rng.hex(4096)),
                }]),
                // A kind that needs what is not there yet prepares it.
                "delete-css" | "selector" | "metadata" | "adopt" if !world.css.exists => {
                    Op::CreateCss
                }
                "rollback" if names.is_empty() => Op::Table(vec![TableOp::Put {
                    name: self.new_name(),
                    value: self.value(),
                }]),
                "storm" => Op::StormCheck(self.storm()),
                "second-css" => Op::SetSecondCss(!world.second.exists),
                "delete-css" if world.css.exists => Op::DeleteCss,
                "label-namespace" if !active.is_empty() => {
                    let namespace = self.rng.pick(&active).clone();
                    Op::LabelNamespace {
                        selected: !world.labelled.contains(&namespace),
                        namespace,
                    }
                }
                "selector" if world.css.exists => Op::SetSelector(!world.css.selector),
                "metadata" if world.css.exists => Op::SetMetadata {
                    labels: BTreeMap::from([(format!("{METADATA_PREFIX}team"), "v0".into())]),
                    annotations: BTreeMap::new(),
                },
                "adopt" if world.css.exists => Op::SetAdopt(!world.css.adopt),
                "recreate-table" => Op::RecreateTable,
                "replace-stream" => Op::ReplaceStream,
                "watch-drop" => Op::DropWatches,
                "lease-fault" if self.replicas > 1 => Op::ApiFault {
                    verb: "patch".into(),
                    resource: "leases".into(),
                    count: 3,
                    code: 500,
                },
                _ => continue,
            };
            return Some(op);
        }
        None
    }

    fn pick(&mut self, world: &World) -> Op {
        if self.until_check == 0 {
            self.until_check = self.rng.between(3, 8);
            let storm_missing = !self.exercised.contains("storm");
            let steer = storm_missing && (self.pressed() || self.rng.chance(50));
            if self.on("storm") && (self.rng.chance(25) || steer) {
                return Op::StormCheck(self.storm());
            }
            return Op::Check;
        }
        self.until_check -= 1;
        // Steered now and then, and always when pressed for room.
        if self.pressed() || self.rng.chance(25) {
            if let Some(op) = self.unexercised(world) {
                return op;
            }
        }
        loop {
            let families: [(&str, u64); 8] = [
                ("table", 45),
                ("namespaces", 8),
                ("hand", 10),
                ("css", 8),
                ("restart", 4),
                ("api", 12),
                ("aws", 8),
                ("resync", 3),
            ];
            let weights: Vec<u64> = families.iter().map(|(_, w)| *w).collect();
            let family = families[self.rng.weighted(&weights)].0;
            let op = match family {
                "table" => self.table(world),
                "namespaces" => self.namespace(world),
                "hand" => self.hand(world),
                "css" => self.css(world),
                "restart" if self.on("restart") => Some(Op::Restart {
                    kill: self.rng.chance(50),
                }),
                "api" => self.api(),
                "aws" if self.on("aws-faults") => Some(Op::Aws(self.aws())),
                "resync" if self.on("resync") && world.css.exists => Some(Op::Resync),
                _ => None,
            };
            if let Some(op) = op {
                return op;
            }
        }
    }

    fn table(&mut self, world: &World) -> Option<Op> {
        if !self.on("table") {
            return None;
        }
        let burst = if self.rng.chance(15) {
            self.rng.between(8, 25)
        } else {
            self.rng.between(1, 4)
        };
        let mut names: Vec<String> = world.table.keys().cloned().collect();
        let mut ops = Vec::new();
        for _ in 0..burst {
            let kind = self.rng.weighted(&[35, 30, 12, 5, 3, 8, 6, 3]);
            let op = match kind {
                1..=4 if names.is_empty() => None,
                1 => Some(TableOp::Put {
                    name: self.rng.pick(&names).clone(),
                    value: self.value(),
                }),
                2 => Some(TableOp::Delete {
                    name: self.rng.pick(&names).clone(),
                }),
                3 if self.on("tamper") => Some(TableOp::Tamper {
                    name: self.rng.pick(&names).clone(),
                }),
                4 if self.on("tamper") => Some(TableOp::WrongContext {
                    name: self.rng.pick(&names).clone(),
                    value: self.value(),
                }),
                5 if self.on("conflict") && !names.is_empty() => {
                    let name = self.rng.pick(&names).clone();
                    variant(&name, &mut self.rng).map(|name| TableOp::Put {
                        name,
                        value: self.value(),
                    })
                }
                6 if self.on("rollback") && !names.is_empty() => Some(TableOp::Rollback {
                    name: self.rng.pick(&names).clone(),
                }),
                7 if self.on("invalid-names") => Some(TableOp::Put {
                    name: self.rng.pick(&INVALID_NAMES).to_string(),
                    value: self.value(),
                }),
                0 => Some(TableOp::Put {
                    name: self.new_name(),
                    value: self.value(),
                }),
                _ => None,
            };
            if let Some(op) = op {
                match &op {
                    TableOp::Delete { name } => names.retain(|n| n != name),
                    TableOp::Rollback { .. } => {}
                    other if !names.iter().any(|n| n == other.name()) => {
                        names.push(other.name().to_owned())
                    }
                    _ => {}
                }
                ops.push(op);
            }
        }
        (!ops.is_empty()).then_some(Op::Table(ops))
    }

    fn new_name(&mut self) -> String {
        let ns = *self.rng.pick(&NAMESPACES);
        let secret = *self.rng.pick(&SECRETS);
        let key = *self.rng.pick(&KEYS);
        format!("{ns}/{secret}/{key}")
    }

    fn namespace(&mut self, world: &World) -> Option<Op> {
        if !self.on("namespaces") {
            return None;
        }
        let ns = self.rng.pick(&NAMESPACES).to_string();
        if self.on("selector")
            && world.namespaces.get(&ns) == Some(&Phase::Active)
            && self.rng.chance(30)
        {
            return Some(Op::LabelNamespace {
                selected: !world.labelled.contains(&ns),
                namespace: ns,
            });
        }
        match world.namespaces.get(&ns) {
            None => Some(Op::CreateNamespace(ns)),
            Some(Phase::Terminating) => Some(Op::ReleaseNamespace(ns)),
            Some(Phase::Active) => {
                let held = self.on("finalizer") && self.rng.chance(50);
                Some(Op::DeleteNamespace {
                    namespace: ns,
                    held,
                })
            }
        }
    }

    fn hand(&mut self, world: &World) -> Option<Op> {
        let active: Vec<&String> = world
            .namespaces
            .iter()
            .filter(|(_, p)| **p == Phase::Active)
            .map(|(ns, _)| ns)
            .collect();
        if active.is_empty() {
            return None;
        }
        let ns = (*self.rng.pick(&active)).clone();
        let owned: Vec<(String, String)> = world
            .desired()
            .into_iter()
            .filter(|((n, s), _)| {
                *n == ns && !world.non_opaque.contains_key(&(n.clone(), s.clone()))
            })
            .flat_map(|((_, s), keys)| keys.into_keys().map(move |k| (s.clone(), k)))
            .collect();
        match self.rng.below(5) {
            // Only to `app`: `db` is the rollout's, whose digest covers
            // every key.
            0 if self.on("hand-add") => {
                let secret = "app".to_string();
                let key = format!("HAND_{}", self.rng.between(1, 3));
                Some(Op::HandAdd {
                    secret: (ns, secret),
                    key,
                    value: self.value(),
                })
            }
            1 if self.on("hand-edit") && !owned.is_empty() => {
                let (secret, key) = self.rng.pick(&owned).clone();
                Some(Op::HandEdit {
                    secret: (ns, secret),
                    key,
                    value: self.value(),
                })
            }
            2 if self.on("hand-edit") && !owned.is_empty() => {
                let (secret, key) = self.rng.pick(&owned).clone();
                Some(Op::HandRemove {
                    secret: (ns, secret),
                    key,
                })
            }
            3 if self.on("delete-secret") => {
                let secret = self.rng.pick(&["app", "db"]).to_string();
                Some(Op::DeleteSecret((ns, secret)))
            }
            4 if self.on("non-opaque")
                && !world.svc_named.contains(&ns)
                && !world
                    .non_opaque
                    .contains_key(&(ns.clone(), NON_OPAQUE_SECRET.to_string())) =>
            {
                let secret = (ns, NON_OPAQUE_SECRET.to_string());
                Some(Op::CreateNonOpaque {
                    secret,
                    key: "tls.crt".into(),
                    value: self.value(),
                })
            }
            _ => None,
        }
    }

    fn css(&mut self, world: &World) -> Option<Op> {
        if !world.css.exists {
            return Some(Op::CreateCss);
        }
        match self.rng.below(11) {
            4 if self.on("delete-css") => Some(Op::DeleteCss),
            6 if self.on("second-css") => Some(Op::SetSecondCss(!world.second.exists)),
            7 if self.on("selector") => Some(Op::SetSelector(!world.css.selector)),
            8 if self.on("adopt") => Some(Op::SetAdopt(!world.css.adopt && self.rng.chance(70))),
            9 if self.on("table-lifecycle") => Some(if self.rng.chance(70) {
                Op::ReplaceStream
            } else {
                Op::RecreateTable
            }),
            5 if self.on("metadata") => {
                let mut pick = |prefix: &str| -> BTreeMap<String, String> {
                    let mut out = BTreeMap::new();
                    for key in ["team", "tier"] {
                        if self.rng.chance(60) {
                            let value = format!("v{}", self.rng.below(3));
                            out.insert(format!("{prefix}{key}"), value);
                        }
                    }
                    out
                };
                let labels = pick(METADATA_PREFIX);
                let annotations = pick(METADATA_PREFIX);
                Some(Op::SetMetadata {
                    labels,
                    annotations,
                })
            }
            0 if self.on("exclude") => {
                let list = NAMESPACES
                    .iter()
                    .filter(|_| self.rng.chance(25))
                    .map(|s| s.to_string())
                    .collect();
                Some(Op::SetExcluded(list))
            }
            1 if self.on("prune") => Some(Op::SetPrune(!world.css.prune)),
            // Dry run is switched off again soon after: mostly writing.
            2 if self.on("dry-run") => {
                Some(Op::SetDryRun(!world.css.dry_run && self.rng.chance(60)))
            }
            3 if self.on("rename") => Some(Op::Rename),
            _ => None,
        }
    }

    fn api(&mut self) -> Option<Op> {
        let faults = self.on("api-faults");
        let delays = self.on("api-delays");
        let compact = self.on("compact");
        let lease = self.on("leader") && self.replicas > 1;
        match self.rng.below(5) {
            4 if lease => {
                let code = *self.rng.pick(&[500u16, 409, 429]);
                Some(Op::ApiFault {
                    verb: "patch".into(),
                    resource: "leases".into(),
                    count: self.rng.between(1, 6) as u32,
                    code,
                })
            }
            0 | 1 if faults => {
                let (verb, resource) = *self.rng.pick(&[
                    ("patch", "secrets"),
                    ("patch", "secrets"),
                    ("create", "secrets"),
                    ("list", "secrets"),
                    ("list", "namespaces"),
                    ("patch", "credstashsyncs/status"),
                ]);
                let code = *self.rng.pick(&[429u16, 500, 500, 409]);
                let code = if verb == "list" && code == 409 {
                    500
                } else {
                    code
                };
                let count = self.rng.between(1, 3) as u32;
                Some(Op::ApiFault {
                    verb: verb.into(),
                    resource: resource.into(),
                    count,
                    code,
                })
            }
            2 if delays => {
                let (verb, resource) = *self.rng.pick(&[
                    ("list", "namespaces"),
                    ("list", "secrets"),
                    ("watch", "namespaces"),
                    ("watch", "secrets"),
                ]);
                let millis = self.rng.between(500, 4000);
                Some(Op::ApiDelay {
                    verb: verb.into(),
                    resource: resource.into(),
                    millis,
                })
            }
            3 if compact && self.rng.chance(50) => Some(Op::Compact),
            3 if self.on("watch-drops") => Some(Op::DropWatches),
            _ => None,
        }
    }

    fn storm(&mut self) -> Storm {
        Storm {
            patch_429s: self.rng.between(2, 8) as u32,
            slow_list_ms: self.rng.between(500, 3000),
            aws_throttles: self.rng.between(1, 5) as u32,
        }
    }

    fn aws(&mut self) -> AwsFault {
        match self.rng.below(4) {
            0 => AwsFault::Throttle(self.rng.between(1, 6) as u32),
            1 => AwsFault::ServerError(self.rng.between(1, 4) as u32),
            2 => AwsFault::Drop(self.rng.between(1, 3) as u32),
            _ => AwsFault::Outage(self.rng.between(1000, 6000)),
        }
    }
}

/// Another spelling of `name`'s key that normalises onto the same key.
fn variant(name: &str, rng: &mut Rng) -> Option<String> {
    key_of(name)?;
    let (prefix, key) = name.rsplit_once('/')?;
    // Spellings, before any rename of the typed family.
    let normal = normalise(key);
    let candidates: Vec<String> = [
        key.to_uppercase(),
        key.to_lowercase(),
        key.replace('.', "-"),
        key.replace('-', "."),
        key.replace(['.', '-'], "_"),
        normal.clone(),
    ]
    .into_iter()
    .filter(|k| k != key && normalise(k) == normal)
    .collect();
    (!candidates.is_empty()).then(|| format!("{prefix}/{}", rng.pick(&candidates)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chaos::ops::REQUIRED_KINDS;

    fn exercised(seed: u64, replicas: usize, steps: usize) -> BTreeSet<&'static str> {
        let features: BTreeSet<String> = ALL_FEATURES.iter().map(|f| f.to_string()).collect();
        let mut scheduler = Scheduler::new(seed, features, replicas, steps);
        let mut world = World::new("c");
        let mut kinds = BTreeSet::new();
        for _ in 0..steps {
            let op = scheduler.next(&world);
            kinds.extend(op.kinds());
            world.apply(&op);
        }
        kinds
    }

    /// Every CI seed must exercise every required kind, so that a run
    /// never fails for want of coverage (and a replay stays the same).
    #[test]
    fn every_seed_of_thirty_steps_runs_every_required_kind() {
        for seed in 1..=200 {
            for replicas in [1, 2] {
                let kinds = exercised(seed, replicas, 30);
                let missing: Vec<&str> = REQUIRED_KINDS
                    .iter()
                    .map(|(kind, _)| *kind)
                    .filter(|kind| *kind != "lease-fault" || replicas > 1)
                    .filter(|kind| !kinds.contains(kind))
                    .collect();
                assert!(
                    missing.is_empty(),
                    "seed {seed}, {replicas} replicas: {missing:?}"
                );
            }
        }
    }

    #[test]
    fn a_seed_schedules_the_same_operations_every_time() {
        let features: BTreeSet<String> = ALL_FEATURES.iter().map(|f| f.to_string()).collect();
        let run = || {
            let mut scheduler = Scheduler::new(7, features.clone(), 2, 40);
            let mut world = World::new("c");
            (0..40)
                .map(|_| {
                    let op = scheduler.next(&world);
                    world.apply(&op);
                    op.to_string()
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(run(), run());
    }
}
