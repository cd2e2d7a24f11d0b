#!/usr/bin/env bash
# Provisioning, agents: Open vSwitch (the kernel datapath of the VM) and the skygraph
# agent as a systemd service (it reports this VM as host agent1 or agent2 to the
# analyzer at 192.168.50.10). Idempotent.
#
#   provision-agent.sh agent1|agent2
set -euo pipefail
name=${1:?usage: provision-agent.sh agent1|agent2}
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -qq --no-install-recommends openvswitch-switch >/dev/null
systemctl enable -q openvswitch-switch
systemctl start openvswitch-switch

install -m 0644 /skygraph/vagrant/systemd/skygraph-agent.service /etc/systemd/system/
systemctl daemon-reload
systemctl enable -q skygraph-agent
systemctl restart skygraph-agent
for _ in $(seq 60); do
  journalctl -u skygraph-agent -n 50 --no-pager | grep -q "connected to analyzer" && break
  sleep 1
done
echo "provision-agent: $name: $(journalctl -u skygraph-agent -n 50 --no-pager \
  | grep -o 'connected to analyzer.*' | tail -1 || echo 'not connected yet (analyzer up?)')"
