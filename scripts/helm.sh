#!/usr/bin/env bash
# Helm, built from its official module (testing/helm pins helm.sh/helm/v4),
# cached by the hash of that module: `scripts/helm.sh ARGS...` runs
# `helm ARGS...`; `scripts/helm.sh --path` only builds it and prints its path.
# The first build takes minutes (it shares Go's cache with the control plane).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
SRC="$ROOT/testing/helm"
CACHE="${KUBESTASH_HELM_CACHE:-${HOME:-/root}/.cache/kubestash/helm}"
GO="${GO:-/usr/local/go/bin/go}"
[ -x "$GO" ] || GO=$(command -v go) || { echo "helm: Go is needed to build helm" >&2; exit 1; }
hash=$(cat "$SRC/go.mod" "$SRC/go.sum" | sha256sum | cut -c1-16)
bin="$CACHE/$hash/helm"
if [ ! -x "$bin" ]; then
  version=$(sed -n 's/^\s*\(require \)\?helm.sh\/helm\/v4 \(v[0-9.]*\).*/\2/p' "$SRC/go.mod" | head -n1)
  echo "helm: building $version into $bin (minutes on a cold Go cache)" >&2
  mkdir -p "$CACHE/$hash"
  out=$(mktemp "$CACHE/$hash/helm.XXXX")   # own file: concurrent builds never race
  (cd "$SRC" && GOTOOLCHAIN=local "$GO" build -mod=readonly \
      -ldflags "-X helm.sh/helm/v4/internal/version.version=$version" \
      -o "$out" helm.sh/helm/v4/cmd/helm) >&2 || { rm -f "$out"; exit 1; }
  mv -f "$out" "$bin"
fi
if [ "${1:-}" = --path ]; then echo "$bin"; exit 0; fi
exec "$bin" "$@"
