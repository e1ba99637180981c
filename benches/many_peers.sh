#!/usr/bin/env bash
# Many peers on one seeder (issue 12): for each N in PEERS, a piecemeal
# seeder of a 64 MiB torrent takes N connections from benches/many_peers.py
# (each from its own 127.0.x.y address; ACTIVE of them interested and
# requesting 16 KiB blocks 32 at a time, the rest idle after the handshake)
# and is measured over SECONDS: resident memory (VmRSS at the end, VmHWM),
# CPU time, blocks served, CPU per 1,000 blocks. Loopback only.
#
#   benches/many_peers.sh ["100 300 1000"] [ACTIVE=20] [SECONDS=20] [WORKDIR=/tmp/pm-peers]
#
# The binary is $PIECEMEAL, else target/release/piecemeal (built here).
set -euo pipefail
PEERS=${1:-"100 300 1000"}
ACTIVE=${2:-20}
SECS=${3:-20}
W=${4:-/tmp/pm-peers}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
if [ -z "${PIECEMEAL:-}" ]; then
  cargo build --release --manifest-path "$ROOT/Cargo.toml" >/dev/null 2>&1
  PIECEMEAL="${CARGO_TARGET_DIR:-$ROOT/target}/release/piecemeal"
fi
PORT=${PORT:-48881}
mkdir -p "$W/seed"
[ -f "$W/seed/data.bin" ] || head -c $((64 << 20)) /dev/urandom > "$W/seed/data.bin"
"$PIECEMEAL" create --force "$W/seed/data.bin" -o "$W/data.torrent" --piece-length 262144 >/dev/null
HASH=$("$PIECEMEAL" info "$W/data.torrent" | awk '/^info-hash:/ {print $2}')
ulimit -n 8192
cpu_of() { awk '{print $14 + $15}' "/proc/$1/stat"; }
mem_of() { awk -v k="$2:" '$1 == k {print $2}' "/proc/$1/status"; }
printf "%6s %10s %10s %8s %10s %14s\n" peers rss_MiB peak_MiB cpu_s blocks cpu_ms_per_1k
for n in $PEERS; do
  "$PIECEMEAL" seed "$W/data.torrent" -o "$W/seed" --bind 127.0.0.1 --port "$PORT" \
    --max-peers $((n + 50)) --upload-slots "$ACTIVE" -q & SP=$!
  until (exec 3<>/dev/tcp/127.0.0.1/$PORT) 2>/dev/null; do sleep 0.1; done
  sleep 1
  coproc GEN { python3 "$ROOT/benches/many_peers.py" "$PORT" "$HASH" 256 262144 "$n" "$ACTIVE" "$SECS"; }
  read -r line <&"${GEN[0]}" # "measuring": every connection is up
  c0=$(cpu_of $SP)
  read -r line <&"${GEN[0]}"
  c1=$(cpu_of $SP)
  rss=$(mem_of $SP VmRSS); hwm=$(mem_of $SP VmHWM)
  wait "$GEN_PID" 2>/dev/null || true
  kill $SP; wait $SP 2>/dev/null || true
  blocks=$(echo "$line" | sed 's/.*blocks=\([0-9]*\).*/\1/')
  conn=$(echo "$line" | sed 's/.*connected=\([0-9]*\).*/\1/')
  ticks=$((c1 - c0)); hz=$(getconf CLK_TCK)
  cpu=$(echo "scale=2; $ticks / $hz" | bc)
  per=$(echo "scale=3; $ticks * 1000 * 1000 / $hz / ($blocks + 1)" | bc)
  printf "%6s %10.1f %10.1f %8s %10s %14s  (%s connected)\n" "$n" "$(echo "$rss/1024" | bc -l)" "$(echo "$hwm/1024" | bc -l)" "$cpu" "$blocks" "$per" "$conn"
done
