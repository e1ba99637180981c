#!/bin/sh
# A fuzzing campaign: each named target (all of them by default) for SECONDS,
# one job, niced, release build with debug assertions and overflow checks on
# (-a), from a scratch copy of the committed corpus (so the run does
# not litter fuzz/corpus). Crashes land in fuzz/artifacts/<target>/ as usual.
# The last libFuzzer status line of each run is appended to $LOG.
#
#   fuzz/campaign.sh 900                 # every target, 15 min each
#   fuzz/campaign.sh 600 wire geometry   # two targets
#
# Afterwards, fold what was found back into the committed corpus with
#   cargo +nightly fuzz cmin <target> $WORK/<target>   (then keep ≤ 200 files)
set -eu
secs=${1:?usage: campaign.sh SECONDS [TARGET...]}
shift
cd "$(dirname "$0")"
WORK=${WORK:-/tmp/piecemeal-fuzz}
LOG=${LOG:-$WORK/campaign.log}
mkdir -p "$WORK"
targets=${*:-$(cargo +nightly fuzz list)}
cargo +nightly fuzz build -O -a >/dev/null 2>&1
for t in $targets; do
    mkdir -p "$WORK/$t"
    cp -n corpus/"$t"/* "$WORK/$t"/ 2>/dev/null || true
    start=$(date -u +%FT%TZ)
    nice -n 19 cargo +nightly fuzz run -O -a "$t" "$WORK/$t" -- \
        -max_total_time="$secs" -max_len=4096 -print_final_stats=1 \
        >"$WORK/$t.out" 2>&1 || echo "$t: fuzzer exited non-zero (see $WORK/$t.out)" >>"$LOG"
    execs=$(grep -a 'stat::number_of_executed_units' "$WORK/$t.out" | awk '{print $2}')
    last=$(grep -a -E '^#[0-9]+' "$WORK/$t.out" | tail -1)
    echo "$start $t ${secs}s execs=$execs | $last" >>"$LOG"
done
