#!/usr/bin/env bash
# Side-by-side benchmark of piecemeal against other BitTorrent clients with
# the peerbench harness (issue 12 measures piecemeal against rtorrent and
# ctorrent "in the same run"). Recorded, not run by CI.
#
#   benches/peerbench.sh [run.sh arguments...]
#   benches/peerbench.sh --clients "piecemeal rtorrent" --scenarios swarm --reps 3
#   PB_SIZE_MIB=1024 benches/peerbench.sh --clients "piecemeal ctorrent" --scenarios one2one-leech
#
# peerbench lives outside this repository ($PEERBENCH, default
# /work/shared/peerbench) and its run.sh only picks up adapters from its own
# adapters/ folder, so this script copies it to a temporary folder (or to
# $PB_COPY, kept), adds the adapters of benches/peerbench/adapters/ (rtorrent,
# ctorrent), and runs the copy's run.sh with every argument passed through.
# Results and logs go to $PB_WORK (peerbench's default /tmp/peerbench):
# results/RUN_ID.{txt,md}, logs/RUN_ID/.
#
# piecemeal is the release build of this repository, built here first
# (nice -n 10, into $CARGO_TARGET_DIR or target/); PB_PIECEMEAL_BIN overrides
# it (then nothing is built).
#
# Needs root (peerbench runs each measurement in its own network namespace)
# and, besides peerbench's own packages (see its README.md: opentracker,
# mktorrent, python3-libtorrent, time, ...), the clients compared here:
#   apt-get install -y rtorrent ctorrent      # Debian 12: 0.9.8, dnh3.3.2
# .ci/run does not install them: no test needs them, only this benchmark.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PEERBENCH=${PEERBENCH:-/work/shared/peerbench}
[ -x "$PEERBENCH/run.sh" ] || { echo "no peerbench at $PEERBENCH (set PEERBENCH)" >&2; exit 1; }

if [ -z "${PB_PIECEMEAL_BIN:-}" ]; then
    nice -n 10 cargo build --release --manifest-path "$ROOT/Cargo.toml" >&2
    PB_PIECEMEAL_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/piecemeal"
fi
[ -x "$PB_PIECEMEAL_BIN" ] || { echo "no piecemeal binary at $PB_PIECEMEAL_BIN" >&2; exit 1; }
PB_PIECEMEAL_BIN=$(cd "$(dirname "$PB_PIECEMEAL_BIN")" && pwd)/$(basename "$PB_PIECEMEAL_BIN")
export PB_PIECEMEAL_BIN

if [ -n "${PB_COPY:-}" ]; then
    copy=$PB_COPY
    rm -rf "$copy"
    mkdir -p "$copy"
else
    copy=$(mktemp -d /tmp/peerbench-copy.XXXXXX)
    trap 'rm -rf "$copy"' EXIT
fi
cp -a "$PEERBENCH/." "$copy/"
chmod -R u+w "$copy"
cp "$ROOT"/benches/peerbench/adapters/*.sh "$copy/adapters/"
chmod +x "$copy"/adapters/*.sh
# the ctorrent adapter's bind shim is compiled now, not inside a measurement
# (only a ctorrent run needs it: without cc, the ctorrent adapter itself fails)
"$copy/adapters/ctorrent.sh" prepare || echo "warning: ctorrent adapter's shim not built" >&2
echo "peerbench copy: $copy  piecemeal: $PB_PIECEMEAL_BIN ($(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?'))" >&2
"$copy/run.sh" "$@"
