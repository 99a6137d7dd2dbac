#!/usr/bin/env bash
# The project's test command: formatting, lints, then every test of the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/test-env.sh
./scripts/test-chart.sh   # installs Go + kubernetes-validate, renders and validates the Helm chart
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
cargo test --workspace
