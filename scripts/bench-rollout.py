#!/usr/bin/env python3
"""Benchmark (issue 14): time from `credstash put` to the restart of a
Deployment that references the Secret, with `spec.rollout.debounce: 0s`.

A credstash table with a DynamoDB stream, the operator (release build) with
a CredstashSync that follows it (`waitTime: 0s`, rollout enabled, debounce
0s), and a Deployment annotated `kubestash.io/restart-on-change: "true"`
that reads Secret roll/web-creds through envFrom. One warm-up put (its
restart shows the operator's workload watch is listed), then REPS puts of a
new value, one at a time, by credstash's own putSecret in this process. A
watch on the Deployments of the namespace (straight to the fake API server)
records when `metadata.generation` moves (every generation is one
pod-template change: nothing else writes the spec).

Per put: put call start -> pod template changed, and put returned -> pod
template changed; p50 and max of each.

Usage: .venv/bin/python scripts/bench-rollout.py [--reps 10]
Needs: scripts/test-env.sh, cargo build --release --bin kubestash, cargo build -p fake-apiserver.
"""
import argparse
import http.client
import json
import threading
import time

import benchlib as bench

NS, TABLE, CSS, SECRET = "roll", "rollout-table", "rollout", "web-creds"
NAME = "%s/%s/PASSWORD" % (NS, SECRET)


class GenerationWatch:
    """Records (arrival time, generation) of Deployment `web`."""

    def __init__(self, env):
        self.cond = threading.Condition()
        self.changes = []
        code, listing = env.kube("GET", "/apis/apps/v1/namespaces/%s/deployments" % NS)
        if code != 200:
            raise RuntimeError("listing deployments: %s %s" % (code, listing))
        path = "/apis/apps/v1/namespaces/%s/deployments?watch=true&resourceVersion=%s&timeoutSeconds=3600" % (
            NS, listing["metadata"]["resourceVersion"])
        self.conn = http.client.HTTPConnection("127.0.0.1", env.fake_port)
        self.conn.request("GET", path)
        self.response = self.conn.getresponse()
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self):
        for line in self.response:
            event = json.loads(line)
            if event.get("type") in ("ADDED", "MODIFIED"):
                with self.cond:
                    self.changes.append((time.monotonic(), event["object"]["metadata"].get("generation", 0)))
                    self.cond.notify_all()

    def wait_generation(self, generation, timeout):
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for at, seen in self.changes:
                    if seen >= generation:
                        return at
                left = deadline - time.monotonic()
                if left <= 0:
                    raise RuntimeError("generation %d not seen within %ss" % (generation, timeout))
                self.cond.wait(min(left, 0.5))


def deployment():
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": NS,
                         "annotations": {"kubestash.io/restart-on-change": "true"}},
            "spec": {"selector": {"matchLabels": {"app": "web"}},
                     "template": {"metadata": {"labels": {"app": "web"}},
                                  "spec": {"containers": [{"name": "web", "image": "nginx:1.27",
                                                           "envFrom": [{"secretRef": {"name": SECRET}}]}]}}}}


def put(value):
    import credstash
    started = time.monotonic()
    version = int(credstash.getHighestVersion(NAME, table=TABLE)) + 1
    credstash.putSecret(NAME, value, version=version, table=TABLE)
    return started, time.monotonic()


def summary(label, values):
    values = sorted(values)
    p50 = values[len(values) // 2]
    print("%-40s p50 %6.3f s   max %6.3f s   (n=%d)" % (label, p50, values[-1], len(values)))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--reps", type=int, default=10)
    args = parser.parse_args()
    env = bench.Env(direct=True)
    try:
        env.fixture("init", TABLE)
        env.fixture("enable-stream", TABLE, "KEYS_ONLY")
        put("v0")
        env.create_namespace(NS)
        env.install_crd_and_cr(CSS, {"table": TABLE, "dryRun": False, "waitTime": "0s",
                                     "rollout": {"enabled": True, "debounce": "0s"}})
        env.start_operator()
        bench.wait_for(lambda: env.kube("GET", "/api/v1/namespaces/%s/secrets/%s" % (NS, SECRET))[0] == 200,
                       60, "the Secret", env)
        bench.wait_for(lambda: any(c["type"] == "Streaming" and c["status"] == "True"
                                   for c in env.css(CSS).get("status", {}).get("conditions", [])),
                       60, "the stream to be followed", env)
        code, body = env.kube("POST", "/apis/apps/v1/namespaces/%s/deployments" % NS, deployment())
        if code != 201:
            raise RuntimeError("creating the Deployment: %s %s" % (code, body))
        watch = GenerationWatch(env)
        generation = 1
        put("warm-up")
        generation += 1
        watch.wait_generation(generation, 60)
        from_start, from_return = [], []
        for rep in range(args.reps):
            started, returned = put("v%d" % (rep + 1))
            generation += 1
            changed = watch.wait_generation(generation, 60)
            from_start.append(changed - started)
            from_return.append(changed - returned)
        summary("put start -> pod template changed", from_start)
        summary("put returned -> pod template changed", from_return)
        code, final = env.kube("GET", "/apis/apps/v1/namespaces/%s/deployments/web" % NS)
        print("generation %s after %d puts (warm-up included)" % (final["metadata"]["generation"], args.reps + 1))
    finally:
        env.close()


if __name__ == "__main__":
    main()
