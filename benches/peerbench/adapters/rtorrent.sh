#!/usr/bin/env bash
# peerbench adapter: rTorrent (rtorrent 0.9.8 / libtorrent 0.13.8, Debian 12)
#   rtorrent.sh seed  TORRENT DATA_DIR PORT   hash-check DATA_DIR/<name>, then seed
#   rtorrent.sh leech TORRENT OUT_DIR  PORT   until the event.download.finished hook
# rtorrent is a curses program; it runs here in its daemon mode
# (system.daemon.set, 0.9.7+: no terminal UI, stays in the foreground) with a
# generated rtorrent.rc and -n (no ~/.rtorrent.rc; HOME is the state dir).
# Listening socket and outgoing peer and tracker connections are bound to
# $PB_BIND_IP (network.bind_address); DHT off, PEX off, UDP trackers off (the
# harness' tracker is HTTP). rtorrent has no uTP, LSD or UPnP. Everything
# else stays at rtorrent's defaults (throttles unlimited, the pieces of a
# finished download are hashed again on completion as rtorrent does by
# default). A fresh session holds no resume data, so rtorrent hash-checks a
# seeder's data when the torrent is loaded.
# The leecher's completion hook runs lib/mark_done.sh (execute.nothrow), which
# records PB_DONE_FILE from the environment rtorrent passes on.
# PB_RTORRENT_RC: extra rtorrent.rc lines (e.g. "pieces.hash.on_completion.set = no"
# to measure without the completion re-hash), added before the torrent is loaded.
# rtorrent has no fast extension: a libtorrent reference seeder needs its
# request queue raised, which the libtorrent adapter does (PB_IS_REF=1).
set -u
# common.sh is peerbench's (lib/ next to adapters/ in the peerbench copy)
# shellcheck source=/dev/null
. "$(dirname "$0")/../lib/common.sh"
pb_assert_isolated
[ $# -eq 4 ] || pb_die "usage: $0 seed|leech TORRENT DIR PORT"
mode=$1 torrent=$2 dir=$3 port=$4
command -v rtorrent > /dev/null || pb_die "rtorrent not installed (apt-get install rtorrent)"
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
torrent=$(cd "$(dirname "$torrent")" && pwd)/$(basename "$torrent")
pb_state_dir rtorrent "$port"; state=$PB_STATE
mkdir -p "$state/session"
export PB_DONE_FLAG="$state/torrent.done"

# rtorrent.rc values are unquoted here; none of these paths holds a space or a
# comma (they are under $PB_WORK), which rtorrent's command syntax would need quoted.
for p in "$dir" "$state" "$torrent" "$PB_ROOT"; do
    case $p in *[[:space:],\;\"]*) pb_die "path with a space, comma or quote is not supported: $p" ;; esac
done
cat > "$state/rtorrent.rc" <<EOR
system.daemon.set = true
session.path.set = $state/session
directory.default.set = $dir
network.bind_address.set = $PB_BIND_IP
network.local_address.set = $PB_BIND_IP
network.port_range.set = $port-$port
network.port_random.set = no
dht.mode.set = disable
protocol.pex.set = no
trackers.use_udp.set = no
EOR
if [ "$mode" = leech ]; then
    cat >> "$state/rtorrent.rc" <<EOR
method.set_key = event.download.finished, pb_done, "execute.nothrow=$PB_ROOT/lib/mark_done.sh,$PB_DONE_FLAG"
EOR
fi
[ -n "${PB_RTORRENT_RC:-}" ] && printf '%s\n' "$PB_RTORRENT_RC" >> "$state/rtorrent.rc"
echo "load.start = $torrent" >> "$state/rtorrent.rc"

pb_client_start env HOME="$state" rtorrent -n -o "import=$state/rtorrent.rc" < /dev/null
case $mode in
seed)
    pb_seed_wait ;;
leech)
    trap 'pb_client_stop TERM; exit 1' TERM INT
    if pb_wait_until "$PB_TIMEOUT" test -e "$PB_DONE_FLAG"; then
        pb_client_stop TERM
        pb_leech_verify "$torrent" "$dir"
    else
        pb_client_stop TERM
        exit 1
    fi ;;
*) pb_die "unknown mode $mode" ;;
esac
