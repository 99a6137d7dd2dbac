#!/usr/bin/env python3
"""Benchmark (issue 5): stream latency with `waitTime: 0s`.

A credstash table with a DynamoDB stream (enabled before the operator starts),
the operator (release build) running a CredstashSync with waitTime 0s. Then N
sequential puts (credstash's putSecret with an explicit, increasing version:
GenerateDataKey + PutItem, no Query) of a new value of one key; after each,
the time from putSecret returning until a watch on the Secret (HTTP watch
against the fake API server, in this process) delivers the new value.

Reports p50/p90/p99/max latency, and moto's Query and Decrypt calls between the
first put and the last Secret update, divided by N (the puts themselves make
neither), plus the operator's Secret writes per put.

Usage: .venv/bin/python scripts/bench-stream.py [--puts 200] [--background-keys 1000] [--gap S] [--proxy]
                                               [--backend fake|real]
  --gap: sleep uniform [0, S] s before each put (0: back to back, the default)
  --background-keys: other keys in the table (ns bg), so the snapshot is not trivial
  --proxy: put the counting proxy of benchlib.py between operator and fake
  --backend fake|real: the fake API server (default) or a real control plane
            (benchlib.py's Env). On real, the operator talks straight to
            kube-apiserver (TLS, admin client certificate), or with --proxy
            through counting proxy -> fake-apiserver --proxy-to ->
            kube-apiserver; the watch goes through fake-apiserver --proxy-to.
            On the fake, the operator talks to it directly (or through the
            counting proxy with --proxy).
Needs: scripts/test-env.sh, cargo build --release --bin kubestash, cargo build -p fake-apiserver.
"""
import argparse
import base64
import json
import random
import statistics
import sys
import time

import benchlib as bench

NS, SECRET, KEY = "stream", "target", "KEY"
NAME = "%s/%s/%s" % (NS, SECRET, KEY)


class SecretWatch(bench.NamespaceWatch):
    """Watches one Secret; remembers when each value of KEY was first seen."""

    def __init__(self, env):
        self.seen = {}
        super().__init__(env, NS, SECRET)

    def on_event(self, kind, secret, now):
        if kind == "DELETED":
            return
        raw = (secret.get("data") or {}).get(KEY)
        if raw is None:
            return
        value = base64.b64decode(raw).decode()
        with self.cond:
            self.seen.setdefault(value, now)
            self.cond.notify_all()

    def wait(self, value, timeout):
        deadline = time.monotonic() + timeout
        with self.cond:
            while value not in self.seen:
                self.check()
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self.cond.wait(min(left, 0.5))
            return self.seen[value]


def main():
    import credstash

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--puts", type=int, default=200)
    parser.add_argument("--background-keys", type=int, default=1000)
    parser.add_argument("--proxy", action="store_true")
    bench.add_backend_argument(parser)
    parser.add_argument("--timeout", type=float, default=30.0, help="per put")
    parser.add_argument("--gap", type=float, default=0.0,
                        help="quiet time before each put: uniform random in [0, GAP] s (default 0: back to back)")
    parser.add_argument("--json", help="also write the raw numbers to this file")
    args = parser.parse_args()
    table, css = "stream-table", "bench"

    env = bench.Env(direct=not args.proxy, backend=args.backend)
    watch = None
    try:
        env.fixture("init", table)
        env.fixture("enable-stream", table)
        bench.seed(table, [NAME] + ["bg/secret%d/KEY_%d" % (i // 10, i) for i in range(args.background_keys)],
                   lambda n: "initial")
        for ns in (NS, "bg", bench.OPERATOR_NS):
            env.create_namespace(ns)
        env.install_crd_and_cr(css, {"table": table, "dryRun": False, "waitTime": "0s", "minResyncInterval": "0s"})
        env.start_operator()
        bench.wait_for(lambda: (lambda s: s.get("lastSyncTime") and (s.get("secrets") or {}).get("created"))(
            env.css(css).get("status") or {}), 300, "the start-up sync", env)
        watch = SecretWatch(env)
        if watch.wait("initial", 10) is None:
            raise RuntimeError("the Secret does not hold the initial value")
        # The stream follower is opened before the start-up sync; wait until the
        # status says it is following, so the first put is not lost in start-up.
        bench.wait_for(lambda: any(c.get("type") == "Streaming" and c.get("status") == "True"
                                   for c in (env.css(css).get("status") or {}).get("conditions", [])),
                       60, "the Streaming condition", env)

        m_before = env.metrics()
        env.moto_counts(reset=True)
        env.kube_counts(reset=True)
        latencies, misses = [], 0
        t_start = time.monotonic()
        rng = random.Random(5)
        for i in range(args.puts):
            if args.gap:
                time.sleep(rng.uniform(0, args.gap))
            value = "value %d %d" % (i, time.time_ns())
            credstash.putSecret(NAME, value, version=i + 2, table=table)
            returned = time.monotonic()
            seen = watch.wait(value, args.timeout)
            if seen is None:
                misses += 1
                print("put %d: not seen within %.0f s" % (i, args.timeout), file=sys.stderr, flush=True)
                continue
            latencies.append(max(0.0, seen - returned))
        elapsed = time.monotonic() - t_start
        moto = env.moto_counts(reset=True)
        kube = env.kube_counts(reset=True)
        m_after = env.metrics()
        hwm = env.rss_kib()[0]  # VmHWM (rss_kib also returns VmRSS, RssFile, RssAnon)
        d = lambda name, **kw: bench.metric(m_after, name, **kw) - bench.metric(m_before, name, **kw)
        n = args.puts
        result = {
            "puts": n, "seen": len(latencies), "misses": misses, "elapsed_s": elapsed,
            "p50": bench.percentile(latencies, 50), "p90": bench.percentile(latencies, 90),
            "p99": bench.percentile(latencies, 99), "max": max(latencies), "min": min(latencies),
            "mean": statistics.mean(latencies),
            "moto": dict(moto),
            "query_per_put": moto.get("Query", 0) / n, "decrypt_per_put": moto.get("Decrypt", 0) / n,
            "scan": moto.get("Scan", 0), "getrecords": moto.get("GetRecords", 0),
            "secret_writes_per_put": d("kubestash_secret_writes_total") / n,
            "stream_apply": {"%s" % dict(l).get("result"): v - m_before.get((nm, l), 0)
                             for (nm, l), v in m_after.items() if nm == "kubestash_stream_apply_total"},
            "full_syncs": d("kubestash_sync_total"),
            "kube_metric": {"%s %s" % (dict(l)["verb"], dict(l)["code"]): v - m_before.get((nm, l), 0)
                            for (nm, l), v in m_after.items() if nm == "kubestash_kube_api_requests_total"
                            and v - m_before.get((nm, l), 0)},
            "kube_proxy": {"%s %s" % k: v for k, v in sorted(kube.items())},
            "vmhwm_mib": hwm / 1024.0,
        }
        print(json.dumps(result), file=sys.stderr)
        print("\n%d sequential puts of %s (background keys: %d, gap before each put: uniform 0-%g s), waitTime 0s, operator %s\n" % (
            n, NAME, args.background_keys, args.gap, env.operator_path()))
        print("| puts | p50 (s) | p90 (s) | p99 (s) | max (s) | Query / put | Decrypt / put | Secret writes / put |")
        print("|---:|---:|---:|---:|---:|---:|---:|---:|")
        print("| %d | %.3f | %.3f | %.3f | %.3f | %.2f | %.2f | %.2f |" % (
            n, result["p50"], result["p90"], result["p99"], result["max"], result["query_per_put"],
            result["decrypt_per_put"], result["secret_writes_per_put"]))
        print("\nmissed: %d; min %.3f s, mean %.3f s; total %.1f s; moto calls during the puts: %s" % (
            misses, result["min"], result["mean"], elapsed, result["moto"]))
        print("stream applies: %s; full syncs: %d; kube requests (operator metric): %s; proxy: %s; peak RSS %.1f MiB" % (
            result["stream_apply"], result["full_syncs"], result["kube_metric"], result["kube_proxy"], result["vmhwm_mib"]))
        if args.json:
            with open(args.json, "w") as f:
                json.dump(result, f, indent=1)
        if misses:
            sys.exit(1)
    finally:
        if watch:
            watch.close()
        env.close()


if __name__ == "__main__":
    main()
