#!/usr/bin/env python3
"""Benchmark: reading a whole credstash table, kubestash vs credstash.

Fills a moto table with N secrets (credstash's own putSecret), then measures
`credstash getall -f json` and `kubestash getall` on the same table: wall time
and the DynamoDB and KMS calls moto saw; and, for kubestash, a second read in
the same process (examples/read_twice.rs), whose KMS calls should be 0.

Usage: .venv/bin/python scripts/bench-read.py [N ...]     (default: 1000 5000)
Needs: scripts/test-env.sh, and `cargo build --release --bin kubestash --example read_twice`.
"""
import json
import os
import subprocess
import sys
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VENV = os.path.join(ROOT, ".venv", "bin")
PORT = int(os.environ.get("BENCH_MOTO_PORT", "5599"))
ENDPOINT = "http://127.0.0.1:%d" % PORT
ENV = dict(os.environ, AWS_ENDPOINT_URL=ENDPOINT, AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench",
           AWS_REGION="us-east-1", AWS_DEFAULT_REGION="us-east-1", AWS_EC2_METADATA_DISABLED="true")
KUBESTASH = os.path.join(ROOT, "target", "release", "kubestash")
READ_TWICE = os.path.join(ROOT, "target", "release", "examples", "read_twice")


def counts(reset=False):
    request = urllib.request.Request(ENDPOINT + "/_counts", method="POST" if reset else "GET")
    with urllib.request.urlopen(request) as response:
        return json.load(response)


def calls(c, *operations):
    return sum(c.get(op, 0) for op in operations)


DYNAMODB_OPS = ("Scan", "Query", "GetItem", "BatchGetItem")


def timed(command):
    counts(reset=True)
    started = time.monotonic()
    result = subprocess.run(command, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    seconds = time.monotonic() - started
    if result.returncode != 0:
        sys.exit("%s failed: %s" % (command, result.stderr.decode()))
    return seconds, counts(), json.loads(result.stdout)


def bench(n):
    table = "bench-%d" % n
    fixture = [os.path.join(VENV, "python"), os.path.join(ROOT, "tests", "support", "fixture.py")]
    subprocess.run(fixture + ["init", table], env=ENV, check=True)
    subprocess.run(fixture + ["bulk", table, str(n), "bench"], env=ENV, check=True)
    cs_seconds, cs_counts, cs_out = timed([os.path.join(VENV, "credstash"), "-t", table, "getall", "-f", "json"])
    ks_seconds, ks_counts, ks_out = timed([KUBESTASH, "getall", "--table", table])
    if cs_out != ks_out or len(ks_out) != n:
        sys.exit("outputs differ (%d vs %d values)" % (len(cs_out), len(ks_out)))
    counts(reset=True)
    reads = json.loads(subprocess.run([READ_TWICE, table], env=ENV, check=True, stdout=subprocess.PIPE).stdout)
    return [
        ("credstash getall", n, cs_seconds, calls(cs_counts, *DYNAMODB_OPS), calls(cs_counts, "Decrypt")),
        ("kubestash getall", n, ks_seconds, calls(ks_counts, *DYNAMODB_OPS), calls(ks_counts, "Decrypt")),
        ("kubestash, 1st read in process", n, reads[0]["seconds"], reads[0]["dynamodb_calls"], reads[0]["kms_decrypt_calls"]),
        ("kubestash, 2nd read in process", n, reads[1]["seconds"], reads[1]["dynamodb_calls"], reads[1]["kms_decrypt_calls"]),
    ]


def main():
    sizes = [int(a) for a in sys.argv[1:]] or [1000, 5000]
    guard = subprocess.Popen([os.path.join(VENV, "python"), os.path.join(ROOT, "tests", "support", "moto_guard.py"), str(PORT)],
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    if guard.stdout.readline().strip() != b"ready":
        sys.exit("moto did not start")
    try:
        print("| reader | secrets | wall time (s) | DynamoDB calls | KMS Decrypt calls |")
        print("|---|---:|---:|---:|---:|")
        for n in sizes:
            for name, count, seconds, ddb, kms in bench(n):
                print("| %s | %d | %.2f | %d | %d |" % (name, count, seconds, ddb, kms), flush=True)
    finally:
        guard.kill()


if __name__ == "__main__":
    main()
