#!/usr/bin/env bash
# Provisioning, every node: skygraph from the synced repository (/skygraph) into
# /opt/skygraph (a venv; `skygraph` on the PATH) and this node's configuration
# (vagrant/config/ROLE.yml) as /etc/skygraph/skygraph.yml. Idempotent.
#
#   install-skygraph.sh analyzer|agent1|agent2
set -euo pipefail
role=${1:?usage: install-skygraph.sh analyzer|agent1|agent2}
repo=${SKYGRAPH_REPO:-/skygraph}
config=$repo/vagrant/config/$role.yml
[ -f "$config" ] || { echo "install-skygraph: no $config" >&2; exit 1; }

export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends python3 python3-venv iproute2 iputils-ping \
  tcpdump libpcap0.8 curl >/dev/null

if [ ! -x /opt/skygraph/bin/python ]; then
  python3 -m venv /opt/skygraph
fi
/opt/skygraph/bin/python -m pip install -q --upgrade pip
/opt/skygraph/bin/python -m pip install -q --upgrade "$repo"
ln -sf /opt/skygraph/bin/skygraph /usr/local/bin/skygraph

install -d -m 0755 /etc/skygraph
install -m 0600 "$config" /etc/skygraph/skygraph.yml
# refuse a configuration skygraph cannot read, naming the key
/opt/skygraph/bin/python -c 'import sys; from skygraph.config import load; load(sys.argv[1])' \
  /etc/skygraph/skygraph.yml
echo "install-skygraph: $(skygraph --version) on $role"
