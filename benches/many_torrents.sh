#!/usr/bin/env bash
# Many small torrents seeded by one process (issue 13): piecemeal against
# transmission-daemon with the same torrents. N data files of 64 KiB (random)
# in one folder, one torrent each (16 KiB pieces, no tracker); no peers. Each
# client is started on all N, and once every torrent is checked and seeding
# (plus SETTLE seconds) it is left idle for IDLE seconds. Measured per client:
#   - time from starting the client until all N are seeding (for Transmission
#     this includes adding the torrents over RPC, in batches of 100);
#   - wake-ups during the idle window: completed epoll_wait/epoll_pwait/poll/
#     ppoll/select/pselect6/nanosleep/clock_nanosleep/futex calls, counted by
#     `strace -c -f -p PID` over all threads of the process (piecemeal has one
#     thread; transmission-daemon several), scaled to a minute;
#   - CPU seconds used in the idle window by all threads of the process (run
#     time from /proc/PID/task/*/schedstat), scaled to a minute;
#   - peak RSS (VmHWM) and RSS at the end of the idle window (VmRSS).
# RUNS runs, alternating the clients; prints every run and the medians.
#
# Needs root, strace, transmission-daemon and transmission-remote. Each client
# runs in a network namespace made here (only lo, up), removed on exit; the
# daemon has DHT, LPD, PEX, uTP, port forwarding and blocklists off and its RPC
# on 127.0.0.1. Nothing leaves the machine.
#
#   benches/many_torrents.sh [N=1000] [IDLE=60] [WORKDIR=/tmp/pm-many] [RUNS=1]
#   PIECEMEAL=/path/to/piecemeal benches/many_torrents.sh   # no cargo build
#   CLIENTS=piecemeal benches/many_torrents.sh 100          # one client only
set -euo pipefail
N=${1:-1000}
IDLE=${2:-60}
W=${3:-/tmp/pm-many}
RUNS=${4:-1}
SETTLE=${SETTLE:-5}
TIMEOUT=${TIMEOUT:-900} # seconds for all N to be seeding
CLIENTS=${CLIENTS:-piecemeal transmission}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
if [ -z "${PIECEMEAL:-}" ]; then
  cargo build --release --manifest-path "$ROOT/Cargo.toml" >/dev/null 2>&1
  PIECEMEAL="${CARGO_TARGET_DIR:-$ROOT/target}/release/piecemeal"
fi
B=$PIECEMEAL
NS="pmmany$$"
PIDS=()
WAKE_RE='^(epoll_wait|epoll_pwait|epoll_pwait2|poll|ppoll|select|pselect6|nanosleep|clock_nanosleep|futex)$'

cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  for c in pm tr; do ip netns del "$NS-$c" 2>/dev/null || true; done
}
trap cleanup EXIT

for c in pm tr; do
  ip netns add "$NS-$c"
  ip -n "$NS-$c" link set lo up
done
# exec, not a shell: $! of a command started with these is the program.
INPM=(ip netns exec "$NS-pm") INTR=(ip netns exec "$NS-tr")

# The data and torrents (kept between invocations; a torrent is remade when
# its data file is new).
mkdir -p "$W/data" "$W/torrents"
TORRENTS=()
for i in $(seq -f %05g 1 "$N"); do
  f="$W/data/f$i.bin" t="$W/torrents/f$i.torrent"
  if [ ! -f "$f" ] || [ "$(stat -c %s "$f")" != 65536 ]; then
    head -c 65536 /dev/urandom > "$f"
    rm -f "$t"
  fi
  [ -f "$t" ] || "$B" create "$f" -o "$t" --piece-length 16K -q >/dev/null
  TORRENTS+=("$t")
done
sync

now() { date +%s.%N; }
# CPU seconds of all threads: on-CPU nanoseconds from schedstat (finer than
# the 10 ms ticks of /proc/PID/stat), summed over /proc/PID/task/*.
cpu_s() { cat /proc/"$1"/task/*/schedstat | awk '{s += $1} END {printf "%.6f\n", s / 1e9}'; }
status_kib() { awk -v k="$2:" '$1 == k {print $2}' "/proc/$1/status"; }

RESULTS="$W/results.txt"
: > "$RESULTS"

# measure NAME RUN PID READY_SECONDS [NOTE]: the idle window, then one
# result line.
measure() {
  local name=$1 run=$2 pid=$3 ready=$4 note=${5:-}
  sleep "$SETTLE"
  local trace="$W/strace-$name-$run.txt"
  local c0 c1
  c0=$(cpu_s "$pid")
  # (strace -c writes no table at all when no call completed.)
  timeout -s INT "$IDLE" strace -c -f -p "$pid" -o "$trace" 2> "$trace.err" || true
  c1=$(cpu_s "$pid")
  kill -0 "$pid" # still running
  local wake hwm rss threads
  wake=$(awk -v re="$WAKE_RE" '$NF ~ re && $4 ~ /^[0-9]+$/ {s += $4} END {print s + 0}' "$trace")
  hwm=$(status_kib "$pid" VmHWM)
  rss=$(status_kib "$pid" VmRSS)
  threads=$(status_kib "$pid" Threads)
  local wpm cpm
  wpm=$(echo "$wake * 60 / $IDLE" | bc -l)
  cpm=$(echo "($c1 - $c0) * 60 / $IDLE" | bc -l)
  printf '%-12s run %d: ready %6.2f s, peak RSS %6.1f MiB, RSS %6.1f MiB, %7.1f wake-ups/min, %6.3f CPU s/min, %s thread(s); wake-up calls:' \
    "$name" "$run" "$ready" "$(echo "$hwm / 1024" | bc -l)" "$(echo "$rss / 1024" | bc -l)" "$wpm" "$cpm" "$threads"
  awk -v re="$WAKE_RE" '$NF ~ re && $4 ~ /^[0-9]+$/ {printf " %s %s", $NF, $4}' "$trace"
  echo "${note:+; $note}"
  echo "$name $ready $hwm $rss $wpm $cpm" >> "$RESULTS"
}

piecemeal_run() { # RUN
  local log="$W/piecemeal-$1.log"
  rm -f "$log"
  local t0 t1 pid
  t0=$(now)
  # All N torrents as arguments (N=1000 in $W=/tmp/pm-many: about 30 KB of
  # arguments, far below ARG_MAX).
  "${INPM[@]}" "$B" seed "${TORRENTS[@]}" -o "$W/data" --bind 127.0.0.1 --port 6881 -q \
    --log-file "$log" 2> "$W/piecemeal-$1.err" & pid=$!
  PIDS+=("$pid")
  # Torrents given on the command line are checked before the loop starts;
  # each logs "N of N pieces already verified on disk".
  checked() { cat "$log" 2>/dev/null | grep -c ': 4 of 4 pieces already verified on disk' || true; }
  until [ "$(checked)" -ge "$N" ]; do
    kill -0 "$pid" 2>/dev/null || { echo "piecemeal exited"; cat "$W/piecemeal-$1.err"; exit 1; }
    [ "$(echo "$(now) - $t0 < $TIMEOUT" | bc)" = 1 ] || { echo "piecemeal: not all seeding after $TIMEOUT s"; exit 1; }
    sleep 0.1
  done
  t1=$(now)
  measure piecemeal "$1" "$pid" "$(echo "$t1 - $t0" | bc)"
  kill -INT "$pid"; wait "$pid" 2>/dev/null || true
}

transmission_run() { # RUN
  local cfg="$W/tr"
  rm -rf "$cfg"; mkdir -p "$cfg"
  cat > "$cfg/settings.json" <<EOF
{
    "bind-address-ipv4": "127.0.0.1",
    "bind-address-ipv6": "::1",
    "peer-port": 51413,
    "peer-port-random-on-start": false,
    "port-forwarding-enabled": false,
    "dht-enabled": false,
    "lpd-enabled": false,
    "pex-enabled": false,
    "utp-enabled": false,
    "blocklist-enabled": false,
    "download-dir": "$W/data",
    "incomplete-dir-enabled": false,
    "watch-dir-enabled": false,
    "start-added-torrents": true,
    "trash-original-torrent-files": false,
    "ratio-limit-enabled": false,
    "idle-seeding-limit-enabled": false,
    "speed-limit-up-enabled": false,
    "speed-limit-down-enabled": false,
    "alt-speed-enabled": false,
    "alt-speed-time-enabled": false,
    "download-queue-enabled": false,
    "seed-queue-enabled": false,
    "queue-stalled-enabled": false,
    "rpc-enabled": true,
    "rpc-bind-address": "127.0.0.1",
    "rpc-port": 9091,
    "rpc-authentication-required": false,
    "rpc-whitelist-enabled": true,
    "rpc-whitelist": "127.0.0.1",
    "rpc-host-whitelist-enabled": false,
    "message-level": 1
}
EOF
  local R=("${INTR[@]}" transmission-remote 127.0.0.1:9091)
  local t0 t1 pid
  t0=$(now)
  "${INTR[@]}" transmission-daemon -f -g "$cfg" > /dev/null 2> "$W/transmission-$1.err" & pid=$!
  PIDS+=("$pid")
  until "${R[@]}" -l >/dev/null 2>&1; do
    kill -0 "$pid" 2>/dev/null || { echo "transmission-daemon exited"; cat "$W/transmission-$1.err"; exit 1; }
    sleep 0.1
  done
  # transmission-remote 3.00 adds only the last file of "-a F1 F2 ...", so
  # each file gets its own -a.
  local i t args
  for ((i = 0; i < N; i += 100)); do
    args=()
    for t in "${TORRENTS[@]:i:100}"; do args+=(-a "$t"); done
    "${R[@]}" "${args[@]}" >/dev/null
  done
  local ta; ta=$(now)
  # Every torrent at 100 % and seeding ("Idle" when no peer is connected).
  seeding() { "${R[@]}" -l | awk '$2 == "100%" && / (Idle|Seeding) / {n++} END {print n + 0}'; }
  until [ "$(seeding)" -ge "$N" ]; do
    kill -0 "$pid" 2>/dev/null || { echo "transmission-daemon exited"; cat "$W/transmission-$1.err"; exit 1; }
    [ "$(echo "$(now) - $t0 < $TIMEOUT" | bc)" = 1 ] || { echo "transmission: not all seeding after $TIMEOUT s"; exit 1; }
    sleep 0.5
  done
  t1=$(now)
  "${R[@]}" -l > "$W/transmission-$1.list"
  measure transmission "$1" "$pid" "$(echo "$t1 - $t0" | bc)" \
    "all added $(printf %.1f "$(echo "$ta - $t0" | bc)") s after start"
  kill "$pid"; wait "$pid" 2>/dev/null || true
}

echo "$N torrents of 64 KiB (16 KiB pieces), idle window $IDLE s after all seeding + $SETTLE s"
for run in $(seq "$RUNS"); do
  for c in $CLIENTS; do "${c}_run" "$run"; done
done

median() { sort -g | awk '{a[NR] = $1} END {if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }
echo
echo "medians of $RUNS run(s), N=$N, idle $IDLE s ($(transmission-daemon --version 2>&1 | head -1)):"
printf '%-12s %10s %12s %12s %14s %10s\n' client peak_MiB rss_idle_MiB wakeups/min cpu_s/min ready_s
for c in $CLIENTS; do
  col() { awk -v c="$c" -v k="$1" '$1 == c {print $k}' "$RESULTS" | median; }
  printf '%-12s %10.1f %12.1f %12.1f %14.3f %10.2f\n' "$c" \
    "$(echo "$(col 3) / 1024" | bc -l)" "$(echo "$(col 4) / 1024" | bc -l)" "$(col 5)" "$(col 6)" "$(col 2)"
done
