/**
 * The input chain: what the gateway itself accepts on its public side. Pure, no I/O.
 *
 * `chain input` (hook input, policy accept) sends every packet that arrives on
 * `network.public_interface` to `chain input_public`, which ends in `counter drop`: the public
 * side is default-drop, every other interface (loopback, the private bridges) is untouched.
 * Accepted on the public side, in this order (nft(8) evaluates rules top to bottom):
 *   VRRP (IP protocol 112, RFC 5798) from `vips[].unicast_peers`, else to 224.0.0.18 / ff02::12,
 *   any other VRRP dropped (before conntrack: a unicast VRRP flow becomes "established");
 *   established/related; the ICMPv6 types neighbour discovery and path-MTU discovery need and the
 *   ICMP errors (RFC 4890 §4.4, RFC 1191), echo-request rate-limited; `ct state invalid` dropped;
 *   what `network.input_allow` adds (before the meter: a listed source is never rate-limited);
 *   the gateway's SSH listeners (`gateway.listen` on a public address or a wildcard), new
 *   connections over `network.input.ssh_rate` per source address (per /64 for IPv6) dropped with a counter (a
 *   dynamic set with a `limit` per element: nft(8) "SETS", "update @set"); the metrics listener
 *   from `network.input.metrics_sources` only.
 * DNATed traffic (port forwards) is routed to the forward hook and never reaches this chain.
 *
 * `admits()` is the same decision as a pure function over one packet, used to refuse an apply
 * that would lock the administrator out (src/net/lockout.ts).
 */
import ipaddr from "ipaddr.js";
import type { NetworkPolicy } from "../policy/index.ts";
import { forwardExternalIp, portSpan, protocols, spanText } from "../policy/network.ts";
import { INPUT_DEFAULTS } from "../policy/schema.ts";

/** A `host:port` the gateway listens on (host `0.0.0.0` / `::` = every address). */
export interface ServiceAddress {
  readonly host: string;
  readonly port: number;
}

/** The gateway's own listeners, from `gateway.listen` and `gateway.metrics_listen`. */
export interface GatewayServices {
  readonly listen: readonly ServiceAddress[];
  readonly metrics?: ServiceAddress | undefined;
}

type Family = "ipv4" | "ipv6";
const familyOf = (ip: string): Family => ipaddr.parse(ip.split("/")[0] ?? ip).kind() as Family;
const bare = (cidr: string) => cidr.split("/")[0] ?? cidr;
const WILDCARD4 = "0.0.0.0";
const WILDCARD6 = "::";

/** The node's addresses on the public side: `public_ip`, every VIP address and `snat_address` when set (bare addresses). */
export function publicAddresses(n: NetworkPolicy): string[] {
  const snat = n.snat_address;
  const all = [n.public_ip, ...n.vips.flatMap((v) => v.addresses.map(bare)), ...(snat ? [snat] : [])];
  return [...new Set(all.map((a) => ipaddr.process(a).toString()))];
}

const sameAddress = (a: string, b: string) => {
  try {
    return ipaddr.process(a).toString() === ipaddr.process(b).toString();
  } catch {
    return false;
  }
};

/** Whether a listener bound to `host` receives a packet to `daddr` (Node binds `::` dual-stack, `0.0.0.0` IPv4 only). */
function listensOn(host: string, daddr: string): boolean {
  if (host === WILDCARD6) return true;
  if (host === WILDCARD4) return familyOf(daddr) === "ipv4";
  return sameAddress(host, daddr);
}

/** The gateway's listeners reachable from the public side: bound to a public address or a wildcard. */
export function publicListeners(n: NetworkPolicy, services: GatewayServices | undefined): ServiceAddress[] {
  const pub = publicAddresses(n);
  return (services?.listen ?? []).filter((l) => l.host === WILDCARD4 || l.host === WILDCARD6 || pub.some((a) => sameAddress(a, l.host)));
}

/** The metrics listener when it is reachable from the public side (a public address or a wildcard). */
function publicMetrics(n: NetworkPolicy, services: GatewayServices | undefined): ServiceAddress | undefined {
  const m = services?.metrics;
  if (!m) return undefined;
  return publicListeners(n, { listen: [m] })[0];
}

/** nft's spelling of "this listener's destination": nothing for `::`, the family for `0.0.0.0`, else the address. */
function daddrMatch(host: string): string {
  if (host === WILDCARD6) return "";
  if (host === WILDCARD4) return "meta nfproto ipv4 ";
  return familyOf(host) === "ipv4" ? `ip daddr ${host} ` : `ip6 daddr ${host} `;
}

/** Per-family `ip saddr { … }` / `ip6 saddr { … }` prefixes for a source list (one per family present). */
function saddrMatches(sources: readonly string[]): string[] {
  const v4 = sources.filter((s) => familyOf(s) === "ipv4");
  const v6 = sources.filter((s) => familyOf(s) === "ipv6");
  return [...(v4.length > 0 ? [`ip saddr { ${v4.join(", ")} } `] : []), ...(v6.length > 0 ? [`ip6 saddr { ${v6.join(", ")} } `] : [])];
}

const RATE_SECONDS: Record<string, number> = { second: 1, minute: 60, hour: 3600, day: 86400 };

/**
 * The timeout of an element of the per-source meter: at least the time the `limit` bucket needs to
 * refill completely (burst / rate), and at least a minute. An element that expires then would have
 * had a full bucket anyway, so expiry never lets a source exceed the rate.
 */
export function meterTimeoutSeconds(rate: string, burst: number): number {
  const [count, unit] = rate.split("/");
  const perSecond = Number(count) / (RATE_SECONDS[unit ?? "minute"] ?? 60);
  return Math.max(60, Math.ceil(burst / perSecond));
}

/** Lines of the per-source meters and `chain input` / `chain input_public` inside varco's table (none when disabled). */
export function renderInputChain(n: NetworkPolicy, services: GatewayServices | undefined): string[] {
  const input = n.input ?? INPUT_DEFAULTS;
  if (!input.enabled) return [];
  const q = (s: string) => JSON.stringify(s);
  const listeners = publicListeners(n, services);
  const sshPorts = [...new Set(listeners.map((l) => l.port))].sort((a, b) => a - b);
  const portSet = (ports: ReadonlyArray<number | string>) => {
    const spans = ports.map((p) => spanText(portSpan(p)));
    return spans.length === 1 ? (spans[0] as string) : `{ ${spans.join(", ")} }`;
  };
  const timeout = meterTimeoutSeconds(input.ssh_rate, input.ssh_burst);
  const meters =
    sshPorts.length === 0
      ? []
      : (["4", "6"] as const).flatMap((f) => [
          `\tset ssh_meter${f} {`,
          `\t\ttype ipv${f}_addr`,
          "\t\tsize 65536",
          "\t\tflags dynamic,timeout",
          `\t\ttimeout ${timeout}s`,
          "\t}",
          "",
        ]);
  // VRRP first, before conntrack's "established": a unicast flow both peers have sent on counts as
  // established, which would accept adverts from a source the policy no longer lists.
  const vrrp = new Set<string>();
  for (const v of n.vips.filter((x) => x.interface === n.public_interface)) {
    const peers = (v as { unicast_peers?: readonly string[] }).unicast_peers;
    if (peers && peers.length > 0) for (const m of saddrMatches(peers)) vrrp.add(`meta l4proto 112 ${m}accept comment "VRRP from peers"`);
    else {
      vrrp.add('meta l4proto 112 ip daddr 224.0.0.18 accept comment "VRRP"');
      if (v.addresses.some((a) => familyOf(a) === "ipv6")) vrrp.add('meta l4proto 112 ip6 daddr ff02::12 accept comment "VRRP"');
    }
  }
  const rules: string[] = [
    ...vrrp,
    'meta l4proto 112 counter drop comment "VRRP not from network.vips"',
    "ct state established,related accept",
    "icmpv6 type { destination-unreachable, packet-too-big, time-exceeded, parameter-problem, nd-router-advert, nd-neighbor-solicit, nd-neighbor-advert } accept",
    `icmpv6 type echo-request limit rate ${input.ping_rate} burst 20 packets accept`,
    "icmp type { destination-unreachable, time-exceeded, parameter-problem } accept",
    `icmp type echo-request limit rate ${input.ping_rate} burst 20 packets accept`,
    "ct state invalid drop",
  ];
  // input_allow before the per-source meter: a listed source (the administrator's office) is never
  // rate-limited, so SYNs spoofed from its address cannot fill its bucket and lock it out.
  for (const a of n.input_allow ?? []) {
    for (const s of saddrMatches(a.sources))
      for (const proto of protocols(a.protocol))
        rules.push(
          `${s}${proto} dport ${portSet([...a.ports].sort((x, y) => portSpan(x)[0] - portSpan(y)[0]))} accept comment ${q(`input_allow ${a.name}`)}`,
        );
  }
  if (sshPorts.length > 0) {
    const over = `limit rate over ${input.ssh_rate} burst ${input.ssh_burst} packets`;
    rules.push(
      `tcp dport ${portSet(sshPorts)} ct state new update @ssh_meter4 { ip saddr ${over} } counter drop comment "network.input.ssh_rate"`,
      // IPv6: one bucket per /64 (RFC 6177 end-site prefixes): a host holds a whole /64, and one
      // bucket per address would let it open 2^64 times the rate.
      `tcp dport ${portSet(sshPorts)} ct state new update @ssh_meter6 { ip6 saddr & ffff:ffff:ffff:ffff:: ${over} } counter drop comment "network.input.ssh_rate"`,
    );
    for (const l of listeners) rules.push(`${daddrMatch(l.host)}tcp dport ${l.port} accept comment "gateway.listen"`);
  }
  const metrics = publicMetrics(n, services);
  if (metrics && input.metrics_sources.length > 0) {
    for (const s of saddrMatches(input.metrics_sources))
      rules.push(`${s}${daddrMatch(metrics.host)}tcp dport ${metrics.port} accept comment "network.input.metrics_sources"`);
  }
  rules.push('counter drop comment "public side: not accepted by the input chain"');
  return [
    ...meters,
    "\tchain input {",
    "\t\ttype filter hook input priority filter; policy accept;",
    `\t\tiifname ${q(n.public_interface)} jump input_public`,
    "\t}",
    "",
    "\tchain input_public {",
    ...rules.map((r) => `\t\t${r}`),
    "\t}",
    "",
  ];
}

// ---------------------------------------------------------------- the same decision, per packet

/** The first packet of a new connection to the gateway, as the input hook would see it. */
export interface InputPacket {
  /** The interface it arrives on. */
  readonly iif: string;
  readonly saddr: string;
  readonly daddr: string;
  readonly protocol: "tcp" | "udp";
  readonly dport: number;
}

/**
 * What happens to a packet: `accept` (delivered to the gateway's socket), `drop` (by the input
 * chain), `dnat` (a port forward rewrites it in prerouting: it goes to a VM, never to the
 * gateway). `by` names the rule or policy key that decided.
 */
export interface InputVerdict {
  readonly verdict: "accept" | "drop" | "dnat";
  readonly by: string;
}

const inside = (ip: string, cidrs: readonly string[]) => {
  const a = ipaddr.process(ip);
  return cidrs.some((c) => {
    const [net, len] = c.includes("/") ? ipaddr.parseCIDR(c) : [ipaddr.parse(c), ipaddr.parse(c).kind() === "ipv4" ? 32 : 128];
    return a.kind() === net.kind() && a.match(net, len);
  });
};

/** The port forward that would DNAT this packet in prerouting, if any. */
export function capturingForward(n: NetworkPolicy, p: Omit<InputPacket, "iif">): NetworkPolicy["port_forwards"][number] | undefined {
  return n.port_forwards.find((f) => {
    const ext = forwardExternalIp(n, f);
    if (!ext || !sameAddress(ext, p.daddr)) return false;
    if (f.protocol !== p.protocol && f.protocol !== "tcp+udp") return false;
    const [lo, hi] = portSpan(f.external_port);
    if (!(p.dport >= lo && p.dport <= hi)) return false;
    return inside(p.saddr, f.sources ?? ["0.0.0.0/0"]);
  });
}

/**
 * The fate of the first packet of a new connection under the rendered table (prerouting DNAT,
 * then the input chain), for a source within `network.input.ssh_rate`. Mirrors renderInputChain
 * rule for rule; test/e2e/net-input.test.ts checks both against real packets.
 */
export function admits(n: NetworkPolicy, services: GatewayServices | undefined, p: InputPacket): InputVerdict {
  const fwd = capturingForward(n, p);
  if (fwd) return { verdict: "dnat", by: `port forward "${fwd.name}" (network.port_forwards) rewrites it to ${fwd.internal_ip}` };
  if (!(n.input ?? INPUT_DEFAULTS).enabled) return { verdict: "accept", by: "network.input.enabled is false (no input chain)" };
  if (p.iif !== n.public_interface) return { verdict: "accept", by: `${p.iif} is not the public interface` };
  if (p.protocol === "tcp") {
    for (const l of publicListeners(n, services))
      if (l.port === p.dport && listensOn(l.host, p.daddr)) return { verdict: "accept", by: `gateway.listen ${l.host}:${l.port}` };
    const m = publicMetrics(n, services);
    if (m && m.port === p.dport && listensOn(m.host, p.daddr) && inside(p.saddr, (n.input ?? INPUT_DEFAULTS).metrics_sources))
      return { verdict: "accept", by: "network.input.metrics_sources" };
  }
  for (const a of n.input_allow ?? [])
    if (
      protocols(a.protocol).includes(p.protocol as "tcp" | "udp") &&
      a.ports.some((x) => {
        const [lo, hi] = portSpan(x);
        return p.dport >= lo && p.dport <= hi;
      }) &&
      inside(p.saddr, a.sources)
    )
      return { verdict: "accept", by: `network.input_allow "${a.name}"` };
  return { verdict: "drop", by: "the input chain's default drop on the public side" };
}
