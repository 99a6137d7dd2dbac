#!/usr/bin/env bash
# Installs what scripts/test-chart.sh needs, idempotently:
#  - Debian: Go 1.19 with structured-merge-diff v4 (for testing/ssa-oracle,
#    the server-side apply library the fake API server's differential test
#    compares against; Helm itself is built from its module by scripts/helm.sh
#    with Go 1.26 from /usr/local/go);
#  - PyPI, into .venv: kubernetes-validate (Kubernetes JSON schemas, and
#    jsonschema + PyYAML for the values schema and CR checks) and promql-parser
#    (Python bindings of the Rust PromQL parser, for the alerts and dashboard).
set -euo pipefail
cd "$(dirname "$0")/.."
KUBERNETES_VALIDATE_VERSION=1.37.0
PROMQL_PARSER_VERSION=0.12.0
GOPKGS=(golang-go golang-k8s-sigs-structured-merge-diff-dev)

missing=()
for p in "${GOPKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=; [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
if ! .venv/bin/python -c "import importlib.metadata as m, sys; sys.exit(m.version('kubernetes-validate') != '$KUBERNETES_VALIDATE_VERSION' or m.version('promql-parser') != '$PROMQL_PARSER_VERSION')" 2>/dev/null; then
  .venv/bin/pip install --quiet --disable-pip-version-check \
    "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION" "promql-parser==$PROMQL_PARSER_VERSION"
fi
