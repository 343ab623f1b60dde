/**
 * Checks of the policy's network section that span entries or the rest of the policy (contract
 * section 2; nft(8) for what the rendered rules can express; keepalived.conf(5) for VRRP). Pure:
 * they see the policy only. Checks against the live host (addresses, bridge ports) are made at
 * plan time by `net/`.
 *
 * Each area has its own function; `checkNetwork` runs them all. A finding is `[path, message]`,
 * the path pointing at the key to fix.
 */
import { isIP } from "node:net";
import ipaddr from "ipaddr.js";
import type { NetworkPolicy, Policy } from "./schema.ts";

/** A key path inside the policy, e.g. `["network", "vips", 0, "addresses"]`. */
export type Path = readonly PropertyKey[];
/** One finding: where, and what is wrong (with the fix when there is one). */
export type Finding = [Path, string];

/** `a.b.c.d[/len]` or an IPv6 address with an optional prefix, parsed. A bare address has a host prefix. */
export function parseCidr(text: string): [ipaddr.IPv4 | ipaddr.IPv6, number] {
  if (text.includes("/")) return ipaddr.parseCIDR(text);
  const a = ipaddr.parse(text);
  return [a, a.kind() === "ipv4" ? 32 : 128];
}

/** Whether address `ip` lies inside one of `cidrs` (same family only). */
export function insideAny(ip: string, cidrs: readonly string[]): boolean {
  const a = ipaddr.parse(ip);
  return cidrs.map(parseCidr).some(([net, len]) => a.kind() === net.kind() && a.match(net, len));
}

/** Names must be unique per kind across the section. */
function uniqueNames(): (path: Path, kind: string, name: string) => Finding | undefined {
  const names = new Map<string, string>();
  return (path, kind, name) => {
    const seen = names.get(`${kind}:${name}`);
    if (seen) return [path, `duplicate ${kind} name "${name}" (also at ${seen})`];
    names.set(`${kind}:${name}`, path.join("."));
    return undefined;
  };
}

/** Address family of an address or CIDR text. */
export function family(text: string): "ipv4" | "ipv6" {
  return isIP(text.split("/")[0] ?? text) === 6 ? "ipv6" : "ipv4";
}

const FAMILY_NAME = { ipv4: "IPv4", ipv6: "IPv6" } as const;

/**
 * The inclusive span `[low, high]` of a port (`8080`) or a range (`"8000-8010"`), as the schema
 * validated them. Throws on text the schema would have refused.
 */
export function portSpan(v: number | string): [number, number] {
  if (typeof v === "number") return [v, v];
  const m = /^(\d{1,5})(?:-(\d{1,5}))?$/.exec(v);
  if (!m) throw new Error(`not a port or port range: ${v}`);
  return [Number(m[1]), Number(m[2] ?? m[1])];
}

/** A port span as nft(8) writes it: `8080` or `8000-8010`. */
export function spanText([lo, hi]: readonly [number, number]): string {
  return lo === hi ? String(lo) : `${lo}-${hi}`;
}

/** The protocols a `protocol` key stands for (`tcp+udp` is both). */
export function protocols(p: "tcp" | "udp" | "tcp+udp"): ("tcp" | "udp")[] {
  return p === "tcp+udp" ? ["tcp", "udp"] : [p];
}

/** The longest shifted port range (internal range ≠ external range): it is rendered port by port. */
export const MAX_SHIFTED_RANGE = 4096;

type Forward = NetworkPolicy["port_forwards"][number];

/**
 * The node's public IPv4 address as seen from outside: the first IPv4 address of a VIP on
 * `public_interface`, else `public_ip`. It is the default `external_ip` of IPv4 forwards and the
 * default SNAT source.
 */
export function publicAddress(n: NetworkPolicy): string {
  for (const v of n.vips) {
    if (v.interface !== n.public_interface) continue;
    const a = v.addresses.map((c) => c.split("/")[0] ?? c).find((c) => family(c) === "ipv4");
    if (a) return a;
  }
  return n.public_ip;
}

/** The source address outbound SNAT writes: `snat_address`, else {@link publicAddress}. */
export function snatSource(n: NetworkPolicy): string {
  return n.snat_address ?? publicAddress(n);
}

/** A forward is IPv6 (routed, no NAT) when its internal_ip is IPv6. */
export function forwardFamily(f: Forward): "ipv4" | "ipv6" {
  return family(f.internal_ip);
}

/** The address an IPv4 forward is reached on (written or {@link publicAddress}); undefined for routed IPv6 forwards. */
export function forwardExternalIp(n: NetworkPolicy, f: Forward): string | undefined {
  if (forwardFamily(f) === "ipv6") return undefined;
  return f.external_ip ?? publicAddress(n);
}

/** Whether a forward admits every source (no `sources`, or `0.0.0.0/0` / `::/0` among them). */
export function forwardIsOpen(f: Forward): boolean {
  return f.sources === undefined || f.sources.some((s) => s === "0.0.0.0/0" || s === "::/0");
}

/** private_networks (IPv4 and IPv6) and the SNAT source. */
export function checkAddresses(n: NetworkPolicy): Finding[] {
  const out: Finding[] = [];
  if (n.snat_address !== undefined && family(n.snat_address) !== "ipv4") {
    out.push([
      ["network", "snat_address"],
      `snat_address ${n.snat_address} is IPv6: SNAT is IPv4 only (IPv6 is routed, not translated); write an IPv4 address of public_interface`,
    ]);
  } else if (n.masquerade && family(snatSource(n)) !== "ipv4") {
    out.push([
      ["network", "masquerade"],
      `masquerade needs an IPv4 source address: public_ip ${n.public_ip} is IPv6 and no VIP on ${n.public_interface} has an IPv4 address; set network.snat_address or masquerade: false`,
    ]);
  }
  return out;
}

/**
 * port_forwards: unique names; no external (address, protocol, port) forwarded twice, ranges
 * included; internal addresses inside private_networks of their family; one family per forward
 * (internal_ip, external_ip, sources); internal_port omitted or of the external span's length;
 * IPv6 forwards routed (no external_ip, no port translation).
 */
export function checkForwards(n: NetworkPolicy): Finding[] {
  const out: Finding[] = [];
  const unique = uniqueNames();
  const spans = new Map<string, { lo: number; hi: number; name: string; i: number; text: string }[]>();
  const parsed = n.private_networks.map((c) => ({ text: c, net: parseCidr(c) }));
  const privatesOf = { ipv4: parsed.filter((p) => p.net[0].kind() === "ipv4"), ipv6: parsed.filter((p) => p.net[0].kind() === "ipv6") };
  n.port_forwards.forEach((f, i) => {
    const at = (...k: PropertyKey[]): Path => ["network", "port_forwards", i, ...k];
    const dup = unique(at("name"), "port forward", f.name);
    if (dup) out.push(dup);
    const fam = forwardFamily(f);
    const ext = portSpan(f.external_port);
    if (f.internal_port !== undefined) {
      const int = portSpan(f.internal_port);
      if (int[1] - int[0] !== ext[1] - ext[0]) {
        out.push([
          at("internal_port"),
          `internal_port ${f.internal_port} does not match external_port ${f.external_port}: a range maps onto a range of the same length (or omit internal_port to keep the ports)`,
        ]);
      } else if (fam === "ipv6" && int[0] !== ext[0]) {
        out.push([
          at("internal_port"),
          `an IPv6 forward is routed, not translated: internal_port must equal external_port ${f.external_port} (or be omitted)`,
        ]);
      } else if (int[0] !== ext[0] && ext[1] - ext[0] + 1 > MAX_SHIFTED_RANGE) {
        out.push([
          at("internal_port"),
          `a range mapped onto other ports is rendered port by port and may span at most ${MAX_SHIFTED_RANGE} ports: omit internal_port (same ports) or split the forward`,
        ]);
      }
    }
    let dest: string;
    if (fam === "ipv6") {
      dest = f.internal_ip;
      if (f.external_ip !== undefined) {
        out.push([
          at("external_ip"),
          `IPv6 forwards are routed, not NATed: remove external_ip (${f.external_ip}); the port opens on internal_ip ${f.internal_ip} itself`,
        ]);
      }
    } else {
      dest = forwardExternalIp(n, f) ?? n.public_ip;
      if (family(dest) !== "ipv4") {
        out.push([
          at(f.external_ip === undefined ? "internal_ip" : "external_ip"),
          f.external_ip === undefined
            ? `IPv4 forward without external_ip, and the default (public_ip ${n.public_ip}) is IPv6: set external_ip to an IPv4 address`
            : `external_ip ${f.external_ip} is IPv6 but internal_ip ${f.internal_ip} is IPv4: one forward is one family (IPv6 forwards are routed: give an IPv6 internal_ip and no external_ip)`,
        ]);
      }
    }
    (f.sources ?? []).forEach((s, j) => {
      if (family(s) !== fam) {
        out.push([
          at("sources", j),
          `source ${s} is ${FAMILY_NAME[family(s)]} but this forward is ${FAMILY_NAME[fam]} (internal_ip ${f.internal_ip}): one forward is one family; write a second forward for the other family`,
        ]);
      }
    });
    const privates = privatesOf[fam];
    const inside = ipaddr.parse(f.internal_ip);
    if (!privates.some((p) => inside.kind() === p.net[0].kind() && inside.match(p.net))) {
      out.push([
        at("internal_ip"),
        `internal_ip ${f.internal_ip} is not inside private_networks (${privates.map((p) => p.text).join(", ") || `no ${FAMILY_NAME[fam]} entry`}): add its network to private_networks`,
      ]);
    }
    for (const p of protocols(f.protocol)) {
      const key = `${dest}/${p}`;
      const list = spans.get(key) ?? [];
      list.push({ lo: ext[0], hi: ext[1], name: f.name, i, text: spanText(ext) });
      spans.set(key, list);
    }
  });
  for (const [key, list] of spans) {
    const [dest, proto] = key.split("/") as [string, string];
    const show = (t: string) => `${dest.includes(":") ? `[${dest}]` : dest}:${t}/${proto}`;
    list.sort((a, b) => a.lo - b.lo || a.i - b.i);
    let widest = list[0];
    for (const s of list.slice(1)) {
      if (widest && s.lo <= widest.hi) {
        const later = s.i > widest.i ? s : widest;
        const other = later === s ? widest : s;
        out.push([
          ["network", "port_forwards", later.i, "external_port"],
          later.text === other.text
            ? `${show(later.text)} is forwarded twice (also by "${other.name}")`
            : `${show(later.text)} overlaps ${show(other.text)} of "${other.name}": one port goes to one place`,
        ]);
      }
      if (!widest || s.hi > widest.hi) widest = s;
    }
  }
  return out;
}

/** forward_allow (east-west): unique names; one address family per entry. */
export function checkEastWest(n: NetworkPolicy): Finding[] {
  const out: Finding[] = [];
  const unique = uniqueNames();
  n.forward_allow.forEach((f, i) => {
    const dup = unique(["network", "forward_allow", i, "name"], "forward_allow", f.name);
    if (dup) out.push(dup);
    const fams = new Set([...f.from, ...f.to].map(family));
    if (fams.size > 1) {
      out.push([
        ["network", "forward_allow", i],
        `forward_allow "${f.name}" mixes IPv4 and IPv6 addresses in from/to: one entry is one family; split it into an IPv4 and an IPv6 entry`,
      ]);
    }
  });
  return out;
}

/** bridges: unique names. */
export function checkBridges(n: NetworkPolicy): Finding[] {
  const out: Finding[] = [];
  const unique = uniqueNames();
  n.bridges.forEach((b, i) => {
    const dup = unique(["network", "bridges", i, "name"], "bridge", b.name);
    if (dup) out.push(dup);
  });
  return out;
}

/** vips: unique instances and virtual_router_id per interface; a health check needs something to ask. */
export function checkVips(policy: Policy): Finding[] {
  const n = policy.network;
  if (!n) return [];
  const out: Finding[] = [];
  const unique = uniqueNames();
  const vrids = new Map<string, string>();
  n.vips.forEach((v, i) => {
    const dup = unique(["network", "vips", i, "instance"], "VRRP instance", v.instance);
    if (dup) out.push(dup);
    const key = `${v.interface}/${v.virtual_router_id}`;
    const seen = vrids.get(key);
    if (seen)
      out.push([
        ["network", "vips", i, "virtual_router_id"],
        `virtual_router_id ${v.virtual_router_id} is used twice on ${v.interface} (also by ${seen})`,
      ]);
    else vrids.set(key, v.instance);
    if (v.track_gateway_health && !policy.gateway.metrics_listen && !n.keepalived.health_command) {
      out.push([
        ["network", "vips", i, "track_gateway_health"],
        "track_gateway_health needs gateway.metrics_listen (the /healthz the check asks) or network.keepalived.health_command",
      ]);
    }
  });
  return out;
}

/** Every check of the network section (none when the policy has no network section). */
export function checkNetwork(policy: Policy): Finding[] {
  const n = policy.network;
  if (!n) return [];
  return [...checkAddresses(n), ...checkForwards(n), ...checkEastWest(n), ...checkBridges(n), ...checkVips(policy)];
}
