/**
 * nftables rendering. Pure functions, no I/O.
 *
 * One table (`table inet varco`, so one table holds IPv4 NAT and the filtering of both families)
 * replaced atomically by one `nft -f` transaction (nft(8): "add table; delete table; table {…}").
 *
 * Port forwards (IPv4, DNAT):
 * - single-port forwards open to everyone are one hash map keyed on
 *   `ip daddr . meta l4proto . th dport` (`dnat4`), so 10 000 forwards are one lookup;
 * - forwards restricted to some sources live in an interval map keyed on
 *   `ip saddr . ip daddr . l4proto . dport` (`dnat4_src`; interval maps are far slower to load, so
 *   only restricted forwards pay for them);
 * - port ranges that keep their ports live in a third interval map whose data is the address only
 *   (`dnat4_range`, `0.0.0.0/0` as the source of open ones); a range mapped onto other ports is
 *   rendered port by port in the first two maps (nft 1.0 has no shifted port-range NAT).
 * IPv6 forwards are routed, not translated: a set of `saddr . daddr . l4proto . dport` accepted
 * from the public interface (`forward6`).
 *
 * Hairpin (NAT reflection): the DNAT maps apply on every interface, and a DNATed flow from a
 * private source to a private target is masqueraded on its way out (to the gateway's address on
 * the target's side), so the target's reply comes back through the gateway to be un-NATed.
 *
 * The forward chain drops what no rule names (policy drop, both families): established/related,
 * DNATed forwards, routed IPv6 forwards, forward_allow, and private → public are accepted; the
 * ICMPv6 errors path MTU discovery needs are accepted (RFC 4890 §4.3.1).
 */
import type { NetworkPolicy } from "../policy/index.ts";
import { family, forwardExternalIp, forwardFamily, forwardIsOpen, portSpan, protocols, snatSource, spanText } from "../policy/network.ts";
import { type GatewayServices, renderInputChain } from "./input.ts";

const q = (s: string) => JSON.stringify(s);

/** Text safe inside an nft string (log prefix, comment): no quotes or control characters. */
function safe(s: string, max: number): string {
  return s.replace(/[^A-Za-z0-9_.:@+-]/g, "_").slice(0, max);
}

function element(parts: readonly string[]): string {
  return parts.join(" . ");
}

function elements(list: readonly string[]): string[] {
  return list.length > 0 ? [`\t\telements = { ${list.join(",\n\t\t\t     ")} }`] : [];
}

/** How often a forward's `log: true` may write a line (the kernel log is not a packet capture). */
export const FORWARD_LOG_RATE = "10/second";

/** The elements of varco's sets and maps for network policy `n` (each as nft writes it). */
export interface NftElements {
  readonly private4: string[];
  readonly private6: string[];
  readonly dnat4: string[];
  readonly dnat4_src: string[];
  readonly dnat4_range: string[];
  readonly forward6: string[];
  readonly east_west4: string[];
  readonly east_west6: string[];
}

/** The set and map elements for `n` (port forwards, forward_allow, private networks); pure. */
export function nftElements(n: NetworkPolicy): NftElements {
  const e: NftElements = {
    private4: n.private_networks.filter((c) => family(c) === "ipv4"),
    private6: n.private_networks.filter((c) => family(c) === "ipv6"),
    dnat4: [],
    dnat4_src: [],
    dnat4_range: [],
    forward6: [],
    east_west4: [],
    east_west6: [],
  };
  for (const f of n.port_forwards) {
    const ext = portSpan(f.external_port);
    const int = f.internal_port === undefined ? ext : portSpan(f.internal_port);
    const open = forwardIsOpen(f);
    if (forwardFamily(f) === "ipv6") {
      const sources = open ? ["::/0"] : (f.sources ?? []);
      for (const p of protocols(f.protocol)) for (const s of sources) e.forward6.push(element([s, f.internal_ip, p, spanText(ext)]));
      continue;
    }
    const dst = forwardExternalIp(n, f) ?? n.public_ip;
    const sources = open ? [] : (f.sources ?? []);
    for (const p of protocols(f.protocol)) {
      if (ext[0] !== ext[1] && int[0] === ext[0]) {
        for (const s of open ? ["0.0.0.0/0"] : sources) e.dnat4_range.push(`${element([s, dst, p, spanText(ext)])} : ${f.internal_ip}`);
        continue;
      }
      for (let k = 0; k <= ext[1] - ext[0]; k++) {
        const to = `${f.internal_ip} . ${int[0] + k}`;
        if (open) e.dnat4.push(`${element([dst, p, String(ext[0] + k)])} : ${to}`);
        else for (const s of sources) e.dnat4_src.push(`${element([s, dst, p, String(ext[0] + k)])} : ${to}`);
      }
    }
  }
  for (const a of n.forward_allow) {
    const target = family(a.from[0] ?? "0.0.0.0") === "ipv6" ? e.east_west6 : e.east_west4;
    for (const from of a.from)
      for (const to of a.to)
        for (const p of protocols(a.protocol)) for (const port of a.ports) target.push(element([from, to, p, spanText(portSpan(port))]));
  }
  return e;
}

/** Per-forward `log` / `rate` rules (prerouting, where only a connection's first packet passes). */
function forwardRules(n: NetworkPolicy): string[] {
  const out: string[] = [];
  for (const f of n.port_forwards) {
    if (!f.log && !f.rate) continue;
    const v6 = forwardFamily(f) === "ipv6";
    const ip = v6 ? "ip6" : "ip";
    const dst = v6 ? f.internal_ip : (forwardExternalIp(n, f) ?? n.public_ip);
    const protos = protocols(f.protocol);
    const match = [
      `${ip} daddr ${dst}`,
      ...(forwardIsOpen(f) ? [] : [`${ip} saddr { ${(f.sources ?? []).join(", ")} }`]),
      protos.length > 1 ? "meta l4proto { tcp, udp }" : `meta l4proto ${protos[0]}`,
      `th dport ${spanText(portSpan(f.external_port))}`,
    ].join(" ");
    const name = safe(f.name, 96);
    if (f.log)
      out.push(`\t\t${match} limit rate ${FORWARD_LOG_RATE} log prefix ${q(`varco fwd ${name}: `)} comment ${q(`log of ${name}`)}`);
    if (f.rate) out.push(`\t\t${match} limit rate over ${f.rate} counter drop comment ${q(`rate of ${name}`)}`);
  }
  return out;
}

/** The addresses IPv4 forwards are reached on (their external_ip or its default), sorted, once each. */
function dnatDestinations(n: NetworkPolicy): string[] {
  const out = new Set<string>();
  for (const f of n.port_forwards) {
    const ext = forwardExternalIp(n, f);
    if (ext !== undefined) out.add(ext);
  }
  return [...out].sort();
}

/**
 * The nft script that replaces `table inet <table>` with the desired state, as one transaction.
 * `services` are the gateway's own listeners, for the input chain (src/net/input.ts).
 * Rule syntax per nft(8) 1.0: `dnat ip to … map`, `snat ip to ADDR`, `masquerade`,
 * `tcp option maxseg size set rt mtu`, `limit rate [over] N/unit`, `log prefix`.
 */
export function renderNft(n: NetworkPolicy, services?: GatewayServices): string {
  const t = n.table;
  const pub = q(n.public_interface);
  const e = nftElements(n);
  const lines: string[] = [
    `table inet ${t}`,
    `delete table inet ${t}`,
    `table inet ${t} {`,
    "\tset private4 {",
    "\t\ttype ipv4_addr",
    "\t\tflags interval",
    ...(e.private4.length > 0 ? [`\t\telements = { ${e.private4.join(", ")} }`] : []),
    "\t}",
    "",
    "\tset private6 {",
    "\t\ttype ipv6_addr",
    "\t\tflags interval",
    ...(e.private6.length > 0 ? [`\t\telements = { ${e.private6.join(", ")} }`] : []),
    "\t}",
    "",
    "\tmap dnat4 {",
    "\t\ttype ipv4_addr . inet_proto . inet_service : ipv4_addr . inet_service",
    ...elements(e.dnat4),
    "\t}",
    "",
    "\tmap dnat4_src {",
    "\t\ttype ipv4_addr . ipv4_addr . inet_proto . inet_service : ipv4_addr . inet_service",
    "\t\tflags interval",
    ...elements(e.dnat4_src),
    "\t}",
    "",
    "\tmap dnat4_range {",
    "\t\ttype ipv4_addr . ipv4_addr . inet_proto . inet_service : ipv4_addr",
    "\t\tflags interval",
    ...elements(e.dnat4_range),
    "\t}",
    "",
    "\tset forward6 {",
    "\t\ttype ipv6_addr . ipv6_addr . inet_proto . inet_service",
    "\t\tflags interval",
    ...elements(e.forward6),
    "\t}",
    "",
    "\tset east_west4 {",
    "\t\ttype ipv4_addr . ipv4_addr . inet_proto . inet_service",
    "\t\tflags interval",
    ...elements(e.east_west4),
    "\t}",
    "",
    "\tset east_west6 {",
    "\t\ttype ipv6_addr . ipv6_addr . inet_proto . inet_service",
    "\t\tflags interval",
    ...elements(e.east_west6),
    "\t}",
    "",
    "\tchain prerouting {",
    "\t\ttype nat hook prerouting priority dstnat; policy accept;",
    ...forwardRules(n),
    "\t\tmeta l4proto { tcp, udp } dnat ip to ip daddr . meta l4proto . th dport map @dnat4",
    "\t\tmeta l4proto { tcp, udp } dnat ip to ip saddr . ip daddr . meta l4proto . th dport map @dnat4_src",
    "\t\tmeta l4proto { tcp, udp } dnat ip to ip saddr . ip daddr . meta l4proto . th dport map @dnat4_range",
    "\t}",
    "",
    "\tchain postrouting {",
    "\t\ttype nat hook postrouting priority srcnat; policy accept;",
    `\t\tct status dnat iifname != ${pub} ip saddr @private4 ip daddr @private4 masquerade comment "hairpin"`,
    ...(n.masquerade ? [`\t\toifname ${pub} ip saddr @private4 snat ip to ${snatSource(n)} comment "outbound SNAT"`] : []),
    "\t}",
    "",
    ...renderInputChain(n, services),
    "\tchain forward {",
    "\t\ttype filter hook forward priority filter; policy drop;",
    ...(n.mss_clamp ? ["\t\ttcp flags syn / syn,rst tcp option maxseg size set rt mtu"] : []),
    "\t\tct state established,related accept",
    "\t\tct state invalid drop",
    // Anti-spoofing: a private source never arrives from the internet. Without this, a spoofed
    // source listed in forward_allow (or a hairpin-only forward) would be forwarded inward.
    `\t\tiifname ${pub} ip saddr @private4 counter drop comment "private source on the public interface (spoofed)"`,
    `\t\tiifname ${pub} ip6 saddr @private6 counter drop comment "private source on the public interface (spoofed)"`,
    '\t\ticmpv6 type { destination-unreachable, packet-too-big, time-exceeded, parameter-problem } accept comment "ICMPv6 errors (path MTU)"',
    '\t\ticmpv6 type { nd-router-solicit, nd-router-advert, nd-neighbor-solicit, nd-neighbor-advert } ip6 hoplimit 255 accept comment "neighbour discovery (bridged)"',
    // Only flows varco's own maps DNATed: their original destination is one of the forwards' addresses
    // (another table's DNAT to elsewhere does not pass this chain's drop policy).
    ...(dnatDestinations(n).length > 0
      ? [`\t\tct status dnat ct original ip daddr { ${dnatDestinations(n).join(", ")} } accept comment "port_forwards"`]
      : []),
    `\t\tiifname ${pub} ip6 saddr . ip6 daddr . meta l4proto . th dport @forward6 accept comment "port_forwards (IPv6, routed)"`,
    '\t\tip saddr . ip daddr . meta l4proto . th dport @east_west4 accept comment "forward_allow"',
    '\t\tip6 saddr . ip6 daddr . meta l4proto . th dport @east_west6 accept comment "forward_allow"',
    `\t\tiifname ${pub} counter drop comment "inbound without a port forward"`,
    '\t\tip saddr @private4 ip daddr @private4 counter drop comment "east-west not in forward_allow"',
    '\t\tip6 saddr @private6 ip6 daddr @private6 counter drop comment "east-west not in forward_allow"',
    `\t\toifname ${pub} ip saddr @private4 accept comment "outbound"`,
    `\t\toifname ${pub} ip6 saddr @private6 accept comment "outbound"`,
    '\t\tcounter comment "dropped by the forward policy"',
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
