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

bench-stream.py, bench-burst.py, bench-drift.py and bench-ha.py import the harness
below (Env, Proxy, NamespaceWatch, add_backend_argument, ...); Env is the one
place that decides the backend.
"""
import argparse
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VENV = os.path.join(ROOT, ".venv", "bin")
KUBESTASH = os.path.join(ROOT, "target", "release", "kubestash")
FAKE = os.path.join(ROOT, "target", "debug", "fake-apiserver")
KUBECTL = shutil.which("kubectl") or "/usr/bin/kubectl"  # the fake backend's; a real one brings its own
CONTROL_PLANE = os.path.join(ROOT, "scripts", "control-plane.sh")
BACKENDS = ("fake", "real")
DYNAMODB_OPS = ("Scan", "Query", "GetItem", "BatchGetItem", "DescribeTable")
STREAM_OPS = ("DescribeStream", "GetShardIterator", "GetRecords", "ListStreams")
OPERATOR_NS = "kubestash-system"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------
# A counting TCP proxy for HTTP/1.1: requests (client -> server) are parsed
# only to find their boundaries and classify them; bytes are relayed as is,
# so watches stream through untouched.

def classify(method, target):
    path, _, query = target.partition("?")
    params = dict(p.partition("=")[::2] for p in query.split("&") if p)
    segs = [s for s in path.split("/") if s]
    # /api/v1/... or /apis/GROUP/VERSION/...
    if segs[:1] == ["api"]:
        rest = segs[2:]
    elif segs[:1] == ["apis"]:
        rest = segs[3:]
    else:
        return method.lower(), "other"
    if len(rest) >= 3 and rest[0] == "namespaces":
        rest = rest[2:]  # namespaced resource
    elif len(rest) >= 1 and rest[0] == "namespaces":
        pass
    resource = rest[0] if rest else "discovery"
    named = len(rest) >= 2
    if len(rest) >= 3:
        resource += "/" + rest[2]
    watch = params.get("watch") in ("true", "1")
    verb = {
        "GET": "watch" if watch else ("get" if named else "list"),
        "POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete",
    }.get(method, method.lower())
    return verb, resource


class Proxy:
    def __init__(self, upstream_port):
        self.upstream = ("127.0.0.1", upstream_port)
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(128)
        self.port = self.listener.getsockname()[1]
        self.lock = threading.Lock()
        self.counts = Counter()
        self.closed = False
        self.sockets = []
        threading.Thread(target=self._accept, daemon=True).start()

    def snapshot(self, reset=False):
        with self.lock:
            c = Counter(self.counts)
            if reset:
                self.counts.clear()
            return c

    def close(self):
        self.closed = True
        for s in [self.listener] + self.sockets:
            try:
                s.close()
            except OSError:
                pass

    def _accept(self):
        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.upstream)
            except OSError:
                client.close()
                continue
            for s in (client, upstream):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.sockets += [client, upstream]
            threading.Thread(target=self._requests, args=(client, upstream), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client), daemon=True).start()

    @staticmethod
    def _pipe(src, dst):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _requests(self, client, upstream):
        buf = b""
        body_left = 0      # bytes of a Content-Length body still to come
        chunked = False    # inside a chunked body
        try:
            while True:
                data = client.recv(65536)
                if not data:
                    break
                upstream.sendall(data)
                buf += data
                while True:
                    if body_left:
                        take = min(body_left, len(buf))
                        buf, body_left = buf[take:], body_left - take
                        if body_left:
                            break
                    if chunked:
                        line_end = buf.find(b"\r\n")
                        if line_end < 0:
                            break
                        size = int(buf[:line_end].split(b";")[0], 16)
                        if size == 0:
                            end = buf.find(b"\r\n\r\n", line_end - 2 if line_end >= 2 else 0)
                            if end < 0:
                                break
                            buf, chunked = buf[end + 4:], False
                            continue
                        if len(buf) < line_end + 2 + size + 2:
                            break
                        buf = buf[line_end + 2 + size + 2:]
                        continue
                    head_end = buf.find(b"\r\n\r\n")
                    if head_end < 0:
                        break
                    head, buf = buf[:head_end].decode("latin-1"), buf[head_end + 4:]
                    lines = head.split("\r\n")
                    method, target = lines[0].split(" ")[:2]
                    headers = {}
                    for line in lines[1:]:
                        k, _, v = line.partition(":")
                        headers[k.strip().lower()] = v.strip()
                    with self.lock:
                        self.counts[classify(method, target)] += 1
                    if "chunked" in headers.get("transfer-encoding", "").lower():
                        chunked = True
                    else:
                        body_left = int(headers.get("content-length", "0") or 0)
                    if not buf and not body_left and not chunked:
                        break
        except (OSError, ValueError):
            pass
        for s in (client, upstream):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


# --------------------------------------------------------------------------

def parse_metrics(text):
    """Prometheus text -> {(name, ((label, value), ...)): float}."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.match(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)', line)
        if not m:
            continue
        labels = tuple(sorted(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"', m.group(3) or "")))
        out[(m.group(1), labels)] = float(m.group(4))
    return out


def metric(metrics, name, **labels):
    total = 0.0
    for (n, ls), v in metrics.items():
        if n == name and all(dict(ls).get(k) == val for k, val in labels.items()):
            total += v
    return total


def add_backend_argument(parser):
    """--backend fake|real, for every script that runs an Env."""
    parser.add_argument("--backend", choices=BACKENDS, default="fake",
                        help="the API server: the fake (default) or a real control plane started by "
                             "scripts/control-plane.sh (see Env)")


def _exit_on_signal(signum, _frame):
    raise SystemExit(128 + signum)


class Env:
    """moto + an API server (+ counting proxy) + operator; close() ends all.

    The one place that decides the backend (`--backend`, add_backend_argument):

      fake  the fake API server (FAKE), plain HTTP. The script's own requests
            and watches (kube(), NamespaceWatch, kubectl) go straight to it;
            the operator too (direct), or through the counting Proxy.
      real  a control plane of scripts/control-plane.sh (kube-apiserver,
            etcd, kube-controller-manager) in this Env's temp dir, stopped
            at close(). `fake-apiserver --proxy-to` serves the script a
            plain-HTTP door to it with the admin credentials, so kube(),
            NamespaceWatch (fake_port) and the rest run unchanged; kubectl is
            the control plane's own (DIR/bin/kubectl). The operator talks to
            kube-apiserver itself over TLS with the admin client certificate
            (DIR/kubeconfig) when direct, and otherwise through the counting
            Proxy, which sits in front of the `--proxy-to` door (operator ->
            Proxy -> fake-apiserver --proxy-to -> kube-apiserver).

    Attributes: `kubeconfig` reaches the backend directly (fake: the fake's;
    real: DIR/kubeconfig); `kube_url`/`fake_port` is the plain-HTTP door
    (the fake itself, or the --proxy-to); `operator_kubeconfig` is what the
    operator is given."""

    def __init__(self, direct=False, backend="fake"):
        if backend not in BACKENDS:
            raise ValueError("backend %r: not one of %s" % (backend, ", ".join(BACKENDS)))
        # SIGTERM/SIGHUP (timeout, a closed terminal) -> SystemExit, so that
        # the callers' finally: env.close() still ends what was started.
        for sig in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, _exit_on_signal)
        self.backend = backend
        self.tmp = tempfile.mkdtemp(prefix="kubestash-bench-")
        self.procs = []
        self.proxy = None
        self.operator = None
        self.control_plane = None
        self.kubectl_binary = KUBECTL
        try:
            self._start(direct)
        except BaseException:
            self.close()
            raise

    def _start(self, direct):
        self.moto_port = free_port()
        self.endpoint = "http://127.0.0.1:%d" % self.moto_port
        self.aws_env = dict(os.environ, AWS_ENDPOINT_URL=self.endpoint, AWS_ACCESS_KEY_ID="bench",
                            AWS_SECRET_ACCESS_KEY="bench", AWS_REGION="us-east-1",
                            AWS_DEFAULT_REGION="us-east-1", AWS_EC2_METADATA_DISABLED="true")
        for k, v in self.aws_env.items():
            if k.startswith("AWS_"):
                os.environ[k] = v  # for the credstash/boto3 library in this process
        moto = self._spawn([os.path.join(VENV, "python"), os.path.join(ROOT, "tests", "support", "moto_guard.py"),
                            str(self.moto_port)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        if moto.stdout.readline().strip() != b"ready":
            raise RuntimeError("moto did not start")
        self.fake_port = free_port()
        if self.backend == "real":
            self._start_control_plane()
            # The script's plain-HTTP door to kube-apiserver.
            plain_kubeconfig = os.path.join(self.tmp, "kubeconfig-plain")
            command = [FAKE, "--proxy-to", self.kubeconfig, "--listen", "127.0.0.1:%d" % self.fake_port,
                       "--kubeconfig", plain_kubeconfig]
        else:
            self.kubeconfig = plain_kubeconfig = os.path.join(self.tmp, "kubeconfig")
            command = [FAKE, "--listen", "127.0.0.1:%d" % self.fake_port, "--kubeconfig", self.kubeconfig]
        fake = self._spawn(command, stdout=subprocess.PIPE, stderr=open(os.path.join(self.tmp, "fake.log"), "wb"))
        if b"listening" not in fake.stdout.readline():
            raise RuntimeError("fake-apiserver did not start")
        self.kube_url = "http://127.0.0.1:%d" % self.fake_port
        self.operator_kubeconfig = self.kubeconfig
        if not direct:
            self.proxy = Proxy(self.fake_port)
            self.operator_kubeconfig = os.path.join(self.tmp, "kubeconfig-proxy")
            with open(plain_kubeconfig) as src, open(self.operator_kubeconfig, "w") as dst:
                dst.write(src.read().replace(":%d" % self.fake_port, ":%d" % self.proxy.port))

    def _start_control_plane(self):
        """scripts/control-plane.sh start TMP/control-plane (it stops by
        itself, too, once this process has exited)."""
        self.control_plane = os.path.join(self.tmp, "control-plane")
        started = time.monotonic()
        done = subprocess.run([CONTROL_PLANE, "start", self.control_plane], stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              env=dict(os.environ, KUBESTASH_CONTROL_PLANE_WATCH_PID=str(os.getpid())))
        if done.returncode != 0:
            raise RuntimeError("control-plane.sh start failed (%d):\n%s" % (
                done.returncode, done.stderr.decode(errors="replace")[-4000:]))
        self.kubeconfig = os.path.join(self.control_plane, "kubeconfig")
        self.kubectl_binary = os.path.join(self.control_plane, "bin", "kubectl")
        with open(os.path.join(self.control_plane, "server")) as f:
            self.server = f.read().strip()
        print("backend real: kube-apiserver at %s, ready in %.1f s (%s)" % (
            self.server, time.monotonic() - started, self.control_plane), file=sys.stderr, flush=True)

    def operator_path(self):
        """How the operator reaches the API server, for the reports."""
        if self.backend == "real":
            return ("through the counting proxy and fake-apiserver --proxy-to to kube-apiserver" if self.proxy
                    else "direct to kube-apiserver (TLS, client certificate)")
        return "through the counting proxy" if self.proxy else "direct"

    def _spawn(self, command, **kw):
        proc = subprocess.Popen(command, start_new_session=True, **kw)
        self.procs.append(proc)
        return proc

    def close(self):
        for proc in reversed(self.procs):
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except OSError:
                    pass
                proc.wait()
        if self.proxy:
            self.proxy.close()
        keep = os.environ.get("BENCH_KEEP_TMP")
        if self.control_plane:
            if keep:  # `stop` removes the control plane's folder: keep its logs
                shutil.copytree(os.path.join(self.control_plane, "logs"),
                                os.path.join(self.tmp, "control-plane-logs"), dirs_exist_ok=True)
            subprocess.run([CONTROL_PLANE, "stop", self.control_plane], stdin=subprocess.DEVNULL,
                           stdout=subprocess.DEVNULL)
        if keep:
            print("kept %s" % self.tmp, file=sys.stderr)
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)

    # --- AWS (moto) ---
    def moto_counts(self, reset=False):
        request = urllib.request.Request(self.endpoint + "/_counts", method="POST" if reset else "GET")
        with urllib.request.urlopen(request) as response:
            return Counter(json.load(response))

    def fixture(self, *args):
        subprocess.run([os.path.join(VENV, "python"), os.path.join(ROOT, "tests", "support", "fixture.py")]
                       + [str(a) for a in args], env=self.aws_env, check=True)

    # --- Kubernetes (straight to the fake or the --proxy-to door, not counted) ---
    def kube(self, method, path, body=None, content_type="application/json"):
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.kube_url + path, data=data, method=method)
        if data is not None:
            request.add_header("Content-Type", content_type)
        try:
            with urllib.request.urlopen(request) as response:
                return response.status, json.load(response)
        except urllib.error.HTTPError as err:
            raw = err.read()
            try:
                return err.code, json.loads(raw or b"{}")
            except ValueError:  # kube-apiserver's "404 page not found" before a new CRD is served
                return err.code, {"message": raw.decode(errors="replace")}

    def kubectl(self, *args):
        return subprocess.run([self.kubectl_binary, "--kubeconfig", self.kubeconfig, "--cache-dir",
                               os.path.join(self.tmp, "kubectl-cache")] + list(args),
                              check=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE).stdout

    def create_namespace(self, name):
        status, body = self.kube("POST", "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace",
                                                                "metadata": {"name": name}})
        if status not in (201, 409):
            raise RuntimeError("creating namespace %s: %s %s" % (name, status, body))

    def install_crd_and_cr(self, name, spec):
        self.kubectl("apply", "-f", os.path.join(ROOT, "crds", "credstashsync.yaml"))
        cr = {"apiVersion": "kubestash.io/v1alpha1", "kind": "CredstashSync", "metadata": {"name": name}, "spec": spec}
        deadline = time.monotonic() + 30
        while True:
            status, body = self.kube("POST", "/apis/kubestash.io/v1alpha1/credstashsyncs", cr)
            if status == 201:
                return body
            if time.monotonic() > deadline:
                raise RuntimeError("creating CredstashSync: %s %s" % (status, body))
            time.sleep(0.1)

    def css(self, name):
        status, body = self.kube("GET", "/apis/kubestash.io/v1alpha1/credstashsyncs/" + name)
        if status != 200:
            raise RuntimeError("reading CredstashSync: %s %s" % (status, body))
        return body

    def annotate_resync(self, name):
        value = str(time.time_ns())
        status, body = self.kube("PATCH", "/apis/kubestash.io/v1alpha1/credstashsyncs/" + name,
                                 {"metadata": {"annotations": {"kubestash.io/resync-requested-at": value}}},
                                 content_type="application/merge-patch+json")
        if status != 200:
            raise RuntimeError("annotating: %s %s" % (status, body))
        return value

    # --- operator ---
    def start_operator(self):
        self.metrics_port = free_port()
        env = dict(self.aws_env, KUBECONFIG=self.operator_kubeconfig, RUST_LOG=os.environ.get("RUST_LOG", "info"))
        # The operator's own settings (e.g. KUBESTASH_AWS_ATTEMPT_TIMEOUT) pass through.
        env.update((k, v) for k, v in os.environ.items() if k.startswith("KUBESTASH_"))
        self.operator_log = os.path.join(self.tmp, "operator.log")
        self.operator = self._spawn([KUBESTASH, "run", "--listen", "127.0.0.1:%d" % self.metrics_port,
                                     "--namespace", OPERATOR_NS], env=env,
                                    stdout=open(self.operator_log, "wb"), stderr=subprocess.STDOUT)
        return self.operator

    def check_operator(self):
        if self.operator.poll() is not None:
            raise RuntimeError("the operator exited (%s); log tail:\n%s" % (self.operator.returncode, self.log_tail()))

    def log_tail(self, n=40):
        with open(self.operator_log, "rb") as f:
            return b"\n".join(f.read().splitlines()[-n:]).decode(errors="replace")

    def metrics(self):
        with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % self.metrics_port, timeout=5) as r:
            return parse_metrics(r.read().decode())

    def rss_kib(self):
        fields = {}
        with open("/proc/%d/status" % self.operator.pid) as f:
            for line in f:
                k, _, v = line.partition(":")
                fields[k] = v.strip()
        kib = lambda k: int(fields[k].split()[0])
        return kib("VmHWM"), kib("VmRSS"), kib("RssFile"), kib("RssAnon")

    def kube_counts(self, reset=False):
        return self.proxy.snapshot(reset) if self.proxy else Counter()


class NamespaceWatch:
    """Lists, then watches, the Secrets of one namespace (straight to the fake,
    or on the real backend through the --proxy-to door; not counted); calls self.on_event(kind, secret, arrival time) for each
    listed Secret (as "ADDED") and each event, from a thread. Waiters hold
    self.cond, wait on it and call self.check()."""

    def __init__(self, env, namespace):
        self.env = env
        self.cond = threading.Condition()
        self.error = None
        code, listing = env.kube("GET", "/api/v1/namespaces/%s/secrets" % namespace)
        if code != 200:
            raise RuntimeError("listing secrets: %s %s" % (code, listing))
        for item in listing.get("items", []):
            self.on_event("ADDED", item, time.monotonic())
        path = "/api/v1/namespaces/%s/secrets?watch=true&resourceVersion=%s&timeoutSeconds=3600" % (
            namespace, listing["metadata"]["resourceVersion"])
        self.conn = http.client.HTTPConnection("127.0.0.1", env.fake_port)
        self.conn.request("GET", path)
        self.response = self.conn.getresponse()
        if self.response.status != 200:
            raise RuntimeError("watch: %s" % self.response.status)
        threading.Thread(target=self._run, daemon=True).start()

    def on_event(self, kind, secret, now):
        raise NotImplementedError

    def _run(self):
        try:
            for line in self.response:
                event = json.loads(line)
                if event.get("type") in ("ADDED", "MODIFIED", "DELETED"):
                    self.on_event(event["type"], event["object"], time.monotonic())
                elif event.get("type") == "ERROR":
                    raise RuntimeError("watch error: %s" % event)
            raise RuntimeError("the watch ended")
        except Exception as err:  # noqa: BLE001 - reported to the waiter
            with self.cond:
                self.error = err
                self.cond.notify_all()

    def check(self):
        """Raises when the watch or the operator has failed (hold self.cond)."""
        if self.error:
            raise RuntimeError(str(self.error))
        self.env.check_operator()

    def close(self):
        # Shut the socket down rather than close the response: closing it
        # here would wait for the reader thread's buffer lock (a hang).
        try:
            self.conn.sock.shutdown(socket.SHUT_RDWR)
        except (AttributeError, OSError):
            pass


def wait_for(predicate, timeout, what, env=None, interval=0.05):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if env is not None:
            env.check_operator()
        if time.monotonic() > deadline:
            raise RuntimeError("timed out waiting for " + what + ("\n" + env.log_tail() if env else ""))
        time.sleep(interval)


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
    """Seeds like seed(), but sealed by credstash's own seal_aes_ctr_legacy
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


def seed(table, names, value_of, workers=16):
    import credstash

    def put(name):
        credstash.putSecret(name, value_of(name), version=1, table=table)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(put, names))


# --------------------------------------------------------------------------

def phase_numbers(env, name, seconds, moto, kube, before, after):
    secret_writes_proxy = sum(v for (verb, res), v in kube.items()
                              if res == "secrets" and verb in ("create", "update", "patch"))
    status_writes = sum(v for (verb, res), v in kube.items()
                        if res == "credstashsyncs/status" and verb in ("patch", "update"))
    secret_gets = kube.get(("get", "secrets"), 0)
    hwm, rss, rss_file, rss_anon = env.rss_kib()
    d = lambda metric_name, **kw: metric(after, metric_name, **kw) - metric(before, metric_name, **kw)
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
    global KUBESTASH
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--namespaces", type=int, default=20)
    parser.add_argument("--secrets", type=int, default=50, help="Secrets per namespace")
    parser.add_argument("--keys", type=int, default=10, help="keys per Secret")
    parser.add_argument("--direct", action="store_true", help="no counting proxy")
    add_backend_argument(parser)
    parser.add_argument("--warm-runs", type=int, default=3, help="warm syncs after the cold one")
    parser.add_argument("--syncs", type=int, default=1, help="CredstashSyncs on the table, each with its share of namespaces")
    parser.add_argument("--bare-scans", type=int, default=3, help="bare parallel Scans timed after the warm runs")
    parser.add_argument("--binary", default=KUBESTASH, help="the kubestash binary (default: the release build)")
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
    KUBESTASH = args.binary
    for binary in (KUBESTASH, FAKE):
        if not os.path.exists(binary):
            sys.exit("missing %s (cargo build --release --bin kubestash; cargo build -p fake-apiserver)" % binary)

    env = Env(direct=args.direct, backend=args.backend)
    try:
        env.fixture("init", table)
        names = ["ns%d/secret%d/KEY_%d" % (k, j, i)
                 for k in range(args.namespaces) for j in range(args.secrets) for i in range(args.keys)]
        started = time.monotonic()
        if args.items_per_data_key > 1:
            seed_shared_keys(table, names, lambda n: "value of " + n, args.items_per_data_key)
        else:
            seed(table, names, lambda n: "value of " + n)
        print("seeded %d keys in %.1f s" % (len(names), time.monotonic() - started), file=sys.stderr, flush=True)
        for k in range(args.namespaces):
            env.create_namespace("ns%d" % k)
        env.create_namespace(OPERATOR_NS)
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
            status = wait_for(lambda: (lambda s: s if s.get("lastSyncTime") and (s.get("secrets") or {}).get("managed") == expected[c]
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
                status = wait_for(lambda: (lambda s: s if s.get("lastResyncRequest") == requests[c] else None)(
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
