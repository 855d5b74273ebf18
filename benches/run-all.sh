#!/usr/bin/env bash
# benches/run-all.sh: the whole comparison of issue 6, in one command.
#
# Builds release, then for each server (ventas; ventas with flushing off;
# the automerge-repo Node reference server in benches/peer/) starts a fresh
# instance per scenario in a temporary directory and points the same
# ventas-loadgen scenarios at it; then the raw floors, the documents-on-disk
# figures (ventas only), and side-by-side tables of everything.
# Takes several minutes; not part of the test suite.
#
#   benches/run-all.sh                 # full run
#   QUICK=1 benches/run-all.sh         # short scenarios, fewer devices
#   OUT=results.txt benches/run-all.sh # keep the raw output
#
# Every FIGURE line goes to $OUT; `ventas-loadgen report $OUT` prints the
# tables again.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$root/target}
bin=$CARGO_TARGET_DIR/release
if [[ -n ${QUICK:-} ]]; then
  seconds=${SECONDS_PER_RUN:-3}; device_counts=${DEVICE_COUNTS:-"10 100"}
  idle_connections=${IDLE_CONNECTIONS:-1000}; docs=${DOCS:-10000}; active=${ACTIVE:-100}
else
  seconds=${SECONDS_PER_RUN:-10}; device_counts=${DEVICE_COUNTS:-"10 100 1000"}
  idle_connections=${IDLE_CONNECTIONS:-10000}; docs=${DOCS:-100000}; active=${ACTIVE:-1000}
fi
targets=${TARGETS:-"ventas ventas-noflush peer"}

# Ten thousand sockets on each side.
ulimit -n "$(ulimit -Hn)" || true

echo "== build" >&2
cargo build --release --bin ventas --bin ventas-loadgen >&2
if [[ ! -d benches/peer/node_modules ]]; then
  (cd benches/peer && npm install --no-audit --no-fund >&2)
fi

work=$(mktemp -d)
out=${OUT:-$work/results.txt}
: > "$out"
server_pid=""
cleanup() {
  if [[ -n $server_pid ]]; then kill "$server_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

# start_server TARGET: starts a fresh server, sets $server_pid and $url.
start_server() {
  local target=$1 dir
  dir=$(mktemp -d "$work/$target.XXXX")
  case $target in
    ventas | ventas-noflush)
      local extra=()
      [[ $target == ventas-noflush ]] && extra=(--unsafe-skip-flush)
      RUST_LOG=warn "$bin/ventas" serve --listen 127.0.0.1:0 --data-dir "$dir/data" --auth off \
        --connections-max 20000 --connections-per-address-max 20000 \
        --peer-messages-per-second-max 1000000 --peer-messages-burst-max 1000000 \
        "${extra[@]}" > "$dir/stdout" 2> "$dir/stderr" &
      ;;
    peer)
      node benches/peer/server.mjs 0 "$dir/data" > "$dir/stdout" 2> "$dir/stderr" &
      ;;
  esac
  server_pid=$!
  for _ in $(seq 1 600); do
    grep -q '^listening on ' "$dir/stdout" 2>/dev/null && break
    sleep 0.1
  done
  url="ws://$(sed -n 's/^listening on //p' "$dir/stdout")"
}

stop_server() {
  kill -TERM "$server_pid" 2>/dev/null || true
  wait "$server_pid" 2>/dev/null || true
  server_pid=""
}

# scenario TARGET ARGS...: one loadgen run against a fresh server.
scenario() {
  local target=$1
  shift
  start_server "$target"
  echo "== $target: $*" >&2
  if ! "$bin/ventas-loadgen" "$@" --url "$url" --target "$target" --server-pid "$server_pid" \
      | tee -a "$out"; then
    echo "!! $target: $* failed" | tee -a "$out" >&2
  fi
  stop_server
}

for target in $targets; do
  for devices in $device_counts; do
    scenario "$target" ingest --devices "$devices" --seconds "$seconds"
  done
  [[ $target == ventas-noflush ]] && continue
  scenario "$target" latency --idle 100 --writers 10 --rate 5 --seconds "$seconds"
  scenario "$target" reconnect --sales 1000 --repeat 3
  scenario "$target" idle --connections "$idle_connections"
done

echo "== floors" >&2
"$bin/ventas-loadgen" floors | tee -a "$out"
echo "== documents on disk" >&2
"$bin/ventas-loadgen" docs --ventas-bin "$bin/ventas" --docs "$docs" --active "$active" \
  | tee -a "$out" || echo "!! docs failed" >&2

echo
echo "## Results ($(date -u +%Y-%m-%dT%H:%MZ), commit $(git rev-parse --short HEAD), $(nproc) cores)"
"$bin/ventas-loadgen" report "$out"
