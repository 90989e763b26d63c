#!/usr/bin/env bash
# Installs what slotway's tests and `slotway local` need on a fresh Debian machine:
# redis-server and redis-cli (Debian packages redis-server, redis-tools). Does nothing when present.
set -euo pipefail
need=()
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v redis-cli >/dev/null 2>&1 || need+=(redis-tools)
if ((${#need[@]})); then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
fi
redis-server --version
# redis-py (both RESP2 and RESP3 clients) for tests/it/resp3.rs, in a venv outside the tree.
py=/var/tmp/slotway-py
if ! "$py/bin/python" -c 'import redis' >/dev/null 2>&1; then
  command -v python3 >/dev/null 2>&1 || {
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq python3 python3-venv >/dev/null
  }
  python3 -m venv "$py"
  "$py/bin/pip" install -q 'redis>=5,<6'
fi
"$py/bin/python" -c 'import redis; print("redis-py", redis.__version__)'
