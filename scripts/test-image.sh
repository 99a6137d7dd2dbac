#!/usr/bin/env bash
# The operator image, end to end: builds it (scripts/build-image.sh: seconds
# when the static binary is current), then runs the operator from inside it
# (buildah run, chroot isolation, the host's network) against
#  - moto on 127.0.0.1, with a credstash table seeded by the real credstash CLI
#    (one key, imagetest/app/KEY), and
#  - a real control plane (scripts/control-plane.sh: kube-apiserver, etcd,
#    kube-controller-manager) with the CRD, namespace imagetest and a
#    CredstashSync writing (dryRun: false),
# and waits until Secret imagetest/app holds the value, as uid 65532 with only
# what the image carries (the kubeconfig is mounted in read-only, AWS settings
# come from the environment). Stops all of it at the end; logs on failure.
#
#   scripts/test-image.sh
#
# Under CI=true a missing tool or environment (buildah, moto and credstash in
# .venv, the control plane's binaries) fails the run; elsewhere it skips it.
# The logs are printed on failure, and with KUBESTASH_IMAGE_TEST_LOGS=1.
set -euo pipefail
cd "$(dirname "$0")/.."
started=$SECONDS
DEADLINE=${KUBESTASH_IMAGE_TEST_TIMEOUT:-90}
VERSION=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n1)
IMAGE=kubestash:$VERSION
TABLE=credential-store
VALUE="image-test-$(date +%s)-$RANDOM"
export BUILDAH_ISOLATION=${BUILDAH_ISOLATION:-chroot}
STORAGE_DRIVER=${STORAGE_DRIVER:-vfs}
buildah() { command buildah --storage-driver "$STORAGE_DRIVER" "$@"; }
fail() { echo "test-image: FAILED: $*" >&2; exit 1; }
unavailable() {
  if [ "${CI:-}" = true ]; then fail "$* (CI=true: this test cannot be skipped)"; fi
  echo "test-image: skipped: $*" >&2; exit 0
}

./scripts/test-env.sh >/dev/null || unavailable "the test environment (.venv with moto and credstash) could not be set up"
CONTROL_PLANE_BIN=$(./scripts/control-plane.sh build) || unavailable "the control plane's binaries could not be built (Go)"
./scripts/build-image.sh || { command -v buildah >/dev/null || unavailable "buildah is missing"; fail "scripts/build-image.sh"; }
image_ready=$SECONDS

WORK=$(mktemp -d /tmp/kubestash-image-test.XXXX)
MOTO_PID=; OPERATOR_PID=; container=; cluster_started=0
logs() {
  echo "---- operator (in the image) ----" >&2; tail -n 60 "$WORK/operator.log" >&2 2>/dev/null || true
  echo "---- moto ----" >&2; tail -n 20 "$WORK/moto.log" >&2 2>/dev/null || true
  echo "---- control plane ----" >&2; tail -n 20 "$WORK"/control-plane/logs/kube-apiserver.log >&2 2>/dev/null || true
}
cleanup() {
  local status=$?
  if [ "$status" -ne 0 ] || [ -n "${KUBESTASH_IMAGE_TEST_LOGS:-}" ]; then logs; fi
  if [ -n "$OPERATOR_PID" ]; then
    # buildah run (and the operator under it) is its own process group.
    kill -TERM -- "-$OPERATOR_PID" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$OPERATOR_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL -- "-$OPERATOR_PID" 2>/dev/null || true
    wait "$OPERATOR_PID" 2>/dev/null || true
  fi
  if [ -n "$container" ]; then buildah rm "$container" >/dev/null 2>&1 || true; fi
  if [ "$cluster_started" = 1 ]; then ./scripts/control-plane.sh stop "$WORK/control-plane" || true; fi
  if [ -n "$MOTO_PID" ]; then kill "$MOTO_PID" 2>/dev/null || true; wait "$MOTO_PID" 2>/dev/null || true; fi
  rm -rf "$WORK"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() { .venv/bin/python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# Waits until `$@` succeeds, or fails naming $1 after the deadline.
await() {
  local what=$1; shift
  local until=$((SECONDS + DEADLINE))
  until "$@" >/dev/null 2>&1; do
    [ "$SECONDS" -lt "$until" ] || fail "timed out after ${DEADLINE} s waiting for $what"
    if [ -n "$OPERATOR_PID" ] && ! kill -0 "$OPERATOR_PID" 2>/dev/null; then
      fail "the operator in the image exited while waiting for $what"
    fi
    sleep 0.2
  done
}

# AWS: moto, a credstash table and its KMS key, one secret put by the real CLI.
MOTO_PORT=$(free_port); METRICS_PORT=$(free_port)
.venv/bin/python tests/support/moto_guard.py "$MOTO_PORT" >"$WORK/moto.ready" 2>"$WORK/moto.log" &
MOTO_PID=$!
await "moto" grep -qx ready "$WORK/moto.ready"
export AWS_ENDPOINT_URL=http://127.0.0.1:$MOTO_PORT AWS_ACCESS_KEY_ID=imagetest AWS_SECRET_ACCESS_KEY=imagetest \
       AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true
.venv/bin/python tests/support/fixture.py init "$TABLE" >/dev/null
.venv/bin/credstash -t "$TABLE" put imagetest/app/KEY "$VALUE" >/dev/null

# Kubernetes: the control plane, the CRD, the namespace, a CredstashSync.
cluster_started=1
KUBESTASH_CONTROL_PLANE_WATCH_PID=$$ ./scripts/control-plane.sh start "$WORK/control-plane" >/dev/null
KUBECTL=$CONTROL_PLANE_BIN/kubectl
kubectl() { "$KUBECTL" --kubeconfig "$WORK/control-plane/kubeconfig" --cache-dir "$WORK/kube-cache" "$@"; }
kubectl apply -f crds/credstashsync.yaml >/dev/null
kubectl wait --for condition=established --timeout=30s crd/credstashsyncs.kubestash.io >/dev/null
kubectl create namespace imagetest >/dev/null
kubectl apply -f - >/dev/null <<YAML
apiVersion: kubestash.io/v1alpha1
kind: CredstashSync
metadata:
  name: image-test
spec:
  table: $TABLE
  dryRun: false
  waitTime: 0s
YAML

# The operator, from the image: its own container, the kubeconfig mounted
# read-only (readable by uid 65532), the host's loopback for moto and the API.
mkdir -p "$WORK/kube"
install -m 0644 "$WORK/control-plane/kubeconfig" "$WORK/kube/kubeconfig"
container=$(buildah from --quiet --name "kubestash-image-test-$$" "$IMAGE")
setsid buildah --storage-driver "$STORAGE_DRIVER" run --isolation "$BUILDAH_ISOLATION" --network host \
  --volume "$WORK/kube:/var/run/kubestash:ro" \
  --env KUBECONFIG=/var/run/kubestash/kubeconfig --env RUST_LOG=info \
  --env AWS_ENDPOINT_URL="$AWS_ENDPOINT_URL" --env AWS_ACCESS_KEY_ID=imagetest \
  --env AWS_SECRET_ACCESS_KEY=imagetest --env AWS_REGION=us-east-1 --env AWS_EC2_METADATA_DISABLED=true \
  "$container" -- /usr/local/bin/kubestash run --listen "127.0.0.1:$METRICS_PORT" \
  --log-format json --namespace kubestash-system --instance image-test \
  >"$WORK/operator.log" 2>&1 </dev/null &
OPERATOR_PID=$!
operator_started=$SECONDS operator_started_at=$EPOCHREALTIME

secret_value() {
  [ "$(kubectl get secret -n imagetest app -o jsonpath='{.data.KEY}' | base64 -d)" = "$VALUE" ]
}
await "Secret imagetest/app to hold the value put with credstash" secret_value
sync_seconds=$(awk -v a="$operator_started_at" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }')
await "the operator's /readyz" curl -sf "http://127.0.0.1:$METRICS_PORT/readyz"

# The operator process (a descendant of buildah run) runs as 65532.
descendants() { local p; for p in $(pgrep -P "$1"); do echo "$p"; descendants "$p"; done; }
operator_uid=
for pid in $(descendants "$OPERATOR_PID"); do
  if [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = kubestash ]; then
    operator_uid=$(awk '/^Uid:/ {print $2}' "/proc/$pid/status")
  fi
done
[ "$operator_uid" = 65532 ] || fail "the operator in the image runs as uid '${operator_uid:-?}', not 65532"
managed=$(kubectl get secret -n imagetest app -o jsonpath='{.metadata.labels.app\.kubernetes\.io/managed-by}')
[ "$managed" = kubestash ] || fail "Secret imagetest/app is not labelled managed-by kubestash ('$managed')"

server_version=$(kubectl get --raw /version | .venv/bin/python -c 'import json, sys; print(json.load(sys.stdin)["gitVersion"])')
echo "test-image: the operator in localhost/$IMAGE (uid $operator_uid) synced imagetest/app/KEY into Secret" \
     "imagetest/app on kube-apiserver $server_version; image built and checked in $((image_ready - started)) s," \
     "moto and the control plane ready $((operator_started - image_ready)) s later, the Secret written" \
     "$sync_seconds s after the operator started; $((SECONDS - started)) s in all"
