#!/usr/bin/env bash
# A real Kubernetes control plane for tests: etcd, kube-apiserver and
# kube-controller-manager built from the official Go modules
# (testing/control-plane), on 127.0.0.1 ports only.
#
#   scripts/control-plane.sh build         builds (or finds cached) binaries; prints their folder
#   scripts/control-plane.sh start DIR     fresh data in DIR, self-signed certificates, RBAC,
#                                          the default admission plugins; writes DIR/kubeconfig
#                                          (admin) and returns once /readyz is ok and the default
#                                          namespaces and ServiceAccounts exist
#   scripts/control-plane.sh stop DIR      stops what `start DIR` started and removes DIR
#
# Binaries are cached by the hash of testing/control-plane's sources in
# $KUBESTASH_CONTROL_PLANE_CACHE (default ~/.cache/kubestash/control-plane),
# Go's build and module caches stay where Go keeps them. With
# KUBESTASH_CONTROL_PLANE_WATCH_PID=PID, the control plane stops by itself once
# process PID has exited (a test run that dies leaves nothing running).
#
# Files in DIR besides the kubeconfig: `admin-token` (a bearer token of the
# same admin, for clients that cannot present certificates), `ca.crt`,
# `server` (the API server's URL), `service-account.key` (the key that signs
# service account tokens), `bin` (the binaries' folder, kubectl among them),
# `logs/`.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
SRC="$ROOT/testing/control-plane"
CACHE="${KUBESTASH_CONTROL_PLANE_CACHE:-${HOME:-/root}/.cache/kubestash/control-plane}"
BUILD_RECIPE="version stamped from go.mod, 1"
# The controllers that need no nodes (no scheduler, no kubelet here).
CONTROLLERS="namespace-controller,garbage-collector-controller,deployment-controller,replicaset-controller,statefulset-controller,daemonset-controller,serviceaccount-controller,serviceaccount-token-controller,clusterrole-aggregation-controller,root-ca-certificate-publisher-controller,job-controller,cronjob-controller,disruption-controller,ttl-after-finished-controller"

die() { echo "control-plane: $*" >&2; exit 1; }

# Go 1.26 from /usr/local/go: Debian's golang-go (1.19, /usr/bin/go) may be
# installed too, for the chart renderer, and cannot build Kubernetes.
go_binary() {
  local go
  for go in "${GO:-}" /usr/local/go/bin/go "$(command -v go || true)"; do
    if [ -n "$go" ] && [ -x "$go" ]; then echo "$go"; return; fi
  done
  die "Go is needed to build the control plane (go.mod asks for $(sed -n 's/^go //p' "$SRC/go.mod"))"
}

build() {
  local hash bin go
  # BUILD_RECIPE names how the binaries are built: change it with the flags.
  hash=$( (cat "$SRC/go.mod" "$SRC/go.sum" "$SRC"/etcd/*.go; echo "$BUILD_RECIPE") | sha256sum | cut -c1-16)
  bin="$CACHE/$hash"
  if [ -x "$bin/kube-apiserver" ] && [ -x "$bin/kube-controller-manager" ] \
     && [ -x "$bin/etcd" ] && [ -x "$bin/kubectl" ]; then
    echo "$bin"; return
  fi
  go=$(go_binary)
  # A module build has no version stamped in; kubectl, helm and clients
  # read it from /version, so stamp the release go.mod pins, as Kubernetes'
  # own build does.
  local release major minor ldflags="" package
  release=$(sed -n 's/^\s*\(require \)\?k8s.io\/kubernetes \(v[0-9.]*\).*/\2/p' "$SRC/go.mod" | head -n1)
  [ -n "$release" ] || die "no k8s.io/kubernetes release in $SRC/go.mod"
  major=${release#v}; major=${major%%.*}
  minor=${release#v*.}; minor=${minor%%.*}
  for package in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $package.gitVersion=$release -X $package.gitMajor=$major -X $package.gitMinor=$minor"
    ldflags+=" -X $package.gitTreeState=clean -X $package.buildDate=1970-01-01T00:00:00Z"
  done
  echo "control-plane: building kube-apiserver, kube-controller-manager, kubectl and etcd into $bin (minutes on a cold cache)" >&2
  local started=$SECONDS
  # A build of its own, moved into place at once: two builds at the same
  # time (a test run and CI's background build) never see half a folder.
  local out
  mkdir -p "$CACHE"
  out=$(mktemp -d "$CACHE/build.XXXX")
  (cd "$SRC" && GOTOOLCHAIN=local "$go" build -mod=readonly -ldflags="$ldflags" -o "$out/" \
      k8s.io/kubernetes/cmd/kube-apiserver \
      k8s.io/kubernetes/cmd/kube-controller-manager \
      k8s.io/kubernetes/cmd/kubectl \
      ./etcd) >&2 || { rm -rf "$out"; die "the build failed"; }
  mv -T "$out" "$bin" 2>/dev/null || rm -rf "$out"   # another build got there first
  echo "control-plane: built in $((SECONDS - started)) s" >&2
  echo "$bin"
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# A CA, the API server's serving certificate, an admin client certificate
# (group system:masters) and the service account signing key.
make_certs() {
  local pki=$1
  mkdir -p "$pki"
  (
    cd "$pki"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 3650 \
      -keyout ca.key -out ca.crt -subj "/CN=kubestash-test-ca" 2>/dev/null
    issue() { # name subject extensions
      openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -keyout "$1.key" -out "$1.csr" -subj "$2" 2>/dev/null
      printf '%s\n' "$3" > "$1.ext"
      openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 \
        -extfile "$1.ext" -out "$1.crt" 2>/dev/null
    }
    issue apiserver "/CN=kube-apiserver" \
      "subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local
extendedKeyUsage=serverAuth"
    issue admin "/O=system:masters/CN=kubestash-admin" "extendedKeyUsage=clientAuth"
    openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out sa.key 2>/dev/null
    openssl pkey -in sa.key -pubout -out sa.pub 2>/dev/null
  )
}

write_kubeconfig() {
  local dir=$1 server=$2 pki=$1/pki
  cat > "$dir/kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: control-plane
  cluster:
    server: $server
    certificate-authority-data: $(base64 -w0 < "$pki/ca.crt")
users:
- name: admin
  user:
    client-certificate-data: $(base64 -w0 < "$pki/admin.crt")
    client-key-data: $(base64 -w0 < "$pki/admin.key")
contexts:
- name: admin
  context:
    cluster: control-plane
    user: admin
current-context: admin
EOF
}

# Starts `$@` in its own session, logging to $LOGS/NAME.log; records its pid.
launch() {
  local name=$1; shift
  setsid "$@" > "$DIR/logs/$name.log" 2>&1 < /dev/null &
  echo "$!" >> "$DIR/pids"
}

# Waits until `$@` succeeds, or fails after $1 seconds naming $2.
await() {
  local seconds=$1 what=$2; shift 2
  local deadline=$((SECONDS + seconds))
  until "$@" > /dev/null 2>&1; do
    if [ $SECONDS -ge $deadline ]; then
      echo "control-plane: timed out after ${seconds}s waiting for $what; logs:" >&2
      tail -n 30 "$DIR"/logs/*.log >&2 || true
      stop_processes
      exit 1
    fi
    alive || { echo "control-plane: a component exited while waiting for $what; logs:" >&2
               tail -n 30 "$DIR"/logs/*.log >&2 || true; stop_processes; exit 1; }
    sleep 0.2
  done
}

alive() {
  local pid
  while read -r pid; do kill -0 "$pid" 2>/dev/null || return 1; done < "$DIR/pids"
}

stop_processes() {
  [ -f "$DIR/pids" ] || return 0
  local pid
  # Controller manager and API server first, etcd last.
  for pid in $(tac "$DIR/pids"); do kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true; done
  for _ in $(seq 50); do
    local running=0
    for pid in $(cat "$DIR/pids"); do kill -0 "$pid" 2>/dev/null && running=1; done
    [ $running = 0 ] && break
    sleep 0.1
  done
  for pid in $(cat "$DIR/pids"); do kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true; done
  rm -f "$DIR/pids"
}

start() {
  local started=$SECONDS bin
  bin=$(build)
  [ -f "$DIR/pids" ] && die "$DIR already has a running control plane (stop it first)"
  rm -rf "$DIR/etcd" "$DIR/logs" "$DIR/pki"
  mkdir -p "$DIR/logs"
  : > "$DIR/pids"
  ln -sfn "$bin" "$DIR/bin"
  make_certs "$DIR/pki"
  cp "$DIR/pki/ca.crt" "$DIR/ca.crt"
  cp "$DIR/pki/sa.key" "$DIR/service-account.key"
  local token
  token=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
  echo "$token" > "$DIR/admin-token"
  echo "$token,kubestash-admin-token,kubestash-admin-token,system:masters" > "$DIR/pki/tokens.csv"

  local etcd_port etcd_peer apiserver_port kcm_port
  etcd_port=$(free_port); etcd_peer=$(free_port); apiserver_port=$(free_port); kcm_port=$(free_port)
  local server="https://127.0.0.1:$apiserver_port"
  echo "$server" > "$DIR/server"

  launch etcd "$bin/etcd" --name=control-plane --data-dir="$DIR/etcd" \
    --listen-client-urls="http://127.0.0.1:$etcd_port" --advertise-client-urls="http://127.0.0.1:$etcd_port" \
    --listen-peer-urls="http://127.0.0.1:$etcd_peer" --initial-advertise-peer-urls="http://127.0.0.1:$etcd_peer" \
    --initial-cluster="control-plane=http://127.0.0.1:$etcd_peer" \
    --unsafe-no-fsync --log-level=warn
  launch kube-apiserver "$bin/kube-apiserver" \
    --etcd-servers="http://127.0.0.1:$etcd_port" \
    --bind-address=127.0.0.1 --advertise-address=127.0.0.1 --secure-port="$apiserver_port" \
    --cert-dir="$DIR/pki" --tls-cert-file="$DIR/pki/apiserver.crt" --tls-private-key-file="$DIR/pki/apiserver.key" \
    --client-ca-file="$DIR/pki/ca.crt" --token-auth-file="$DIR/pki/tokens.csv" \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --service-account-key-file="$DIR/pki/sa.pub" --service-account-signing-key-file="$DIR/pki/sa.key" \
    --api-audiences=https://kubernetes.default.svc.cluster.local \
    --service-cluster-ip-range=10.96.0.0/16 --endpoint-reconciler-type=none \
    --authorization-mode=RBAC --allow-privileged=true \
    --v=1
  write_kubeconfig "$DIR" "$server"
  local curl=(curl -sf --cacert "$DIR/pki/ca.crt" --cert "$DIR/pki/admin.crt" --key "$DIR/pki/admin.key")
  await 60 "kube-apiserver /readyz" "${curl[@]}" "$server/readyz"

  launch kube-controller-manager "$bin/kube-controller-manager" \
    --kubeconfig="$DIR/kubeconfig" --bind-address=127.0.0.1 --secure-port="$kcm_port" \
    --controllers="$CONTROLLERS" --leader-elect=false \
    --service-account-private-key-file="$DIR/pki/sa.key" --root-ca-file="$DIR/pki/ca.crt" \
    --use-service-account-credentials=false \
    --concurrent-gc-syncs=5 --namespace-sync-period=1m \
    --v=1
  local ns
  for ns in default kube-system kube-public kube-node-lease; do
    await 30 "namespace $ns" "${curl[@]}" "$server/api/v1/namespaces/$ns"
    await 30 "ServiceAccount $ns/default" "${curl[@]}" "$server/api/v1/namespaces/$ns/serviceaccounts/default"
  done

  if [ -n "${KUBESTASH_CONTROL_PLANE_WATCH_PID:-}" ]; then
    local parent=$KUBESTASH_CONTROL_PLANE_WATCH_PID script
    script="$(cd "$(dirname "$0")" && pwd)/$(basename "$0")"
    setsid bash -c "while kill -0 $parent 2>/dev/null && [ -f '$DIR/pids' ]; do sleep 1; done; '$script' stop '$DIR'" \
      > /dev/null 2>&1 < /dev/null &
  fi
  echo "control-plane: ready at $server in $((SECONDS - started)) s (kubeconfig: $DIR/kubeconfig)"
}

stop() {
  stop_processes
  rm -rf "$DIR"
}

case "${1:-}" in
  build) build ;;
  start) [ -n "${2:-}" ] || die "usage: $0 start DIR"; mkdir -p "$2"; DIR=$(cd "$2" && pwd); start ;;
  stop) [ -n "${2:-}" ] || die "usage: $0 stop DIR"; [ -d "$2" ] || exit 0; DIR=$(cd "$2" && pwd); stop ;;
  *) die "usage: $0 build | start DIR | stop DIR" ;;
esac
