#!/usr/bin/env bash
# Installs (or upgrades) varco on Debian 12 from a release tarball: `npm pack` output with dist/.
#
#   sudo deploy/install.sh [varco-X.Y.Z.tgz]
#
# Without a tarball it builds one from this clone first (npm ci, npm run build, npm pack).
# Idempotent: the release is unpacked next to $PREFIX and swapped in; /etc/varco is created only if
# missing, never overwritten. Run as root. Settings (environment):
#   VARCO_PREFIX        where the release lives                   (default /opt/varco)
#   VARCO_BIN_DIR       where the `varco` command is linked        (default /usr/local/bin)
#   VARCO_SYSTEM=0      skip packages, the varco user, /etc/varco, /var/lib/varco and the systemd units
#   VARCO_NODE_MODULES  reuse this node_modules (already built) instead of `npm ci` (offline installs, tests)
set -euo pipefail
SRC="$(cd "$(dirname "$0")/.." && pwd)"
PREFIX="${VARCO_PREFIX:-/opt/varco}"
BIN_DIR="${VARCO_BIN_DIR:-/usr/local/bin}"
SYSTEM="${VARCO_SYSTEM:-1}"
[ "$SYSTEM" = 0 ] || [ "$(id -u)" = 0 ] || { echo "run as root (or VARCO_SYSTEM=0 for a user-level install)" >&2; exit 1; }
node -e 'process.exit(Number(process.versions.node.split(".")[0]) >= 20 ? 0 : 1)' 2>/dev/null || {
  echo "varco needs Node.js >= 20 (Debian 12 ships 18): install it from NodeSource or nodejs.org first" >&2; exit 1; }

if [ "$SYSTEM" != 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q --no-install-recommends nftables keepalived iproute2 ca-certificates >/dev/null
fi

# 1. The release tarball.
TARBALL="${1:-}"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
if [ -z "$TARBALL" ]; then
  echo "building a release from $SRC"
  (cd "$SRC" && { [ -d node_modules ] || npm ci --no-audit --no-fund; } && npm run build >/dev/null \
    && cp package-lock.json npm-shrinkwrap.json && npm pack --silent --pack-destination "$WORK" >/dev/null; rm -f npm-shrinkwrap.json)
  TARBALL="$(ls "$WORK"/varco-*.tgz)"
fi
[ -f "$TARBALL" ] || { echo "no such release tarball: $TARBALL" >&2; exit 1; }

# 2. Unpack next to the prefix, install production dependencies, swap in.
NEW="$PREFIX.new"
rm -rf "$NEW"
mkdir -p "$NEW"
tar -xzf "$TARBALL" -C "$NEW" --strip-components=1
if [ -n "${VARCO_NODE_MODULES:-}" ]; then
  cp -a "$VARCO_NODE_MODULES" "$NEW/node_modules"
  (cd "$NEW" && npm prune --omit=dev --offline --no-audit --no-fund >/dev/null)
else
  (cd "$NEW" && npm ci --omit=dev --no-audit --no-fund >/dev/null)
fi
[ -f "$NEW/dist/cli/main.js" ] || { echo "$TARBALL has no dist/: not a release tarball (npm run build, then npm pack)" >&2; exit 1; }
if [ -e "$PREFIX" ]; then rm -rf "$PREFIX.old"; mv "$PREFIX" "$PREFIX.old"; fi
mv "$NEW" "$PREFIX"
rm -rf "$PREFIX.old"
mkdir -p "$BIN_DIR"
ln -sfn "$PREFIX/bin/varco.mjs" "$BIN_DIR/varco"
chmod 0755 "$PREFIX/bin/varco.mjs" "$PREFIX/bin/varco-health.mjs"

# 3. The system: user, folders, units.
if [ "$SYSTEM" != 0 ]; then
  id varco >/dev/null 2>&1 || useradd --system --home-dir /var/lib/varco --shell /usr/sbin/nologin varco
  install -d -m 0750 -o root -g varco /etc/varco
  install -d -m 0700 -o varco -g varco /etc/varco/secrets
  install -d -m 0700 -o varco -g varco /etc/varco/keys
  # The state folder exists before the first start, so `sudo varco user ...` run before it writes into the service's folder.
  install -d -m 0750 -o varco -g varco /var/lib/varco
  [ -f /etc/varco/gateway.yaml ] || install -m 0640 -o root -g varco "$PREFIX/policies/gateway.yaml" /etc/varco/gateway.yaml
  install -m 0644 "$PREFIX/deploy/varco.service" "$PREFIX/deploy/varco-net.service" "$PREFIX/deploy/varco-net.path" \
    "$PREFIX/deploy/varco-net-restore.service" /etc/systemd/system/
  systemctl daemon-reload
  # Boot restore of the last confirmed network generation, before keepalived (harmless before the first apply).
  systemctl enable varco-net-restore.service
fi

echo "varco $("$BIN_DIR/varco" --version) is installed in $PREFIX; \`varco\` is $BIN_DIR/varco."
echo "Next: edit /etc/varco/gateway.yaml, put secrets in /etc/varco/secrets (owner varco, mode 0600), then"
echo "  varco keys init && varco doctor && systemctl enable --now varco varco-net.path"
echo "keepalived: add 'include /etc/keepalived/conf.d/varco.conf' to /etc/keepalived/keepalived.conf (varco writes only that file)."
echo "A policy change applied by varco-net.path is rolled back unless 'varco net confirm' follows within 5 minutes."
