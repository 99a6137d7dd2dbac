#!/usr/bin/env bash
# The project's test command: formatting, lints, then every test of the
# workspace on the fake API server, then the cluster tests again on the real
# control plane (scripts/test-real.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
# The real control plane builds in the background, niced, while the tests on
# the fake run (they mostly wait): a cold build takes 10 to 15 minutes on two
# cores, a cached one a moment.
CONTROL_PLANE_LOG=$(mktemp /tmp/kubestash-control-plane-build.XXXX)
nice -n 19 ./scripts/control-plane.sh build > "$CONTROL_PLANE_LOG" 2>&1 &
CONTROL_PLANE_BUILD=$!
trap 'kill "$CONTROL_PLANE_BUILD" 2>/dev/null || true' EXIT
./scripts/test-env.sh
./scripts/test-chart.sh   # installs Go + kubernetes-validate, renders and validates the Helm chart
# fmt and clippy are rustup components; a toolchain without them must not
# stop the tests, but says so where nobody can miss it.
for tool in fmt clippy; do
  if ! cargo "$tool" --version >/dev/null 2>&1; then
    printf '\n!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n'
    printf '!!! cargo %s is not installed: this check is SKIPPED on this machine !!!\n' "$tool"
    printf '!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n\n'
  elif [ "$tool" = fmt ]; then
    cargo fmt --all -- --check
  else
    cargo clippy --workspace --all-targets -- -D warnings
  fi
done
cargo test --workspace
if ! wait "$CONTROL_PLANE_BUILD"; then
  cat "$CONTROL_PLANE_LOG"
  echo "the real control plane did not build: the cluster tests cannot run on it" >&2
  exit 1
fi
./scripts/test-real.sh
