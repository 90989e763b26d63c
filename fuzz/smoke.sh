#!/usr/bin/env bash
# Short fuzz run for CI: every target for SMOKE_SECONDS (default 18 s, so three targets
# fit in a minute of fuzzing), after replaying the checked-in regression inputs.
# Exits non-zero when any target crashes or fails an assertion; crash inputs are left
# in fuzz/artifacts/<target>/.
#
# Environment:
#   SMOKE_TARGETS     targets to run (default: request_scanner response_scanner routing)
#   SMOKE_SECONDS     fuzzing time per target (default: 18)
#   FUZZ_SANITIZER    cargo-fuzz sanitizer (default: address; "none" if ASan is unavailable)
#   CARGO_TARGET_DIR  build directory (default: /var/tmp/slotway-fuzz-target)
#   SMOKE_WORK        scratch corpora (default: /var/tmp/slotway-fuzz-smoke)
set -euo pipefail

fuzz_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$fuzz_dir"

targets=${SMOKE_TARGETS:-request_scanner response_scanner routing}
seconds=${SMOKE_SECONDS:-18}
sanitizer=${FUZZ_SANITIZER:-address}
target_dir=${CARGO_TARGET_DIR:-/var/tmp/slotway-fuzz-target}
work=${SMOKE_WORK:-/var/tmp/slotway-fuzz-smoke}

if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi
# cargo-fuzz passes nightly-only flags (-Z, sanitizers); a stable toolchain accepts
# them when told it is bootstrapping.
if ! rustc --version | grep -q nightly; then
    export RUSTC_BOOTSTRAP=1
fi

failed=()
for target in $targets; do
    echo "=== $target: build"
    cargo fuzz build --sanitizer "$sanitizer" --target-dir "$target_dir" "$target"

    regressions=(regressions/"$target"/*)
    if [[ -e ${regressions[0]} ]]; then
        echo "=== $target: replay ${#regressions[@]} regression input(s)"
        if ! cargo fuzz run --sanitizer "$sanitizer" --target-dir "$target_dir" \
            "$target" "${regressions[@]}" -- -runs=1; then
            failed+=("$target (regression)")
            continue
        fi
    fi

    # New inputs go to a scratch corpus so the checked-in seeds stay as they are.
    scratch="$work/$target"
    mkdir -p "$scratch"
    echo "=== $target: fuzz ${seconds}s"
    if ! cargo fuzz run --sanitizer "$sanitizer" --target-dir "$target_dir" \
        "$target" "$scratch" "corpus/$target" -- \
        -max_total_time="$seconds" -timeout=10 -print_final_stats=1; then
        failed+=("$target")
    fi
done

if ((${#failed[@]})); then
    echo "fuzz smoke FAILED: ${failed[*]} (inputs in $fuzz_dir/artifacts/)" >&2
    exit 1
fi
echo "fuzz smoke passed: $targets"
