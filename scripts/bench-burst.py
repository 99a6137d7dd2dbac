#!/usr/bin/env python3
"""Benchmark (issue 10): bursts of concurrent puts, nothing lost or reverted.

A credstash table with a DynamoDB stream (enabled before the operator starts)
holding one SEED key in each of 40 Secrets (namespace `burst`), the operator
(release build) running a CredstashSync that follows the stream (`waitTime`
0s by default). Then, for each round r, two bursts of 1,000 puts by 8 writer
threads (credstash's own putSecret, each after getHighestVersion, as
tests/support/fixture.py `burst` does), in a separate process so that the
writers do not share this process's interpreter lock with the watch:

  new       1,000 new names burst/s{i % 40}/R{r}_K_{i}, version 1
  versions  then 1,000 new versions (2) of the same names

An HTTP watch on every Secret of the namespace (in this process, straight to
the fake API server) records when each (Secret, key, value) is first seen,
and every time a key already seen goes missing or falls back to an older
value (a revert). Each burst waits until every put has landed (or a timeout)
before the next one starts; at the end every Secret is read and each key's
value compared with the last one put.

Per burst: landing time per put (putSecret returning -> the watch delivering
the value) p50/p99/max, the time from the last put returning to all landed
(goal: within 5 s), puts per second, Kubernetes requests per put (counting
proxy, by verb and resource), KMS Decrypt per put (moto; the writers make
none), stream applies, Secret writes.

Usage: .venv/bin/python scripts/bench-burst.py [--rounds 3] [--puts 1000] [--secrets 40]
                                              [--writers 8] [--wait-time 0s] [--direct] [--backend fake|real]
  --direct: no counting proxy (Kubernetes requests from the operator's metric only)
  --backend fake|real: the fake API server (default) or a real control plane
            (benchlib.py's Env). On real, the watch goes through
            fake-apiserver --proxy-to, and the operator's requests take
            operator -> counting proxy -> fake-apiserver --proxy-to ->
            kube-apiserver, or with --direct go straight to kube-apiserver
            (TLS). On the fake: operator -> counting proxy -> fake, or direct.
Needs: scripts/test-env.sh, cargo build --release --bin kubestash, cargo build -p fake-apiserver.
"""
import argparse
import base64
import json
import os
import subprocess
import sys
import time
from collections import Counter

import benchlib as bench

NS, TABLE, CSS = "burst", "burst-table", "burst"


def value_rank(value):
    """Values are 'seed' or 'r{round}-v{version}-{i}': later puts rank higher."""
    if value == "seed":
        return (0, 0)
    try:
        r, v, _ = value.split("-", 2)
        return (int(r[1:]), int(v[1:]))
    except ValueError:
        return (-1, -1)


class BurstWatch(bench.NamespaceWatch):
    """Remembers when each (Secret, key, value) was first seen, and each key
    that went missing or back to an older value after a newer one was seen."""

    def __init__(self, env, namespace):
        self.seen = {}
        self.best = {}      # (secret, key) -> the highest-ranked value seen
        self.incidents = []  # (time, secret, key, what)
        self.events = 0
        super().__init__(env, namespace)

    def on_event(self, kind, secret, now):
        name = secret["metadata"]["name"]
        data = {} if kind == "DELETED" else {
            k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()}
        with self.cond:
            self.events += 1
            for key, value in data.items():
                self.seen.setdefault((name, key, value), now)
            for (sec, key), best in self.best.items():
                if sec != name:
                    continue
                have = data.get(key)
                if have is None:
                    self.incidents.append((now, name, key, "missing (had %s)" % best))
                elif value_rank(have) < value_rank(best):
                    self.incidents.append((now, name, key, "reverted %s -> %s" % (best, have)))
            for key, value in data.items():
                if value_rank(value) > value_rank(self.best.get((name, key), "")):
                    self.best[(name, key)] = value
            self.cond.notify_all()

    def wait_all(self, triples, timeout):
        """Waits until every (secret, key, value) was seen; returns the missing ones."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                missing = [t for t in triples if t not in self.seen]
                if not missing:
                    return []
                self.check()
                left = deadline - time.monotonic()
                if left <= 0:
                    return missing
                self.cond.wait(min(left, 0.5))


def run_writers(jobs, writers, rate):
    """Puts every (name, value) from `writers` threads of a separate process
    (at most `rate` puts per second in all, 0: as fast as they go); returns
    [(name, value, t_start, t_done)] on time.monotonic() (CLOCK_MONOTONIC:
    the same clock in both processes)."""
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--writer", TABLE, str(writers), str(rate)],
                          input=json.dumps(jobs).encode(), stdout=subprocess.PIPE, check=True)
    return json.loads(proc.stdout)


def writer_main(table, writers, rate):
    from concurrent.futures import ThreadPoolExecutor

    import credstash

    jobs = json.load(sys.stdin)
    began = time.monotonic()

    def put(indexed):
        index, (name, value) = indexed
        if rate:
            time.sleep(max(0.0, began + index / rate - time.monotonic()))
        t_start = time.monotonic()
        version = int(credstash.getHighestVersion(name, table=table)) + 1
        credstash.putSecret(name, value, version=version, table=table)
        return [name, value, t_start, time.monotonic()]
    with ThreadPoolExecutor(max_workers=writers) as pool:
        results = list(pool.map(put, enumerate(jobs)))
    json.dump(results, sys.stdout)


def requests_summary(kube):
    by = Counter()
    for (verb, resource), n in kube.items():
        by["%s %s" % (verb, resource)] += n
    return dict(sorted(by.items()))


def one_burst(env, watch, args, label, jobs, key_of):
    m_before = env.metrics()
    env.moto_counts(reset=True)
    env.kube_counts(reset=True)
    started = time.monotonic()
    results = run_writers(jobs, args.writers, args.rate)
    last_put = max(r[3] for r in results)
    triples = [key_of(name) + (value,) for name, value, _, _ in results]
    missing = watch.wait_all(triples, args.timeout)
    if missing:
        print("%s: %d puts not seen within %.0f s of the last put, e.g. %s" % (
            label, len(missing), args.timeout, missing[:5]), file=sys.stderr, flush=True)
    # Let the operator's follow-up requests (status, events) of this burst land
    # in this burst's counts.
    time.sleep(1.0)
    moto = env.moto_counts(reset=True)
    kube = env.kube_counts(reset=True)
    m_after = env.metrics()
    d = lambda name, **kw: bench.metric(m_after, name, **kw) - bench.metric(m_before, name, **kw)
    n = len(jobs)
    secret_writes = sum(v for (verb, res), v in kube.items()
                        if res == "secrets" and verb in ("create", "update", "patch"))
    result = {
        "burst": label, "puts": n, "landed": n - len(missing), "missing": len(missing),
        "put_seconds": last_put - started, "puts_per_s": n / max(1e-9, last_put - min(r[2] for r in results)),
        "kube_requests": requests_summary(kube) if env.proxy else None,
        "kube_per_put": sum(kube.values()) / n if env.proxy else None,
        "secret_writes": secret_writes if env.proxy else None,
        "secret_writes_metric": d("kubestash_secret_writes_total"),
        "kube_metric": {"%s %s" % (dict(l)["verb"], dict(l)["code"]): v - m_before.get((nm, l), 0)
                        for (nm, l), v in m_after.items() if nm == "kubestash_kube_api_requests_total"
                        and v - m_before.get((nm, l), 0)},
        "stream_records": d("kubestash_stream_records_total"),
        "stream_apply": {"%s" % dict(l).get("result"): v - m_before.get((nm, l), 0)
                         for (nm, l), v in m_after.items() if nm == "kubestash_stream_apply_total"
                         and v - m_before.get((nm, l), 0)},
        "full_syncs": d("kubestash_sync_total"),
        "drift_repairs": d("kubestash_drift_repairs_total"),
        "decrypt_per_put": moto.get("Decrypt", 0) / n,
        "moto_calls_per_s": sum(moto.values()) / max(1e-9, time.monotonic() - started),
        "moto": dict(moto),
        "kube_counts": kube,
        "put_records": results, "triples": triples,
    }
    landing_numbers(result, watch)
    print("%s: %s" % (label, json.dumps({k: v for k, v in result.items() if k not in INTERNAL})),
          file=sys.stderr, flush=True)
    return result


INTERNAL = ("kube_counts", "put_records", "triples")


def landing_numbers(result, watch):
    """Landing time per put (putSecret returned -> the watch saw the value)
    over every put seen so far, and the time from the last put to the last
    landing (None while some are not seen)."""
    results, triples = result["put_records"], result["triples"]
    with watch.cond:
        seen = [watch.seen.get(t) for t in triples]
    landing = [max(0.0, s - r[3]) for s, r in zip(seen, results) if s is not None]
    result["seen"] = len(landing)
    result["p50"] = bench.percentile(landing, 50) if landing else None
    result["p99"] = bench.percentile(landing, 99) if landing else None
    result["max"] = max(landing) if landing else None
    result["last_put_to_all_landed"] = (max(seen) - max(r[3] for r in results)) if None not in seen else None


def final_check(env, expected):
    """Reads every Secret; returns the keys whose value is not the last one put."""
    wrong = []
    secrets = sorted({s for s, _ in expected})
    for name in secrets:
        code, secret = env.kube("GET", "/api/v1/namespaces/%s/secrets/%s" % (NS, name))
        data = {k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()} if code == 200 else {}
        for (s, key), value in expected.items():
            if s == name and data.get(key) != value:
                wrong.append("%s/%s: %r, expected %r" % (s, key, data.get(key), value))
    return wrong


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--writer":
        writer_main(sys.argv[2], int(sys.argv[3]), float(sys.argv[4]))
        return
    import credstash  # noqa: F401 - fail early without the venv

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--puts", type=int, default=1000, help="puts per burst")
    parser.add_argument("--secrets", type=int, default=40)
    parser.add_argument("--writers", type=int, default=8)
    parser.add_argument("--wait-time", default="0s", help="the CredstashSync's waitTime")
    parser.add_argument("--sync-timeout", help="the CredstashSync's syncTimeout (default: the CRD's, 5m)")
    parser.add_argument("--binary", default=bench.KUBESTASH, help="the kubestash binary (default: the release build)")
    parser.add_argument("--rate", type=float, default=0, help="at most this many puts/s in all (0: unpaced)")
    parser.add_argument("--direct", action="store_true", help="no counting proxy")
    bench.add_backend_argument(parser)
    parser.add_argument("--timeout", type=float, default=60.0, help="after a burst's last put")
    parser.add_argument("--drain", type=float, default=900.0,
                        help="after the last burst, how long to wait for late puts before calling them lost")
    parser.add_argument("--json", help="also write the raw numbers to this file")
    args = parser.parse_args()
    bench.KUBESTASH = args.binary
    for binary in (bench.KUBESTASH, bench.FAKE):
        if not os.path.exists(binary):
            sys.exit("missing %s (cargo build --release --bin kubestash; cargo build -p fake-apiserver)" % binary)

    env = bench.Env(direct=args.direct, backend=args.backend)
    watch = None
    try:
        env.fixture("init", TABLE)
        env.fixture("enable-stream", TABLE)
        bench.seed(TABLE, ["%s/s%d/SEED" % (NS, j) for j in range(args.secrets)], lambda n: "seed")
        for ns in (NS, bench.OPERATOR_NS):
            env.create_namespace(ns)
        spec = {"table": TABLE, "dryRun": False, "waitTime": args.wait_time, "minResyncInterval": "0s"}
        if args.sync_timeout:
            spec["syncTimeout"] = args.sync_timeout
        env.install_crd_and_cr(CSS, spec)
        env.start_operator()
        bench.wait_for(lambda: (lambda s: s.get("lastSyncTime") and (s.get("secrets") or {}).get("managed") == args.secrets)(
            env.css(CSS).get("status") or {}), 300, "the start-up sync", env)
        bench.wait_for(lambda: any(c.get("type") == "Streaming" and c.get("status") == "True"
                                   for c in (env.css(CSS).get("status") or {}).get("conditions", [])),
                       60, "the Streaming condition", env)
        watch = BurstWatch(env, NS)
        expected = {("s%d" % j, "SEED"): "seed" for j in range(args.secrets)}

        def key_of(name):
            _, secret, key = name.split("/")
            return (secret, key)

        results = []
        for r in range(1, args.rounds + 1):
            names = ["%s/s%d/R%d_K_%d" % (NS, i % args.secrets, r, i) for i in range(args.puts)]
            for phase, version in (("new", 1), ("versions", 2)):
                jobs = [[name, "r%d-v%d-%d" % (r, version, i)] for i, name in enumerate(names)]
                results.append(one_burst(env, watch, args, "round %d %s" % (r, phase), jobs, key_of))
                expected.update({key_of(name): value for name, value in jobs})
        # Late puts (a burst that timed out) may still land: wait for them
        # before calling anything lost; then a quiet moment, so that a late
        # revert would show up in the watch.
        finals = [key + (value,) for key, value in expected.items()]
        drain_started = time.monotonic()
        late = watch.wait_all(finals, args.drain)
        drain_s = time.monotonic() - drain_started
        for res in results:
            landing_numbers(res, watch)
        time.sleep(1.0)
        kube_total = sum((res["kube_counts"] for res in results), Counter()) + env.kube_counts(reset=True)
        puts_total = sum(res["puts"] for res in results)
        time.sleep(3)
        wrong = final_check(env, expected)
        with watch.cond:
            incidents = list(watch.incidents)
            events = watch.events
        hwm = env.rss_kib()[0]  # VmHWM (rss_kib also returns VmRSS, RssFile, RssAnon)

        print("\n%d rounds of bursts (%d puts each, %d writer threads, %s) into %d Secrets, waitTime %s%s, operator %s\n" % (
            args.rounds, args.puts, args.writers, "at most %g puts/s" % args.rate if args.rate else "unpaced",
            args.secrets, args.wait_time, ", syncTimeout %s" % args.sync_timeout if args.sync_timeout else "",
            env.operator_path()))
        print("| burst | puts/s | landed within %.0f s | p50 (s) | p99 (s) | max (s) | last put → all landed (s) | "
              "Kubernetes requests / put | Secret writes | Decrypt / put | moto calls/s |" % args.timeout)
        print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        fmt = lambda x: "%.3f" % x if x is not None else "n/a"
        for res in results:
            print("| %s | %.1f | %d/%d | %s | %s | %s | %s | %s | %s | %.2f | %.0f |" % (
                res["burst"], res["puts_per_s"], res["landed"], res["puts"], fmt(res["p50"]), fmt(res["p99"]),
                fmt(res["max"]),
                "%.2f" % res["last_put_to_all_landed"] if res["last_put_to_all_landed"] is not None else "never",
                "%.2f" % res["kube_per_put"] if res["kube_per_put"] is not None else "n/a",
                res["secret_writes"] if res["secret_writes"] is not None else "%d (metric)" % res["secret_writes_metric"],
                res["decrypt_per_put"], res["moto_calls_per_s"]))
        for res in results:
            print("\n%s: proxy %s; operator metric %s; stream records %d, applies %s, full syncs %d, "
                  "drift repairs %d" % (res["burst"], res["kube_requests"], res["kube_metric"],
                                        res["stream_records"], res["stream_apply"], res["full_syncs"],
                                        res["drift_repairs"]))
        if env.proxy:
            print("\nKubernetes requests over the whole run (incl. the drain): %.2f per put: %s" % (
                sum(kube_total.values()) / puts_total, requests_summary(kube_total)))
        print("\nafter the last burst: every key had its last value after %.1f s%s" % (
            drain_s, "" if not late else " - NOT: %d never arrived, e.g. %s" % (len(late), late[:5])))
        print("final check: %d keys, %d wrong%s" % (len(expected), len(wrong), (": %s" % wrong[:10]) if wrong else ""))
        print("watch: %d events, %d keys missing or reverted after a newer value was seen%s" % (
            events, len(incidents), (": %s" % incidents[:10]) if incidents else ""))
        print("operator peak RSS %.1f MiB" % (hwm / 1024.0))
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"bursts": [{k: v for k, v in r.items() if k != "kube_counts"} for r in results], "wrong": wrong, "incidents": incidents, "events": events,
                           "drain_s": drain_s, "late": late}, f, indent=1)
        if wrong or incidents or late or any(res["missing"] for res in results):
            sys.exit(1)
    finally:
        if watch:
            watch.close()
        env.close()


if __name__ == "__main__":
    main()
