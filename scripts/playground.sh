#!/usr/bin/env bash
# The local playground: a local AWS emulator (moto) seeded by the real
# credstash CLI, then kubestash reading and decrypting the table.
# Everything runs on 127.0.0.1 and stops when this script ends.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/test-env.sh
cargo build --quiet --bin kubestash
KUBESTASH=target/debug/kubestash
PORT=${MOTO_PORT:-5555}

LOGS=$(mktemp -d /tmp/kubestash-playground.XXXX)
exec 3< <(.venv/bin/python tests/support/moto_guard.py "$PORT" 2>"$LOGS/moto.log")
read -r ready <&3 && [ "$ready" = ready ] || { echo "moto did not start" >&2; exit 1; }
export AWS_ENDPOINT_URL=http://127.0.0.1:$PORT AWS_ACCESS_KEY_ID=playground AWS_SECRET_ACCESS_KEY=playground \
       AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true
step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; "$@"; }

.venv/bin/python tests/support/fixture.py init credential-store
step .venv/bin/credstash put test/mysecret/TEST_KEY '$ecreT'
step .venv/bin/credstash put test/mysecret/db.password 'hunter2' -d SHA512
step .venv/bin/credstash put prod/api/TOKEN 'v1-token'
step .venv/bin/credstash put -a prod/api/TOKEN 'v2-token'
step "$KUBESTASH" list --table credential-store
step "$KUBESTASH" getall --table credential-store --format json
step "$KUBESTASH" get prod/api/TOKEN --table credential-store --version 1
