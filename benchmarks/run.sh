#!/usr/bin/env bash
# Runs one herald-bench scenario against a freshly started release Herald and
# stops it afterwards:
#
#   benchmarks/run.sh s1 --subscribers 1000 --json /tmp/s1.json
#   HERALD_DATABASE_URL=postgres://… benchmarks/run.sh s4 --clients 64
#
# Build first with `cargo build --release --workspace` (herald and herald-bench). Extra arguments go to herald-bench;
# --url, --pid and --secret are filled in.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release"
PORT="${PORT:-18080}"
DATA="$(mktemp -d)"
export HERALD_JWT_SECRET="${HERALD_JWT_SECRET:-bench-secret-that-is-at-least-32-bytes-long}"
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
HERALD_ADDR="127.0.0.1:$PORT" HERALD_DATA_DIR="$DATA" HERALD_WS_MAX_CONNECTIONS=30000 HERALD_LOG=warn \
  "$BIN/herald" >"$DATA/herald.log" 2>&1 &
PID=$!
trap 'kill $PID 2>/dev/null; wait $PID 2>/dev/null; rm -rf "$DATA"' EXIT
for _ in $(seq 100); do
  curl -fs "http://127.0.0.1:$PORT/healthz" >/dev/null && break
  sleep 0.1
done
"$BIN/herald-bench" "$@" --url "http://127.0.0.1:$PORT" --pid "$PID" --secret "$HERALD_JWT_SECRET"
