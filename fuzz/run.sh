#!/usr/bin/env bash
# Runs every fuzz target for SECONDS seconds (default 60), starting from the committed seeds in
# seeds/<target>/ (new inputs go to corpus/<target>/, crashes to artifacts/<target>/).
#
#   fuzz/run.sh 120
#
# Works on stable Rust: RUSTC_BOOTSTRAP=1 lets cargo-fuzz pass its -Z sanitizer flags.
# Regenerate the seeds from testdata/ with
#   cargo test -p iwarp-wire --test captures -- --ignored write_fuzz_seeds      (codec targets)
#   cargo test -p iwarp-proto --test fuzz_seeds -- --ignored write_engine_fuzz_seeds
#                                                    (engine targets: qp_rx, cm_handshake)
# (the second also writes the dictionaries <target>.dict). Inputs that found bugs are kept as
# seeds/<target>/regress-*.bin.
#
# Memory is capped: 2 GiB resident, and no single allocation of 128 MiB or more (every target
# bounds its input, so a larger allocation is a runaway).
#
# Fails unless every target of fuzz/Cargo.toml is listed by `cargo fuzz list`, runs for its
# time, and ends without a crash: a run that fuzzed nothing is no pass.
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

# The expected targets: every [[bin]] of the fuzz crate.
expected=$(sed -n '/^\[\[bin\]\]/,/^name/ s/^name *= *"\(.*\)"/\1/p' Cargo.toml | sort)
if [ -z "$expected" ]; then
    echo "fuzz/run.sh: no [[bin]] targets found in fuzz/Cargo.toml" >&2
    exit 1
fi
# `cargo fuzz list` failing must fail the run (set -e does not see a failure inside $(...) in a
# for list), and it must list exactly the expected targets.
listed=$(cargo fuzz list) || { echo "fuzz/run.sh: cargo fuzz list failed" >&2; exit 1; }
listed=$(printf '%s\n' "$listed" | sed '/^$/d' | sort)
if [ "$listed" != "$expected" ]; then
    echo "fuzz/run.sh: cargo fuzz list gave [$(echo $listed)], fuzz/Cargo.toml has [$(echo $expected)]" >&2
    exit 1
fi

ran=0
for t in $expected; do
    mkdir -p "corpus/$t"
    echo "== fuzz target $t for ${secs}s"
    log=$(mktemp)
    # A target's dictionary (values mutations can hardly guess), if it has one.
    dict=()
    if [ -f "$t.dict" ]; then dict=("-dict=$t.dict"); fi
    # libFuzzer prints its final statistics (stat::number_of_executed_units) on stderr
    if ! cargo fuzz run "$t" "corpus/$t" "seeds/$t" -- "${dict[@]}" \
        -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -malloc_limit_mb=128 -print_final_stats=1 2>&1 |
        tee "$log"; then
        echo "fuzz/run.sh: target $t failed" >&2
        rm -f "$log"
        exit 1
    fi
    units=$(sed -n 's/^stat::number_of_executed_units: *\([0-9]*\).*/\1/p' "$log" | tail -n 1)
    rm -f "$log"
    if [ -z "$units" ] || [ "$units" -eq 0 ]; then
        echo "fuzz/run.sh: target $t executed no input" >&2
        exit 1
    fi
    echo "== fuzz target $t: $units inputs executed"
    ran=$((ran + 1))
done
echo "fuzz/run.sh: $ran of $(echo "$expected" | wc -l) targets ran clean"
