# Shared by benches/tracker_load.sh and benches/udp_tracker_load.sh (sourced):
# a work folder removed on exit with every process in `pids` killed, the
# opentracker whitelist of the benchmark's NHASH info-hashes, a process's
# CPU ticks, and starting either tracker on 127.0.0.1.

work=$(mktemp -d "/tmp/$(basename "$0" .sh).XXXXXX")
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

# opentracker reads its whitelist after chroot to -d; write it where the
# path resolves with and without the chroot.
otdir=$work/ot
mkdir -p "$otdir$otdir"
python3 -c "
for i in range($NHASH): print(('ih%018d' % i).encode().hex())" >"$otdir/whitelist"
cp "$otdir/whitelist" "$otdir$otdir/whitelist"

tck=$(getconf CLK_TCK)
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# start_tracker NAME [FLAG...]: start piecemeal (with the extra FLAGs) or
# opentracker on its port; sets `pid` and `port`, and waits until it takes
# connections (both open their TCP and UDP sockets before serving either).
start_tracker() {
    local name=$1
    shift
    case $name in
    piecemeal)
        port=$PORT_OURS
        "$PIECEMEAL" tracker --port "$port" --bind 127.0.0.1 --interval 1800 "$@" \
            >"$work/piecemeal.log" 2>&1 &
        pid=$!
        ;;
    opentracker)
        port=$PORT_OT
        opentracker -i 127.0.0.1 -p "$port" -P "$port" -d "$otdir" \
            -w "$otdir/whitelist" >"$work/opentracker.log" 2>&1 &
        pid=$!
        ;;
    esac
    pids+=("$pid")
    for _ in $(seq 50); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    echo "$name did not start:" >&2
    cat "$work/$name.log" >&2
    exit 1
}
