#!/usr/bin/env bash
# peerbench adapter: Enhanced CTorrent (ctorrent dnh3.3.2, Debian 12)
#   ctorrent.sh seed  TORRENT DATA_DIR PORT   hash-check DATA_DIR/<name>, then seed
#   ctorrent.sh leech TORRENT OUT_DIR  PORT   -e 0: exits once complete
#   ctorrent.sh prepare                       build the bind shim (see below) now
# -i binds the listening socket and the tracker connection to $PB_BIND_IP;
# -p is the port. ctorrent has no DHT, PEX, LSD, UPnP or uTP.
# It saves into its working directory (cwd = DIR) under the torrent's name;
# its bitfield file (-b) goes to the state dir instead of next to the
# torrent. Cache (-C 16 MB), peer limits and slice size stay at the defaults.
# stdin is /dev/null: ctorrent turns its console input off at EOF.
# Completion: -X runs lib/mark_done.sh when the download completes (records
# PB_DONE_FILE); with -e 0 ctorrent then exits by itself.
#
# Outgoing peer connections: ctorrent's -i does not bind them (they would
# leave from 127.0.0.1), so ctorrent runs with a small LD_PRELOAD shim that
# binds every not yet bound IPv4 TCP socket to $PB_BIND_IP before connect().
# It is compiled with cc once per $PB_WORK ($PB_WORK/run/ctorrent-bind-*.so);
# 'prepare' builds it ahead (benches/peerbench.sh does), else the first
# ctorrent instance builds it before it starts (counted in a leech's wall).
set -u
# common.sh is peerbench's (lib/ next to adapters/ in the peerbench copy)
# shellcheck source=/dev/null
. "$(dirname "$0")/../lib/common.sh"

shim_src() {
    cat <<'EOC'
/* peerbench ctorrent adapter: bind outgoing IPv4 TCP sockets to $PB_BIND_IP */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

int connect(int fd, const struct sockaddr *addr, socklen_t len)
{
    static int (*real_connect)(int, const struct sockaddr *, socklen_t);
    if (!real_connect)
        real_connect = (int (*)(int, const struct sockaddr *, socklen_t))dlsym(RTLD_NEXT, "connect");
    const char *ip = getenv("PB_BIND_IP");
    if (ip && addr && addr->sa_family == AF_INET) {
        int type = 0, saved = errno;
        socklen_t tl = sizeof type;
        struct sockaddr_in cur;
        socklen_t cl = sizeof cur;
        memset(&cur, 0, sizeof cur);
        if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &tl) == 0 && type == SOCK_STREAM
            && getsockname(fd, (struct sockaddr *)&cur, &cl) == 0
            && cur.sin_family == AF_INET && cur.sin_port == 0
            && cur.sin_addr.s_addr == htonl(INADDR_ANY)) {
            struct sockaddr_in b;
            memset(&b, 0, sizeof b);
            b.sin_family = AF_INET;
            if (inet_pton(AF_INET, ip, &b.sin_addr) == 1)
                bind(fd, (struct sockaddr *)&b, sizeof b);
        }
        errno = saved;
    }
    return real_connect(fd, addr, len);
}
EOC
}

# shim_path: build the shim if needed (atomically, by its source's hash); print its path
shim_path() {
    local sum so tmp
    sum=$(shim_src | sha1sum | cut -c1-12)
    so="$PB_WORK/run/ctorrent-bind-$sum.so"
    if [ ! -s "$so" ]; then
        command -v cc > /dev/null || pb_die "ctorrent adapter needs a C compiler (cc) for its bind shim"
        mkdir -p "$PB_WORK/run"
        tmp=$(mktemp "$so.XXXXXX")
        shim_src | cc -x c -O2 -shared -fPIC -o "$tmp" - -ldl || { rm -f "$tmp"; pb_die "could not build $so"; }
        mv -f "$tmp" "$so"
    fi
    echo "$so"
}

if [ "${1:-}" = prepare ]; then shim_path > /dev/null; exit 0; fi

pb_assert_isolated
[ $# -eq 4 ] || pb_die "usage: $0 seed|leech TORRENT DIR PORT"
mode=$1 torrent=$2 dir=$3 port=$4
command -v ctorrent > /dev/null || pb_die "ctorrent not installed (apt-get install ctorrent)"
shim=$(shim_path) || exit 1
mkdir -p "$dir"
torrent=$(cd "$(dirname "$torrent")" && pwd)/$(basename "$torrent")
pb_state_dir ctorrent "$port"; state=$PB_STATE
export PB_DONE_FLAG="$state/torrent.done"
cd "$dir" || pb_die "no dir $dir"

ct=(env LD_PRELOAD="$shim" ctorrent -i "$PB_BIND_IP" -p "$port" -b "$state/bitfield")
case $mode in
seed)
    # -e: seed for up to 72 h (the harness stops it); the data is hash-checked first
    pb_client_start "${ct[@]}" -e 72 "$torrent" < /dev/null
    pb_seed_wait ;;
leech)
    pb_client_start timeout "$PB_TIMEOUT" "${ct[@]}" -e 0 \
        -X "$PB_ROOT/lib/mark_done.sh $PB_DONE_FLAG" "$torrent" < /dev/null
    trap 'pb_client_stop TERM; exit 1' TERM INT
    wait "$PB_WAIT_PID"; rc=$?
    [ $rc -eq 0 ] || { pb_log "ctorrent exited $rc"; exit 1; }
    [ -e "$PB_DONE_FLAG" ] || { pb_log "ctorrent exited without completing"; exit 1; }
    pb_leech_verify "$torrent" "$dir" ;;
*) pb_die "unknown mode $mode" ;;
esac
