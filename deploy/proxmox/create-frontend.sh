#!/usr/bin/env bash
# Proxmox VE: create the varco front-end as an unprivileged LXC container with one NIC on the public
# bridge and one on the private bridge. Run on a Proxmox node as root. Review the variables first.
set -euo pipefail
CTID="${CTID:-9100}"
HOSTNAME="${HOSTNAME_CT:-varco-fe1}"
TEMPLATE="${TEMPLATE:-local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst}"
STORAGE="${STORAGE:-local-lvm}"
PUBLIC_BRIDGE="${PUBLIC_BRIDGE:-vmbr0}"      # carries the public IP
# The container's OWN address (network.public_ip in its policy): 203.0.113.11 on the first front-end,
# 203.0.113.12 on the second. Never the VIP (203.0.113.10): keepalived adds the VIP on the active node
# and removes it on the other one, so a VIP set here would be taken away together with the default route.
PUBLIC_CIDR="${PUBLIC_CIDR:-203.0.113.11/24}"
PUBLIC_GW="${PUBLIC_GW:-203.0.113.1}"
PRIVATE_BRIDGE="${PRIVATE_BRIDGE:-vmbr1}"    # the VMs' network
PRIVATE_CIDR="${PRIVATE_CIDR:-10.10.0.1/16}"

pveam update >/dev/null
pct create "$CTID" "$TEMPLATE" \
  --hostname "$HOSTNAME" --unprivileged 1 --features nesting=1,keyctl=1 \
  --cores 2 --memory 1024 --swap 512 --rootfs "$STORAGE:8" \
  --net0 "name=eth0,bridge=$PUBLIC_BRIDGE,ip=$PUBLIC_CIDR,gw=$PUBLIC_GW" \
  --net1 "name=eth1,bridge=$PRIVATE_BRIDGE,ip=$PRIVATE_CIDR" \
  --onboot 1
# nftables NAT and keepalived need to manage the container's own network namespace:
# CAP_NET_ADMIN inside the unprivileged container is namespaced, which is what varco needs.
# IP forwarding for the private network:
echo "lxc.sysctl.net.ipv4.ip_forward = 1" >> "/etc/pve/lxc/$CTID.conf"
pct start "$CTID"
pct exec "$CTID" -- bash -c 'apt-get update -q && apt-get install -y -q git curl ca-certificates'
pct exec "$CTID" -- bash -c 'curl -fsSL https://deb.nodesource.com/setup_20.x | bash - && apt-get install -y -q nodejs'
pct exec "$CTID" -- bash -c 'git clone https://example.org/varco.git /root/varco && /root/varco/deploy/install.sh'
echo "Container $CTID is up with its own address ${PUBLIC_CIDR%/*}. Edit /etc/varco/gateway.yaml inside it (pct enter $CTID):"
echo "  network.public_ip: ${PUBLIC_CIDR%/*}; the VIP (network.vips[].addresses) is another address, added by keepalived."
echo "  The input chain drops everything on eth0 but gateway.listen: open the container's own sshd in network.input_allow."
echo "Then: varco doctor --policy /etc/varco/gateway.yaml && systemctl enable --now varco varco-net.path"
