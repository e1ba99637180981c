# Shared by the netns benchmarks (sourced): private hosts on a bridge.
#
#   P=prefix; make_hosts N SUBNET   # hosts $P-h1..hN at SUBNET.1..N/24
#   "${HOST[1]}" cmd...              # run cmd on host 1 (exec'd, so $! is it)
#   cleanup_hosts N                  # remove the namespaces (call on exit)
#
# Every host has only `lo` and one veth on the hub's bridge; nothing leaves
# the machine.

make_hosts() { # N SUBNET (e.g. 10.98.0)
  local n=$1 net=$2 i
  ip netns add "$P-hub"
  ip -n "$P-hub" link set lo up
  ip -n "$P-hub" link add br0 type bridge
  ip -n "$P-hub" link set br0 up
  for i in $(seq "$n"); do
    ip netns add "$P-h$i"
    ip -n "$P-h$i" link set lo up
    ip link add eth0 netns "$P-h$i" type veth peer name "v$i" netns "$P-hub"
    ip -n "$P-hub" link set "v$i" master br0
    ip -n "$P-hub" link set "v$i" up
    ip -n "$P-h$i" addr add "$net.$i/24" dev eth0
    ip -n "$P-h$i" link set eth0 up
  done
}

cleanup_hosts() { # N
  local i
  for i in $(seq "$1"); do ip netns del "$P-h$i" 2>/dev/null || true; done
  ip netns del "$P-hub" 2>/dev/null || true
}

# The median of the numbers on stdin.
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
