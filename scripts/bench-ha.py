#!/usr/bin/env python3
"""Benchmark (issue 11): leader hand-over on SIGTERM and fail-over on SIGKILL.

Two `kubestash run --leader-elect` replicas (default timing: lease 15 s,
renew deadline 10 s, retry period 2 s) against the fake API server and moto,
one CredstashSync without a stream. Each run: a new value is put into the
table (the leader does not apply it: no stream, no schedule due), the leader
is stopped (SIGTERM) or killed (SIGKILL), and the time from the old leader's
end (its process gone) until the Secret holds the new value (the new
leader's start-up sync applied it) is measured. A replacement replica is
started after each run, so that two run at every signal.

Reports median and max per mode. Goals: SIGTERM < 2 s, SIGKILL < lease
duration + 2 s.

Usage: .venv/bin/python scripts/bench-ha.py [--runs 10] [--binary target/release/kubestash] [--backend fake|real]
  --backend fake|real: the fake API server (default) or a real control plane
            (benchlib.py's Env). The replicas talk to it directly, no
            counting proxy: to the fake over plain HTTP, or to kube-apiserver
            over TLS with the admin client certificate; this script reads
            the Secret through the fake, or through fake-apiserver --proxy-to.
Needs: scripts/test-env.sh, cargo build [--release] --bin kubestash, cargo build -p fake-apiserver.
"""
import argparse
import base64
import json
import os
import signal
import statistics
import subprocess
import time

import benchlib as bench

TABLE, CSS, NS, SECRET, KEY = "ha-table", "ha", "ha", "app", "KEY"
NAME = "%s/%s/%s" % (NS, SECRET, KEY)
LEASE = "kubestash-bench"


class Replica:
    """One `kubestash run --leader-elect` process."""

    def __init__(self, env, binary, pod):
        self.pod = pod
        self.port = bench.free_port()
        self.log = os.path.join(env.tmp, "%s.log" % pod)
        run_env = dict(env.aws_env, KUBECONFIG=env.kubeconfig, POD_NAME=pod,
                       RUST_LOG=os.environ.get("RUST_LOG", "info"))
        self.proc = env._spawn([binary, "run", "--listen", "127.0.0.1:%d" % self.port,
                                "--namespace", bench.OPERATOR_NS, "--leader-elect",
                                "--leader-election-name", LEASE],
                               env=run_env, stdout=open(self.log, "wb"), stderr=subprocess.STDOUT)

    def metrics(self):
        try:
            import urllib.request
            with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % self.port, timeout=2) as r:
                return bench.parse_metrics(r.read().decode())
        except OSError:
            return None

    def leads(self):
        m = self.metrics()
        return None if m is None else bench.metric(m, "kubestash_leader") == 1

    def end(self, sig):
        """Sends `sig`; returns the monotonic time the process was seen gone."""
        os.kill(self.proc.pid, sig)
        while self.proc.poll() is None:
            time.sleep(0.002)
        return time.monotonic()


def secret_value(env):
    status, body = env.kube("GET", "/api/v1/namespaces/%s/secrets/%s" % (NS, SECRET))
    if status != 200:
        return None
    data = (body.get("data") or {}).get(KEY)
    return base64.b64decode(data).decode() if data else None


def one_leader(replicas, env):
    bench.wait_for(lambda: sum(1 for r in replicas if r.leads()) == 1
                   and all(r.leads() is not None for r in replicas), 60, "exactly one leader", None)
    return next(r for r in replicas if r.leads())


def main():
    import credstash

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=10)
    release = os.path.join(bench.ROOT, "target", "release", "kubestash")
    default = release if os.path.exists(release) else os.path.join(bench.ROOT, "target", "debug", "kubestash")
    parser.add_argument("--binary", default=default)
    bench.add_backend_argument(parser)
    parser.add_argument("--json", help="also write the raw numbers to this file")
    args = parser.parse_args()

    env = bench.Env(direct=True, backend=args.backend)
    try:
        env.fixture("init", TABLE)
        credstash.putSecret(NAME, "v0", version="0000000000000000000", table=TABLE)
        for ns in (NS, bench.OPERATOR_NS):
            env.create_namespace(ns)
        env.install_crd_and_cr(CSS, {"table": TABLE, "dryRun": False})
        serial = 0
        replicas = []
        for _ in range(2):
            serial += 1
            replicas.append(Replica(env, args.binary, "bench-%d" % serial))
        bench.wait_for(lambda: secret_value(env) == "v0", 60, "the first sync", None)
        times = {"SIGTERM": [], "SIGKILL": []}
        version = 0
        for run in range(args.runs):
            for mode, sig in (("SIGTERM", signal.SIGTERM), ("SIGKILL", signal.SIGKILL)):
                leader = one_leader(replicas, env)
                version += 1
                value = "v%d" % version
                credstash.putSecret(NAME, value, version="%019d" % version, table=TABLE)
                gone = leader.end(sig)
                bench.wait_for(lambda: secret_value(env) == value, 60, "%s to land" % value, None, interval=0.005)
                took = time.monotonic() - gone
                times[mode].append(took)
                print("run %2d %s: %.3f s" % (run + 1, mode, took), flush=True)
                replicas.remove(leader)
                serial += 1
                replicas.append(Replica(env, args.binary, "bench-%d" % serial))
        result = {mode: {"runs": len(v), "median": statistics.median(v), "max": max(v), "all": v}
                  for mode, v in times.items()}
        print()
        for mode, r in result.items():
            print("%s: median %.3f s, max %.3f s over %d runs" % (mode, r["median"], r["max"], r["runs"]))
        print("binary: %s" % args.binary)
        if args.backend != "fake":
            print("backend: %s (replicas %s)" % (args.backend, env.operator_path()))
        if args.json:
            with open(args.json, "w") as f:
                json.dump(result, f, indent=2)
    finally:
        env.close()


if __name__ == "__main__":
    main()
