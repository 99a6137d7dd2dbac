#!/usr/bin/env bash
# The project's test command: formatting, lints, then every test of the
# workspace on the fake API server, then the cluster tests again on the real
# control plane (scripts/test-real.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
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
./scripts/test-real.sh
