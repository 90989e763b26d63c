#!/usr/bin/env bash
# Short fuzz run for CI (tests/run.sh calls it): replays the checked-in regression inputs,
# then fuzzes every target for SMOKE_SECONDS (default 15 s, so three targets fit in a minute
# of fuzzing), each from the checked-in seeds only. Exits non-zero when any target crashes or
# fails an assertion; the input is left in fuzz/artifacts/<target>/ (ignored by git).
#
# Environment:
#   SMOKE_TARGETS    targets to run (default: request_scanner response_scanner routing)
#   SMOKE_SECONDS    fuzzing time per target (default: 15)
#   FUZZ_SANITIZER   cargo-fuzz sanitizer (default: address; falls back to none when the
#                    AddressSanitizer build fails on this toolchain)
#   FUZZ_TARGET_DIR  build directory, outside the clone so it survives between runs
#                    (default: /var/tmp/slotway-fuzz-target)
#   SMOKE_WORK       scratch corpora and logs (default: /var/tmp/slotway-fuzz-smoke)
set -euo pipefail

fuzz_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$fuzz_dir"

targets=${SMOKE_TARGETS:-request_scanner response_scanner routing}
seconds=${SMOKE_SECONDS:-15}
sanitizer=${FUZZ_SANITIZER:-address}
target_dir=${FUZZ_TARGET_DIR:-/var/tmp/slotway-fuzz-target}
work=${SMOKE_WORK:-/var/tmp/slotway-fuzz-smoke}
# The version the checked-in figures were measured with; --locked keeps its dependencies fixed.
cargo_fuzz_version=0.13.2

phase_start=$SECONDS
phase() {
    echo "=== fuzz smoke: $1 took $((SECONDS - phase_start)) s"
    phase_start=$SECONDS
}

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "=== fuzz smoke: installing cargo-fuzz $cargo_fuzz_version"
    cargo install cargo-fuzz --locked --version "$cargo_fuzz_version"
    phase "installing cargo-fuzz"
fi
# cargo-fuzz passes nightly-only flags (-Z, sanitizers); a stable toolchain accepts them when
# told it is bootstrapping. Only this script's cargo sees the variable.
if ! rustc --version | grep -q nightly; then
    export RUSTC_BOOTSTRAP=1
fi

fuzz() {
    local cmd=$1
    shift
    cargo fuzz "$cmd" --sanitizer "$sanitizer" --target-dir "$target_dir" "$@"
}

# Prints the part of a failed run's log that explains it: from the first panic or sanitizer
# report on (the stack traces are long), else the end of the log.
show_failure() {
    local first
    first=$(grep -n -m 1 -E 'panicked at|ERROR: (libFuzzer|AddressSanitizer)|Fuzz target exited' "$1" |
        cut -d: -f1 || true)
    if [[ -n $first ]]; then
        # head may stop reading early; the SIGPIPE that tail then gets is not a failure.
        tail -n +"$first" "$1" | head -n 150 >&2 || true
    else
        tail -n 80 "$1" >&2
    fi
}

build() {
    local target
    for target in $targets; do
        fuzz build "$target" || return 1
    done
}

echo "=== fuzz smoke: building $targets ($sanitizer sanitizer) in $target_dir"
if ! build; then
    if [[ $sanitizer == none ]]; then
        echo "fuzz smoke FAILED: the targets do not build" >&2
        exit 1
    fi
    echo "=== fuzz smoke: the $sanitizer sanitizer build failed; building without a sanitizer" >&2
    sanitizer=none
    if ! build; then
        echo "fuzz smoke FAILED: the targets do not build" >&2
        exit 1
    fi
fi
phase "building"

mkdir -p "$work"
failed=()
summary=()
for target in $targets; do
    regressions=(regressions/"$target"/*)
    if [[ -e ${regressions[0]} ]]; then
        echo "=== fuzz smoke: $target: replaying ${#regressions[@]} regression input(s)"
        if ! fuzz run "$target" "${regressions[@]}" -- -runs=1 >"$work/$target.replay.log" 2>&1; then
            show_failure "$work/$target.replay.log"
            failed+=("$target (regression)")
            continue
        fi
    fi

    # New inputs go to a fresh scratch corpus, so the checked-in seeds stay as they are and
    # every run starts from the same seeds however often the machine has run this before.
    scratch="$work/$target"
    rm -rf "$scratch"
    mkdir -p "$scratch"
    log="$work/$target.log"
    echo "=== fuzz smoke: $target: fuzzing for ${seconds} s (log: $log)"
    if fuzz run "$target" "$scratch" "corpus/$target" -- \
        -max_total_time="$seconds" -timeout=10 -print_final_stats=1 >"$log" 2>&1; then
        runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
        summary+=("$target: ${runs:-?} executions, no failure")
        echo "    ${summary[-1]}"
    else
        show_failure "$log"
        failed+=("$target")
    fi
done
phase "fuzzing"

if ((${#failed[@]})); then
    echo "fuzz smoke FAILED: ${failed[*]} (inputs in $fuzz_dir/artifacts/, logs in $work/)" >&2
    exit 1
fi
printf '    %s\n' "${summary[@]}"
echo "fuzz smoke passed: ${targets// /, } (${seconds} s each, $SECONDS s in all)"
