#!/usr/bin/env bash
# Bounded fuzzing of the input parsers (cargo-fuzz targets in fuzz/).
#
# Seeds come from ../shared/corpus at run time (compose files for the compose
# targets, .env files for interpolation) plus the minimised corpus committed in
# fuzz/corpus/<target>/. Each target runs FUZZ_SECONDS (default 60). Exits
# non-zero when any target crashes, and prints a summary either way.
#
#   FUZZ_SECONDS=N       seconds per target
#   FUZZ_TARGETS="a b"   which targets (default: all four)
#   FUZZ_TARGET_DIR=DIR  cargo target dir for the instrumented build (default fuzz/target)
#   FUZZ_MINIMISE=1      afterwards, merge what was found into fuzz/corpus/ (cargo fuzz cmin)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

seconds=${FUZZ_SECONDS:-60}
targets=${FUZZ_TARGETS:-compose_yaml compose_structured interpolation webhook_signatures}
target_dir=${FUZZ_TARGET_DIR:-$root/fuzz/target}
shared_corpus=$root/../shared/corpus

# cargo-fuzz passes nightly-only flags (-Z, sanitizer coverage); the stable
# toolchain accepts them with RUSTC_BOOTSTRAP.
export RUSTC_BOOTSTRAP=1
if ! command -v cargo-fuzz >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi

# No AddressSanitizer: the code under test is safe Rust, and ASan halves the
# executions per second. Debug assertions (overflow checks) stay on.
fuzz=(cargo fuzz)
build_flags=(--sanitizer none --target-dir "$target_dir")
(cd fuzz && "${fuzz[@]}" build "${build_flags[@]}")

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

max_len_of() {
    case $1 in
        compose_yaml) echo 16384 ;;
        compose_structured) echo 4096 ;;
        interpolation) echo 2048 ;;
        *) echo 2048 ;;
    esac
}

# Copies files matching find(1) predicates under the shared corpus into $1,
# named by content hash so duplicates collapse.
collect_seeds() {
    local dest=$1
    shift
    mkdir -p "$dest"
    [ -d "$shared_corpus" ] || return 0
    find "$shared_corpus" -type f -size -64k \( "$@" \) -print0 |
        while IFS= read -r -d '' file; do
            cp "$file" "$dest/$(sha1sum "$file" | cut -c1-40)"
        done
}

summary=()
failed=0
for target in $targets; do
    seeds=$work/seeds/$target
    case $target in
        compose_yaml)
            collect_seeds "$seeds" -name '*compose*.yml' -o -name '*compose*.yaml' ;;
        interpolation)
            collect_seeds "$seeds" -name '.env' -o -name '*.env' ;;
        *) mkdir -p "$seeds" ;;
    esac
    committed=$root/fuzz/corpus/$target
    found=$work/found/$target
    artifacts=$work/artifacts/$target
    mkdir -p "$committed" "$found" "$artifacts"
    log=$work/$target.log

    echo "== fuzzing $target for ${seconds}s ($(ls "$seeds" | wc -l) seeds, $(ls "$committed" | wc -l) corpus inputs)"
    status=ok
    # New inputs go to $found (the first corpus directory); the committed corpus
    # and the seeds are only read.
    if ! (cd fuzz && "${fuzz[@]}" run "${build_flags[@]}" "$target" "$found" "$committed" "$seeds" -- \
        -max_total_time="$seconds" -max_len="$(max_len_of "$target")" -timeout=10 \
        -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix="$artifacts/") >"$log" 2>&1; then
        status=CRASH
        failed=1
        tail -n 60 "$log"
        for artifact in "$artifacts"/*; do
            [ -f "$artifact" ] || continue
            mkdir -p "$root/fuzz/artifacts/$target"
            cp "$artifact" "$root/fuzz/artifacts/$target/"
            echo "crash input kept in fuzz/artifacts/$target/$(basename "$artifact"):"
            head -c 600 "$artifact" | od -c | head -n 20
        done
    fi

    if [ "${FUZZ_MINIMISE:-0}" = 1 ] && [ "$status" = ok ]; then
        merged=$work/merged/$target
        mkdir -p "$merged"
        "$target_dir/x86_64-unknown-linux-gnu/release/$target" -merge=1 \
            -max_len="$(max_len_of "$target")" "$merged" "$committed" "$found" >"$work/$target.merge.log" 2>&1
        rm -rf "$committed"
        mv "$merged" "$committed"
    fi

    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n1)
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -n1 | cut -d' ' -f2)
    summary+=("$(printf '%-20s %-6s %10s execs %7s exec/s  cov %6s  corpus %4s committed + %4s new' \
        "$target" "$status" "${execs:-?}" "${rate:-?}" "${cov:-?}" \
        "$(ls "$committed" | wc -l)" "$(ls "$found" | wc -l)")")
done

echo
echo "== fuzz summary (${seconds}s per target)"
printf '%s\n' "${summary[@]}"
if [ "$failed" -ne 0 ]; then
    echo "fuzzing found a crash: reproduce with the kept input, add it to tests/fuzz_regressions.rs and fix it" >&2
    exit 1
fi
