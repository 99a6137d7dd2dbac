#!/usr/bin/env bash
# Creates .venv with the pinned AWS emulator and the real credstash CLI that the
# tests and the playground use, and installs Prometheus (Debian's package, via
# scripts/prometheus-env.sh). Idempotent; needs PyPI and Debian apt.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/prometheus-env.sh
MOTO_VERSION=5.2.5
CREDSTASH_VERSION=1.17.1
if [ -x .venv/bin/moto_server ] && [ -x .venv/bin/credstash ] \
   && .venv/bin/python -c "import importlib.metadata as m, sys; sys.exit(not (m.version('moto') == '$MOTO_VERSION' and m.version('credstash') == '$CREDSTASH_VERSION'))" 2>/dev/null; then
  exit 0
fi
python3 -m venv .venv
.venv/bin/pip install --quiet --disable-pip-version-check "moto[server]==$MOTO_VERSION" "credstash==$CREDSTASH_VERSION"
echo "test environment ready: .venv (moto $MOTO_VERSION, credstash $CREDSTASH_VERSION)"
