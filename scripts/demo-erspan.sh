#!/usr/bin/env bash
# The seeds' target demonstration (000/001/003), on one machine, as root:
# two namespaces behind a bridge, a capture on one end's eth0 whose packets
# go to an ERSPAN target (port 0) in a third namespace, pings made by the
# packet injector, and the target receiving the mirrored pings (printed by
# tcpdump on the target's interface).
#
#   sudo bash scripts/demo-erspan.sh            # erspanv1 (Type II)
#   sudo TARGET_TYPE=erspanv2 bash scripts/demo-erspan.sh
#
# Everything it creates carries the prefix $PREFIX (default sgdemo) and is
# removed at the end, also when a step fails. Needs `bash scripts/install.sh`.
set -euo pipefail
cd "$(dirname "$0")/.."
P=${PREFIX:-sgdemo}
TARGET_TYPE=${TARGET_TYPE:-erspanv1}
COUNT=${COUNT:-5}
DIR=$(mktemp -d "/tmp/$P.XXXXXX")
SG=(.venv/bin/python -m skygraph.cli)
free_port() { .venv/bin/python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
API=127.0.0.1:$(free_port)
pid=""

cleanup() {
  [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true
  for n in a b t; do umount "$DIR/netns/$n" 2>/dev/null || true; ip netns del "$P$n" 2>/dev/null || true; done
  ip link del "${P}br" 2>/dev/null || true
  ip link del "${P}t0" 2>/dev/null || true
  [ -n "${KEEP:-}" ] || rm -rf "$DIR"
}
trap cleanup EXIT

say() { printf '\n== %s\n' "$*"; }

say "namespaces: ${P}a (10.66.1.1) and ${P}b (10.66.1.2) behind bridge ${P}br; target ${P}t (10.66.0.2)"
ip link add "${P}br" type bridge
ip link set "${P}br" up
mkdir -p "$DIR/netns"
for n in a b; do
  ip netns add "$P$n"
  ip link add "$P${n}h" type veth peer name "$P${n}v"
  ip link set "$P${n}v" netns "$P$n" name eth0
  ip link set "$P${n}h" master "${P}br" up
done
ip -n "${P}a" addr add 10.66.1.1/24 dev eth0
ip -n "${P}b" addr add 10.66.1.2/24 dev eth0
ip netns add "${P}t"
ip link add "${P}t0" type veth peer name "${P}tv"
ip link set "${P}tv" netns "${P}t" name eth0
ip addr add 10.66.0.1/24 dev "${P}t0"
ip link set "${P}t0" up
ip -n "${P}t" addr add 10.66.0.2/24 dev eth0
for n in a b t; do
  ip -n "$P$n" link set eth0 up
  ip -n "$P$n" link set lo up
  touch "$DIR/netns/$n"
  mount --bind "/var/run/netns/$P$n" "$DIR/netns/$n"   # the agent watches $DIR/netns
done

say "skygraph allinone (embedded graph in $DIR), analyzer on $API"
cat > "$DIR/skygraph.yml" <<EOF
analyzer:
  listen: $API
  rpc:
    listen: 127.0.0.1:$(free_port)
graph:
  embedded:
    data_dir: $DIR/graph
    bolt_port: $(free_port)
    http_port: $(free_port)
flow:
  update: 1
agent:
  topology:
    probes: []
    netns:
      run_path: $DIR/netns
EOF
"${SG[@]}" -c "$DIR/skygraph.yml" allinone >"$DIR/allinone.log" 2>&1 &
pid=$!
query() { "${SG[@]}" query --analyzer "$API" "$1"; }
for _ in $(seq 240); do
  query "G.V().Has('Type', 'netns', 'Name', 'a').Out('Name', 'eth0')" 2>/dev/null | grep -q '"ID"' && break
  kill -0 "$pid" 2>/dev/null || { cat "$DIR/allinone.log"; exit 1; }
  sleep 0.5
done
SRC="G.V().Has('Type', 'netns', 'Name', 'a').Out('Name', 'eth0')"
DST="G.V().Has('Type', 'netns', 'Name', 'b').Out('Name', 'eth0')"
TGT="G.V().Has('Type', 'netns', 'Name', 't').Out('Name', 'eth0')"

say "capture on ${P}a's eth0 with an $TARGET_TYPE target 10.66.0.2:0"
"${SG[@]}" capture create --analyzer "$API" --gremlin "$SRC" --bpf icmp \
  --target 10.66.0.2:0 --target-type "$TARGET_TYPE" --session-id 7 >"$DIR/capture.json"
say "and a plain capture on the target's eth0 (its flows go to the analyzer)"
"${SG[@]}" capture create --analyzer "$API" --gremlin "$TGT" >/dev/null
for q in "$SRC" "$TGT"; do
  for _ in $(seq 60); do
    query "$q" | grep -q '"State": "active"' && break
    sleep 0.5
  done
  query "$q" | grep -q '"State": "active"' || { echo "a capture did not start"; query "$q"; exit 1; }
done

say "tcpdump on the target's eth0; $COUNT pings injected from ${P}a to ${P}b"
ip netns exec "${P}t" tcpdump -n -i eth0 -w "$DIR/target.pcap" -c $((2 * COUNT)) proto gre \
  2>"$DIR/tcpdump.log" &
dump=$!
sleep 1
"${SG[@]}" inject create --analyzer "$API" --src "$SRC" --dst "$DST" --type icmp4 \
  --count "$COUNT" --interval 200 >"$DIR/injection.json"
for _ in $(seq 40); do kill -0 "$dump" 2>/dev/null || break; sleep 0.5; done
kill "$dump" 2>/dev/null || true
wait "$dump" 2>/dev/null || true

say "what the target received, decoded by tshark (GRE/ERSPAN carrying the echo requests and replies)"
tshark -r "$DIR/target.pcap" -T fields -e frame.protocols -e erspan.spanid -e ip.src -e ip.dst \
  -e icmp.type -e icmp.ident -e icmp.seq 2>/dev/null
echo "mirrored ICMP echo frames: $(tshark -r "$DIR/target.pcap" -Y 'erspan && icmp' 2>/dev/null | wc -l)"
echo "injection: $(tr -d '\n ' <"$DIR/injection.json")"

say "the GRE flow on the target's eth0, from the analyzer"
for _ in $(seq 120); do
  out=$(query "$TGT.Flows().Has('Application', 'GRE')")
  echo "$out" | grep -q "\"ABPackets\": $((2 * COUNT))" && break
  sleep 0.5
done
echo "$out"

say "the ICMP flow inside it (its TrackingID is the injection's)"
query "$TGT.Flows().Has('Application', 'ICMPv4').Has('ParentUUID', NE(''))"
