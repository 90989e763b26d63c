#!/bin/sh
# Kubelet probes of a Redis Cluster node. REDISCLI_AUTH (from the Secret) authenticates redis-cli.
#   probe.sh liveness   the server answers: PONG, or LOADING/MASTERDOWN while it replays its AOF
#                       or waits for its primary (restarting it then would only start over)
#   probe.sh readiness  PONG and this node sees cluster_state:ok
set -eu
PORT=${REDIS_PORT:-6379}

cli() {
  timeout 4 redis-cli -h 127.0.0.1 -p "$PORT" --no-auth-warning "$@"
}

case "${1:-}" in
  liveness)
    reply=$(cli ping 2>&1) || true
    case "$reply" in
      PONG | LOADING* | *"LOADING "* | MASTERDOWN* | *"MASTERDOWN "*) exit 0 ;;
    esac
    echo "liveness: $reply" >&2
    exit 1
    ;;
  readiness)
    reply=$(cli ping 2>&1) || true
    if [ "$reply" != PONG ]; then
      echo "readiness: ping: $reply" >&2
      exit 1
    fi
    if ! cli cluster info | grep -q '^cluster_state:ok'; then
      echo "readiness: cluster_state is not ok" >&2
      exit 1
    fi
    ;;
  *)
    echo "usage: probe.sh liveness|readiness" >&2
    exit 2
    ;;
esac
