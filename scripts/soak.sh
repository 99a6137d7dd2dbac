#!/usr/bin/env bash
# The chaos soak (issue 12): random schedules, one seed after another, for
# --minutes (default 60), against moto + the API server (the fake, or with
# KUBESTASH_TEST_BACKEND=real a real control plane) + the operator. Odd seeds
# run two replicas electing a leader. The first seed is fresh (from the
# clock) unless --first-seed names one.
# Prints the summary and writes it to BENCHMARKS.md ("Reliability").
#
#   scripts/soak.sh --minutes 60 [--ops 200] [--first-seed N] [--features all]
set -euo pipefail
cd "$(dirname "$0")/.."

minutes=60 ops=200 first_seed= features=${CHAOS_FEATURES:-}
while [ $# -gt 0 ]; do
  case "$1" in
    --minutes) minutes=$2; shift 2 ;;
    --ops) ops=$2; shift 2 ;;
    --first-seed) first_seed=$2; shift 2 ;;
    --features) features=$2; shift 2 ;;
    *) echo "usage: $0 [--minutes N] [--ops N] [--first-seed N] [--features all|a,b]" >&2; exit 2 ;;
  esac
done

# The release binary, as shipped, unless KUBESTASH_BIN names another.
if [ -z "${KUBESTASH_BIN:-}" ]; then
  nice cargo build --release --locked --bin kubestash
  # A copy: a rebuild during the soak must not change the binary under test.
  KUBESTASH_BIN=$(mktemp --suffix=-kubestash)
  cp "${CARGO_TARGET_DIR:-target}/release/kubestash" "$KUBESTASH_BIN"
  chmod 755 "$KUBESTASH_BIN"
  export KUBESTASH_BIN
  built_copy=$KUBESTASH_BIN
fi

summary=$(mktemp --suffix=.json)
trap 'rm -f "$summary" ${built_copy:+"$built_copy"}' EXIT
status=0
CHAOS_MINUTES=$minutes CHAOS_OPS=$ops CHAOS_SUMMARY=$summary \
  ${first_seed:+CHAOS_FIRST_SEED=$first_seed} \
  ${features:+CHAOS_FEATURES=$features} \
  nice cargo test --test chaos -- --ignored --exact soak --nocapture || status=$?
[ -s "$summary" ] || { echo "the soak wrote no summary" >&2; exit 1; }

python3 - "$summary" BENCHMARKS.md <<'PY'
import json, sys, datetime
s = json.load(open(sys.argv[1]))
c = s["convergence_seconds"]
failed = s["failed_seeds"]
lines = [
    "## Reliability: the chaos soak (issue 12), %s API server" % s["backend"],
    "",
    "`scripts/soak.sh --minutes %d` on %s: random seeded schedules (table writes through the real"
    % (round(s["minutes"]), datetime.date.today().isoformat()),
    "credstash library, namespaces, hand edits, CredstashSync edits, operator restarts, API server",
    "and AWS faults) against moto + the API server + `kubestash run`, every check and every sampled",
    "write judged by the strict model (tests/chaos/expect.rs).",
    "",
    "| measure | value |",
    "|---|---|",
    "| duration | %.1f min, %d seeds (%s..%s), %d of them with two replicas electing a leader |" % (s["minutes"], len(s["seeds"]), s["seeds"][0]["seed"], s["seeds"][-1]["seed"], sum(1 for x in s["seeds"] if x["replicas"] > 1)),
    "| operations by family | %d (%s) |" % (s["operations"], ", ".join("%s %d" % kv for kv in sorted(s["operations_by_family"].items()))),
    "| faults by kind | %s; %d AWS requests answered with a fault |" % (", ".join("%s %d" % kv for kv in sorted(s["faults_by_kind"].items())), s["aws_faults_served"]),
    "| checks passed | %d of %d |" % (s["checks_passed"], s["checks"]),
    "| invariants passed | %s |" % ", ".join("%s %d" % kv for kv in sorted(s["invariants_passed"].items())),
    "| keys verified at passed checks | %d |" % s["keys_verified"],
    "| convergence time (end of a schedule burst to Secrets = model) | p50 %.2f s, p99 %.2f s, max %.2f s (%d periods) |" % (c["p50"], c["p99"], c["max"], c["count"]),
    "| broken seeds | %s |" % ("none" if not failed else "; ".join("seed %d after %d ops: %d (replay: %s)" % (f["seed"], f["ops"], len(f["violations"]), f["replay"]) for f in failed)),
    "| operation families | %s |" % ", ".join(s["features"]),
    "| required kinds (each at least once) | %s%s |" % (", ".join("%s %d" % kv for kv in sorted(s["required_kinds"].items())), "; never: " + ", ".join(s["unexercised_kinds"]) if s["unexercised_kinds"] else ""),
    "",
]
# The generated summary ends at a marker; what follows it in the section
# (findings, earlier runs) is written by hand and kept.
MARK = "<!-- end of the generated soak summary -->"
lines.append(MARK)
text = open(sys.argv[2]).read()
start = text.find("## Reliability: the chaos soak (issue 12), %s API server" % s["backend"])
if start < 0 and s["backend"] == "fake":
    start = text.find("## Reliability: the chaos soak (issue 12)\n")
if start >= 0:
    mark = text.find(MARK, start)
    end = mark + len(MARK) + 1 if mark >= 0 else text.find("\n## ", start + 1) + 1
    rest = text[end:] if end > 0 else ""
    text = text[:start] + "\n".join(lines) + "\n" + ("\n" + rest.lstrip("\n") if rest.strip() else "")
else:
    text = text.rstrip("\n") + "\n\n" + "\n".join(lines) + "\n"
open(sys.argv[2], "w").write(text)
print("\n".join(lines))
PY
exit $status
