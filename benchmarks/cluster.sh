#!/usr/bin/env bash
# Starts two release Herald nodes on one fresh PostgreSQL database and Redis
# (ports 18181 and 18182), runs the given command with NODE_A, NODE_B,
# PID_A and PID_B set, and stops the nodes:
#
#   benchmarks/cluster.sh sh -c 'target/release/herald-bench s1 --url $NODE_A --subscribe-url $NODE_B --pid $PID_B'
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release"
PG="${PG:-postgres://postgres@127.0.0.1:5432}"
DB="herald_bench_$(date +%s)"
psql "$PG/postgres" -qc "create database $DB"
export HERALD_JWT_SECRET="${HERALD_JWT_SECRET:-bench-secret-that-is-at-least-32-bytes-long}"
export HERALD_DATABASE_URL="$PG/$DB" HERALD_REDIS_URL="${REDIS:-redis://127.0.0.1:6379}"
export HERALD_REDIS_CHANNEL="herald-bench:$DB" HERALD_WS_MAX_CONNECTIONS=30000 HERALD_LOG=warn
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
DATA="$(mktemp -d)"
HERALD_ADDR=127.0.0.1:18181 HERALD_DATA_DIR="$DATA/a" "$BIN/herald" >"$DATA/a.log" 2>&1 &
PID_A=$!
sleep 1 # the first node runs the migrations
HERALD_ADDR=127.0.0.1:18182 HERALD_DATA_DIR="$DATA/b" "$BIN/herald" >"$DATA/b.log" 2>&1 &
PID_B=$!
trap 'kill $PID_A $PID_B 2>/dev/null; wait 2>/dev/null; rm -rf "$DATA"; psql "$PG/postgres" -qc "drop database if exists $DB" || true' EXIT
for port in 18181 18182; do
  for _ in $(seq 100); do curl -fs "http://127.0.0.1:$port/readyz" >/dev/null && break; sleep 0.1; done
done
export NODE_A=http://127.0.0.1:18181 NODE_B=http://127.0.0.1:18182 PID_A PID_B
"$@"
