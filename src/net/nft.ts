/**
 * nftables rendering. Pure functions, no I/O.
 *
 * One table (`table inet varco`, so one table holds IPv4 NAT and filtering for both families'
 * hooks) replaced atomically by one `nft -f` transaction (nft(8): "add table; delete table;
 * table {…}"). Port forwards are one hash map keyed on `ip daddr . meta l4proto . th dport`, so
 * 10 000 forwards are one lookup; forwards restricted to some sources live in a second, interval
 * map keyed on `ip saddr . ip daddr . l4proto . dport` (interval maps are far slower to load, so
 * only restricted forwards pay for them).
 */
import type { NetworkPolicy } from "../policy/index.ts";
import { type GatewayServices, renderInputChain } from "./input.ts";

const q = (s: string) => JSON.stringify(s);

function element(parts: readonly string[]): string {
  return parts.join(" . ");
}

/** The nft script that replaces `table inet <table>` with the desired state, as one transaction. */
export function renderNft(n: NetworkPolicy, services?: GatewayServices): string {
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
    ...renderInputChain(n, services),
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
