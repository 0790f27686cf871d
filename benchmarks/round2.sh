#!/usr/bin/env bash
# Round two of BENCHMARKS.md: Herald beside its peers (../shared/peers: NATS core,
# Socket.IO) under the same load generator, in one run, on one machine. Writes
# one JSON per run to benchmarks/round2/ (or $OUT) and prints each table.
#
#   cargo build --release --workspace && benchmarks/round2.sh            # everything
#   benchmarks/round2.sh s1 s3                                           # some scenarios
#
# Scenarios: s1 (fan-out at 1,000 and 10,000 subscribers), s3 (10,000 idle
# connections), s2 (end-to-end, Herald only), s4 (durable ingest: Herald's
# stream, unary and HTTP ways in, and NATS JetStream), s4pg (durable ingest on
# PostgreSQL, over TCP and over its Unix socket; PG, default
# postgres://postgres@127.0.0.1:5432/postgres, a fresh database per run), s7
# (catch-up, Herald only).
# Peers: PEERS (default ../shared/peers beside the repository); the Socket.IO
# peer is copied to a temporary folder and installed with `npm ci` there.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release"
PEERS="${PEERS:-$ROOT/../shared/peers}"
OUT="${OUT:-$ROOT/benchmarks/round2}"
SCENARIOS="${*:-s1 s3 s2 s4 s7}"
export HERALD_JWT_SECRET="${HERALD_JWT_SECRET:-bench-secret-that-is-at-least-32-bytes-long}"
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
mkdir -p "$OUT"
WORK="$(mktemp -d)"
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT

wait_http() { for _ in $(seq 200); do curl -fs "$1" >/dev/null && return 0; sleep 0.1; done; echo "not up: $1" >&2; return 1; }

# A fresh Herald (SQLite in its own data dir, or DB_URL) on port $1; its PID in HPID.
start_herald() {
  local dir="$WORK/herald-$1"; rm -rf "$dir"; mkdir -p "$dir"
  local database=(); [ -n "${DB_URL:-}" ] && database=(HERALD_DATABASE_URL="$DB_URL")
  env "${database[@]}" HERALD_ADDR="127.0.0.1:$1" HERALD_DATA_DIR="$dir" HERALD_WS_MAX_CONNECTIONS=30000 HERALD_LOG=warn \
    HERALD_MAX_CONNECTIONS_PER_IP=100000 HERALD_CONNECTION_RATE_PER_IP=100000 \
    "$BIN/herald" >"$dir/log" 2>&1 &
  HPID=$!; PIDS+=("$HPID")
  wait_http "http://127.0.0.1:$1/healthz"
}
stop() { kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }

# The NATS peer (fresh JetStream store); its PID in NPID.
start_nats() {
  NATS_TCP_PORT=18422 NATS_WS_PORT=18491 NATS_HTTP_PORT=18432 NATS_STORE_DIR="$WORK/nats-$RANDOM" \
    "$PEERS/nats/run.sh" >"$WORK/nats.log" 2>&1 &
  NPID=$!; PIDS+=("$NPID")
  wait_http "http://127.0.0.1:18432/healthz"
}

# The Socket.IO peer, installed once in a copy; its PID in SPID.
start_socketio() {
  if [ ! -d "$WORK/sio/node_modules" ]; then
    cp -r "$PEERS/socketio" "$WORK/sio" && chmod -R u+w "$WORK/sio"
    (cd "$WORK/sio" && npm ci --no-audit --no-fund >/dev/null)
  fi
  (cd "$WORK/sio" && JWT_SECRET="$HERALD_JWT_SECRET" PORT=18390 exec node server.js >"$WORK/sio.log" 2>&1) &
  SPID=$!; PIDS+=("$SPID")
  wait_http "http://127.0.0.1:18390/healthz"
}

bench() { local name=$1; shift; echo "== $name"; "$BIN/herald-bench" "$@" --json "$OUT/$name.json"; }

for s in $SCENARIOS; do
  case $s in
    s1|s3)
      if [ "$s" = s1 ]; then sizes="1000 10000"; else sizes="10000"; fi
      for n in $sizes; do
        extra=(); [ "$s" = s3 ] && extra=(--warmup 5s --duration 20s)
        start_herald 18080
        bench "$s-herald-$n" "$s" --url http://127.0.0.1:18080 --pid "$HPID" --subscribers "$n" "${extra[@]}"
        stop "$HPID"
        start_nats
        bench "$s-nats-$n" "$s" --target nats --url nats://127.0.0.1:18422 --subscribe-url ws://127.0.0.1:18491 \
          --pid "$NPID" --subscribers "$n" "${extra[@]}"
        stop "$NPID"
        start_socketio
        bench "$s-socketio-$n" "$s" --target socketio --url http://127.0.0.1:18390 --pid "$SPID" \
          --subscribers "$n" "${extra[@]}"
        stop "$SPID"
        sleep 2 # let the kernel finish closing the last run's sockets
      done
      ;;
    s2)
      start_herald 18080
      bench s2-herald s2 --url http://127.0.0.1:18080 --pid "$HPID"
      stop "$HPID"
      ;;
    s4)
      # Durable ingest, 64 clients: Herald's three ways in (a fresh SQLite
      # store each), then JetStream (file store) publishing and awaiting the
      # stored ack.
      for mode in stream unary http; do
        start_herald 18080
        bench "s4-herald-$mode" s4 --url http://127.0.0.1:18080 --pid "$HPID" --mode "$mode"
        stop "$HPID"
      done
      start_nats
      bench s4-nats-js s4 --target nats-js --url nats://127.0.0.1:18422 --pid "$NPID"
      stop "$NPID"
      ;;
    s4pg)
      # The same on PostgreSQL: a fresh database per run, reached over TCP
      # and over the Unix socket beside it (PGSOCKET, default /var/run/postgresql).
      pg="${PG:-postgres://postgres@127.0.0.1:5432/postgres}"
      for way in tcp unix; do
        for mode in stream unary; do
          db="herald_bench_$(date +%s%N)"
          psql "$pg" -qc "create database $db"
          url="${pg%/*}/$db"; [ "$way" = unix ] && url="$url?host=${PGSOCKET:-/var/run/postgresql}"
          DB_URL="$url" start_herald 18080 # only for this call: later scenarios run on SQLite
          bench "s4pg-herald-$way-$mode" s4 --url http://127.0.0.1:18080 --pid "$HPID" --mode "$mode"
          stop "$HPID"
          psql "$pg" -qc "drop database $db"
        done
      done
      ;;
    s7)
      start_herald 18080
      bench s7-herald s7 --url http://127.0.0.1:18080 --pid "$HPID"
      stop "$HPID"
      ;;
    *) echo "unknown scenario $s (s1 s2 s3 s4 s4pg s7)" >&2; exit 2 ;;
  esac
done
