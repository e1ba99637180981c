#!/usr/bin/env bash
# Loopback transfer benchmark: one piecemeal seeder on 127.0.0.1, then a
# leecher downloads the whole torrent; repeated RUNS times per leecher.
# Leechers: piecemeal (default cache), piecemeal --cache 0, and aria2c when
# installed (the same seeder, found through piecemeal's built-in tracker).
# Prints one line per run and the medians. Only 127.0.0.1 is ever used.
#
#   benches/loopback.sh [SIZE_MiB=1024] [RUNS=3] [WORKDIR=/tmp/pm-loopback]
# (TPORT and SPORT move the tracker and seeder ports off 46969 / 46881.)
#
# With ENCRYPTION=1 the leechers are instead piecemeal --encryption off
# (plaintext) and piecemeal --encryption require (RC4 both ways: the seeder
# runs the default, prefer), alternating within each run so that both see
# the same machine.
set -euo pipefail
SIZE=${1:-1024}
RUNS=${2:-3}
W=${3:-/tmp/pm-loopback}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cargo build --release --manifest-path "$ROOT/Cargo.toml" >/dev/null 2>&1
B="${CARGO_TARGET_DIR:-$ROOT/target}/release/piecemeal"
mkdir -p "$W/seed"
TPORT=${TPORT:-46969}
SPORT=${SPORT:-46881}
if [ ! -f "$W/seed/data.bin" ] || [ "$(stat -c %s "$W/seed/data.bin")" != $((SIZE << 20)) ]; then
  head -c $((SIZE << 20)) /dev/urandom > "$W/seed/data.bin"
fi
"$B" create --force "$W/seed/data.bin" -o "$W/data.torrent" --tracker "http://127.0.0.1:$TPORT/announce" >/dev/null
"$B" tracker --bind 127.0.0.1 --port $TPORT --interval 5 -q & TP=$!
"$B" seed "$W/data.torrent" -o "$W/seed" --bind 127.0.0.1 --port $SPORT -q & SP=$!
trap 'kill $SP $TP 2>/dev/null; wait 2>/dev/null' EXIT
until (exec 3<>/dev/tcp/127.0.0.1/$SPORT) 2>/dev/null; do sleep 0.1; done
sleep 1 # the seeder's first announce

seeder_ticks() { # user + system CPU ticks of the seeder so far
  awk '{print $14 + $15}' "/proc/$SP/stat"
}

measure() { # name, command...
  local name=$1; shift
  rm -rf "$W/leech"; mkdir -p "$W/leech"
  sync; sleep 3 # start each run with the previous file written back and freed
  local before; before=$(seeder_ticks)
  /usr/bin/time -f "%e %U %S %M" -o "$W/time.txt" "$@" >/dev/null 2>"$W/$name.err" || { echo "$name failed"; cat "$W/$name.err"; return 1; }
  local after; after=$(seeder_ticks)
  cmp -s "$W/seed/data.bin" "$W/leech/data.bin" || { echo "$name: data differs"; return 1; }
  read -r wall user sys rss < "$W/time.txt"
  local seed_cpu; seed_cpu=$(echo "scale=2; ($after - $before) / $(getconf CLK_TCK)" | bc)
  echo "$name wall=${wall}s MiB/s=$(echo "$SIZE / $wall" | bc) cpu=$(echo "$user + $sys" | bc)s rss=$((rss / 1024))MiB seeder_cpu=${seed_cpu}s"
}

run_all() {
  for i in $(seq "$RUNS"); do
    if [ -n "${ENCRYPTION:-}" ]; then
      for mode in off require; do
        measure "piecemeal-enc-$mode" "$B" download "$W/data.torrent" -o "$W/leech" --bind 127.0.0.1 --port 0 --no-tracker --peer 127.0.0.1:$SPORT --encryption $mode -q
      done
      continue
    fi
    measure piecemeal-cache0 "$B" download "$W/data.torrent" -o "$W/leech" --bind 127.0.0.1 --port 0 --no-tracker --peer 127.0.0.1:$SPORT --cache 0 -q
    measure piecemeal "$B" download "$W/data.torrent" -o "$W/leech" --bind 127.0.0.1 --port 0 --no-tracker --peer 127.0.0.1:$SPORT -q
    if command -v aria2c >/dev/null; then
      measure aria2c aria2c --enable-dht=false --enable-dht6=false --bt-enable-lpd=false --enable-peer-exchange=false \
        --seed-time=0 --check-integrity=false --file-allocation=none --console-log-level=warn --summary-interval=0 \
        --listen-port=46890 -d "$W/leech" "$W/data.torrent"
    fi
  done
}

run_all | tee "$W/results.txt"
echo "--- medians over $RUNS runs"
for name in piecemeal piecemeal-cache0 aria2c piecemeal-enc-off piecemeal-enc-require; do
  grep "^$name " "$W/results.txt" >/dev/null || continue
  for field in wall MiB/s cpu rss seeder_cpu; do
    printf '%s %s=%s  ' "$name" "$field" "$(grep "^$name " "$W/results.txt" | sed -E "s|.* $field=([0-9.]+).*|\1|" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')"
  done
  echo
done
