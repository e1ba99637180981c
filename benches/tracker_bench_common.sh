# Shared by benches/tracker_load.sh and benches/udp_tracker_load.sh (sourced):
# a work folder removed on exit with every process in `pids` killed, the
# opentracker whitelist of the benchmark's NHASH info-hashes, and a
# process's CPU ticks.

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
