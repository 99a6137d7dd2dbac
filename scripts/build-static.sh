#!/usr/bin/env bash
# Builds the statically linked release binary that the Dockerfile ships:
# glibc's static libc (+crt-static) for x86_64-unknown-linux-gnu, so the same
# script runs in CI and in the image's builder stage, with no musl toolchain.
# Since glibc 2.34 the files and dns NSS modules are part of libc itself, so
# the static binary resolves names with no shared library in the image
# (checked in a chroot holding only the binary and /etc). The binary is copied
# to target/static/kubestash (or $1).
set -euo pipefail
cd "$(dirname "$0")/.."
TARGET=${TARGET:-x86_64-unknown-linux-gnu}
OUT=${1:-${CARGO_TARGET_DIR:-target}/static/kubestash}
MAX_BYTES=${MAX_BYTES:-$((28 * 1024 * 1024))}  # image budget 30 MB, distroless/static is ~2 MB

RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static" \
  cargo build --release --locked --target "$TARGET" --bin kubestash
BIN="${CARGO_TARGET_DIR:-target}/$TARGET/release/kubestash"

if ldd "$BIN" 2>&1 | grep -Eq 'not a dynamic executable|statically linked'; then :; else
  echo "build-static: $BIN is dynamically linked:" >&2; ldd "$BIN" >&2; exit 1
fi
size=$(stat -c %s "$BIN")
if [ "$size" -gt "$MAX_BYTES" ]; then
  echo "build-static: $BIN is $size bytes, over the $MAX_BYTES budget" >&2; exit 1
fi
"$BIN" --version >/dev/null
mkdir -p "$(dirname "$OUT")"
cp "$BIN" "$OUT"
echo "build-static: $OUT static, $((size / 1024 / 1024)) MiB ($size bytes)"
