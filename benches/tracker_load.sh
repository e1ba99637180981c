#!/usr/bin/env bash
# Announce throughput of the built-in tracker next to Debian's opentracker.
#
# Both trackers run on loopback only; wrk (with benches/tracker_announce.lua)
# sends the same announce load to each: NHASH info-hashes, a mix of new peers
# (event=started) and re-announces, compact=1, numwant=50. For each tracker
# and connection mode: a short warm-up, then RUNS runs of DURATION; prints
# the median announces/s, the tracker's CPU time per announce and its peak
# RSS (VmHWM) at the end.
#
# Modes: "close" sends "Connection: close" (one request per connection);
# "keepalive" lets wrk reuse connections where the server allows it. Neither
# tracker keeps connections open (ours answers "Connection: close",
# opentracker closes after each response, which wrk counts as read errors),
# so both modes measure one connection per announce.
#
# Needs: apt-get install -y --no-install-recommends opentracker wrk
# Debian's opentracker is built with a whitelist, so the script writes one
# with the benchmark's info-hashes. Run as root (opentracker chroots).
#
# Settings (environment): PIECEMEAL (binary, default
# $CARGO_TARGET_DIR/release/piecemeal or target/release/piecemeal), DURATION
# (10s), RUNS (3), THREADS (2), CONNS (50), NHASH (500, at most 1000: our
# default torrent cap), NEW (0.2, share of new peers), MODES ("close"),
# TRACKERS ("piecemeal opentracker"), PORT_OURS (27001), PORT_OT (27002).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
target=${CARGO_TARGET_DIR:-$root/target}
PIECEMEAL=${PIECEMEAL:-$target/release/piecemeal}
DURATION=${DURATION:-10s}
RUNS=${RUNS:-3}
THREADS=${THREADS:-2}
CONNS=${CONNS:-50}
NHASH=${NHASH:-500}
NEW=${NEW:-0.2}
MODES=${MODES:-close}
TRACKERS=${TRACKERS:-piecemeal opentracker}
PORT_OURS=${PORT_OURS:-27001}
PORT_OT=${PORT_OT:-27002}
LUA=$here/tracker_announce.lua

for tool in wrk opentracker python3; do
    command -v "$tool" >/dev/null || { echo "missing $tool" >&2; exit 1; }
done
[ -x "$PIECEMEAL" ] || { echo "build first: cargo build --release ($PIECEMEAL)" >&2; exit 1; }

. "$here/tracker_bench_common.sh"

one_run() { # port mode duration -> "req/s bad"
    local close=0
    [ "$2" = close ] && close=1
    TRB_NHASH=$NHASH TRB_NEW=$NEW TRB_CLOSE=$close \
        wrk -t"$THREADS" -c"$CONNS" -d"$3" -s "$LUA" "http://127.0.0.1:$1/" \
        >"$work/wrk.out" 2>"$work/wrk.err" || true
    local rps
    rps=$(awk '/Requests\/sec/ {print $2}' "$work/wrk.out")
    echo "${rps:-0} $(grep -c 'bad response' "$work/wrk.err" || true)"
}

median() { sort -n | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}'; }

echo "# $(date -u +%FT%TZ) $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# wrk -t$THREADS -c$CONNS -d$DURATION, $RUNS runs, $NHASH info-hashes, new peers $NEW, numwant=50 compact=1"
printf '%-12s %-9s %12s %-26s %14s %10s\n' tracker mode "median/s" runs "cpu us/ann" "VmHWM kB"
declare -A result
for mode in $MODES; do
    for t in $TRACKERS; do
        start_tracker "$t"
        one_run "$port" "$mode" 2s >/dev/null # warm-up: fill the swarms
        rates=()
        cpu_total=0
        req_total=0
        bad_total=0
        secs=${DURATION%s}
        for _ in $(seq "$RUNS"); do
            c0=$(cpu_ticks "$pid")
            read -r rps bad < <(one_run "$port" "$mode" "$DURATION")
            c1=$(cpu_ticks "$pid")
            rates+=("$rps")
            cpu_total=$((cpu_total + c1 - c0))
            req_total=$(awk -v a="$req_total" -v r="$rps" -v s="$secs" 'BEGIN {print a + r * s}')
            bad_total=$((bad_total + bad))
        done
        med=$(printf '%s\n' "${rates[@]}" | median)
        us=$(awk -v c="$cpu_total" -v t="$tck" -v n="$req_total" 'BEGIN {printf "%.1f", c / t * 1e6 / n}')
        hwm=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status")
        printf '%-12s %-9s %12.0f %-26s %14s %10s\n' "$t" "$mode" "$med" "$(IFS=,; echo "${rates[*]}")" "$us" "$hwm"
        [ "$bad_total" -eq 0 ] || echo "  warning: $bad_total failure or non-200 answers reported (wrk prints at most 3 per thread)"
        result[$t.$mode]=$med
        kill "$pid"
        wait "$pid" 2>/dev/null || true
    done
    if [ -n "${result[piecemeal.$mode]:-}" ] && [ -n "${result[opentracker.$mode]:-}" ]; then
        awk -v a="${result[piecemeal.$mode]}" -v b="${result[opentracker.$mode]}" -v m="$mode" \
            'BEGIN {printf "ratio piecemeal/opentracker (%s): %.2f\n", m, a / b}'
    fi
done
