#!/usr/bin/env bash
# Installs varco on Debian 12 from this clone: packages, a `varco` system user, /opt/varco,
# /etc/varco (policy, keys, secrets), the systemd units. Idempotent. Run as root.
set -euo pipefail
SRC="$(cd "$(dirname "$0")/.." && pwd)"
[ "$(id -u)" = 0 ] || { echo "run as root" >&2; exit 1; }

export DEBIAN_FRONTEND=noninteractive
apt-get install -y -q --no-install-recommends nodejs npm nftables keepalived iproute2 ca-certificates >/dev/null
node -e 'process.exit(Number(process.versions.node.split(".")[0]) >= 20 ? 0 : 1)' || {
  echo "varco needs Node.js >= 20 (Debian 12 ships 18): install it from NodeSource or nodejs.org first" >&2; exit 1; }

id varco >/dev/null 2>&1 || useradd --system --home-dir /var/lib/varco --shell /usr/sbin/nologin varco
install -d -m 0755 /opt/varco
cp -a "$SRC"/{package.json,package-lock.json,bin,src,policies,deploy} /opt/varco/
(cd /opt/varco && npm ci --omit=dev --no-audit --no-fund)

install -d -m 0750 -o root -g varco /etc/varco
install -d -m 0700 -o varco -g varco /etc/varco/secrets
install -d -m 0700 -o varco -g varco /etc/varco/keys
[ -f /etc/varco/gateway.yaml ] || install -m 0640 -o root -g varco /opt/varco/policies/gateway.yaml /etc/varco/gateway.yaml

install -m 0644 /opt/varco/deploy/varco.service /opt/varco/deploy/varco-net.service /opt/varco/deploy/varco-net.path \
  /opt/varco/deploy/varco-net-restore.service /etc/systemd/system/
systemctl daemon-reload
# Boot restore of the last confirmed network generation, before keepalived (harmless before the first apply).
systemctl enable varco-net-restore.service
echo "Edit /etc/varco/gateway.yaml (keys: keys/… are relative to it), put secrets in /etc/varco/secrets (owner varco, mode 0600: varco refuses secrets others can read),"
echo "keepalived: add 'include /etc/keepalived/conf.d/varco.conf' to /etc/keepalived/keepalived.conf (varco writes only that file)"
echo "then: varco doctor --policy /etc/varco/gateway.yaml && systemctl enable --now varco varco-net.path"
echo "(a policy change applied by varco-net.path is rolled back unless 'varco net confirm' follows within 5 minutes)"
