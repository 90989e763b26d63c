#!/usr/bin/env bash
# Runs deploy/redis-cluster's scripts against 9 real redis-server processes on 127.0.0.1, laid
# out like the StatefulSets (3 shards x 3 pods), to show that:
#   1. bootstrap.sh forms the cluster: pod 0 of each shard primary, pods 1-2 its replicas; and
#      start.sh defines slotway's restricted ACL user, which cannot run denied commands in scripts;
#   2. a second run changes nothing;
#   3. probe.sh passes readiness/liveness on a healthy node;
#   4. prestop.sh hands a primary's slots to its replica (graceful failover);
#   5. after a failover, bootstrap.sh leaves the new roles alone;
#   6. a pod that comes back with an empty volume is re-attached to its shard's current primary;
#   7. start.sh restarts a node from its nodes.conf and the cluster heals.
# Needs redis-server and redis-cli 7.0+. Ports PORT_PREFIX + shard + ordinal (default: a random
# free prefix P giving P00..P32, cluster bus +10000); all processes it started are stopped on exit.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
SCRIPTS=$ROOT/deploy/redis-cluster/scripts
# Default: a random prefix whose ports (and bus ports) are all free, kept below the kernel's
# ephemeral range so an outgoing connection elsewhere cannot take one between check and bind.
if [ -z "${PORT_PREFIX:-}" ]; then
  PORT_PREFIX=$(python3 - <<'PY'
import random, socket
def free(p):
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", p))
        return True
    except OSError:
        return False
    finally:
        s.close()
for _ in range(200):
    prefix = random.randint(110, 219)
    ports = [int(f"{prefix}{s}{i}") for s in range(4) for i in range(3)]
    if all(free(p) and free(p + 10000) for p in ports):
        print(prefix)
        break
PY
)
fi
WORK=$(mktemp -d /tmp/slotway-redis-test.XXXXXX)
export REDIS_PASSWORD=test-password-1 REDISCLI_AUTH=test-password-1
export SLOTWAY_PASSWORD=test-upstream-2 SLOTWAY_ACL_RULES=$ROOT/deploy/redis-cluster/slotway-acl.rules
PIDS=()

cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [ -n "${KEEP_WORK:-}" ]; then echo "kept $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

fail() {
  echo "redis_scripts_test: FAIL: $*" >&2
  local p s i
  for s in 0 1 2; do for i in 0 1 2; do
    p=${PORT_PREFIX}$s$i
    if redis-cli -p "$p" --no-auth-warning ping >/dev/null 2>&1; then
      echo "--- $s-$i: cluster nodes" >&2
      redis-cli -p "$p" --no-auth-warning cluster nodes >&2 || true
    fi
    [ -f "$WORK/$s-$i/log" ] && { echo "--- $s-$i: log tail" >&2; tail -n 8 "$WORK/$s-$i/log" >&2; }
  done; done
  exit 1
}
port() { echo "${PORT_PREFIX}$1$2"; }
cli() {
  local p=$1
  shift
  redis-cli -p "$p" --no-auth-warning "$@" | tr -d '\r'
}

for s in 0 1 2; do
  for i in 0 1 2; do
    if redis-cli -p "$(port $s $i)" ping >/dev/null 2>&1; then
      fail "port $(port $s $i) is in use; set PORT_PREFIX"
    fi
  done
done

# The real redis.conf, made to listen on loopback only, on the node's own port and directory,
# with a shorter node timeout so that failovers in this test are quick.
node_conf() {
  local s=$1 i=$2 dir=$WORK/$1-$2
  mkdir -p "$dir/data" "$dir/run"
  sed -e "s|^port .*|port $(port "$s" "$i")|" \
    -e "s|^bind .*|bind 127.0.0.1|" \
    -e "s|^dir .*|dir $dir/data|" \
    -e "s|^cluster-config-file .*|cluster-config-file $dir/data/nodes.conf|" \
    -e "s|^cluster-node-timeout .*|cluster-node-timeout 1500|" \
    -e "s|^maxmemory .*|maxmemory 64mb|" \
    -e "s|^include .*|include $dir/run/runtime.conf|" \
    "$ROOT/deploy/redis-cluster/redis.conf" >"$dir/redis.conf"
}

declare -A NODE_PID
start_node() {
  local s=$1 i=$2 dir=$WORK/$1-$2
  REDIS_CONF=$dir/redis.conf RUNTIME_CONF=$dir/run/runtime.conf NODES_CONF=$dir/data/nodes.conf \
    ANNOUNCE_HOSTNAME=127.0.0.1 POD_IP=127.0.0.1 \
    sh "$SCRIPTS/start.sh" >"$dir/log" 2>&1 &
  NODE_PID[$s$i]=$!
  PIDS+=("$!")
}

stop_node() {
  local pid=${NODE_PID[$1$2]}
  kill -9 "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

wait_until() {
  local secs=$1
  shift
  local deadline=$((SECONDS + secs))
  until "$@"; do
    [ "$SECONDS" -lt "$deadline" ] || return 1
    sleep 0.5
  done
}

bootstrap() {
  SHARDS=${SHARDS:-3} NODE_ADDR_FORMAT="127.0.0.1:${PORT_PREFIX}%d%d" WAIT_SECONDS=30 sh "$SCRIPTS/bootstrap.sh" 2>"$WORK/bootstrap.log" ||
    {
      cat "$WORK/bootstrap.log" >&2
      fail "bootstrap.sh failed"
    }
}

role_of() { cli "$(port "$1" "$2")" role | head -n 1; }
id_of() { cli "$(port "$1" "$2")" cluster myid; }
master_of() { cli "$(port "$1" "$2")" cluster nodes | awk '$3 ~ /myself/ { print $4 }'; }
state_ok_everywhere() {
  local s i
  for s in 0 1 2; do for i in 0 1 2; do
    cli "$(port $s $i)" cluster info 2>/dev/null | grep -q '^cluster_state:ok' || return 1
  done; done
}
# "shard: primary-ordinal" lines, plus each replica's primary id, to compare topologies.
topology() {
  local s i
  for s in 0 1 2; do for i in 0 1 2; do
    echo "$s$i $(id_of $s $i) $(role_of $s $i) $(master_of $s $i)"
  done; done
}
expect_shard() {
  local s=$1 primary=$2 i pid
  pid=$(id_of "$s" "$primary")
  [ "$(role_of "$s" "$primary")" = master ] || fail "shard $s: pod $primary is not the primary"
  for i in 0 1 2; do
    [ "$i" = "$primary" ] && continue
    [ "$(role_of "$s" "$i")" = slave ] || fail "shard $s: pod $i is not a replica"
    [ "$(master_of "$s" "$i")" = "$pid" ] || fail "shard $s: pod $i replicates another primary"
  done
}

for s in 0 1 2; do for i in 0 1 2; do
  node_conf $s $i
  start_node $s $i
done; done
for s in 0 1 2; do for i in 0 1 2; do
  wait_until 20 sh -c "redis-cli -p $(port $s $i) --no-auth-warning ping 2>/dev/null | grep -q PONG" ||
    fail "node $s-$i did not start: $(cat "$WORK/$s-$i/log")"
done; done

echo "1. bootstrap forms the cluster"
bootstrap
wait_until 30 state_ok_everywhere || fail "cluster_state not ok after bootstrap"
for s in 0 1 2; do
  expect_shard $s 0
  online=$(cli "$(port $s 0)" info replication | grep -c 'state=online' || true)
  [ "$online" = 2 ] || fail "shard $s: bootstrap ended with $online replicas in sync"
done
slots=$(cli "$(port 1 0)" cluster shards | grep -c . || true)
[ "$slots" -gt 0 ] || fail "CLUSTER SHARDS is empty"
grep -q 'requirepass' "$WORK/0-0/run/runtime.conf" || fail "runtime.conf has no requirepass"
grep -q '^user slotway reset on #' "$WORK/0-0/run/runtime.conf" || fail "runtime.conf defines no slotway user"
if grep -q "$SLOTWAY_PASSWORD" "$WORK/0-0/run/runtime.conf"; then fail "runtime.conf holds slotway's password itself"; fi
as_slotway() {
  local p=$1
  shift
  redis-cli -p "$p" --no-auth-warning --user slotway --pass "$SLOTWAY_PASSWORD" "$@" 2>&1 | tr -d '\r'
}
for s in 0 1 2; do for i in 0 1 2; do
  [ "$(as_slotway "$(port $s $i)" acl whoami)" = slotway ] || fail "$s-$i: cannot log in as slotway"
done; done
[ "$(as_slotway "$(port 0 0)" cluster myid)" = "$(id_of 0 0)" ] || fail "slotway cannot run CLUSTER MYID"
for call in "'CLUSTER','SAVECONFIG'" "'CLUSTER','SETSLOT','1','STABLE'"; do
  reply=$(as_slotway "$(port 0 0)" eval "return redis.call($call)" 0)
  case "$reply" in *"can't run this command"*) ;; *) fail "script ran $call as slotway: $reply" ;; esac
done
[ "$(cli "$(port 0 0)" config get cluster-announce-hostname | tail -n 1)" = 127.0.0.1 ] ||
  fail "cluster-announce-hostname not applied"
# MOVED names the announced hostname (cluster-preferred-endpoint-type hostname).
moved=$(cli "$(port 0 0)" get foo 2>&1 || true) # slot 12182 belongs to shard 2
case "$moved" in *"MOVED 12182 127.0.0.1:${PORT_PREFIX}20"*) ;; *) fail "unexpected MOVED reply: $moved" ;; esac

echo "2. a second bootstrap changes nothing"
before=$(topology)
bootstrap
grep -q 'cluster exists' "$WORK/bootstrap.log" || fail "second run did not see the existing cluster"
[ "$(topology)" = "$before" ] || fail "second bootstrap changed the topology"

echo "3. probes"
REDIS_PORT=$(port 1 1) sh "$SCRIPTS/probe.sh" readiness || fail "readiness probe failed on a healthy node"
REDIS_PORT=$(port 1 1) sh "$SCRIPTS/probe.sh" liveness || fail "liveness probe failed on a healthy node"
if REDIS_PORT=1 sh "$SCRIPTS/probe.sh" liveness 2>/dev/null; then fail "liveness passed without a server"; fi

echo "4. preStop hands a primary's slots to a replica"
cli "$(port 1 0)" set '{k}1' v >/dev/null 2>&1 || true
REDIS_PORT=$(port 1 0) WAIT_SECONDS=15 sh "$SCRIPTS/prestop.sh" 2>"$WORK/prestop.log" || fail "prestop.sh failed"
[ "$(role_of 1 0)" = slave ] || fail "prestop: shard 1 pod 0 is still primary: $(cat "$WORK/prestop.log")"
wait_until 20 state_ok_everywhere || fail "cluster_state not ok after the graceful failover"

echo "5. after a failover (shard 2 primary killed), bootstrap leaves the roles alone"
stop_node 2 0
wait_until 30 sh -c "[ \"\$(redis-cli -p $(port 2 1) --no-auth-warning role | head -n 1)\" = master ] ||
  [ \"\$(redis-cli -p $(port 2 2) --no-auth-warning role | head -n 1)\" = master ]" ||
  fail "no replica of shard 2 took over"
start_node 2 0
wait_until 30 sh -c "[ \"\$(redis-cli -p $(port 2 0) --no-auth-warning role 2>/dev/null | head -n 1)\" = slave ]" ||
  fail "old shard 2 primary did not rejoin as a replica"
wait_until 30 state_ok_everywhere || fail "cluster_state not ok after the failover"
before=$(topology)
bootstrap
[ "$(topology)" = "$before" ] || fail "bootstrap changed the topology after a failover"
new2=$([ "$(role_of 2 1)" = master ] && echo 1 || echo 2)
expect_shard 2 "$new2"

echo "6. a pod with an empty volume is re-attached to its shard's current primary"
stop_node 0 2
rm -rf "$WORK/0-2/data" && mkdir -p "$WORK/0-2/data"
start_node 0 2
wait_until 20 sh -c "redis-cli -p $(port 0 2) --no-auth-warning ping 2>/dev/null | grep -q PONG" || fail "fresh node did not start"
bootstrap
expect_shard 0 0
expect_shard 1 "$([ "$(role_of 1 1)" = master ] && echo 1 || echo 2)"

echo "7. restart of every node with stale peer IPs in nodes.conf"
for s in 0 1 2; do for i in 0 1 2; do stop_node $s $i; done; done
# As if every pod came back with a new IP: nodes.conf remembers addresses nobody listens on
# (redis binds 127.0.0.1 only); start.sh must re-resolve them from the recorded hostnames.
for s in 0 1 2; do for i in 0 1 2; do
  sed -i 's/ 127\.0\.0\.1:/ 127.0.0.9:/' "$WORK/$s-$i/data/nodes.conf"
done; done
grep -q ' 127.0.0.9:' "$WORK/1-1/data/nodes.conf" || fail "could not plant stale IPs"
for s in 0 1 2; do for i in 0 1 2; do start_node $s $i; done; done
wait_until 60 state_ok_everywhere || fail "cluster did not heal after a full restart"
grep -q myself "$WORK/0-0/data/nodes.conf" || fail "nodes.conf lost its myself line"
if grep -q ' 127.0.0.9:' "$WORK"/*/data/nodes.conf; then fail "stale IPs survived the restart"; fi

echo "8. a fourth shard joins empty, then takes slots by rebalancing"
for i in 0 1 2; do
  node_conf 3 $i
  start_node 3 $i
done
for i in 0 1 2; do
  wait_until 20 sh -c "redis-cli -p $(port 3 $i) --no-auth-warning ping 2>/dev/null | grep -q PONG" || fail "node 3-$i did not start"
done
SHARDS=4 bootstrap
expect_shard 3 0
[ "$(cli "$(port 0 0)" cluster info | sed -n 's/^cluster_known_nodes://p')" -ge 12 ] || fail "shard 3 did not join"
redis-cli --no-auth-warning -a "$REDIS_PASSWORD" --cluster rebalance "127.0.0.1:$(port 0 0)" \
  --cluster-use-empty-masters --cluster-yes >"$WORK/rebalance.log" 2>&1 || fail "rebalance: $(tail -n 5 "$WORK/rebalance.log")"
owned=$(cli "$(port 3 0)" cluster nodes | awk '$3 ~ /myself/ { print NF - 8 }')
[ "$owned" -gt 0 ] || fail "shard 3 owns no slots after rebalancing"
wait_until 30 state_ok_everywhere || fail "cluster_state not ok after rebalancing"

echo "redis_scripts_test: all scenarios passed"
