#!/bin/sh
# Idempotent Redis Cluster bootstrap, run by the redis-cluster-bootstrap Job.
#
# Layout: SHARDS shards of PODS_PER_SHARD pods; pod 0 of each shard becomes the primary of an equal
# share of the 16384 slots, the other pods its replicas. Every step looks before it acts, so the
# script can run again at any point:
#   - when some node already sees all 16384 slots assigned, no slot is touched (the cluster
#     exists, and after failovers pod 0 need not be the primary any more);
#   - a pod that is alone (fresh volume) is joined to its shard's *current* primary as a replica;
#   - a healthy, complete cluster gets read-only commands only.
#
# Environment:
#   NODE_ADDR_FORMAT  printf format of a node's "host:port" from (shard, ordinal), e.g.
#                     redis-shard-%d-%d.redis-cluster.NS.svc.cluster.local:6379
#   SHARDS, PODS_PER_SHARD (default 3 and 3), WAIT_SECONDS (default 600)
#   REDISCLI_AUTH     the password (redis-cli reads it from the environment)
set -eu

SHARDS=${SHARDS:-3}
PODS_PER_SHARD=${PODS_PER_SHARD:-3}
WAIT_SECONDS=${WAIT_SECONDS:-600}
TOTAL_SLOTS=16384

log() { echo "bootstrap: $*" >&2; }
die() {
  log "$*"
  exit 1
}

# shellcheck disable=SC2059 # the format string is the point of NODE_ADDR_FORMAT
addr() { printf "$NODE_ADDR_FORMAT" "$1" "$2"; }

# `local` is not POSIX, but dash, ash and bash all have it; the loops below rely on it.
rcli() {
  local node="$1"
  shift
  timeout 5 redis-cli -h "${node%:*}" -p "${node##*:}" --no-auth-warning "$@" | tr -d '\r'
}

cluster_info() { rcli "$1" cluster info | sed -n "s/^$2://p"; }

# Number of slot ranges this node serves itself (0 for a replica or an empty primary).
own_slot_ranges() { rcli "$1" cluster nodes | awk '$3 ~ /myself/ { n = 0; for (i = 9; i <= NF; i++) if ($i !~ /^\[/) n++; print n }'; }

role() { rcli "$1" role | head -n 1; }

# CLUSTER MEET takes an IP address, never a name.
ip_of() {
  local h="${1%:*}"
  case "$h" in
    *[!0-9.]*) ;;
    *) echo "$h" && return ;;
  esac
  getent hosts "$h" | awk 'NR == 1 { print $1 }'
}

# Runs "$@" once a second until it succeeds or $1 seconds have passed.
retry() {
  local deadline=$(($(date +%s) + $1))
  shift
  until "$@"; do
    [ "$(date +%s)" -lt "$deadline" ] || return 1
    sleep 1
  done
}

answers_ping() { [ "$(rcli "$1" ping 2>/dev/null)" = PONG ]; }

wait_for_all_nodes() {
  s=0
  while [ "$s" -lt "$SHARDS" ]; do
    i=0
    while [ "$i" -lt "$PODS_PER_SHARD" ]; do
      a=$(addr "$s" "$i")
      log "waiting for $a"
      retry "$WAIT_SECONDS" answers_ping "$a" || die "$a did not answer PING within ${WAIT_SECONDS}s"
      i=$((i + 1))
    done
    s=$((s + 1))
  done
}

cluster_exists() {
  s=0
  while [ "$s" -lt "$SHARDS" ]; do
    i=0
    while [ "$i" -lt "$PODS_PER_SHARD" ]; do
      [ "$(cluster_info "$(addr "$s" "$i")" cluster_slots_assigned)" = "$TOTAL_SLOTS" ] && return 0
      i=$((i + 1))
    done
    s=$((s + 1))
  done
  return 1
}

all_slots_assigned() { [ "$(cluster_info "$1" cluster_slots_assigned)" = "$TOTAL_SLOTS" ]; }

create_primaries() {
  s=0
  while [ "$s" -lt "$SHARDS" ]; do
    a=$(addr "$s" 0)
    first=$((s * TOTAL_SLOTS / SHARDS))
    last=$(((s + 1) * TOTAL_SLOTS / SHARDS - 1))
    known=$(cluster_info "$a" cluster_known_nodes)
    ranges=$(own_slot_ranges "$a")
    if [ "$known" = 1 ] && [ "$ranges" = 0 ]; then
      log "$a: primary of slots $first-$last"
      # Distinct epochs up front spare the cluster its epoch-collision resolution.
      rcli "$a" cluster set-config-epoch $((s + 1)) >/dev/null || true
      out=$(rcli "$a" cluster addslotsrange "$first" "$last")
      [ "$out" = OK ] || die "$a: CLUSTER ADDSLOTSRANGE $first $last: $out"
    else
      log "$a: already has slots or peers, left as it is"
    fi
    s=$((s + 1))
  done
  a0=$(addr 0 0)
  s=1
  while [ "$s" -lt "$SHARDS" ]; do
    a=$(addr "$s" 0)
    ip=$(ip_of "$a")
    [ -n "$ip" ] || die "cannot resolve $a"
    rcli "$a0" cluster meet "$ip" "${a##*:}" >/dev/null
    s=$((s + 1))
  done
  retry 60 all_slots_assigned "$a0" || die "$a0 does not see all $TOTAL_SLOTS slots assigned"
  log "primaries joined; all $TOTAL_SLOTS slots assigned"
}

# Prints the address of shard $1's primary: the pod that is a primary serving slots, else (a
# shard added to a running cluster, see deploy/README.md) pod 0 while it is an empty primary.
shard_primary() {
  local i=0 node
  while [ "$i" -lt "$PODS_PER_SHARD" ]; do
    node=$(addr "$1" "$i")
    if [ "$(role "$node")" = master ] && [ "$(own_slot_ranges "$node")" != 0 ]; then
      echo "$node"
      return 0
    fi
    i=$((i + 1))
  done
  node=$(addr "$1" 0)
  if [ "$(role "$node")" = master ]; then
    echo "$node"
    return 0
  fi
  return 1
}

# Prints the address of a pod that is already part of the cluster (knows other nodes).
cluster_member() {
  local s=0 i node
  while [ "$s" -lt "$SHARDS" ]; do
    i=0
    while [ "$i" -lt "$PODS_PER_SHARD" ]; do
      node=$(addr "$s" "$i")
      if [ "$(cluster_info "$node" cluster_known_nodes)" -gt 1 ] 2>/dev/null; then
        echo "$node"
        return 0
      fi
      i=$((i + 1))
    done
    s=$((s + 1))
  done
  return 1
}

# A new shard's pod 0 joins the cluster as a primary without slots; moving slots (and their
# keys) to it is the operator's decision: redis-cli --cluster rebalance --cluster-use-empty-masters.
join_empty_primary() {
  local member mid
  [ "$(cluster_info "$1" cluster_known_nodes)" = 1 ] || return 0
  member=$(cluster_member) || die "no pod is part of a cluster that $1 could join"
  mid=$(rcli "$member" cluster myid)
  log "$1: joining the cluster through $member as a primary without slots"
  rcli "$1" cluster meet "$(ip_of "$member")" "${member##*:}" >/dev/null
  retry 30 knows_node "$1" "$mid" || die "$1 never learned $member"
  log "$1: move slots to it with: redis-cli --cluster rebalance $member --cluster-use-empty-masters"
}

knows_node() { rcli "$1" cluster nodes | grep -q "^$2 "; }

is_replica_of() { rcli "$1" cluster nodes | awk -v id="$2" '$3 ~ /myself/ && $4 == id { found = 1 } END { exit !found }'; }

replicate() { [ "$(rcli "$1" cluster replicate "$2")" = OK ]; }

attach_replicas() {
  s=0
  while [ "$s" -lt "$SHARDS" ]; do
    primary=$(shard_primary "$s") || die "shard $s has no primary"
    join_empty_primary "$primary"
    pid=$(rcli "$primary" cluster myid)
    pip=$(ip_of "$primary")
    i=0
    while [ "$i" -lt "$PODS_PER_SHARD" ]; do
      a=$(addr "$s" "$i")
      i=$((i + 1))
      [ "$a" != "$primary" ] || continue
      if [ "$(role "$a")" != master ]; then
        is_replica_of "$a" "$pid" || log "$a: replica of another primary than $primary, left as it is"
        continue
      fi
      [ "$(own_slot_ranges "$a")" = 0 ] || die "$a: a second primary serving slots in shard $s"
      if [ "$(cluster_info "$a" cluster_known_nodes)" = 1 ]; then
        log "$a: meeting $primary"
        rcli "$a" cluster meet "$pip" "${primary##*:}" >/dev/null
      fi
      retry 30 knows_node "$a" "$pid" || die "$a never learned primary $pid"
      log "$a: replica of $primary ($pid)"
      retry 30 replicate "$a" "$pid" || die "$a: CLUSTER REPLICATE $pid failed"
    done
    s=$((s + 1))
  done
}

state_ok() { [ "$(cluster_info "$1" cluster_state)" = ok ]; }

wait_for_ok_everywhere() {
  s=0
  while [ "$s" -lt "$SHARDS" ]; do
    i=0
    while [ "$i" -lt "$PODS_PER_SHARD" ]; do
      a=$(addr "$s" "$i")
      retry 120 state_ok "$a" || die "$a: cluster_state is not ok"
      i=$((i + 1))
    done
    s=$((s + 1))
  done
}

online_replicas() { rcli "$1" info replication | grep -c '^slave[0-9]*:.*state=online' || true; }

replicas_in_sync() { [ "$(online_replicas "$1")" -ge $((PODS_PER_SHARD - 1)) ]; }

# A replica that never finished its first sync cannot take over from its primary, so the
# cluster is only really formed once every replica is online. Not fatal: a large data set
# keeps syncing after the Job ends.
wait_for_replicas_in_sync() {
  local s=0 primary
  while [ "$s" -lt "$SHARDS" ]; do
    primary=$(shard_primary "$s") || die "shard $s has no primary"
    retry 300 replicas_in_sync "$primary" || log "$primary: replicas still syncing, not waiting any longer"
    s=$((s + 1))
  done
}

main() {
  [ -n "${NODE_ADDR_FORMAT:-}" ] || die "NODE_ADDR_FORMAT is not set"
  wait_for_all_nodes
  if cluster_exists; then
    log "cluster exists; checking that every pod is attached"
  else
    create_primaries
  fi
  attach_replicas
  wait_for_ok_everywhere
  wait_for_replicas_in_sync
  log "cluster ok:"
  rcli "$(addr 0 0)" cluster nodes | awk '{ print "  " $1, $2, $3, ($4 == "-" ? $9 : "replica-of " $4) }' >&2
}

main "$@"
