#!/usr/bin/env bash
# Provisioning, analyzer: Neo4j 5 Community from Neo4j's Debian repository (listening
# on every address, so the Browser opens from the host: http://localhost:7474 or
# http://192.168.50.10:7474, user neo4j, password $NEO4J_PASSWORD), then the skygraph
# analyzer as a systemd service on it. Idempotent.
set -euo pipefail
password=${NEO4J_PASSWORD:-skygraph-lab}     # the one in vagrant/config/analyzer.yml
export DEBIAN_FRONTEND=noninteractive

if ! dpkg-query -W -f='${Status}' neo4j 2>/dev/null | grep -q "ok installed"; then
  apt-get install -y -qq --no-install-recommends gnupg wget ca-certificates \
    openjdk-17-jre-headless >/dev/null
  install -d -m 0755 /etc/apt/keyrings
  wget -qO- https://debian.neo4j.com/neotechnology.gpg.key \
    | gpg --dearmor --yes -o /etc/apt/keyrings/neotechnology.gpg
  echo "deb [signed-by=/etc/apt/keyrings/neotechnology.gpg] https://debian.neo4j.com stable 5" \
    > /etc/apt/sources.list.d/neo4j.list
  apt-get update -qq
  apt-get install -y -qq neo4j >/dev/null
  neo4j-admin dbms set-initial-password "$password"
fi
conf=/etc/neo4j/neo4j.conf
if grep -q '^#\?server.default_listen_address=' "$conf"; then
  sed -i 's/^#\?server.default_listen_address=.*/server.default_listen_address=0.0.0.0/' "$conf"
else
  echo 'server.default_listen_address=0.0.0.0' >> "$conf"
fi
systemctl enable -q neo4j
systemctl restart neo4j
for _ in $(seq 120); do
  curl -fs http://127.0.0.1:7474 >/dev/null && break
  sleep 1
done

install -m 0644 /skygraph/vagrant/systemd/skygraph-analyzer.service /etc/systemd/system/
systemctl daemon-reload
systemctl enable -q skygraph-analyzer
systemctl restart skygraph-analyzer
for _ in $(seq 120); do
  curl -fs http://127.0.0.1:8082/health >/dev/null && break
  sleep 1
done
curl -fs http://127.0.0.1:8082/health || { journalctl -u skygraph-analyzer -n 30; exit 1; }
echo
# the lab's CLI settings, for `vagrant ssh analyzer`
cat > /etc/profile.d/skygraph-lab.sh <<'PROFILE'
export SKYGRAPH_ANALYZER=127.0.0.1:8082 SKYGRAPH_TOKEN=skygraph-lab
PROFILE
echo "provision-analyzer: Neo4j Browser on http://192.168.50.10:7474 (neo4j / $password), "\
"skygraph on http://192.168.50.10:8082 (GraphiQL: /graphql?token=skygraph-lab)"
