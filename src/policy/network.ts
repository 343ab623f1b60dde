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
import { parseHostPort } from "./units.ts";

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

/**
 * bridges: unique names; a bridge is not the public interface; a port is not the public interface,
 * not a bridge of the policy and in one bridge only; `vids` only with `vlan_aware`, which excludes
 * `vlan`; a bridge's subnet and host_bridge.gateway_addresses inside private_networks (east-west
 * filtering is defined on private_networks). Ports against the live host are checked at plan time.
 */
export function checkBridges(n: NetworkPolicy): Finding[] {
  const out: Finding[] = [];
  const unique = uniqueNames();
  const names = new Set(n.bridges.map((b) => b.name));
  const portOwner = new Map<string, string>();
  n.bridges.forEach((b, i) => {
    const at = (...k: PropertyKey[]): Path => ["network", "bridges", i, ...k];
    const dup = unique(at("name"), "bridge", b.name);
    if (dup) out.push(dup);
    if (b.name === n.public_interface)
      out.push([at("name"), `bridge ${b.name} is network.public_interface; give the bridge its own name (e.g. vmbr1)`]);
    b.ports.forEach((port, j) => {
      const member = b.vlan !== undefined ? `${port}.${b.vlan}` : port;
      if (b.vlan === undefined && port === n.public_interface)
        out.push([
          at("ports", j),
          `${port} is network.public_interface: enslaved, it would take the public address off the wire; bridge another NIC`,
        ]);
      if (names.has(port))
        out.push([at("ports", j), `${port} is a bridge of this policy; a bridge port is a NIC, a VLAN sub-interface or a veth`]);
      const seen = portOwner.get(member);
      if (seen !== undefined && seen !== b.name)
        out.push([at("ports", j), `${member} is a port of bridge ${seen} too; a port belongs to one bridge`]);
      else portOwner.set(member, b.name);
    });
    if (b.vids !== undefined && !b.vlan_aware)
      out.push([at("vids"), "vids needs vlan_aware: true (VLANs the ports of a VLAN-aware bridge carry)"]);
    if (b.vlan_aware && b.vlan !== undefined)
      out.push([
        at("vlan_aware"),
        "vlan (the bridge carries one VLAN from tagged sub-interfaces) and vlan_aware (the VMs tag their traffic) exclude each other; keep one",
      ]);
    if (b.address && !insideAny(parseCidr(b.address)[0].toString(), n.private_networks)) {
      out.push([
        at("address"),
        `${b.address} is not inside private_networks (${n.private_networks.join(", ") || "none"}); add its subnet to network.private_networks`,
      ]);
    }
  });
  (n.host_bridge?.gateway_addresses ?? []).forEach((a, i) => {
    if (!insideAny(a, n.private_networks))
      out.push([
        ["network", "host_bridge", "gateway_addresses", i],
        `${a} is not inside private_networks (${n.private_networks.join(", ") || "none"}); list the front-end's addresses on the shared bridge`,
      ]);
  });
  return out;
}

/**
 * Why keepalived cannot express an advertisement interval of `ms` milliseconds as written, or
 * undefined when it can. keepalived 2.2.7 rounds a VRRPv2 interval to whole seconds and a VRRPv3
 * interval to 10 ms steps, and clamps VRRPv3 to 40.95 s (RFC 3768 §5.3.7: 8-bit seconds; RFC 5798
 * §5.2.7: 12-bit centiseconds); varco refuses instead of letting it change the timing silently.
 */
export function advertIntervalProblem(ms: number, version: 2 | 3): string | undefined {
  if (version === 2) {
    if (ms % 1000 !== 0 || ms < 1000 || ms > 255_000)
      return `${ms} ms cannot be expressed in VRRPv2, which counts whole seconds from 1s to 255s: use e.g. 1s, or set network.keepalived.vrrp_version: 3 for sub-second adverts`;
    return undefined;
  }
  if (ms % 10 !== 0 || ms < 10 || ms > 40_950)
    return `${ms} ms cannot be expressed in VRRPv3, which counts 10 ms steps from 10ms to 40950ms: use a multiple of 10ms in that range`;
  return undefined;
}

/**
 * vips: unique instances and virtual_router_id per interface; a health check needs something to
 * ask; advert_interval keepalived can express; `state: MASTER` only with `nopreempt: false` (nopreempt
 * needs BACKUP, keepalived.conf(5)); auth only with VRRPv2 (RFC 5798 has none); unicast peers of the
 * VIP's family, not the node's own unicast_src_ip; sync_group only with several VIPs.
 */
export function checkVips(policy: Policy): Finding[] {
  const n = policy.network;
  if (!n) return [];
  const out: Finding[] = [];
  const unique = uniqueNames();
  const vrids = new Map<string, string>();
  const version = n.keepalived.vrrp_version;
  n.vips.forEach((v, i) => {
    const at = (...k: PropertyKey[]): Path => ["network", "vips", i, ...k];
    const dup = unique(at("instance"), "VRRP instance", v.instance);
    if (dup) out.push(dup);
    const key = `${v.interface}/${v.virtual_router_id}`;
    const seen = vrids.get(key);
    if (seen)
      out.push([at("virtual_router_id"), `virtual_router_id ${v.virtual_router_id} is used twice on ${v.interface} (also by ${seen})`]);
    else vrids.set(key, v.instance);
    if (v.track_gateway_health && !policy.gateway.metrics_listen && !n.keepalived.health_command) {
      out.push([
        at("track_gateway_health"),
        "track_gateway_health needs gateway.metrics_listen (the /livez the check asks) or network.keepalived.health_command",
      ]);
    }
    const adv = advertIntervalProblem(v.advert_interval, version);
    if (adv) out.push([at("advert_interval"), adv]);
    if (v.state === "MASTER" && v.nopreempt)
      out.push([
        at("state"),
        "state MASTER with nopreempt (the default): keepalived's nopreempt needs state BACKUP; remove state (all nodes start as BACKUP and the highest priority wins) or set nopreempt: false",
      ]);
    if (v.auth_pass_file && version === 3)
      out.push([
        at("auth_pass_file"),
        "VRRPv3 has no authentication (RFC 5798) and keepalived ignores it: remove auth_pass_file or set network.keepalived.vrrp_version: 2",
      ]);
    const family = parseCidr(v.addresses[0] as string)[0].kind();
    v.unicast_peers.forEach((p, j) => {
      if (parseCidr(p)[0].kind() !== family)
        out.push([
          at("unicast_peers", j),
          `${p} is not of the VIP's address family (${family}); VRRP adverts go to peers of the same family`,
        ]);
      if (p === v.unicast_src_ip) out.push([at("unicast_peers", j), `${p} is this node's unicast_src_ip; list the other nodes only`]);
    });
    if (v.unicast_src_ip && v.unicast_peers.length === 0)
      out.push([
        at("unicast_src_ip"),
        "unicast_src_ip without unicast_peers: list the other nodes in unicast_peers (or remove unicast_src_ip for multicast)",
      ]);
  });
  if (n.keepalived.sync_group === true && n.vips.length < 2)
    out.push([["network", "keepalived", "sync_group"], "a vrrp_sync_group needs at least two VIPs: remove sync_group"]);
  return out;
}

const bareAddress = (cidr: string) => ipaddr.process(cidr.split("/")[0] ?? cidr).toString();

/**
 * Guard rails that keep the node reachable and its rules meaningful (contract section 2):
 * - a VIP address equal to `public_ip` (keepalived removes a VIP on BACKUP/FAULT: the node would
 *   lose its own address and its default route);
 * - a bridge port that is `public_interface` (enslaving it moves the public address off the link);
 * - a port forward (DNAT in prerouting wins over the gateway's socket) on the gateway's own
 *   `gateway.listen` or `gateway.metrics_listen` port, on the same address or a wildcard listener,
 *   a port range containing it included (forwards are TCP unless `udp`);
 * - an `external_ip` that is none of the node's public addresses (`public_ip`, a VIP address,
 *   `snat_address`): the DNAT would never see a packet;
 * - a bridge `address` whose subnet is not inside `private_networks` (masquerade, east-west and the
 *   inbound drop all key on private_networks: that bridge would be outside all of them).
 */
export function checkGuards(policy: Policy): Finding[] {
  const n = policy.network;
  if (!n) return [];
  const out: Finding[] = [];
  const snat = (n as { snat_address?: string }).snat_address;
  const vipAddresses = n.vips.flatMap((v) => v.addresses.map(bareAddress));
  const publicIp = bareAddress(n.public_ip);
  n.vips.forEach((v, i) => {
    v.addresses.forEach((a, j) => {
      if (bareAddress(a) === publicIp)
        out.push([
          ["network", "vips", i, "addresses", j],
          `${a}: public_ip is the node's own static address; a VIP must be another address (keepalived removes the VIP on BACKUP/FAULT and the node would lose ${n.public_ip}). Fix: give each node its own public_ip and make the VIP a further address of the same subnet`,
        ]);
    });
  });
  n.bridges.forEach((b, i) => {
    b.ports.forEach((port, j) => {
      if (port === n.public_interface)
        out.push([
          ["network", "bridges", i, "ports", j],
          `${port} is network.public_interface: enslaving it to ${b.name} would move the public address off the link. Fix: use another NIC as the bridge port, or make the bridge the public interface on the host`,
        ]);
    });
    if (b.address) {
      const [net, len] = parseCidr(b.address);
      const within = n.private_networks.map(parseCidr).some(([p, plen]) => p.kind() === net.kind() && len >= plen && net.match(p, plen));
      if (!within)
        out.push([
          ["network", "bridges", i, "address"],
          `${b.address}: the bridge's subnet is not inside private_networks (${n.private_networks.join(", ") || "none"}); masquerade, east-west filtering and the inbound drop would not cover it. Fix: add its subnet to network.private_networks or change the address`,
        ]);
    }
  });
  const listeners: Array<{ key: string; host: string; port: number }> = [
    ...policy.gateway.listen.flatMap((l) => {
      const hp = parseHostPort(l);
      return hp ? [{ key: "gateway.listen", ...hp }] : [];
    }),
    ...(() => {
      const hp = policy.gateway.metrics_listen ? parseHostPort(policy.gateway.metrics_listen) : undefined;
      return hp ? [{ key: "gateway.metrics_listen", ...hp }] : [];
    })(),
  ];
  const publicAddrs = new Set([publicIp, ...vipAddresses, ...(snat ? [bareAddress(snat)] : [])]);
  n.port_forwards.forEach((f, i) => {
    // A routed IPv6 forward opens a port on the VM's own address: it cannot capture the gateway's.
    if (forwardFamily(f) === "ipv6") return;
    const ext = bareAddress(forwardExternalIp(n, f) ?? n.public_ip);
    if (f.external_ip !== undefined && !publicAddrs.has(ext))
      out.push([
        ["network", "port_forwards", i, "external_ip"],
        `external_ip ${f.external_ip} is neither public_ip (${n.public_ip}) nor a VIP address${snat ? " nor snat_address" : ""}: no packet to it reaches this node. Fix: use ${n.public_ip}${vipAddresses[0] ? ` or ${vipAddresses[0]}` : ""}`,
      ]);
    if (f.protocol === "udp") return;
    const [lo, hi] = portSpan(f.external_port);
    for (const l of listeners) {
      const wildcard = l.host === "0.0.0.0" || l.host === "::";
      const sameHost = ipaddr.isValid(l.host) && bareAddress(l.host) === ext;
      if (!(wildcard || sameHost) || l.port < lo || l.port > hi) continue;
      out.push([
        ["network", "port_forwards", i, "external_port"],
        `${f.external_ip ?? "the default external_ip"}:${f.external_port}/tcp is the gateway's own ${l.key} (${l.host}:${l.port}): the forward would capture every connection to it and lock the gateway out. Fix: choose another external_port, or move ${l.key}`,
      ]);
    }
  });
  return out;
}

/** Every check of the network section (none when the policy has no network section). */
export function checkNetwork(policy: Policy): Finding[] {
  const n = policy.network;
  if (!n) return [];
  return [...checkAddresses(n), ...checkForwards(n), ...checkEastWest(n), ...checkBridges(n), ...checkVips(policy), ...checkGuards(policy)];
}
