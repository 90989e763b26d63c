#!/bin/sh
# Container entry point of a Redis Cluster node: writes the per-pod settings, refreshes the
# peers' IPs remembered in nodes.conf, then execs redis-server.
#
# Environment: POD_NAME, POD_NAMESPACE, POD_IP, SERVICE_NAME, CLUSTER_DOMAIN (downward API and
# the pod spec), REDIS_PASSWORD (Secret redis-auth), SLOTWAY_PASSWORD (Secret slotway-upstream:
# the password of the restricted ACL user slotway logs in as). Optional overrides for tests:
# REDIS_CONF, RUNTIME_CONF, NODES_CONF, ANNOUNCE_HOSTNAME, SLOTWAY_ACL_RULES.
set -eu

REDIS_CONF=${REDIS_CONF:-/etc/redis/redis.conf}
RUNTIME_CONF=${RUNTIME_CONF:-/run/redis/runtime.conf}
NODES_CONF=${NODES_CONF:-/data/nodes.conf}
ANNOUNCE_HOSTNAME=${ANNOUNCE_HOSTNAME:-$POD_NAME.$SERVICE_NAME.$POD_NAMESPACE.svc.$CLUSTER_DOMAIN}
SLOTWAY_ACL_RULES=${SLOTWAY_ACL_RULES:-/etc/redis/slotway-acl.rules}

# The password is written into a config file unquoted, so keep it to a safe alphabet.
case "$REDIS_PASSWORD" in
  "" | *[!A-Za-z0-9._-]*)
    echo "start.sh: REDIS_PASSWORD must be non-empty and use only [A-Za-z0-9._-]" >&2
    exit 1
    ;;
esac
case "${SLOTWAY_PASSWORD:-}" in
  "" | *[!A-Za-z0-9._-]*)
    echo "start.sh: SLOTWAY_PASSWORD must be non-empty and use only [A-Za-z0-9._-]" >&2
    exit 1
    ;;
esac
# The rules (slotway upstream-acl --format rules) without the comment lines, on one line; they
# go into the config unquoted, so only the characters ACL rules use are accepted.
rules=$(grep -v '^#' "$SLOTWAY_ACL_RULES" | tr '\n' ' ')
not_acl='*[!A-Za-z0-9_~&*@+| -]*'
# shellcheck disable=SC2254 # the pattern comes from the variable on purpose
case "$rules" in
  $not_acl | "")
    echo "start.sh: $SLOTWAY_ACL_RULES does not hold only ACL rules" >&2
    exit 1
    ;;
esac
# Only the password's SHA-256 goes into the config.
slotway_hash=$(printf '%s' "$SLOTWAY_PASSWORD" | sha256sum | cut -d' ' -f1)

umask 077
{
  echo "requirepass $REDIS_PASSWORD"
  echo "masterauth $REDIS_PASSWORD"
  echo "cluster-announce-hostname $ANNOUNCE_HOSTNAME"
  # slotway's own user: the deny list of its command policy holds inside scripts too.
  echo "user slotway reset on #$slotway_hash $rules"
} >"$RUNTIME_CONF"

# A pod that restarts usually gets a new IP, and so may its peers. Redis heals a single
# changed address through gossip, but after a restart of the whole cluster every node only
# knows stale IPs. Each nodes.conf line records the peer's announced hostname
# (ip:port@cport,hostname), so re-resolve it now; unresolvable peers keep their old IP.
if [ -s "$NODES_CONF" ]; then
  tmp="$NODES_CONF.refresh"
  : >"$tmp"
  while IFS= read -r line; do
    set -f
    # shellcheck disable=SC2086 # split the line into its space-separated fields
    set -- $line
    set +f
    addr=${2:-}
    case "$addr" in
      *,?*)
        host=${addr#*,}
        host=${host%%,*}
        ip=$(getent hosts "$host" 2>/dev/null | awk 'NR == 1 { print $1 }') || ip=""
        case "${3:-}" in *myself*) [ -n "${POD_IP:-}" ] && ip=$POD_IP ;; esac
        if [ -n "$ip" ]; then
          # Keep ":port@cport,hostname"; the IP is everything before the last ':' ahead of '@'
          # (an IPv6 address has colons of its own).
          line=$(printf '%s\n' "$line" | awk -v ip="$ip" '{
            at = index($2, "@"); pre = substr($2, 1, at - 1)
            if (match(pre, /:[0-9]+$/)) { $2 = ip substr(pre, RSTART) substr($2, at) }
            print
          }')
        fi
        ;;
    esac
    printf '%s\n' "$line" >>"$tmp"
  done <"$NODES_CONF"
  mv "$tmp" "$NODES_CONF"
fi

exec redis-server "$REDIS_CONF"
