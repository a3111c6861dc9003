#!/usr/bin/env bash
# Runs every fuzz target for SECONDS seconds (default 60), starting from the committed seeds in
# seeds/<target>/ (new inputs go to corpus/<target>/, crashes to artifacts/<target>/).
#
#   fuzz/run.sh 120
#
# Works on stable Rust: RUSTC_BOOTSTRAP=1 lets cargo-fuzz pass its -Z sanitizer flags.
# Regenerate the seeds from testdata/ with
#   cargo test -p iwarp-wire --test captures -- --ignored write_fuzz_seeds
set -euo pipefail

secs="${1:-60}"
case "$secs" in
    '' | *[!0-9]*) echo "usage: $0 SECONDS" >&2; exit 2 ;;
esac
cd "$(dirname "$0")"

if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi
export RUSTC_BOOTSTRAP=1

for t in $(cargo fuzz list); do
    mkdir -p "corpus/$t"
    echo "== fuzz target $t for ${secs}s"
    cargo fuzz run "$t" "corpus/$t" "seeds/$t" -- \
        -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1
done
