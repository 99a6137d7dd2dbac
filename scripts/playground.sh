#!/usr/bin/env bash
# The local playground: a local AWS emulator (moto) seeded by the real
# credstash CLI, the project's fake Kubernetes API server, and the kubestash
# operator syncing the table into Secrets, live through the DynamoDB stream,
# and (when scripts/prometheus-env.sh has installed it) a Prometheus that
# scrapes the operator with the chart's alerts loaded, asked the dashboard's
# headline queries. Everything runs on 127.0.0.1 and stops when this script ends.
#
#   ./scripts/playground.sh          the fake API server (starts in a moment)
#   ./scripts/playground.sh --real   the same demo on a real control plane (kube-apiserver,
#                                    etcd, kube-controller-manager built from the official Go
#                                    modules by scripts/control-plane.sh; minutes the first time)
set -euo pipefail
cd "$(dirname "$0")/.."
case "${1:-}" in
  "") BACKEND=fake ;;
  --real) BACKEND=real ;;
  *) echo "usage: $0 [--real]" >&2; exit 2 ;;
esac
./scripts/test-env.sh
echo "building kubestash and the fake API server..."
cargo build --quiet --bin kubestash -p kubestash
cargo build --quiet -p fake-apiserver --bin fake-apiserver
KUBESTASH=$PWD/target/debug/kubestash
WORK=$(mktemp -d /tmp/kubestash-playground.XXXX)
free_port() { .venv/bin/python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
MOTO_PORT=$(free_port); API_PORT=$(free_port); OPERATOR_PORT=$(free_port); PROM_PORT=$(free_port)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  if [ "$BACKEND" = real ]; then ./scripts/control-plane.sh stop "$WORK/control-plane"; fi
}
trap cleanup EXIT
step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; "$@"; }
wait_until() { for _ in $(seq 1 200); do if eval "$1" >/dev/null 2>&1; then return 0; fi; sleep 0.1; done; echo "timed out: $1" >&2; return 1; }

# AWS: moto, with credstash's KMS key and table, and a stream on the table.
exec 3< <(.venv/bin/python tests/support/moto_guard.py "$MOTO_PORT" 2>"$WORK/moto.log")
read -r ready <&3 && [ "$ready" = ready ] || { echo "moto did not start" >&2; exit 1; }
export AWS_ENDPOINT_URL=http://127.0.0.1:$MOTO_PORT AWS_ACCESS_KEY_ID=playground AWS_SECRET_ACCESS_KEY=playground \
       AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true
.venv/bin/python tests/support/fixture.py init credential-store
.venv/bin/python tests/support/fixture.py enable-stream credential-store KEYS_ONLY

# Kubernetes: the fake API server or the real control plane, the CRD, two namespaces.
if [ "$BACKEND" = real ]; then
  ./scripts/control-plane.sh start "$WORK/control-plane"
  export KUBECONFIG=$WORK/control-plane/kubeconfig
  KUBECTL=$WORK/control-plane/bin/kubectl   # the same release as the server
else
  target/debug/fake-apiserver --listen "127.0.0.1:$API_PORT" --kubeconfig "$WORK/kubeconfig" >"$WORK/apiserver.log" 2>&1 &
  PIDS+=($!)
  export KUBECONFIG=$WORK/kubeconfig
  KUBECTL=$(command -v kubectl)
  wait_until "[ -s $KUBECONFIG ] && $KUBECTL --cache-dir $WORK/cache get ns"
fi
kubectl() { "$KUBECTL" --cache-dir "$WORK/cache" "$@"; }

step .venv/bin/credstash put test/mysecret/TEST_KEY '$ecreT'
step .venv/bin/credstash put test/mysecret/db.password 'hunter2' -d SHA512
step .venv/bin/credstash put prod/api/TOKEN 'v1-token'
step "$KUBESTASH" getall --table credential-store
step kubectl apply -f crds/credstashsync.yaml
step kubectl create namespace test
step kubectl create namespace prod
cat >"$WORK/css.yaml" <<YAML
apiVersion: kubestash.io/v1alpha1
kind: CredstashSync
metadata:
  name: playground
spec:
  table: credential-store
  dryRun: false
  waitTime: 0s
YAML
step kubectl apply -f "$WORK/css.yaml"

# The operator.
RUST_LOG=info "$KUBESTASH" run --listen "127.0.0.1:$OPERATOR_PORT" --namespace kubestash-system >"$WORK/operator.log" 2>&1 &
PIDS+=($!)
wait_until "kubectl get css playground -o jsonpath='{.status.conditions[?(@.type==\"Streaming\")].status}' | grep -q True"
step kubectl get credstashsyncs
step kubectl get secrets -A -l app.kubernetes.io/managed-by=kubestash
step kubectl get secret -n test mysecret -o jsonpath='{.data.TEST_KEY}'; echo

# Live: a put reaches the Secret through the stream.
start=$(date +%s.%N)
step .venv/bin/credstash put -a test/mysecret/TEST_KEY 'n3w-$ecreT'
wait_until "[ \"\$(kubectl get secret -n test mysecret -o jsonpath='{.data.TEST_KEY}' | base64 -d)\" = 'n3w-\$ecreT' ]"
elapsed=$(.venv/bin/python -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f}')" "$start" "$(date +%s.%N)")
printf '\nthe new value reached Secret test/mysecret in %s s (credstash put included)\n' "$elapsed"
step kubectl describe credstashsync playground
curl -s "http://127.0.0.1:$OPERATOR_PORT/metrics" | grep -E '^kubestash_(sync_total|stream_apply_total|secret_writes_total|keys)' | sed 's/^/  /'

# Prometheus: the dashboard's headline queries, as Grafana would ask them.
if command -v prometheus >/dev/null; then
  cat >"$WORK/prometheus.yml" <<YAML
global: {scrape_interval: 1s, evaluation_interval: 1s}
rule_files: [$PWD/deploy/prometheus-rules.yaml]
scrape_configs:
  - job_name: kubestash-metrics
    static_configs: [{targets: ['127.0.0.1:$OPERATOR_PORT']}]
YAML
  prometheus --config.file="$WORK/prometheus.yml" --storage.tsdb.path="$WORK/prometheus" \
    --web.listen-address="127.0.0.1:$PROM_PORT" --log.level=warn >"$WORK/prometheus.log" 2>&1 &
  PIDS+=($!)
  PROM=http://127.0.0.1:$PROM_PORT
  wait_until "curl -sf $PROM/api/v1/query --data-urlencode 'query=kubestash_stream_apply_total' | grep -q credstashsync"
  # ...and the alerts were evaluated on a scrape made after that
  scraped=$(date +%s)
  wait_until "curl -sf $PROM/api/v1/rules | .venv/bin/python -c 'import json, sys, datetime as d; g = json.load(sys.stdin)[\"data\"][\"groups\"]; sys.exit(not all(d.datetime.fromisoformat(x[\"lastEvaluation\"][:26].rstrip(\"Z\") + \"+00:00\").timestamp() > $scraped + 1 for x in g))'"
  printf '\n\033[1mPrometheus (%s): the dashboard headline queries\033[0m\n' "$PROM"
  for q in 'sum by (credstashsync, trigger, result) (kubestash_sync_total)' \
           'sum by (credstashsync, state) (kubestash_keys)' \
           'max by (credstashsync) (kubestash_stream_lag_seconds)' \
           'time() - kubestash_last_successful_sync_timestamp_seconds'; do
    printf '\n$ %s\n' "$q"
    curl -s "$PROM/api/v1/query" --data-urlencode "query=$q" | .venv/bin/python -c '
import json, sys
for r in json.load(sys.stdin)["data"]["result"]:
    labels = ", ".join(f"{k}={v}" for k, v in r["metric"].items())
    value = float(r["value"][1])
    print(f"  {{{labels}}}  {value:g}")'
  done
  printf '\nalerts pending or firing: '
  curl -s "$PROM/api/v1/alerts" | .venv/bin/python -c 'import json, sys; print([a["labels"]["alertname"] for a in json.load(sys.stdin)["data"]["alerts"]] or "none")'
else
  echo; echo "(install Prometheus with scripts/prometheus-env.sh to see the dashboard queries answered)"
fi
echo; echo "logs: $WORK"
