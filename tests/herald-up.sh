# Sourced by the suites that run against a real `herald` process
# (tests/seed000/run.sh, tests/openapi/run.sh): a Python venv for the suite,
# the debug build the other suites share, and Herald started on a free port
# with a fresh data dir and a random JWT secret, stopped (its log shown on
# failure) when the script exits.
#
#   source "$(dirname "${BASH_SOURCE[0]}")/../herald-up.sh"
#   herald_venv NAME REQUIREMENTS   # sets VENV and PY
#   herald_build
#   herald_start NAME               # sets WORK, SERVER_LOG, SERVER_PID, HERALD_ADDR, HTTP_URL
#
# Set extra HERALD_* variables after sourcing this file and before herald_start.

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TMP="${TMPDIR:-/tmp}"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
# The debug build that `cargo test` and the other suites already made: a
# release build of its own would add minutes to CI.
HERALD="$TARGET_DIR/debug/herald"

# Nothing from the caller's environment may change how the server starts.
while read -r var; do unset "$var"; done < <(compgen -e | grep '^HERALD_' || true)

# A venv under $TMP for suite NAME, reinstalled when REQUIREMENTS changes.
herald_venv() {
  local name=$1 requirements=$2
  VENV="$TMP/herald-$name-venv"
  if [[ ! -x "$VENV/bin/python" ]]; then
    echo "==> creating venv $VENV"
    python3 -m venv "$VENV"
  fi
  if ! cmp -s "$requirements" "$VENV/.$name-requirements.txt"; then
    echo "==> installing $requirements"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements"
    cp "$requirements" "$VENV/.$name-requirements.txt"
  fi
  PY="$VENV/bin/python"
}

herald_build() {
  echo "==> cargo build --bin herald --example executor"
  (cd "$ROOT" && cargo build --bin herald --example executor)
}

_herald_stop() {
  local status=$?
  if [[ -n "${SERVER_PID:-}" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill "$SERVER_PID" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
  fi
  if [[ $status -ne 0 && -s "${SERVER_LOG:-}" ]]; then
    echo "==> last lines of the server log ($SERVER_LOG):"
    tail -n 40 "$SERVER_LOG" || true
    cp "$SERVER_LOG" "$TMP/herald-$_HERALD_NAME-server.log" 2>/dev/null \
      && echo "==> full server log kept at $TMP/herald-$_HERALD_NAME-server.log"
  fi
  rm -rf "${WORK:-}"
  exit "$status"
}

# Starts Herald for suite NAME and waits (up to 30 s) for GET /healthz.
herald_start() {
  _HERALD_NAME=$1
  WORK="$(mktemp -d "$TMP/herald-$1.XXXXXX")"
  SERVER_LOG="$WORK/server.log"
  SERVER_PID=""
  trap _herald_stop EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
  local port
  port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')"
  export HERALD_ADDR="127.0.0.1:$port"
  export HERALD_DATA_DIR="$WORK/data"
  HERALD_JWT_SECRET="$(python3 -c 'import secrets; print(secrets.token_hex(32))')"
  export HERALD_JWT_SECRET
  mkdir -p "$HERALD_DATA_DIR"
  echo "==> starting $HERALD on $HERALD_ADDR (data dir $HERALD_DATA_DIR)"
  "$HERALD" >"$SERVER_LOG" 2>&1 &
  SERVER_PID=$!
  HTTP_URL="http://$HERALD_ADDR"
  for _ in $(seq 300); do
    kill -0 "$SERVER_PID" 2>/dev/null || { echo "herald exited before becoming healthy" >&2; exit 1; }
    if curl -fsS --max-time 1 "$HTTP_URL/healthz" >/dev/null 2>&1; then
      echo "==> herald is healthy"
      return 0
    fi
    sleep 0.1
  done
  echo "herald did not answer GET /healthz within 30s" >&2
  exit 1
}
