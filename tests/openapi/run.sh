#!/usr/bin/env bash
# schemathesis against a running Herald with its own /openapi.json: every
# operation, generated valid and invalid inputs (examples, coverage and fuzzing
# phases), every check (answers as the document says, never a 5xx). Starts the
# debug build the other suites share on a free port with a fresh data dir and
# a random secret; tokens are minted per request by hooks.py.
#
#   tests/openapi/run.sh [extra schemathesis args...]
#
# SCHEMATHESIS_MAX_EXAMPLES (default 25) bounds the generated cases per
# operation so CI stays within its budget.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
MAX_EXAMPLES="${SCHEMATHESIS_MAX_EXAMPLES:-25}"
source "$HERE/../herald-up.sh"
herald_venv openapi "$HERE/requirements.txt"
herald_build
# Streams end when their token expires (hooks.py): no grace period.
export HERALD_JWT_LEEWAY=0s
herald_start openapi
URL="$HTTP_URL"

echo "==> schemathesis run $URL/openapi.json (at most $MAX_EXAMPLES examples per operation)"
export SCHEMATHESIS_HOOKS=hooks
export PYTHONPATH="$HERE${PYTHONPATH:+:$PYTHONPATH}"
# From the scratch dir: schemathesis keeps its cache (.schemathesis/) in the working directory.
cd "$WORK"
"$VENV/bin/schemathesis" --config-file "$HERE/schemathesis.toml" run "$URL/openapi.json" \
  --checks all \
  --phases examples,coverage,fuzzing \
  --max-examples "$MAX_EXAMPLES" \
  --request-timeout 10 \
  --seed "${SCHEMATHESIS_SEED:-4242}" \
  --generation-database none \
  --no-color \
  "$@"

# Whatever schemathesis saw, the server must not have logged an internal error.
if grep -q '"level":"ERROR"\| ERROR ' "$SERVER_LOG"; then
  echo "herald logged errors during the run:" >&2
  grep '"level":"ERROR"\| ERROR ' "$SERVER_LOG" | head -n 20 >&2
  exit 1
fi
