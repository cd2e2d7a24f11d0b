#!/usr/bin/env bash
# Seed 004's tunnel, on one agent (as root): a network namespace vmN (the "VM",
# 192.168.0.N/24 on its eth0) attached to an Open vSwitch bridge br-int, and a GRE
# port on br-int towards the other agent's private address.
#
#   tunnel.sh up 1      on agent1: vm1 192.168.0.1, gre0 -> 192.168.50.30
#   tunnel.sh up 2      on agent2: vm2 192.168.0.2, gre0 -> 192.168.50.20
#   tunnel.sh down N    removes them
set -euo pipefail
action=${1:-}
n=${2:-}
case "$n" in
  1) remote=192.168.50.30 ;;
  2) remote=192.168.50.20 ;;
  *) echo "usage: tunnel.sh up|down 1|2" >&2; exit 2 ;;
esac
vm=vm$n
case "$action" in
  up)
    ovs-vsctl --may-exist add-br br-int
    ip netns add "$vm"
    ip link add "$vm-eth0" type veth peer name eth0 netns "$vm"
    ip link set "$vm-eth0" up
    ip netns exec "$vm" ip link set lo up
    # GRE and the inner Ethernet header must fit in the private network's 1500 bytes
    ip netns exec "$vm" ip link set eth0 mtu 1400 up
    ip netns exec "$vm" ip address add "192.168.0.$n/24" dev eth0
    ovs-vsctl add-port br-int "$vm-eth0"
    ovs-vsctl add-port br-int gre0 -- set interface gre0 type=gre "options:remote_ip=$remote"
    echo "tunnel: $vm (192.168.0.$n) on br-int, gre0 -> $remote"
    ;;
  down)
    ovs-vsctl --if-exists del-port br-int gre0
    ovs-vsctl --if-exists del-port br-int "$vm-eth0"
    ip link del "$vm-eth0" 2>/dev/null || true
    ip netns del "$vm" 2>/dev/null || true
    ovs-vsctl --if-exists del-br br-int
    echo "tunnel: $vm and br-int removed"
    ;;
  *) echo "usage: tunnel.sh up|down 1|2" >&2; exit 2 ;;
esac
