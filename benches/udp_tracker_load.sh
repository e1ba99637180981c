#!/usr/bin/env bash
# UDP (BEP 15) announce throughput of the built-in tracker next to Debian's
# opentracker, in the same run.
#
# Both trackers listen on 127.0.0.1 at once (separate ports); the load
# generator benches/udp_load.rs sends the same announce load to each in
# turn: a warm-up per tracker, then RUNS runs of DURATION seconds,
# alternating trackers (ours, opentracker, ours, ...), so that a change in
# the machine's load hits both alike. Per tracker: the median announces/s,
# its CPU time (utime + stime from /proc/PID/stat, all threads) per
# answered request over the measured runs, and its peak RSS (VmHWM) at the
# end.
#
# Load: SOCKETS client sockets, WINDOW requests outstanding on each,
# NHASH info-hashes, NEW share of new peers (event=started, a fresh peer id
# and port), the rest re-announces (a quarter of them seeders), numwant=50,
# SCRAPE share of scrapes (1-4 hashes). Every socket sends from 127.0.0.1:
# the tracker's own host, which our rate limit (20 datagrams/s per address)
# and per-address quotas leave out, as they do for the HTTP benchmark's
# wrk. opentracker has no such limits. A last run (LIMITED=1) sends the
# same load to ours from 64 addresses (127.0.0.2-65) to show the default
# limit holding: about 64 x 20 answers/s, the rest dropped unread.
#
# Needs: apt-get install -y --no-install-recommends opentracker
# Build first: cargo build --release && cargo bench --bench udp_load --no-run
# Debian's opentracker is built with a whitelist, so the script writes one
# with the benchmark's info-hashes. Run as root (opentracker chroots).
#
# Settings (environment): PIECEMEAL (binary, default
# $CARGO_TARGET_DIR/release/piecemeal or target/release/piecemeal),
# UDP_LOAD (the generator, default the newest
# $CARGO_TARGET_DIR/release/deps/udp_load-*), DURATION (10), WARMUP (3),
# RUNS (5), SOCKETS (64), WINDOW (2), THREADS (1), NHASH (500, at most
# 1000: our default torrent cap), NEW (0.1), SCRAPE (0), LIMITED (1),
# PORT_OURS (27011), PORT_OT (27012).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
target=${CARGO_TARGET_DIR:-$root/target}
PIECEMEAL=${PIECEMEAL:-$target/release/piecemeal}
UDP_LOAD=${UDP_LOAD:-$(ls -t "$target"/release/deps/udp_load-* 2>/dev/null | grep -v '\.d$' | head -n1 || true)}
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-3}
RUNS=${RUNS:-5}
SOCKETS=${SOCKETS:-64}
WINDOW=${WINDOW:-2}
THREADS=${THREADS:-1}
NHASH=${NHASH:-500}
NEW=${NEW:-0.1}
SCRAPE=${SCRAPE:-0}
LIMITED=${LIMITED:-1}
PORT_OURS=${PORT_OURS:-27011}
PORT_OT=${PORT_OT:-27012}

for tool in opentracker python3; do
    command -v "$tool" >/dev/null || { echo "missing $tool" >&2; exit 1; }
done
[ -x "$PIECEMEAL" ] || { echo "build first: cargo build --release ($PIECEMEAL)" >&2; exit 1; }
[ -n "$UDP_LOAD" ] && [ -x "$UDP_LOAD" ] ||
    { echo "build first: cargo bench --bench udp_load --no-run" >&2; exit 1; }

. "$here/tracker_bench_common.sh"

declare -A pid_of port_of
start_tracker_q() { # name: start it (ours with -q) and note its pid and port
    if [ "$1" = piecemeal ]; then start_tracker "$1" -q; else start_tracker "$1"; fi
    pid_of[$1]=$pid
    port_of[$1]=$port
}

gen() { # port duration warmup [extra args] -> the generator's result line
    local port=$1 dur=$2 warm=$3
    shift 3
    "$UDP_LOAD" --target "127.0.0.1:$port" --sockets "$SOCKETS" --window "$WINDOW" \
        --threads "$THREADS" --hashes "$NHASH" --new "$NEW" --scrape "$SCRAPE" \
        --numwant 50 --duration "$dur" --warmup "$warm" "$@" 2>>"$work/gen.err"
}
field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p"; }

median() { sort -n | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}'; }

trackers="piecemeal opentracker"
echo "# $(date -u +%FT%TZ) $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# udp_load: $SOCKETS sockets from 127.0.0.1, window $WINDOW, $THREADS thread(s), $NHASH info-hashes," \
    "new peers $NEW, scrapes $SCRAPE, numwant 50; ${DURATION}s x $RUNS runs per tracker, alternating," \
    "after a ${WARMUP}s warm-up"
declare -A rates cpu answers timeouts errors bad gencpu
for t in $trackers; do
    start_tracker_q "$t"
    gen "${port_of[$t]}" "$WARMUP" 0 >/dev/null
    rates[$t]=""
    cpu[$t]=0
    answers[$t]=0
    timeouts[$t]=0
    errors[$t]=0
    bad[$t]=0
    gencpu[$t]=""
done
for run in $(seq "$RUNS"); do
    for t in $trackers; do
        pid=${pid_of[$t]}
        c0=$(cpu_ticks "$pid")
        line=$(gen "${port_of[$t]}" "$DURATION" 0)
        c1=$(cpu_ticks "$pid")
        echo "# run $run $t: $line" >>"$work/runs"
        rates[$t]+="$(field announces_per_s <<<"$line") "
        cpu[$t]=$((${cpu[$t]} + c1 - c0))
        n=$(awk -v a="$(field answers_per_s <<<"$line")" -v s="$DURATION" 'BEGIN {printf "%.0f", a * s}')
        answers[$t]=$((${answers[$t]} + n))
        timeouts[$t]=$((${timeouts[$t]} + $(field timeouts <<<"$line")))
        errors[$t]=$((${errors[$t]} + $(field errors <<<"$line")))
        bad[$t]=$((${bad[$t]} + $(field bad <<<"$line") + $(field unmatched <<<"$line")))
        gencpu[$t]+="$(field generator_cpu_s <<<"$line") "
    done
done

printf '%-12s %12s %-24s %12s %10s %9s %s\n' tracker "median/s" runs "cpu us/ans" "VmHWM kB" timeouts "generator cpu s"
declare -A med
for t in $trackers; do
    med[$t]=$(printf '%s\n' ${rates[$t]} | median)
    us=$(awk -v c="${cpu[$t]}" -v k="$tck" -v n="${answers[$t]}" 'BEGIN {printf "%.2f", c / k * 1e6 / n}')
    hwm=$(awk '/VmHWM/ {print $2}' "/proc/${pid_of[$t]}/status")
    printf '%-12s %12.0f %-24s %12s %10s %9s %s\n' "$t" "${med[$t]}" "$(echo ${rates[$t]} | tr ' ' ,)" \
        "$us" "$hwm" "${timeouts[$t]}" "$(echo ${gencpu[$t]} | tr ' ' ,)"
    [ "${errors[$t]}" -eq 0 ] || echo "  warning: $t: ${errors[$t]} error answers"
    [ "${bad[$t]}" -eq 0 ] || echo "  warning: $t: ${bad[$t]} malformed, mismatched or late answers"
done
awk -v a="${med[piecemeal]}" -v b="${med[opentracker]}" \
    'BEGIN {printf "ratio piecemeal/opentracker (announces/s): %.2f\n", a / b}'
cat "$work/runs"

if [ "$LIMITED" = 1 ]; then
    line=$(gen "${port_of[piecemeal]}" 5 0 --sources 64)
    echo "# default limits, 64 source addresses (127.0.0.2-65), 5 s against piecemeal:"
    echo "#   answers/s $(field answers_per_s <<<"$line"), errors $(field errors <<<"$line")," \
        "time-outs $(field timeouts <<<"$line") of $(field sent <<<"$line") sent"
fi
gen_err=$(sort "$work/gen.err" | uniq -c | head -n 5)
[ -z "$gen_err" ] || { echo "# generator messages:"; echo "$gen_err"; }
