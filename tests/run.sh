#!/usr/bin/env bash
# The project's test command: installs missing system packages, checks formatting and lints,
# then runs every unit and integration test. Cluster-heavy tests run one at a time
# (--test-threads=1) so they never compete for the machine's cores during a failover.
set -euo pipefail
cd "$(dirname "$0")/.."
tests/install-deps.sh
cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings
cargo test --locked --tests -- --test-threads=1
# Each benchmark once, in test mode, so they keep working.
cargo test --locked --benches
# Offline validation of deploy/ (kustomize render, schema, promtool, invariants), checking the
# proxy ConfigMap against the keys this build of slotway accepts.
SLOTWAY_BIN="${CARGO_TARGET_DIR:-target}/debug/slotway" tests/deploy/validate.sh
# A short run of every fuzz target (under a minute of fuzzing; a new machine first installs
# cargo-fuzz and builds the targets, a few minutes) into a build dir outside the clone.
fuzz/smoke.sh
