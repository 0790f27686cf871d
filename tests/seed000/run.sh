#!/usr/bin/env bash
# Runs seed 000's WebSocket test suite (test_seed000.py) end to end against a
# freshly built Herald: venv, build, start the server on a free port with a
# fresh data dir and a random JWT secret, mint a token, run pytest, stop the
# server. Exits with pytest's status.
#
#   tests/seed000/run.sh [extra pytest args...]
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
TMP="${TMPDIR:-/tmp}"
VENV="$TMP/herald-seed000-venv"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
# The debug build that `cargo test` and the other suites already made: a
# release build of its own would add minutes to CI for five quick tests.
HERALD="$TARGET_DIR/debug/herald"

# Nothing from the caller's environment may change how the server starts.
while read -r var; do unset "$var"; done < <(compgen -e | grep '^HERALD_' || true)

# 1. Python environment (reinstalled when requirements.txt changes).
if [[ ! -x "$VENV/bin/python" ]]; then
  echo "==> creating venv $VENV"
  python3 -m venv "$VENV"
fi
if ! cmp -s "$HERE/requirements.txt" "$VENV/.seed000-requirements.txt"; then
  echo "==> installing $HERE/requirements.txt"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$HERE/requirements.txt"
  cp "$HERE/requirements.txt" "$VENV/.seed000-requirements.txt"
fi
PY="$VENV/bin/python"

# 2. Build.
echo "==> cargo build --bin herald --example executor"
(cd "$ROOT" && cargo build --bin herald --example executor)

# 3. Start Herald on a free port with a fresh data dir and a random secret.
WORK="$(mktemp -d "$TMP/herald-seed000.XXXXXX")"
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
    echo "==> last lines of the server log ($SERVER_LOG):"
    tail -n 40 "$SERVER_LOG" || true
    cp "$SERVER_LOG" "$TMP/herald-seed000-server.log" 2>/dev/null \
      && echo "==> full server log kept at $TMP/herald-seed000-server.log"
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
mkdir -p "$HERALD_DATA_DIR"

echo "==> starting $HERALD on $HERALD_ADDR (data dir $HERALD_DATA_DIR)"
"$HERALD" >"$SERVER_LOG" 2>&1 &
SERVER_PID=$!

HTTP_URL="http://$HERALD_ADDR"
ready=""
for _ in $(seq 300); do  # up to ~30s
  if ! kill -0 "$SERVER_PID" 2>/dev/null; then
    echo "herald exited before becoming healthy" >&2
    exit 1
  fi
  if "$PY" - "$HTTP_URL/healthz" <<'PYEOF' 2>/dev/null; then
import sys, urllib.request
with urllib.request.urlopen(sys.argv[1], timeout=1) as r:
    sys.exit(0 if r.status == 200 else 1)
PYEOF
    ready=1
    break
  fi
  sleep 0.1
done
if [[ -z "$ready" ]]; then
  echo "herald did not answer GET /healthz within 30s" >&2
  exit 1
fi
echo "==> herald is healthy"

# 4. A token signed with the same secret.
HERALD_TOKEN="$("$HERALD" token --sub seed-user --role admin)"

# 5. The tests.
export HERALD_HTTP_URL="$HTTP_URL"
export HERALD_WS_URL="ws://$HERALD_ADDR"
export HERALD_TOKEN
echo "==> pytest -q tests/seed000"
set +e
(cd "$ROOT" && "$PY" -m pytest -q -p no:cacheprovider "$HERE" "$@")
status=$?
set -e
exit "$status"
