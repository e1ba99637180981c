#!/usr/bin/env bash
# Interop transfer benchmark (recorded, not timed by CI): a libtorrent
# seeder hands SIZE MiB to one leecher at a time: piecemeal, libtorrent, and
# Transmission, RUNS times each. Prints one line per run and the medians:
# wall time, leecher CPU seconds (user+sys), leecher peak RSS.
#
# Needs root and the Debian packages .ci/run installs (python3-libtorrent,
# transmission-daemon, transmission-cli). Everything runs in network
# namespaces made here (seeder, leecher, tracker hosts on a bridge, private
# 10.98.0.0/24 addresses), removed on exit; nothing leaves the machine.
# Peers find each other through piecemeal's tracker (Transmission cannot be
# told a peer address). piecemeal and libtorrent are measured with
# /usr/bin/time -v; transmission-daemon through /proc (CPU ticks used
# between adding the torrent and completion; VmHWM).
#
#   benches/interop_1gib.sh [SIZE_MiB=1024] [RUNS=3] [WORKDIR=/tmp/pm-interop-bench]
#   LEECHERS="piecemeal libtorrent" benches/interop_1gib.sh   # a subset
set -euo pipefail
SIZE=${1:-1024}
RUNS=${2:-3}
W=${3:-/tmp/pm-interop-bench}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cargo build --release --manifest-path "$ROOT/Cargo.toml" >/dev/null 2>&1
B=${PIECEMEAL_BIN:-"${CARGO_TARGET_DIR:-$ROOT/target}/release/piecemeal"}
LT="$ROOT/tests/interop/lt_driver.py"
PY=/usr/bin/python3
P="pmb$$"
SEED=10.98.0.1 LEECH=10.98.0.2 TRACK=10.98.0.3
PIDS=()

# shellcheck source=netns_common.sh
. "$ROOT/benches/netns_common.sh"
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  cleanup_hosts 3
}
trap cleanup EXIT

# The network: hub namespace with a bridge, three hosts.
make_hosts 3 10.98.0
# Commands run on a host (exec, not a shell function: $! is the program).
H1=(ip netns exec "$P-h1") H2=(ip netns exec "$P-h2") H3=(ip netns exec "$P-h3")

mkdir -p "$W/seed"
if [ ! -f "$W/seed/data.bin" ] || [ "$(stat -c %s "$W/seed/data.bin")" != $((SIZE << 20)) ]; then
  head -c $((SIZE << 20)) /dev/urandom > "$W/seed/data.bin"
fi
"$B" create --force "$W/seed/data.bin" -o "$W/data.torrent" --piece-length 1M \
  --tracker "http://$TRACK:6969/announce" >/dev/null
"${H3[@]}" "$B" tracker --bind $TRACK --port 6969 --interval 5 -q & PIDS+=($!)
"${H1[@]}" $PY "$LT" seed "$W/data.torrent" "$W/seed" --listen $SEED:6882 \
  > "$W/lt-seed.out" 2> "$W/lt-seed.err" & PIDS+=($!)
until grep -q "@status seeding" "$W/lt-seed.out" 2>/dev/null; do sleep 0.5; done
sleep 1 # the seeder's first announce

RESULTS="$W/results.txt"
: > "$RESULTS"
record() { # name wall cpu rss_kib
  echo "$1 wall=$2s cpu=$3s rss=$(($4 / 1024))MiB MiB/s=$(echo "$SIZE / $2" | bc)"
  echo "$1 $2 $3 $4" >> "$RESULTS"
}

check() { # name dir
  cmp -s "$W/seed/data.bin" "$2/data.bin" || { echo "$1: data differs"; exit 1; }
}

timed() { # name command... (the leecher, measured by /usr/bin/time -v)
  local name=$1; shift
  rm -rf "$W/leech"; mkdir -p "$W/leech"
  /usr/bin/time -v -o "$W/time.txt" "$@" >/dev/null 2> "$W/$name.err" \
    || { echo "$name failed"; tail "$W/$name.err"; exit 1; }
  check "$name" "$W/leech"
  local wall user sys rss
  wall=$(awk -F': ' '/Elapsed \(wall clock\)/ {n=split($2,a,":"); s=0; for(i=1;i<=n;i++) s=s*60+a[i]; print s}' "$W/time.txt")
  user=$(awk -F': ' '/User time/ {print $2}' "$W/time.txt")
  sys=$(awk -F': ' '/System time/ {print $2}' "$W/time.txt")
  rss=$(awk -F': ' '/Maximum resident/ {print $2}' "$W/time.txt")
  record "$name" "$wall" "$(echo "$user + $sys" | bc)" "$rss"
}

transmission() {
  rm -rf "$W/leech" "$W/tr"; mkdir -p "$W/leech" "$W/tr"
  sed -e "s/@BIND@/$LEECH/; s/@PEER_PORT@/51413/; s#@DOWNLOAD_DIR@#$W/leech#" \
    -e 's/@CACHE_MB@/4/; s/@UP_KBPS@/0/; s/@UP_LIMITED@/false/' \
    "$ROOT/tests/interop/settings.json.in" > "$W/tr/settings.json"
  "${H2[@]}" transmission-daemon -f -g "$W/tr" 2> "$W/transmission.err" & local pid=$!
  until "${H2[@]}" transmission-remote 127.0.0.1:9091 -l >/dev/null 2>&1; do sleep 0.2; done
  local tck; tck=$(getconf CLK_TCK)
  local cpu0; cpu0=$(awk '{print $14 + $15}' "/proc/$pid/stat")
  local t0; t0=$(date +%s.%N)
  "${H2[@]}" transmission-remote 127.0.0.1:9091 -a "$W/data.torrent" >/dev/null
  until "${H2[@]}" transmission-remote 127.0.0.1:9091 -t 1 -i | grep -q "Percent Done: 100%"; do
    sleep 0.2
  done
  local t1; t1=$(date +%s.%N)
  local cpu1; cpu1=$(awk '{print $14 + $15}' "/proc/$pid/stat")
  local rss; rss=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status")
  kill "$pid"; wait "$pid" 2>/dev/null || true
  check transmission "$W/leech"
  record transmission "$(echo "$t1 - $t0" | bc)" "$(echo "scale=2; ($cpu1 - $cpu0) / $tck" | bc)" "$rss"
}

LEECHERS=${LEECHERS:-piecemeal libtorrent transmission}
wants() { [[ " $LEECHERS " == *" $1 "* ]]; }
for i in $(seq "$RUNS"); do
  if wants piecemeal; then
    timed piecemeal "${H2[@]}" "$B" download "$W/data.torrent" -o "$W/leech" \
      --bind $LEECH --port 6881 -q
  fi
  if wants libtorrent; then
    timed libtorrent "${H2[@]}" $PY "$LT" download "$W/data.torrent" "$W/leech" --listen $LEECH:6882
  fi
  if wants transmission; then transmission; fi
done

echo
echo "medians of $RUNS run(s), $SIZE MiB from a libtorrent $($PY -c 'import libtorrent; print(libtorrent.__version__)') seeder:"
printf "%-13s %9s %8s %9s %8s\n" leecher wall_s MiB/s cpu_s rss_MiB
for name in $LEECHERS; do
  med() { grep "^$name " "$RESULTS" | awk -v c="$1" '{print $c}' | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
  wall=$(med 2); cpu=$(med 3); rss=$(med 4)
  printf "%-13s %9s %8s %9s %8s\n" "$name" "$wall" "$(echo "$SIZE / $wall" | bc)" "$cpu" "$((rss / 1024))"
done
