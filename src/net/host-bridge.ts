/**
 * East-west where the traffic flows: VMs on the same host bridge talk through the bridge of the
 * node that owns it (the Proxmox VE host), never through the front-end's forward hook. This renders
 * an nftables `bridge`-family table for that node (nft(8), "BRIDGE FAMILY"; hook `forward` sees
 * every frame the bridge forwards from one port to another) that enforces `network.forward_allow`
 * between `network.private_networks` addresses, and applies it on its own: one `nft -f`
 * transaction that replaces `table bridge <network.table>` and nothing else (no generation: the
 * table is a pure function of the policy, so re-applying the previous policy is the rollback).
 *
 * Stateful (the default): `ct state established,related accept` needs bridge conntrack
 * (`nf_conntrack_bridge`, Linux ≥ 5.3, nft ≥ 0.9.3; Proxmox VE kernels have it). Stateless (kernels
 * without it): replies are accepted by the allow-list read backwards (source port), TCP replies only
 * when they are not a bare SYN, so the server side of an allowed pair cannot open connections back.
 */
import ipaddr from "ipaddr.js";
import type { NetworkPolicy } from "../policy/index.ts";
import type { CommandRunner } from "./runner.ts";

/** Rendering options. `stateful`: use bridge conntrack (default true). */
export interface HostBridgeOptions {
  readonly stateful?: boolean;
}

type Family = "ipv4" | "ipv6";
const familyOf = (cidr: string): Family => ipaddr.parse(cidr.split("/")[0] as string).kind() as Family;
const ipKw = (f: Family) => (f === "ipv4" ? "ip" : "ip6");
const addrType = (f: Family) => (f === "ipv4" ? "ipv4_addr" : "ipv6_addr");
const sfx = (f: Family) => (f === "ipv4" ? "4" : "6");

/**
 * The front-end's own addresses on the shared bridge: `network.host_bridge.gateway_addresses`, or
 * else the addresses of `network.bridges`. Traffic to or from them is not east-west.
 */
export function hostBridgeGatewayAddresses(n: NetworkPolicy): string[] {
  return n.host_bridge?.gateway_addresses ?? n.bridges.flatMap((b) => (b.address ? [b.address.split("/")[0] as string] : []));
}

function set(name: string, type: string, elements: readonly string[], interval: boolean): string[] {
  return [
    `\tset ${name} {`,
    `\t\ttype ${type}`,
    ...(interval ? ["\t\tflags interval"] : []),
    ...(elements.length > 0 ? [`\t\telements = { ${[...new Set(elements)].join(",\n\t\t\t     ")} }`] : []),
    "\t}",
    "",
  ];
}

/**
 * The nft script that replaces `table bridge <n.table>` with the east-west filter of `n`, as one
 * transaction: ARP and IPv6 neighbour discovery pass; frames between two `private_networks`
 * addresses pass only when `forward_allow` lists them (or they are to/from the front-end's own
 * addresses); the rest of them are dropped with a counter. Other frames (other addresses, non-IP)
 * pass untouched: the chain's policy is accept.
 */
export function renderHostBridge(n: NetworkPolicy, opts: HostBridgeOptions = {}): string {
  const t = n.table;
  const stateful = opts.stateful ?? true;
  const fams: Family[] = ["ipv4", "ipv6"];
  const privates = (f: Family) => n.private_networks.filter((c) => familyOf(c) === f);
  const gateways = (f: Family) => hostBridgeGatewayAddresses(n).filter((a) => familyOf(a) === f);
  const allow = (f: Family) =>
    n.forward_allow.flatMap((a) =>
      a.from
        .filter((c) => familyOf(c) === f)
        .flatMap((from) =>
          a.to
            .filter((c) => familyOf(c) === f)
            .flatMap((to) =>
              String(a.protocol)
                .split("+")
                .flatMap((proto) => a.ports.map((p) => `${from} . ${to} . ${proto} . ${String(p)}`)),
            ),
        ),
    );
  const active = fams.filter((f) => privates(f).length > 0);
  const lines: string[] = [`table bridge ${t}`, `delete table bridge ${t}`, `table bridge ${t} {`];
  for (const f of active) {
    lines.push(...set(`private${sfx(f)}`, addrType(f), privates(f), true));
    lines.push(...set(`gateway${sfx(f)}`, addrType(f), gateways(f), false));
    lines.push(...set(`east_west${sfx(f)}`, `${addrType(f)} . ${addrType(f)} . inet_proto . inet_service`, allow(f), true));
  }
  lines.push(
    "\tchain forward {",
    "\t\ttype filter hook forward priority filter; policy accept;",
    '\t\tether type arp accept comment "ARP"',
    '\t\tether type ip6 icmpv6 type { nd-router-solicit, nd-router-advert, nd-neighbor-solicit, nd-neighbor-advert, nd-redirect } accept comment "IPv6 neighbour discovery"',
  );
  if (stateful) lines.push("\t\tct state established,related accept", "\t\tct state invalid drop");
  for (const f of active) {
    const ip = ipKw(f);
    const s = sfx(f);
    const et = `ether type ${ip}`;
    lines.push(
      `\t\t${et} ${ip} saddr @gateway${s} accept comment "from the front-end"`,
      `\t\t${et} ${ip} daddr @gateway${s} accept comment "to the front-end"`,
      `\t\t${et} ${ip} saddr . ${ip} daddr . meta l4proto . th dport @east_west${s} accept comment "forward_allow"`,
    );
    if (!stateful) {
      lines.push(
        `\t\t${et} meta l4proto tcp tcp flags & (syn | ack) != syn ${ip} daddr . ${ip} saddr . meta l4proto . th sport @east_west${s} accept comment "forward_allow reply (stateless)"`,
        `\t\t${et} meta l4proto udp ${ip} daddr . ${ip} saddr . meta l4proto . th sport @east_west${s} accept comment "forward_allow reply (stateless)"`,
      );
    }
    lines.push(`\t\t${et} ${ip} saddr @private${s} ${ip} daddr @private${s} counter drop comment "east-west not in forward_allow"`);
  }
  lines.push("\t}", "}", "");
  return lines.join("\n");
}

/** The script that removes the host's bridge table. */
export function renderHostBridgeDelete(table: string): string {
  return `table bridge ${table}\ndelete table bridge ${table}\n`;
}

export interface HostBridgeApplyResult {
  readonly stateful: boolean;
  /** Why the stateless rendering was used (the kernel's answer to the stateful one), if it was. */
  readonly fallbackReason?: string;
}

/**
 * Applies the host's bridge table: one `nft -f -` transaction replacing `table bridge <n.table>`,
 * nothing else touched (the front-end's `inet` table, generations and links are not involved).
 * With `opts.stateful` undefined, the stateful rendering is checked first (`nft -c`, which asks the
 * kernel) and the stateless one is used when the kernel has no bridge conntrack.
 * @throws CommandError when nft refuses the table (nothing changed: a failed transaction is void).
 */
export async function applyHostBridge(r: CommandRunner, n: NetworkPolicy, opts: HostBridgeOptions = {}): Promise<HostBridgeApplyResult> {
  let stateful = opts.stateful ?? true;
  let fallbackReason: string | undefined;
  if (opts.stateful === undefined) {
    const check = await r.run(["nft", "-c", "-f", "-"], { input: renderHostBridge(n, { stateful: true }), allowFailure: true });
    if (check.exitCode !== 0) {
      stateful = false;
      fallbackReason = check.stderr.trim().split("\n")[0] ?? "nft -c failed";
    }
  }
  await r.run(["nft", "-f", "-"], { input: renderHostBridge(n, { stateful }) });
  return fallbackReason === undefined ? { stateful } : { stateful, fallbackReason };
}
