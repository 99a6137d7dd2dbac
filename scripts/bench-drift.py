#!/usr/bin/env python3
"""Benchmark (issue 10): drift repair from memory.

A credstash table (`drift/app{0..9}/K{0..4}`, with a DynamoDB stream) and
the operator (release build) running one CredstashSync. After the start-up
sync, three kinds of hand edit, each repeated N times, one at a time, on the
Secrets in turn (straight to the fake API server, field manager
`kubectl-patch`):

  edit     merge patch {"data": {"K<k>": "<another value>"}}
  remove   merge patch {"data": {"K<k>": null}}
  delete   DELETE of the whole Secret

Each repair is timed from the edit's response to an HTTP watch (in this
process) delivering a newer version of the Secret (a larger resourceVersion
than the edit's; after a deletion, an ADDED) that holds every key with its
table value again. A hand-added key (`HAND`, not in the table) must survive
the edits and removals (a deletion takes it with the Secret, for good).

Then a quiet window (default 30 s): the operator must make no Secret write
at all (its own repairs must not wake another repair), checked with the
counting proxy and kubestash_secret_writes_total. Over the edits and the
quiet window the repairs must not touch the table or KMS:
kubestash_kms_decrypt_total and kubestash_table_read_duration_seconds_count
unchanged, and moto counts no Decrypt, Scan, Query or GetItem.

Usage: .venv/bin/python scripts/bench-drift.py [--edits 50] [--gap 0.2] [--quiet 30] [--direct] [--backend fake|real]
  --gap: pause after each observed repair, uniform in [0, GAP] s
  --backend real: a real control plane instead of the fake (benchlib.py's
            Env). The hand edits and the watch go through fake-apiserver
            --proxy-to; the operator's requests take operator -> counting
            proxy -> fake-apiserver --proxy-to -> kube-apiserver, or with
            --direct go straight to kube-apiserver (TLS). On the fake, the
            operator talks to the fake through the counting proxy (or
            directly with --direct).
Needs: scripts/test-env.sh, cargo build --release --bin kubestash, cargo build -p fake-apiserver.
"""
import argparse
import base64
import json
import os
import random
import sys
import time

import benchlib as bench

NS, TABLE, CSS = "drift", "drift-table", "drift"
HAND_MANAGER = "kubectl-patch"
TABLE_READ_OPS = ("Scan", "Query", "GetItem", "BatchGetItem")


def b64(text):
    return base64.b64encode(text.encode()).decode()


class NamespaceEvents(bench.NamespaceWatch):
    """Keeps every event of every Secret with the time it arrived."""

    def __init__(self, env, namespace):
        self.events = {}  # secret name -> [(time, type, rv, data)]
        super().__init__(env, namespace)

    def on_event(self, kind, secret, now):
        meta = secret["metadata"]
        data = {k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()}
        with self.cond:
            self.events.setdefault(meta["name"], []).append((now, kind, int(meta["resourceVersion"]), data))
            self.cond.notify_all()

    def latest_rv(self, name):
        with self.cond:
            return self.events[name][-1][2]

    def wait_for(self, name, after_rv, want, timeout):
        """The arrival time of the first ADDED/MODIFIED of `name` newer than
        `after_rv` whose data has every key of `want` with its value."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for at, kind, rv, data in self.events.get(name, []):
                    if kind != "DELETED" and rv > after_rv and all(data.get(k) == v for k, v in want.items()):
                        return at
                self.check()
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self.cond.wait(min(left, 0.5))


def hand_patch(env, secret, body):
    code, result = env.kube("PATCH", "/api/v1/namespaces/%s/secrets/%s?fieldManager=%s" % (NS, secret, HAND_MANAGER),
                            body, content_type="application/merge-patch+json")
    if code != 200:
        raise RuntimeError("hand patch of %s: %s %s" % (secret, code, result))
    return int(result["metadata"]["resourceVersion"])


def hand_delete(env, secret):
    code, result = env.kube("DELETE", "/api/v1/namespaces/%s/secrets/%s" % (NS, secret))
    if code not in (200, 202):
        raise RuntimeError("deleting %s: %s %s" % (secret, code, result))


def secret_writes(kube):
    return sum(v for (verb, res), v in kube.items() if res == "secrets" and verb in ("create", "update", "patch", "delete"))


def counters(env):
    m = env.metrics()
    return {
        "kms_decrypt": bench.metric(m, "kubestash_kms_decrypt_total"),
        "table_reads": bench.metric(m, "kubestash_table_read_duration_seconds_count"),
        "secret_writes": bench.metric(m, "kubestash_secret_writes_total"),
        "drift_repairs": bench.metric(m, "kubestash_drift_repairs_total"),
        "full_syncs": bench.metric(m, "kubestash_sync_total"),
    }


def delta(after, before):
    return {k: after[k] - before[k] for k in after}


def main():
    import credstash  # noqa: F401 - fail early without the venv

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--edits", type=int, default=50, help="edits of each kind")
    parser.add_argument("--secrets", type=int, default=10)
    parser.add_argument("--keys", type=int, default=5, help="keys per Secret")
    parser.add_argument("--gap", type=float, default=0.2)
    parser.add_argument("--quiet", type=float, default=30.0, help="the quiet window after the edits (s)")
    parser.add_argument("--timeout", type=float, default=10.0, help="per repair")
    parser.add_argument("--direct", action="store_true", help="no counting proxy")
    bench.add_backend_argument(parser)
    parser.add_argument("--binary", default=bench.KUBESTASH, help="the kubestash binary (default: the release build)")
    parser.add_argument("--json", help="also write the raw numbers to this file")
    args = parser.parse_args()
    bench.KUBESTASH = args.binary
    for binary in (bench.KUBESTASH, bench.FAKE):
        if not os.path.exists(binary):
            sys.exit("missing %s (cargo build --release --bin kubestash; cargo build -p fake-apiserver)" % binary)

    table_value = lambda j, k: "table-%d-%d" % (j, k)
    want = {"app%d" % j: {"K%d" % k: table_value(j, k) for k in range(args.keys)} for j in range(args.secrets)}
    env = bench.Env(direct=args.direct, backend=args.backend)
    watch = None
    try:
        env.fixture("init", TABLE)
        env.fixture("enable-stream", TABLE)
        bench.seed(TABLE, ["%s/app%d/K%d" % (NS, j, k) for j in range(args.secrets) for k in range(args.keys)],
                   lambda n: table_value(int(n.split("/")[1][3:]), int(n.split("/")[2][1:])))
        for ns in (NS, bench.OPERATOR_NS):
            env.create_namespace(ns)
        env.install_crd_and_cr(CSS, {"table": TABLE, "dryRun": False})
        env.start_operator()
        bench.wait_for(lambda: (lambda s: s.get("lastSyncTime") and (s.get("secrets") or {}).get("managed") == args.secrets)(
            env.css(CSS).get("status") or {}), 300, "the start-up sync", env)
        watch = NamespaceEvents(env, NS)
        hand_patch(env, "app0", {"data": {"HAND": b64("hand")}})
        time.sleep(1)  # any (wrong) reaction to the hand-added key comes before the measurement

        before = counters(env)
        env.moto_counts(reset=True)
        env.kube_counts(reset=True)
        rng = random.Random(10)
        kinds = {}
        t_edits = time.monotonic()
        hand_kept = None
        for kind in ("edit", "remove", "delete"):
            if kind == "delete":
                # Deleting a Secret removes its hand-added keys too; check before.
                code, app0 = env.kube("GET", "/api/v1/namespaces/%s/secrets/app0" % NS)
                hand_kept = code == 200 and (app0.get("data") or {}).get("HAND") == b64("hand")
            latencies, misses = [], 0
            k_before = env.kube_counts(reset=False)
            c_before = counters(env)
            for i in range(args.edits):
                j, k = i % args.secrets, (i // args.secrets) % args.keys
                secret, key = "app%d" % j, "K%d" % k
                if kind == "edit":
                    after_rv = hand_patch(env, secret, {"data": {key: b64("hand-%d" % i)}})
                elif kind == "remove":
                    after_rv = hand_patch(env, secret, {"data": {key: None}})
                else:
                    after_rv = watch.latest_rv(secret)
                    hand_delete(env, secret)
                answered = time.monotonic()
                seen = watch.wait_for(secret, after_rv, want[secret], args.timeout)
                if seen is None:
                    misses += 1
                    print("%s %d (%s %s): not repaired within %.0f s" % (kind, i, secret, key, args.timeout),
                          file=sys.stderr, flush=True)
                else:
                    latencies.append(max(0.0, seen - answered))
                if args.gap:
                    time.sleep(rng.uniform(0, args.gap))
            k_after = env.kube_counts(reset=False)
            c_after = counters(env)
            d = delta(c_after, c_before)
            writes = secret_writes(k_after) - secret_writes(k_before) if env.proxy else None
            kinds[kind] = {
                "edits": args.edits, "repaired": len(latencies), "misses": misses,
                "p50": bench.percentile(latencies, 50) if latencies else None,
                "p99": bench.percentile(latencies, 99) if latencies else None,
                "max": max(latencies) if latencies else None,
                "min": min(latencies) if latencies else None,
                "secret_writes_proxy": writes, "metrics": d,
            }
            print("%s: %s" % (kind, json.dumps(kinds[kind])), file=sys.stderr, flush=True)
        edits_s = time.monotonic() - t_edits
        k_edits = env.kube_counts(reset=True)
        c_edits = counters(env)

        time.sleep(args.quiet)
        k_quiet = env.kube_counts(reset=True)
        c_quiet = counters(env)
        moto = env.moto_counts(reset=True)
        quiet = {
            "seconds": args.quiet,
            "secret_writes_proxy": secret_writes(k_quiet) if env.proxy else None,
            "kube_proxy": {"%s %s" % k: v for k, v in sorted(k_quiet.items())},
            "metrics": delta(c_quiet, c_edits),
        }
        whole = delta(c_quiet, before)
        wrong = []
        for secret, keys in want.items():
            code, body = env.kube("GET", "/api/v1/namespaces/%s/secrets/%s" % (NS, secret))
            data = {k: base64.b64decode(v).decode() for k, v in (body.get("data") or {}).items()} if code == 200 else {}
            wrong += ["%s/%s" % (secret, k) for k, v in keys.items() if data.get(k) != v]
        table_reads_moto = {op: moto[op] for op in TABLE_READ_OPS if moto.get(op)}
        result = {"kinds": kinds, "quiet": quiet, "whole": whole, "moto": dict(moto),
                  "edits_s": edits_s, "kube_edits": {"%s %s" % k: v for k, v in sorted(k_edits.items())},
                  "hand_key_kept": hand_kept, "wrong": wrong}
        print(json.dumps(result), file=sys.stderr)

        print("\n%d Secrets of %d keys, %d edits of each kind, pause after each repair uniform 0-%g s, operator %s\n" % (
            args.secrets, args.keys, args.edits, args.gap, env.operator_path()))
        print("| hand edit | edits | repaired | p50 (s) | p99 (s) | max (s) | Secret writes by the operator | "
              "drift repairs counted |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|")
        for kind, r in kinds.items():
            fmt = lambda x: "%.3f" % x if x is not None else "n/a"
            print("| %s | %d | %d | %s | %s | %s | %s | %d |" % (
                kind, r["edits"], r["repaired"], fmt(r["p50"]), fmt(r["p99"]), fmt(r["max"]),
                r["secret_writes_proxy"] if r["secret_writes_proxy"] is not None
                else "%d (metric)" % r["metrics"]["secret_writes"], r["metrics"]["drift_repairs"]))
        print("\nquiet window %.0f s after the last repair: Secret writes %s (proxy), %d (metric), drift repairs %d; "
              "requests: %s" % (args.quiet, quiet["secret_writes_proxy"], quiet["metrics"]["secret_writes"],
                                quiet["metrics"]["drift_repairs"], quiet["kube_proxy"]))
        print("edits + quiet window: kubestash_kms_decrypt_total +%d, kubestash_table_read_duration_seconds_count +%d, "
              "full syncs +%d; moto table reads %s, Decrypt %d (all moto calls: %s)" % (
                  whole["kms_decrypt"], whole["table_reads"], whole["full_syncs"], table_reads_moto or "none",
                  moto.get("Decrypt", 0), dict(moto)))
        print("Kubernetes requests during the edits (%.1f s): %s" % (edits_s, result["kube_edits"]))
        print("hand-added key kept through the edits and removals: %s; keys wrong at the end: %s" % (hand_kept, wrong or "none"))
        if args.json:
            with open(args.json, "w") as f:
                json.dump(result, f, indent=1)
        failed = (any(r["misses"] for r in kinds.values()) or wrong or not hand_kept
                  or quiet["metrics"]["secret_writes"] or (quiet["secret_writes_proxy"] or 0)
                  or whole["kms_decrypt"] or whole["table_reads"] or table_reads_moto or moto.get("Decrypt", 0))
        if failed:
            sys.exit(1)
    finally:
        if watch:
            watch.close()
        env.close()


if __name__ == "__main__":
    main()
