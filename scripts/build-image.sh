#!/usr/bin/env bash
# Builds the operator image with buildah, with no container registry: the
# Dockerfile's final stage (FROM scratch) alone, from the static binary of
# scripts/build-static.sh and this machine's CA bundle, given to buildah as the
# named build context `build` (see the Dockerfile's header). Then checks it:
#  - the image (uncompressed, as `docker images` counts) is under 30 MB,
#  - its config runs as 65532:65532 with the Dockerfile's ENTRYPOINT,
#  - `kubestash --version`, run in the image (buildah run), names Cargo.toml's version,
# and writes it as an OCI archive to target/image/kubestash.oci.tar (tag
# kubestash:VERSION inside), checked to hold the binary and the CA bundle the
# binary's TLS reads, and nothing else. The image stays in buildah's storage as
# localhost/kubestash:VERSION for scripts/test-image.sh.
#
#   scripts/build-image.sh
#
# buildah is installed from Debian (apt-get) when missing. It runs with the vfs
# storage driver and chroot isolation, which work inside a container with no
# overlay mounts and no OCI runtime (STORAGE_DRIVER and BUILDAH_ISOLATION
# override them). The static binary is
# (re)built first when target/static/kubestash is missing or older than the
# sources.
set -euo pipefail
cd "$(dirname "$0")/.."
started=$SECONDS
VERSION=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n1)
[ -n "$VERSION" ] || { echo "build-image: no version in Cargo.toml" >&2; exit 1; }
IMAGE=kubestash:$VERSION
BIN=target/static/kubestash
OUT=target/image
ARCHIVE=$OUT/kubestash.oci.tar
CA_BUNDLE=${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
MAX_BYTES=$((30 * 1000 * 1000))
export BUILDAH_ISOLATION=${BUILDAH_ISOLATION:-chroot}
# buildah 1.28 does not read STORAGE_DRIVER itself: pass it as the flag.
STORAGE_DRIVER=${STORAGE_DRIVER:-vfs}
buildah() { command buildah --storage-driver "$STORAGE_DRIVER" "$@"; }
die() { echo "build-image: $*" >&2; exit 1; }

if ! command -v buildah >/dev/null; then
  SUDO=; [ "$(id -u)" -eq 0 ] || SUDO=sudo
  echo "build-image: installing buildah (Debian)" >&2
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq buildah >/dev/null
fi
[ -s "$CA_BUNDLE" ] || die "no CA bundle at $CA_BUNDLE (Debian: apt-get install ca-certificates)"

if [ ! -x "$BIN" ] || [ -n "$(find src Cargo.toml Cargo.lock -newer "$BIN" -print -quit)" ]; then
  ./scripts/build-static.sh "$BIN"
fi

# The named build context standing in for the builder stage: its /out.
CTX=$(mktemp -d /tmp/kubestash-image.XXXX)
container=
cleanup() {
  if [ -n "$container" ]; then buildah rm "$container" >/dev/null 2>&1 || true; fi
  rm -rf "$CTX"
}
trap cleanup EXIT
mkdir -p "$CTX/build/out" "$CTX/empty"
install -m 0755 "$BIN" "$CTX/build/out/kubestash"
install -m 0644 "$CA_BUNDLE" "$CTX/build/out/ca-certificates.crt"

previous=$(buildah images --noheading --format '{{.ID}}' "$IMAGE" 2>/dev/null || true)
build_started=$SECONDS
# The main context is empty: the final stage reads only the `build` context.
buildah bud --quiet --isolation "$BUILDAH_ISOLATION" --build-context "build=$CTX/build" \
  -f "$PWD/Dockerfile" -t "$IMAGE" "$CTX/empty" >/dev/null \
  || die "buildah bud failed"
build_seconds=$((SECONDS - build_started))
id=$(buildah images --noheading --no-trunc --format '{{.ID}}' "$IMAGE")
if [ -n "$previous" ] && [ "${id#sha256:}" != "${previous#sha256:}" ]; then
  buildah rmi "$previous" >/dev/null 2>&1 || true  # the untagged image of the last build
fi

# Size: the uncompressed layers (buildah stores them as plain tar) and the config.
inspect() {
  buildah inspect --type image "$IMAGE" | python3 -c '
import json, sys
d = json.load(sys.stdin)
m = json.loads(d["Manifest"])
print({"size": m["config"]["size"] + sum(l["size"] for l in m["layers"]),
       "user": d["OCIv1"]["config"].get("User", ""),
       "entrypoint": json.dumps(d["OCIv1"]["config"].get("Entrypoint"))}[sys.argv[1]])' "$1"
}
size=$(inspect size)
[ "$size" -lt "$MAX_BYTES" ] || die "$IMAGE is $size bytes, over the $MAX_BYTES budget"
user=$(inspect user)
[ "$user" = "65532:65532" ] || die "$IMAGE runs as '$user', not 65532:65532"
entrypoint=$(inspect entrypoint)
[ "$entrypoint" = '["/usr/local/bin/kubestash"]' ] || die "$IMAGE has ENTRYPOINT $entrypoint"

container=$(buildah from --quiet "$IMAGE")
version=$(buildah run --isolation "$BUILDAH_ISOLATION" "$container" -- /usr/local/bin/kubestash --version) \
  || die "kubestash --version failed in $IMAGE"
[ "$version" = "kubestash $VERSION" ] || die "kubestash --version in $IMAGE said '$version', not 'kubestash $VERSION'"
buildah rm "$container" >/dev/null; container=

mkdir -p "$OUT"
rm -f "$ARCHIVE"
buildah push --quiet "$IMAGE" "oci-archive:$ARCHIVE:$IMAGE" >/dev/null || die "buildah push to $ARCHIVE failed"
archive_size=$(stat -c %s "$ARCHIVE")
# What the archive ships: exactly the binary and the CA bundle (and their folders).
python3 - "$ARCHIVE" <<'PY' || die "$ARCHIVE does not hold what the image should"
import io, json, sys, tarfile
outer = tarfile.open(sys.argv[1])
blob = lambda digest: outer.extractfile("blobs/" + digest.replace(":", "/")).read()
index = json.loads(outer.extractfile("index.json").read())
manifest = json.loads(blob(index["manifests"][0]["digest"]))
files = {}
for layer in manifest["layers"]:
    for member in tarfile.open(fileobj=io.BytesIO(blob(layer["digest"]))):
        if not member.isdir():
            files[member.name.lstrip("./")] = member
expected = {"usr/local/bin/kubestash", "etc/ssl/certs/ca-certificates.crt"}
if set(files) != expected:
    sys.exit(f"files {sorted(files)}, expected {sorted(expected)}")
if not files["usr/local/bin/kubestash"].mode & 0o001 or not files["etc/ssl/certs/ca-certificates.crt"].mode & 0o004:
    sys.exit("the binary is not executable, or the CA bundle not readable, by uid 65532")
PY

mb() { python3 -c 'import sys; print(f"{int(sys.argv[1]) / 1e6:.1f} MB")' "$1"; }
id=${id#sha256:}
echo "build-image: localhost/$IMAGE (${id:0:12}): $size bytes ($(mb "$size")) uncompressed," \
     "user $user, '$version' in the image; buildah bud ${build_seconds} s, $((SECONDS - started)) s in all"
echo "build-image: $ARCHIVE: $archive_size bytes ($(mb "$archive_size"), gzip layers)"
