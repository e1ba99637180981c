#!/usr/bin/env bash
# Downloads in a small box: one piecemeal seeder and tracker on 127.0.0.1
# (pinned to CPU 1), then a leecher pinned to CPU 0 (`taskset -c 0`) and
# placed in a fresh memory cgroup of each size in BOXES (MiB; "none" = no
# cgroup), RUNS times per leecher. Leechers: piecemeal with default settings
# (the automatic budget), piecemeal --cache 16M (the old fixed default), and
# aria2c when installed (finding the seeder through the built-in tracker).
# The cgroup's limit covers everything charged to it, page cache included.
# Prints one line per run (killed runs say so) and the medians.
# Needs root and a memory cgroup controller (v2, else v1). Only 127.0.0.1.
#
#   benches/cgroup.sh [SIZE_MiB=1024] [RUNS=3] [WORKDIR=/tmp/pm-cgroup] [BOXES="none 32 16"]
set -euo pipefail
SIZE=${1:-1024}
RUNS=${2:-3}
W=${3:-/tmp/pm-cgroup}
BOXES=${4:-none 32 16}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cargo build --release --manifest-path "$ROOT/Cargo.toml" >/dev/null 2>&1
B="${CARGO_TARGET_DIR:-$ROOT/target}/release/piecemeal"
mkdir -p "$W/seed"
TPORT=47969
SPORT=47881

if grep -qw memory /sys/fs/cgroup/cgroup.controllers 2>/dev/null; then
  CGV=2; CGROOT=/sys/fs/cgroup
  echo +memory > $CGROOT/cgroup.subtree_control 2>/dev/null || true
elif [ -f /sys/fs/cgroup/memory/memory.limit_in_bytes ]; then
  CGV=1; CGROOT=/sys/fs/cgroup/memory
else
  echo "no memory cgroup controller (v2 or v1) on this machine" >&2; exit 1
fi

make_cg() { # dir limit_MiB
  mkdir "$1"
  if [ $CGV = 2 ]; then
    echo $(($2 << 20)) > "$1/memory.max"; echo 0 > "$1/memory.swap.max" 2>/dev/null || true
  else
    echo $(($2 << 20)) > "$1/memory.limit_in_bytes"
    echo $(($2 << 20)) > "$1/memory.memsw.limit_in_bytes" 2>/dev/null || true
  fi
}
cg_peak() { cat "$1/memory.peak" 2>/dev/null || cat "$1/memory.max_usage_in_bytes" 2>/dev/null || echo 0; }
cg_ooms() { { cat "$1/memory.events" "$1/memory.oom_control" 2>/dev/null || true; } | awk '$1 == "oom_kill" {print $2}'; }
remove_cg() { for _ in $(seq 50); do rmdir "$1" 2>/dev/null && return; sleep 0.1; done; echo "cannot remove $1" >&2; }

if [ ! -f "$W/seed/data.bin" ] || [ "$(stat -c %s "$W/seed/data.bin")" != $((SIZE << 20)) ]; then
  head -c $((SIZE << 20)) /dev/urandom > "$W/seed/data.bin"
fi
"$B" create --force "$W/seed/data.bin" -o "$W/data.torrent" --piece-length 1M --tracker "http://127.0.0.1:$TPORT/announce" >/dev/null
taskset -c 1 "$B" tracker --bind 127.0.0.1 --port $TPORT --interval 5 -q 2>"$W/tracker.err" & TP=$!
taskset -c 1 "$B" seed "$W/data.torrent" -o "$W/seed" --bind 127.0.0.1 --port $SPORT -q 2>"$W/seeder.err" & SP=$!
CG=""
trap 'kill $SP $TP 2>/dev/null; wait 2>/dev/null; [ -n "$CG" ] && rmdir "$CG" 2>/dev/null; true' EXIT
until (exec 3<>/dev/tcp/127.0.0.1/$SPORT) 2>/dev/null; do sleep 0.1; done
sleep 1 # the seeder's first announce

report() { echo "$*" | tee -a "$W/results.txt"; }

measure() { # box name command...
  local box=$1 name=$2; shift 2
  rm -rf "$W/leech"; mkdir -p "$W/leech"
  sync; sleep 3 # start each run with the previous file written back and freed
  local enter="" peak=0 ooms=0 rc=0
  if [ "$box" != none ]; then
    CG=$CGROOT/pm-bench-$$-$box-$name; make_cg "$CG" "$box"; enter="echo 0 > $CG/cgroup.procs;"
  fi
  /usr/bin/time -f "%e %U %S %M" -o "$W/time.txt" taskset -c 0 sh -c "$enter"' exec "$@"' sh "$@" \
    >/dev/null 2>"$W/$name.err" || rc=$?
  if [ -n "$CG" ]; then
    peak=$(($(cg_peak "$CG") >> 20)); ooms=$(cg_ooms "$CG"); remove_cg "$CG"; CG=""
  fi
  local tag="box=$box $name"
  if [ "${ooms:-0}" != 0 ] || [ $rc = 137 ]; then report "$tag KILLED (oom_kill=$ooms rc=$rc)"; return; fi
  if [ $rc != 0 ]; then report "$tag FAILED rc=$rc: $(tail -n 2 "$W/$name.err" | tr '\n' ' ')"; return; fi
  cmp -s "$W/seed/data.bin" "$W/leech/data.bin" || { report "$tag DATA DIFFERS"; return; }
  read -r wall user sys rss < <(tail -n 1 "$W/time.txt")
  report "$tag wall=${wall}s MiB/s=$(echo "$SIZE / $wall" | bc) cpu=$(echo "$user + $sys" | bc)s rss=$((rss / 1024))MiB cgpeak=${peak}MiB"
}

run_all() {
  for i in $(seq "$RUNS"); do
    for box in $BOXES; do
      measure "$box" piecemeal "$B" download "$W/data.torrent" -o "$W/leech" --bind 127.0.0.1 --port 0 --no-tracker --peer 127.0.0.1:$SPORT -q
      measure "$box" piecemeal-cache16M "$B" download "$W/data.torrent" -o "$W/leech" --bind 127.0.0.1 --port 0 --no-tracker --peer 127.0.0.1:$SPORT -q --cache 16M
      if command -v aria2c >/dev/null; then
        measure "$box" aria2c aria2c --enable-dht=false --enable-dht6=false --bt-enable-lpd=false --enable-peer-exchange=false \
          --seed-time=0 --check-integrity=false --file-allocation=none --console-log-level=warn --summary-interval=0 \
          --listen-port=47890 -d "$W/leech" "$W/data.torrent"
      fi
    done
  done
}

: > "$W/results.txt"
run_all
echo "--- medians over the completed runs of $RUNS"
for box in $BOXES; do
  for name in piecemeal piecemeal-cache16M aria2c; do
    lines=$(grep "^box=$box $name " "$W/results.txt" || true)
    [ -n "$lines" ] || continue
    ok=$(echo "$lines" | grep -c "wall=" || true)
    printf 'box=%s %s completed=%s/%s  ' "$box" "$name" "$ok" "$(echo "$lines" | wc -l)"
    if [ "$ok" != 0 ]; then
      for field in wall MiB/s cpu rss cgpeak; do
        printf '%s=%s  ' "$field" "$(echo "$lines" | grep "wall=" | sed -E "s|.* $field=([0-9.]+).*|\1|" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')"
      done
    fi
    echo
  done
done
