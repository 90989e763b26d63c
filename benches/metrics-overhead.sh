#!/usr/bin/env bash
# The cost of recording metrics (issue 5, point 6): two release-build proxies, one with
# metrics.enabled = true and one with false, in front of one `slotway local` cluster, benchmarked
# alternately with redis-benchmark at pipeline depth 16. Prints the proxy CPU (utime + stime from
# /proc/PID/stat) per request for each run; benches/README.md has the figures.
#
# Usage: benches/metrics-overhead.sh [BIN] [PAIRS] [N]
#   BIN    release binary (default $CARGO_TARGET_DIR/release/slotway or target/release/slotway)
#   PAIRS  on/off runs (default 20)
#   N      requests per command per run, SET and GET (default 500000)
# Uses ports 16000-16009, 26001-26009 (cluster bus), 16100 and 16200 on 127.0.0.1.
set -euo pipefail

BIN=${1:-${CARGO_TARGET_DIR:-target}/release/slotway}
PAIRS=${2:-20}
N=${3:-500000}
SEEDS=127.0.0.1:16001,127.0.0.1:16002,127.0.0.1:16003
TCK=$(getconf CLK_TCK)
PIDS=()
trap 'kill -INT "${PIDS[@]}" 2>/dev/null; wait' EXIT

# wait_ready PORT: until a SET through it succeeds.
wait_ready() {
  for _ in $(seq 1 240); do
    if redis-cli -p "$1" set probe 1 2>/dev/null | grep -q OK; then return 0; fi
    sleep 0.25
  done
  echo "nothing answers on port $1" >&2
  return 1
}

# run PID PORT LABEL: one warm-up, then N SETs and N GETs; prints CPU ns per request.
run() {
  local u0 s0 u1 s1 ticks out
  redis-benchmark -p "$2" -P 16 -c 50 -n 50000 -t set,get -r 100000 -q >/dev/null 2>&1
  read -r u0 s0 < <(awk '{print $14, $15}' "/proc/$1/stat")
  out=$(redis-benchmark -p "$2" -P 16 -c 50 -n "$N" -t set,get -r 100000 -q 2>&1 |
    tr '\r' '\n' | grep -E "requests per second" | awk '{print $1, $2}' | tr '\n' ' ')
  read -r u1 s1 < <(awk '{print $14, $15}' "/proc/$1/stat")
  ticks=$(((u1 + s1) - (u0 + s0)))
  echo "$3 ticks=$ticks ns_per_req=$((ticks * 1000000000 / TCK / (2 * N))) $out"
}

SLOTWAY_LOG_LEVEL=warn "$BIN" local --base-port 16001 --listen 127.0.0.1:16000 \
  --data-dir /tmp/slotway-metrics-overhead >/tmp/slotway-metrics-overhead.log 2>&1 &
PIDS+=($!)
wait_ready 16000
SLOTWAY_METRICS_ENABLED=true SLOTWAY_LOG_LEVEL=warn "$BIN" --listen 127.0.0.1:16100 --seeds "$SEEDS" &
ON=$!
PIDS+=("$ON")
SLOTWAY_METRICS_ENABLED=false SLOTWAY_LOG_LEVEL=warn "$BIN" --listen 127.0.0.1:16200 --seeds "$SEEDS" &
OFF=$!
PIDS+=("$OFF")
wait_ready 16100
wait_ready 16200
for _ in $(seq 1 "$PAIRS"); do
  run "$ON" 16100 on
  run "$OFF" 16200 off
done
