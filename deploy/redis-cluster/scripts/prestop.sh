#!/bin/sh
# preStop hook: a primary hands its slots to an in-sync replica (CLUSTER FAILOVER, which waits for
# the replica to catch up, so no acknowledged write is lost) before the kubelet stops it. Without
# this a rolling update would leave the shard without a primary for cluster-node-timeout plus
# the election. Bounded by WAIT_SECONDS; on any failure the pod just stops and the cluster fails
# over on its own.
set -u
PORT=${REDIS_PORT:-6379}
WAIT_SECONDS=${WAIT_SECONDS:-15}

cli() {
  timeout 4 redis-cli --no-auth-warning "$@"
}

info=$(cli -h 127.0.0.1 -p "$PORT" info replication 2>/dev/null | tr -d '\r') || exit 0
case "$info" in *role:master*) ;; *) exit 0 ;; esac

# "slaveN:ip=10.0.0.7,port=6379,state=online,offset=123,lag=0": the most advanced online replica.
replica=$(printf '%s\n' "$info" | awk '/^slave[0-9]+:/ && /state=online/ {
  sub(/^slave[0-9]+:/, "")
  n = split($0, fields, ",")
  for (i = 1; i <= n; i++) { eq = index(fields[i], "="); v[substr(fields[i], 1, eq - 1)] = substr(fields[i], eq + 1) }
  if (addr == "" || v["offset"] + 0 > best) { best = v["offset"] + 0; addr = v["ip"] " " v["port"] }
} END { print addr }')
[ -n "$replica" ] || exit 0
# shellcheck disable=SC2086 # split "ip port" into $1 $2
set -- $replica

echo "prestop: asking replica $1:$2 to take over" >&2
cli -h "$1" -p "$2" cluster failover >/dev/null 2>&1 || exit 0

i=0
while [ "$i" -lt "$WAIT_SECONDS" ]; do
  if cli -h 127.0.0.1 -p "$PORT" info replication 2>/dev/null | grep -q '^role:slave'; then
    echo "prestop: demoted to replica" >&2
    exit 0
  fi
  sleep 1
  i=$((i + 1))
done
echo "prestop: replica did not take over within ${WAIT_SECONDS}s" >&2
exit 0
