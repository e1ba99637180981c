#!/usr/bin/env bash
# Magnet-link benchmark (recorded, not timed by CI): a libtorrent seeder
# holds SIZE MiB; a leecher given only a magnet link (the info-hash and the
# seeder's address in x.pe, no tracker) fetches the metadata and the data:
# piecemeal, then libtorrent's own client, RUNS times each, alternating.
# Prints, per run and as medians: time to the first byte on disk and to
# completion, from the leecher's start.
#
# "First byte on disk" is the first moment the output file has a block
# allocated (polled every 2 ms by a small Python timer): the metadata must
# have arrived, the file been created, and a verified piece written.
#
# VIA=dht: the link holds the info-hash alone; a `piecemeal dht` node on a
# third host is everybody's only DHT bootstrap node, the seeder announces
# to the DHT (libtorrent's DHT on), and both leechers find it there.
#
# Needs root and python3-libtorrent (.ci/run installs it). Hosts are network
# namespaces on a bridge (10.97.0.0/24), removed on exit.
#
#   benches/magnet.sh [SIZE_MiB=64] [RUNS=5] [WORKDIR=/tmp/pm-magnet-bench]
#   VIA=dht benches/magnet.sh 64 5
set -euo pipefail
SIZE=${1:-64}
RUNS=${2:-5}
W=${3:-/tmp/pm-magnet-bench}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cargo build --release --manifest-path "$ROOT/Cargo.toml" >/dev/null 2>&1
B=${PIECEMEAL_BIN:-"${CARGO_TARGET_DIR:-$ROOT/target}/release/piecemeal"}
LT="$ROOT/tests/interop/lt_driver.py"
PY=/usr/bin/python3
P="pmm$$"
SEED=10.97.0.1 LEECH=10.97.0.2 NODE=10.97.0.3
VIA=${VIA:-x.pe}
PIDS=()
# shellcheck source=netns_common.sh
. "$ROOT/benches/netns_common.sh"
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  cleanup_hosts 3
}
trap cleanup EXIT
make_hosts 3 10.97.0
H1=(ip netns exec "$P-h1") H2=(ip netns exec "$P-h2") H3=(ip netns exec "$P-h3")

mkdir -p "$W/seed"
if [ ! -f "$W/seed/data.bin" ] || [ "$(stat -c %s "$W/seed/data.bin")" != $((SIZE << 20)) ]; then
  head -c $((SIZE << 20)) /dev/urandom > "$W/seed/data.bin"
fi
"$B" create --force "$W/seed/data.bin" -o "$W/data.torrent" >/dev/null
HASH=$("$B" info "$W/data.torrent" | awk '/^info-hash:/ {print $2}')
# piecemeal's DHT is off unless it is the way (nothing public is ever asked).
DHT=() PM_DHT=(--no-dht)
if [ "$VIA" = dht ]; then
  LINK="magnet:?xt=urn:btih:$HASH"
  DHT=(--dht-node $NODE:6881) PM_DHT=(--dht-node $NODE:6881 --state-dir "$W")
  "${H3[@]}" "$B" dht --bind $NODE --port 6881 --stats-every 1 --machine \
    > "$W/dht-node.out" 2> "$W/dht-node.err" & PIDS+=($!)
else
  LINK="magnet:?xt=urn:btih:$HASH&dn=data.bin&x.pe=$SEED:6882"
fi
"${H1[@]}" $PY "$LT" seed "$W/data.torrent" "$W/seed" --listen $SEED:6882 "${DHT[@]}" \
  > "$W/lt-seed.out" 2> "$W/lt-seed.err" & PIDS+=($!)
until grep -q "@status seeding" "$W/lt-seed.out" 2>/dev/null; do sleep 0.5; done
if [ "$VIA" = dht ]; then
  # The seeder's announce is stored on the node before anyone looks.
  until grep "^@dht" "$W/dht-node.out" 2>/dev/null | tail -1 | grep -qv " 0 stored peers"; do
    sleep 0.5
  done
fi

# timer FILE COMMAND...: run COMMAND; print "FIRST DONE" seconds (first
# block of FILE allocated; COMMAND exited 0).
timer() {
  $PY - "$@" <<'PY'
import os, subprocess, sys, time
path, cmd = sys.argv[1], sys.argv[2:]
t0 = time.monotonic()
p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
first = None
while p.poll() is None:
    if first is None:
        try:
            if os.stat(path).st_blocks > 0:
                first = time.monotonic() - t0
        except FileNotFoundError:
            pass
    time.sleep(0.002)
done = time.monotonic() - t0
if p.returncode != 0:
    sys.exit(f"{cmd[0]} exited with {p.returncode}")
print(f"{first if first is not None else done:.3f} {done:.3f}")
PY
}

RESULTS="$W/results.txt"
: > "$RESULTS"
run() { # name command...
  local name=$1; shift
  rm -rf "$W/leech"; mkdir -p "$W/leech"
  local t; t=$(timer "$W/leech/data.bin" "$@")
  cmp -s "$W/seed/data.bin" "$W/leech/data.bin" || { echo "$name: data differs"; exit 1; }
  echo "$name first_byte=${t% *}s done=${t#* }s"
  echo "$name $t" >> "$RESULTS"
}

for i in $(seq "$RUNS"); do
  run piecemeal "${H2[@]}" "$B" download "$LINK" -o "$W/leech" --bind $LEECH --port 6881 -q \
    "${PM_DHT[@]}"
  run libtorrent "${H2[@]}" $PY "$LT" download "$LINK" "$W/leech" --magnet --listen $LEECH:6881 \
    "${DHT[@]}"
done

echo
echo "medians of $RUNS runs, $SIZE MiB, magnet link via $VIA, libtorrent $($PY -c 'import libtorrent; print(libtorrent.__version__)') seeder:"
printf "%-11s %13s %9s\n" leecher first_byte_s done_s
for name in piecemeal libtorrent; do
  first=$(grep "^$name " "$RESULTS" | awk '{print $2}' | median)
  done_=$(grep "^$name " "$RESULTS" | awk '{print $3}' | median)
  printf "%-11s %13s %9s\n" "$name" "$first" "$done_"
done
