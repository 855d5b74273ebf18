#!/usr/bin/env bash
# Export lag under a steady live load (issue 4): a release ventas with
# --postgres-url on a fresh database, the load generator's latency scenario
# (100 idle devices, 10 writers at RATE sales/s each, SECONDS seconds), then
# GET /v1/export/status (lag p50/p99/max from change marked to rows
# committed) and the sales count in Postgres. Not part of the tests.
#   benches/export-lag.sh                 # RATE=20 SECONDS=30
# Needs PostgreSQL on 127.0.0.1:5432 (user postgres, trust), like the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
RATE=${RATE:-20}
RUN_SECONDS=${SECONDS_RUN:-30}
cargo build --release --bin ventas --bin ventas-loadgen >&2
DB="ventas_lag_$$"
psql -h 127.0.0.1 -U postgres -d test -qc "CREATE DATABASE $DB"
DIR="$(mktemp -d)"
cleanup() {
  [[ -n ${PID:-} ]] && kill "$PID" 2>/dev/null && wait "$PID" 2>/dev/null
  psql -h 127.0.0.1 -U postgres -d test -qc "DROP DATABASE IF EXISTS $DB WITH (FORCE)"
  rm -rf "$DIR"
}
trap cleanup EXIT
./target/release/ventas serve --listen 127.0.0.1:0 --data-dir "$DIR/data" \
  --postgres-url "postgres://postgres@127.0.0.1:5432/$DB?sslmode=disable" \
  > "$DIR/out" 2> "$DIR/err" &
PID=$!
for _ in $(seq 1 50); do grep -q listening "$DIR/out" && break; sleep 0.2; done
ADDR="$(sed -n 's/^listening on //p' "$DIR/out")"
./target/release/ventas-loadgen latency --url "ws://$ADDR" --server-pid "$PID" \
  --idle 100 --writers 10 --rate "$RATE" --seconds "$RUN_SECONDS"
sleep 2
echo "export status: $(curl -s "http://$ADDR/v1/export/status")"
echo "sales in postgres: $(psql -h 127.0.0.1 -U postgres -d "$DB" -tAc 'select count(*) from sales')"
