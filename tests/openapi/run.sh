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
ROOT="$(cd "$HERE/../.." && pwd)"
TMP="${TMPDIR:-/tmp}"
VENV="$TMP/herald-openapi-venv"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
HERALD="$TARGET_DIR/debug/herald"
MAX_EXAMPLES="${SCHEMATHESIS_MAX_EXAMPLES:-25}"

# Nothing from the caller's environment may change how the server starts.
while read -r var; do unset "$var"; done < <(compgen -e | grep '^HERALD_' || true)

if [[ ! -x "$VENV/bin/python" ]]; then
  echo "==> creating venv $VENV"
  python3 -m venv "$VENV"
fi
if ! cmp -s "$HERE/requirements.txt" "$VENV/.openapi-requirements.txt"; then
  echo "==> installing $HERE/requirements.txt"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$HERE/requirements.txt"
  cp "$HERE/requirements.txt" "$VENV/.openapi-requirements.txt"
fi
PY="$VENV/bin/python"

echo "==> cargo build --bin herald --example executor"
(cd "$ROOT" && cargo build --bin herald --example executor)

WORK="$(mktemp -d "$TMP/herald-openapi.XXXXXX")"
SERVER_LOG="$WORK/server.log"
SERVER_PID=""
cleanup() {
  local status=$?
  if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill "$SERVER_PID" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
  fi
  if [[ $status -ne 0 && -s "$SERVER_LOG" ]]; then
    echo "==> last lines of the server log:"
    tail -n 40 "$SERVER_LOG" || true
    cp "$SERVER_LOG" "$TMP/herald-openapi-server.log" 2>/dev/null \
      && echo "==> full server log kept at $TMP/herald-openapi-server.log"
  fi
  rm -rf "$WORK"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

PORT="$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')"
export HERALD_ADDR="127.0.0.1:$PORT"
export HERALD_DATA_DIR="$WORK/data"
export HERALD_JWT_SECRET="$("$PY" -c 'import secrets; print(secrets.token_hex(32))')"
# Streams end when their token expires (hooks.py): no grace period.
export HERALD_JWT_LEEWAY=0s
mkdir -p "$HERALD_DATA_DIR"

echo "==> starting $HERALD on $HERALD_ADDR"
"$HERALD" >"$SERVER_LOG" 2>&1 &
SERVER_PID=$!
URL="http://$HERALD_ADDR"
for _ in $(seq 300); do
  kill -0 "$SERVER_PID" 2>/dev/null || { echo "herald exited before becoming healthy" >&2; exit 1; }
  curl -fsS --max-time 1 "$URL/healthz" >/dev/null 2>&1 && break
  sleep 0.1
done
curl -fsS --max-time 2 "$URL/healthz" >/dev/null

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
