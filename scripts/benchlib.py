"""The harness of the benchmarks (bench-sync.py, bench-stream.py,
bench-burst.py, bench-drift.py, bench-ha.py, bench-rollout.py): moto, an API
server (the fake, or a real control plane), a counting proxy and the operator
(Env, the one place that decides the backend), and what they read back
(metrics, watches, waits). Each script imports it: `import benchlib as bench`
(a script's directory is on sys.path).
"""
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

    def __init__(self, env, namespace, name=None):
        """`name`: only that Secret (a metadata.name field selector)."""
        self.env = env
        self.cond = threading.Condition()
        self.error = None
        only = "fieldSelector=metadata.name%%3D%s&" % name if name else ""
        code, listing = env.kube("GET", "/api/v1/namespaces/%s/secrets?%s" % (namespace, only))
        if code != 200:
            raise RuntimeError("listing secrets: %s %s" % (code, listing))
        for item in listing.get("items", []):
            self.on_event("ADDED", item, time.monotonic())
        path = "/api/v1/namespaces/%s/secrets?watch=true&%sresourceVersion=%s&timeoutSeconds=3600" % (
            namespace, only, listing["metadata"]["resourceVersion"])
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


def seed(table, names, value_of, workers=16):
    import credstash

    def put(name):
        credstash.putSecret(name, value_of(name), version=1, table=table)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(put, names))


def percentile(values, p):
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, int(round(p / 100.0 * len(ordered) + 0.5)) - 1))
    return ordered[k]  # nearest-rank
