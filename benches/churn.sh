#!/usr/bin/env bash
# Connection churn: redis-benchmark -k 0 opens a new connection for every request, so the
# rate measures accepting, serving one GET and closing. Run against a standalone Redis and
# slotway (3 primaries, `slotway local --replicas 0`) in alternation; prints connections/s and
# slotway's CPU per connection. This is the measurement behind the one accept loop
# (benches/README.md, "Runtime choices").
#
# Usage: benches/churn.sh [path/to/slotway] [repetitions]   (default target/release/slotway, 3)
# Needs redis-server and redis-benchmark. Stops what it started, by PID, on exit.
set -euo pipefail
BIN=${1:-$(dirname "$0")/../target/release/slotway}
REPS=${2:-3}
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
BASE=$((12000 + RANDOM % 5000))
PROXY=$(free_port)
DIRECT=$(free_port)
DIR=$(mktemp -d)
mkdir -p "$DIR/standalone"
SLOTWAY_LOG_LEVEL=warn SLOTWAY_RUNTIME_WORKER_THREADS=${THREADS:-1} "$BIN" local --replicas 0 \
  --base-port "$BASE" --listen "127.0.0.1:$PROXY" --data-dir "$DIR/cluster" >/dev/null 2>&1 &
SLOTWAY=$!
redis-server --port "$DIRECT" --bind 127.0.0.1 --save "" --dir "$DIR/standalone" \
  --daemonize no --logfile "$DIR/standalone/log" &
REDIS=$!
trap 'kill $SLOTWAY $REDIS 2>/dev/null; wait $SLOTWAY $REDIS 2>/dev/null; rm -rf "$DIR"' EXIT
for _ in $(seq 300); do
  redis-cli -p "$PROXY" set __churn_probe 1 2>/dev/null | grep -q OK && break
  sleep 0.1
done
cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }
N=30000
for rep in $(seq "$REPS"); do
  for target in direct slotway; do
    port=$DIRECT
    [ "$target" = slotway ] && port=$PROXY
    before=$(cpu $SLOTWAY)
    rate=$(redis-benchmark -p "$port" -t get -k 0 -n $N -c 50 --csv 2>/dev/null | tail -1 | cut -d, -f2 | tr -d '"')
    after=$(cpu $SLOTWAY)
    line="rep $rep $target: $rate connections/s (one GET each)"
    if [ "$target" = slotway ]; then
      line="$line; slotway CPU $(( (after - before) * 1000000 / $(getconf CLK_TCK) / N )) us per connection"
    fi
    echo "$line"
  done
done
