#!/usr/bin/env bash
# The project's test command: formatting, lints, then every test of the
# workspace on the fake API server, then the cluster tests again on the real
# control plane (scripts/test-real.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
# The real control plane and Helm build in the background, niced, while the
# tests on the fake run (they mostly wait): a cold build takes 10 to 15
# minutes on two cores, a cached one a moment.
# Under CI=true (a fresh machine, nothing to reuse) Go's build and module
# caches are private to this build and removed once the binaries exist:
# they come to about 6 GB, which the Rust builds beside them need.
GO_BUILD_LOG=$(mktemp /tmp/kubestash-go-build.XXXX)
(
  if [ "${CI:-}" = true ]; then
    GO_SCRATCH=$(mktemp -d /tmp/kubestash-go-scratch.XXXX)
    export GOCACHE="$GO_SCRATCH/cache" GOMODCACHE="$GO_SCRATCH/mod"
    trap 'chmod -R u+w "$GO_SCRATCH" 2>/dev/null; rm -rf "$GO_SCRATCH"' EXIT
  fi
  nice -n 19 ./scripts/control-plane.sh build && nice -n 19 ./scripts/helm.sh --path
) > "$GO_BUILD_LOG" 2>&1 &
GO_BUILD=$!
trap 'kill "$GO_BUILD" 2>/dev/null || true' EXIT
./scripts/test-env.sh
./scripts/chart-env.sh    # Debian's Go 1.19 + structured-merge-diff (the SSA oracle), kubernetes-validate
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
# The fake-against-kube-apiserver differential needs the control plane
# being built above: scripts/test-real.sh runs it.
cargo test --workspace -- --skip random_sequences_match_kube_apiserver
if ! wait "$GO_BUILD"; then
  cat "$GO_BUILD_LOG"
  echo "the real control plane or Helm did not build: the tests that need them cannot run" >&2
  exit 1
fi
./scripts/test-chart.sh   # helm lint, helm template, schemas, invariants, promtool
./scripts/test-real.sh
