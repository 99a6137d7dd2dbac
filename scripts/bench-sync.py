#!/usr/bin/env python3
"""Benchmark (issue 4): cold and warm full sync of 10,000 keys in 1,000 Secrets
over 20 namespaces, by the operator against moto and the fake API server.

Seeds ns{0..19}/secret{0..49}/KEY_{0..9} (credstash's own putSecret), starts
moto (tests/support/moto_guard.py), the fake API server, a counting HTTP proxy
in front of it (the operator talks through the proxy, so every Kubernetes
request is counted by verb and resource), creates the namespaces, the CRD and a
CredstashSync, then starts the operator (release build):

  cold   operator start -> status shows the start-up sync done (1,000 created)
  warm   resync annotation -> status shows that request handled (x --warm-runs)

Per phase: wall time, the operator's own sync duration (metrics _sum delta),
KMS Decrypt and DynamoDB calls (moto's counts), Secret writes and GETs (proxy
counts, cross-checked with kubestash_secret_writes_total), peak RSS (VmHWM).

Usage: .venv/bin/python scripts/bench-sync.py [--namespaces 20] [--secrets 50] [--keys 10] [--warm-runs 3] [--direct]
                                             [--syncs 1] [--bare-scans 3] [--binary PATH] [--backend fake|real]
  --direct: no proxy (operator talks to the fake directly); Kubernetes counts
            then come from the operator's kubestash_kube_api_requests_total.
  --backend real: a real control plane (scripts/control-plane.sh, see Env)
            instead of the fake. The operator's requests then take
            operator -> counting proxy -> fake-apiserver --proxy-to ->
            kube-apiserver (TLS), or with --direct go straight to
            kube-apiserver (TLS, admin client certificate); this script's own
            requests and watches go through the --proxy-to.
  --syncs N: N CredstashSyncs on the one table, each writing its share of the
            namespaces (the others are in its excludedNamespaces); a warm
            phase annotates all of them at once.
  --bare-scans K: after the warm runs, K bare parallel Scans of the table
            (bare_scan below: 4 segments, consistent, raw HTTP to moto) on
            the same moto; the table reports their median next to the warm
            syncs.
The operator inherits KUBESTASH_* variables (e.g. KUBESTASH_AWS_ATTEMPT_TIMEOUT=60s
for the 50,000-key table, whose Scan pages take moto longer than the default 10 s).
Needs: scripts/test-env.sh, cargo build --release --bin kubestash, cargo build -p fake-apiserver.

The harness (Env, Proxy, NamespaceWatch, add_backend_argument, ...) is
benchlib.py, shared with the other bench scripts.
"""
import argparse
import http.client
import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import benchlib as bench

DYNAMODB_OPS = ("Scan", "Query", "GetItem", "BatchGetItem", "DescribeTable")
STREAM_OPS = ("DescribeStream", "GetShardIterator", "GetRecords", "ListStreams")


def bare_scan(endpoint, table, segments=4):
    """A parallel, consistent Scan of `table` whose items are discarded: the
    floor under any full read of it. Raw HTTP to moto (which checks no
    signature) and C-speed JSON parsing, so that the client costs little.
    Returns {seconds, items, pages}."""
    host = endpoint.split("//", 1)[1]

    def scan_segment(segment):
        conn = http.client.HTTPConnection(host)
        items = pages = 0
        start = None
        while True:
            body = {"TableName": table, "ConsistentRead": True, "Segment": segment, "TotalSegments": segments}
            if start:
                body["ExclusiveStartKey"] = start
            conn.request("POST", "/", json.dumps(body), {
                "Content-Type": "application/x-amz-json-1.0", "X-Amz-Target": "DynamoDB_20120810.Scan",
                "Authorization": "AWS4-HMAC-SHA256 Credential=bench/20240101/us-east-1/dynamodb/aws4_request, "
                                 "SignedHeaders=host, Signature=0"})
            response = conn.getresponse()
            page = json.loads(response.read())
            if response.status != 200:
                raise RuntimeError("bare scan: %s %s" % (response.status, page))
            pages += 1
            items += len(page.get("Items", []))
            start = page.get("LastEvaluatedKey")
            if not start:
                return items, pages
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=segments) as pool:
        counts = list(pool.map(scan_segment, range(segments)))
    return {"seconds": time.monotonic() - started, "items": sum(c[0] for c in counts),
            "pages": sum(c[1] for c in counts)}


def seed_shared_keys(table, names, value_of, items_per_key, workers=8):
    """Seeds like bench.seed(), but sealed by credstash's own seal_aes_ctr_legacy
    with one KMS data key per `items_per_key` items and written with
    batch writes: minutes instead of an hour for 50,000 items on moto. Each
    item is a valid credstash item (credstash get reads it); the operator
    keeps no data key, so it still unwraps one per item."""
    import boto3
    import credstash

    class SharedKeyService(credstash.KeyService):
        def __init__(self, kms):
            super().__init__(kms, "alias/credstash", {})
            self.cached, self.uses = None, 0

        def generate_key_data(self, number_of_bytes):
            if self.cached is None or self.uses >= items_per_key:
                self.cached, self.uses = super().generate_key_data(number_of_bytes), 0
            self.uses += 1
            return self.cached

    def put_chunk(chunk):
        session = boto3.session.Session()
        keys = SharedKeyService(session.client("kms"))
        with session.resource("dynamodb").Table(table).batch_writer() as batch:
            for name in chunk:
                item = {"name": name, "version": credstash.paddedInt(1)}
                item.update(credstash.seal_aes_ctr_legacy(keys, value_of(name)))
                batch.put_item(Item=item)
    chunks = [names[i:i + items_per_key * 10] for i in range(0, len(names), items_per_key * 10)]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(put_chunk, chunks))


# --------------------------------------------------------------------------

def phase_numbers(env, name, seconds, moto, kube, before, after):
    secret_writes_proxy = sum(v for (verb, res), v in kube.items()
                              if res == "secrets" and verb in ("create", "update", "patch"))
    status_writes = sum(v for (verb, res), v in kube.items()
                        if res == "credstashsyncs/status" and verb in ("patch", "update"))
    secret_gets = kube.get(("get", "secrets"), 0)
    hwm, rss, rss_file, rss_anon = env.rss_kib()
    d = lambda metric_name, **kw: bench.metric(after, metric_name, **kw) - bench.metric(before, metric_name, **kw)
    return {
        "wall_s": seconds,
        "op_sync_s": d("kubestash_sync_duration_seconds_sum"),
        "op_read_s": d("kubestash_table_read_duration_seconds_sum"),
        "syncs": d("kubestash_sync_total"),
        "kms_decrypt": moto.get("Decrypt", 0),
        "kms_metric": d("kubestash_kms_decrypt_total"),
        "kms_cache_hits": d("kubestash_kms_cache_hits_total"),
        "dynamodb": sum(moto.get(op, 0) for op in DYNAMODB_OPS),
        "dynamodb_detail": {op: moto[op] for op in DYNAMODB_OPS if moto.get(op)},
        "streams": sum(moto.get(op, 0) for op in STREAM_OPS),
        "secret_writes": secret_writes_proxy if env.proxy else None,
        "secret_writes_metric": d("kubestash_secret_writes_total", credstashsync=name),
        "secret_gets": secret_gets if env.proxy else None,
        "status_writes": status_writes if env.proxy else None,
        "kube_requests": {"%s %s" % k: v for k, v in sorted(kube.items())},
        "kube_metric": {"%s %s" % (dict(l)["verb"], dict(l)["code"]): after[(n, l)] - before.get((n, l), 0)
                        for (n, l) in after if n == "kubestash_kube_api_requests_total"
                        and after[(n, l)] - before.get((n, l), 0)},
        "vmhwm_mib": hwm / 1024.0,
        "vmrss_mib": rss / 1024.0,
        "rss_file_mib": rss_file / 1024.0,
        "rss_anon_mib": rss_anon / 1024.0,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--namespaces", type=int, default=20)
    parser.add_argument("--secrets", type=int, default=50, help="Secrets per namespace")
    parser.add_argument("--keys", type=int, default=10, help="keys per Secret")
    parser.add_argument("--direct", action="store_true", help="no counting proxy")
    bench.add_backend_argument(parser)
    parser.add_argument("--warm-runs", type=int, default=3, help="warm syncs after the cold one")
    parser.add_argument("--syncs", type=int, default=1, help="CredstashSyncs on the table, each with its share of namespaces")
    parser.add_argument("--bare-scans", type=int, default=3, help="bare parallel Scans timed after the warm runs")
    parser.add_argument("--binary", default=bench.KUBESTASH, help="the kubestash binary (default: the release build)")
    parser.add_argument("--items-per-data-key", type=int, default=1,
                        help="seed with one data key per N items and batch writes (1: credstash putSecret per item)")
    parser.add_argument("--json", help="also write the raw numbers to this file")
    args = parser.parse_args()
    table = "bench-table"
    syncs = ["bench"] + ["bench-%d" % (i + 1) for i in range(1, args.syncs)]
    all_namespaces = ["ns%d" % k for k in range(args.namespaces)]
    share = {css: [ns for k, ns in enumerate(all_namespaces) if k % len(syncs) == i] for i, css in enumerate(syncs)}
    css = syncs[0]
    n_secrets = args.namespaces * args.secrets
    n_keys = n_secrets * args.keys
    expected = {c: len(share[c]) * args.secrets for c in syncs}
    bench.KUBESTASH = args.binary
    for binary in (bench.KUBESTASH, bench.FAKE):
        if not os.path.exists(binary):
            sys.exit("missing %s (cargo build --release --bin kubestash; cargo build -p fake-apiserver)" % binary)

    env = bench.Env(direct=args.direct, backend=args.backend)
    try:
        env.fixture("init", table)
        names = ["ns%d/secret%d/KEY_%d" % (k, j, i)
                 for k in range(args.namespaces) for j in range(args.secrets) for i in range(args.keys)]
        started = time.monotonic()
        if args.items_per_data_key > 1:
            seed_shared_keys(table, names, lambda n: "value of " + n, args.items_per_data_key)
        else:
            bench.seed(table, names, lambda n: "value of " + n)
        print("seeded %d keys in %.1f s" % (len(names), time.monotonic() - started), file=sys.stderr, flush=True)
        for k in range(args.namespaces):
            env.create_namespace("ns%d" % k)
        env.create_namespace(bench.OPERATOR_NS)
        for c in syncs:
            spec = {"table": table, "dryRun": False, "waitTime": "0s", "minResyncInterval": "0s"}
            if len(syncs) > 1:
                spec["excludedNamespaces"] = [ns for ns in all_namespaces if ns not in share[c]]
            env.install_crd_and_cr(c, spec)

        # Cold: operator start -> start-up full sync reported in status.
        env.moto_counts(reset=True)
        env.kube_counts(reset=True)
        t0 = time.monotonic()
        env.start_operator()
        for c in syncs:
            status = bench.wait_for(lambda: (lambda s: s if s.get("lastSyncTime") and (s.get("secrets") or {}).get("managed") == expected[c]
                                       else None)(env.css(c).get("status") or {}),
                              1800, "the cold sync of %s" % c, env)
        cold_s = time.monotonic() - t0
        cold_moto, cold_kube = env.moto_counts(reset=True), env.kube_counts(reset=True)
        m_cold = env.metrics()
        cold = phase_numbers(env, css, cold_s, cold_moto, cold_kube, {}, m_cold)
        cold["status"] = {"secrets": status.get("secrets"), "keys": status.get("keys")}
        print("cold: %s" % json.dumps(cold), file=sys.stderr, flush=True)
        if status["secrets"].get("created") != expected[syncs[-1]] or status["keys"].get("total") != n_keys:
            raise RuntimeError("cold sync status: %s" % json.dumps(status))

        # Warm: resync annotation -> status shows the request handled (repeated
        # --warm-runs times: peak RSS should settle, not climb).
        warms = []
        for run in range(args.warm_runs):
            m_before = env.metrics()
            env.moto_counts(reset=True)
            env.kube_counts(reset=True)
            t0 = time.monotonic()
            requests = {c: env.annotate_resync(c) for c in syncs}
            for c in syncs:
                status = bench.wait_for(lambda: (lambda s: s if s.get("lastResyncRequest") == requests[c] else None)(
                    env.css(c).get("status") or {}), 600, "the warm sync of %s" % c, env)
            warm_s = time.monotonic() - t0
            warm_moto, warm_kube = env.moto_counts(reset=True), env.kube_counts(reset=True)
            warm = phase_numbers(env, css, warm_s, warm_moto, warm_kube, m_before, env.metrics())
            warm["status"] = {"secrets": status.get("secrets"), "keys": status.get("keys")}
            print("warm %d: %s" % (run + 1, json.dumps(warm)), file=sys.stderr, flush=True)
            warms.append(("warm #%d (resync annotation)" % (run + 1), warm))

        # The floor under a warm sync: a bare parallel Scan on the same moto.
        bare = []
        for _ in range(args.bare_scans):
            bare.append(bare_scan(env.endpoint, table))
            print("bare scan: %s" % bare[-1], file=sys.stderr, flush=True)

        # Sanity: a Secret holds its values.
        last = "/api/v1/namespaces/ns%d/secrets/secret%d" % (args.namespaces - 1, args.secrets - 1)
        code, secret = env.kube("GET", last)
        if code != 200 or len(secret.get("data", {})) != args.keys:
            raise RuntimeError("%s: %s %s" % (last, code, secret))

        print("\n%d keys in %d Secrets over %d namespaces, %d CredstashSync(s); operator: %s\n" % (
            n_keys, n_secrets, args.namespaces, len(syncs), env.operator_path()))
        print("| phase | wall time (s) | operator sync (s) | of which table read (s) | KMS Decrypt | DynamoDB calls | "
              "Scans | Secret writes | Secret GETs | status writes | peak RSS (MiB) |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        phases = [("cold (start-up)", cold)] + warms
        na = lambda v: "%d" % v if v is not None else "n/a"
        for label, p in phases:
            print("| %s | %.2f | %.2f | %.2f | %d | %d | %d | %s | %s | %s | %.1f |" % (
                label, p["wall_s"], p["op_sync_s"], p["op_read_s"], p["kms_decrypt"], p["dynamodb"],
                p["dynamodb_detail"].get("Scan", 0),
                "%d" % p["secret_writes"] if p["secret_writes"] is not None else "%d (metric)" % p["secret_writes_metric"],
                na(p["secret_gets"]), na(p["status_writes"]), p["vmhwm_mib"]))
        if bare:
            seconds = sorted(b["seconds"] for b in bare)
            median = seconds[len(seconds) // 2]
            warm_walls = sorted(p["wall_s"] for _, p in warms)
            print("\nbare parallel Scan (4 segments, %d items, %d pages), %d runs: median %.2f s (min %.2f, max %.2f); "
                  "warm sync wall time median %.2f s = %.2fx the bare Scan" % (
                      bare[0]["items"], bare[0]["pages"], len(bare), median, seconds[0], seconds[-1],
                      warm_walls[len(warm_walls) // 2] if warm_walls else 0,
                      (warm_walls[len(warm_walls) // 2] / median) if warm_walls and median else 0))
        for label, p in phases:
            print("\n%s: DynamoDB %s; stream calls %d; KMS Decrypt per operator metric %d, cache hits %d; "
                  "Secret writes per operator metric %d; VmRSS now %.1f MiB (code and other file pages %.1f, "
                  "anonymous %.1f)" % (
                      label, p["dynamodb_detail"], p["streams"], p["kms_metric"], p["kms_cache_hits"],
                      p["secret_writes_metric"], p["vmrss_mib"], p["rss_file_mib"], p["rss_anon_mib"]))
            print("%s: Kubernetes requests seen by the proxy: %s" % (label, p["kube_requests"]))
            print("%s: kubestash_kube_api_requests_total delta: %s" % (label, p["kube_metric"]))
        if args.json:
            with open(args.json, "w") as f:
                json.dump(dict(phases, bare_scans=bare), f, indent=1)
    finally:
        env.close()


if __name__ == "__main__":
    main()
