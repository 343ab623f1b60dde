/**
 * Desired network state rendered as data. Pure functions, no I/O.
 *
 * - nftables: one table (`table inet varco`, so one table holds IPv4 NAT and filtering for both
 *   families' forward hook) replaced atomically by one `nft -f` transaction (nft(8): "add table;
 *   delete table; table {…}"). Port forwards are one hash map keyed on
 *   `ip daddr . meta l4proto . th dport`, so 10 000 forwards are one lookup; forwards restricted
 *   to some sources live in a second, interval map keyed on `ip saddr . ip daddr . l4proto . dport`
 *   (interval maps are far slower to load, so only restricted forwards pay for them).
 * - links: an ordered list of `ip` operations (ip-link(8), ip-address(8)) with their undo.
 * - keepalived.conf(5): one vrrp_instance per VIP.
 */
import type { NetworkPolicy } from "../policy/index.ts";

/** One host operation with its inverse. `argv` are `ip` argument arrays. */
export interface LinkOp {
  readonly describe: string;
  readonly argv: readonly string[];
  readonly undo: readonly string[] | undefined;
  /** What must be true after it (used to decide whether the op is still needed). */
  readonly check: LinkCheck;
}

export type LinkCheck =
  | { readonly kind: "link-exists"; readonly name: string; readonly type?: string }
  | { readonly kind: "master"; readonly name: string; readonly master: string }
  | { readonly kind: "address"; readonly name: string; readonly cidr: string }
  | { readonly kind: "up"; readonly name: string };

const q = (s: string) => JSON.stringify(s);

function element(parts: readonly string[]): string {
  return parts.join(" . ");
}

/** The nft script that replaces `table inet <table>` with the desired state, as one transaction. */
export function renderNft(n: NetworkPolicy): string {
  const t = n.table;
  const privateSet = n.private_networks.length > 0 ? `elements = { ${n.private_networks.join(", ")} }` : "";
  const open = (f: NetworkPolicy["port_forwards"][number]) => f.sources.some((s) => s === "0.0.0.0/0" || s === "0.0.0.0/0.0.0.0");
  const dnat = n.port_forwards
    .filter(open)
    .map((f) => `${element([f.external_ip, f.protocol, String(f.external_port)])} : ${f.internal_ip} . ${f.internal_port}`);
  const dnatSrc = n.port_forwards
    .filter((f) => !open(f))
    .flatMap((f) =>
      f.sources.map(
        (src) => `${element([src, f.external_ip, f.protocol, String(f.external_port)])} : ${f.internal_ip} . ${f.internal_port}`,
      ),
    );
  const eastWest = n.forward_allow.flatMap((a) =>
    a.from.flatMap((from) => a.to.flatMap((to) => a.ports.map((p) => element([from, to, a.protocol, String(p)])))),
  );
  const lines: string[] = [
    `table inet ${t}`,
    `delete table inet ${t}`,
    `table inet ${t} {`,
    "\tset private4 {",
    "\t\ttype ipv4_addr",
    "\t\tflags interval",
    ...(privateSet ? [`\t\t${privateSet}`] : []),
    "\t}",
    "",
    "\tmap dnat4 {",
    "\t\ttype ipv4_addr . inet_proto . inet_service : ipv4_addr . inet_service",
    ...(dnat.length > 0 ? [`\t\telements = { ${dnat.join(",\n\t\t\t     ")} }`] : []),
    "\t}",
    "",
    "\tmap dnat4_src {",
    "\t\ttype ipv4_addr . ipv4_addr . inet_proto . inet_service : ipv4_addr . inet_service",
    "\t\tflags interval",
    ...(dnatSrc.length > 0 ? [`\t\telements = { ${dnatSrc.join(",\n\t\t\t     ")} }`] : []),
    "\t}",
    "",
    "\tset east_west4 {",
    "\t\ttype ipv4_addr . ipv4_addr . inet_proto . inet_service",
    "\t\tflags interval",
    ...(eastWest.length > 0 ? [`\t\telements = { ${eastWest.join(",\n\t\t\t     ")} }`] : []),
    "\t}",
    "",
    "\tchain prerouting {",
    "\t\ttype nat hook prerouting priority dstnat; policy accept;",
    "\t\tmeta l4proto { tcp, udp } dnat ip to ip daddr . meta l4proto . th dport map @dnat4",
    "\t\tmeta l4proto { tcp, udp } dnat ip to ip saddr . ip daddr . meta l4proto . th dport map @dnat4_src",
    "\t}",
    "",
    "\tchain postrouting {",
    "\t\ttype nat hook postrouting priority srcnat; policy accept;",
    ...(n.masquerade ? [`\t\toifname ${q(n.public_interface)} ip saddr @private4 masquerade`] : []),
    "\t}",
    "",
    "\tchain forward {",
    "\t\ttype filter hook forward priority filter; policy accept;",
    "\t\tct state established,related accept",
    "\t\tct state invalid drop",
    "\t\tct status dnat accept",
    '\t\tip saddr . ip daddr . meta l4proto . th dport @east_west4 accept comment "forward_allow"',
    `\t\tiifname ${q(n.public_interface)} ip daddr @private4 counter drop comment "inbound to private without a port forward"`,
    '\t\tip saddr @private4 ip daddr @private4 counter drop comment "east-west not in forward_allow"',
    "\t}",
    "}",
    "",
  ];
  return lines.join("\n");
}

/** The script that removes varco's table (used when restoring "no table"). */
export function renderNftDelete(table: string): string {
  return `table inet ${table}\ndelete table inet ${table}\n`;
}

/** Bridges and VLAN sub-interfaces as ordered `ip` operations (bridge, link.vlan, master, address, up). */
export function renderLinkOps(n: NetworkPolicy): LinkOp[] {
  const ops: LinkOp[] = [];
  for (const b of n.bridges) {
    ops.push({
      describe: `create bridge ${b.name}`,
      argv: ["ip", "link", "add", "name", b.name, "type", "bridge"],
      undo: ["ip", "link", "del", b.name],
      check: { kind: "link-exists", name: b.name, type: "bridge" },
    });
    for (const port of b.ports) {
      let member = port;
      if (b.vlan !== undefined) {
        member = `${port}.${b.vlan}`;
        ops.push({
          describe: `create VLAN ${b.vlan} on ${port} as ${member}`,
          argv: ["ip", "link", "add", "link", port, "name", member, "type", "vlan", "id", String(b.vlan)],
          undo: ["ip", "link", "del", member],
          check: { kind: "link-exists", name: member, type: "vlan" },
        });
      }
      ops.push({
        describe: `enslave ${member} to ${b.name}`,
        argv: ["ip", "link", "set", "dev", member, "master", b.name],
        undo: ["ip", "link", "set", "dev", member, "nomaster"],
        check: { kind: "master", name: member, master: b.name },
      });
      ops.push({
        describe: `bring ${member} up`,
        argv: ["ip", "link", "set", "dev", member, "up"],
        undo: undefined,
        check: { kind: "up", name: member },
      });
    }
    if (b.address) {
      ops.push({
        describe: `address ${b.address} on ${b.name}`,
        argv: ["ip", "address", "add", b.address, "dev", b.name],
        undo: ["ip", "address", "del", b.address, "dev", b.name],
        check: { kind: "address", name: b.name, cidr: b.address },
      });
    }
    ops.push({
      describe: `bring ${b.name} up`,
      argv: ["ip", "link", "set", "dev", b.name, "up"],
      undo: undefined,
      check: { kind: "up", name: b.name },
    });
  }
  return ops;
}

/** The same bridges as an ifupdown2 `/etc/network/interfaces` snippet, in the Proxmox VE style. */
export function renderInterfaces(n: NetworkPolicy): string {
  const out: string[] = ["# Generated by varco from the policy's network.bridges; paste into /etc/network/interfaces(.d)."];
  for (const b of n.bridges) {
    const ports = b.ports.map((p) => (b.vlan !== undefined ? `${p}.${b.vlan}` : p));
    if (b.vlan !== undefined) {
      for (const p of b.ports)
        out.push("", `auto ${p}.${b.vlan}`, `iface ${p}.${b.vlan} inet manual`, `\tvlan-raw-device ${p}`, `\tvlan-id ${b.vlan}`);
    }
    out.push("", `auto ${b.name}`, `iface ${b.name} inet ${b.address ? "static" : "manual"}`);
    if (b.address) out.push(`\taddress ${b.address}`);
    out.push(`\tbridge-ports ${ports.length > 0 ? ports.join(" ") : "none"}`, "\tbridge-stp off", "\tbridge-fd 0");
  }
  return `${out.join("\n")}\n`;
}

export interface KeepalivedInputs {
  /** auth_pass per instance (read from auth_pass_file); keepalived uses at most 8 characters. */
  readonly authPass: Readonly<Record<string, string>>;
  /** Command for the track_script when a VIP has track_gateway_health. */
  readonly healthCommand: string;
}

/** keepalived.conf(5): one vrrp_instance per VIP, a vrrp_script for the gateway's health. */
export function renderKeepalived(n: NetworkPolicy, inputs: KeepalivedInputs): string {
  const out: string[] = [
    "# Generated by varco from the policy's network.vips. Do not edit: `varco net apply` rewrites it.",
    "global_defs {",
    "\tscript_user root",
    "\tenable_script_security",
    "}",
  ];
  if (n.vips.some((v) => v.track_gateway_health)) {
    out.push(
      "",
      "vrrp_script varco_health {",
      `\tscript ${q(inputs.healthCommand)}`,
      "\tinterval 1",
      "\ttimeout 2",
      "\tfall 2",
      "\trise 2",
      "}",
    );
  }
  for (const v of n.vips) {
    const pass = inputs.authPass[v.instance];
    out.push(
      "",
      `vrrp_instance ${v.instance} {`,
      // All start as BACKUP unless told otherwise: keepalived elects the highest priority (keepalived.conf(5)).
      `\tstate ${v.state ?? "BACKUP"}`,
      `\tinterface ${v.interface}`,
      `\tvirtual_router_id ${v.virtual_router_id}`,
      `\tpriority ${v.priority}`,
      `\tadvert_int ${Math.max(1, Math.round(v.advert_interval / 1000))}`,
      ...(pass ? ["\tauthentication {", "\t\tauth_type PASS", `\t\tauth_pass ${pass.slice(0, 8)}`, "\t}"] : []),
      "\tvirtual_ipaddress {",
      ...v.addresses.map((a) => `\t\t${a} dev ${v.interface}`),
      "\t}",
      ...(v.track_gateway_health ? ["\ttrack_script {", "\t\tvarco_health", "\t}"] : []),
      `\tnotify ${q(`/usr/bin/logger -t varco-vrrp ${v.instance}`)}`,
      "}",
    );
  }
  return `${out.join("\n")}\n`;
}

/** The rendered config with secrets masked, for plans and diffs. */
export function redactKeepalived(conf: string): string {
  return conf.replace(/(auth_pass )\S+/g, "$1********");
}
