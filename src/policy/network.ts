/**
 * Checks of the policy's network section that span entries or the rest of the policy (contract
 * section 2; nft(8) for what the rendered rules can express; keepalived.conf(5) for VRRP). Pure:
 * they see the policy only. Checks against the live host (addresses, bridge ports) are made at
 * plan time by `net/`.
 *
 * Each area has its own function; `checkNetwork` runs them all. A finding is `[path, message]`,
 * the path pointing at the key to fix.
 */
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

const IPV6_NOT_YET = "IPv6 is not supported in the network section yet (IPv4 NAT only)";

function v6(path: Path, text: string): Finding[] {
  return parseCidr(text)[0].kind() === "ipv6" ? [[path, `${text}: ${IPV6_NOT_YET}`]] : [];
}

/** private_networks and the addresses of the section. */
export function checkAddresses(n: NetworkPolicy): Finding[] {
  return n.private_networks.flatMap((c, i) => v6(["network", "private_networks", i], c));
}

/** port_forwards: unique names and external keys, internal addresses inside private_networks. */
export function checkForwards(n: NetworkPolicy): Finding[] {
  const out: Finding[] = [];
  const unique = uniqueNames();
  const privates = n.private_networks.filter((c) => parseCidr(c)[0].kind() === "ipv4");
  const forwards = new Map<string, string>();
  n.port_forwards.forEach((f, i) => {
    const dup = unique(["network", "port_forwards", i, "name"], "port forward", f.name);
    if (dup) out.push(dup);
    const key = `${f.external_ip}:${f.external_port}/${f.protocol}`;
    const seen = forwards.get(key);
    if (seen) out.push([["network", "port_forwards", i, "external_port"], `${key} is forwarded twice (also by "${seen}")`]);
    else forwards.set(key, f.name);
    if (!insideAny(f.internal_ip, privates)) {
      out.push([
        ["network", "port_forwards", i, "internal_ip"],
        `internal_ip ${f.internal_ip} is not inside private_networks (${n.private_networks.join(", ") || "none"})`,
      ]);
    }
    out.push(...v6(["network", "port_forwards", i, "external_ip"], f.external_ip));
    f.sources.forEach((s, j) => {
      out.push(...v6(["network", "port_forwards", i, "sources", j], s));
    });
  });
  return out;
}

/** forward_allow (east-west): unique names. */
export function checkEastWest(n: NetworkPolicy): Finding[] {
  const out: Finding[] = [];
  const unique = uniqueNames();
  n.forward_allow.forEach((f, i) => {
    const dup = unique(["network", "forward_allow", i, "name"], "forward_allow", f.name);
    if (dup) out.push(dup);
    for (const c of [...f.from, ...f.to]) out.push(...v6(["network", "forward_allow", i], c));
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
 * ask; advert_interval keepalived can express; `state: MASTER` only with `preempt: true` (nopreempt
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
    if (v.state === "MASTER" && !v.preempt)
      out.push([
        at("state"),
        "state MASTER with preempt false (the default): keepalived's nopreempt needs state BACKUP; remove state (all nodes start as BACKUP and the highest priority wins) or set preempt: true",
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

/** `8080` or `"8000-8010"` → [first, last] (port ranges are strings). */
function portSpan(p: number | string): [number, number] {
  const m = /^(\d+)(?:-(\d+))?$/.exec(String(p).trim());
  if (!m) return [Number.NaN, Number.NaN];
  return [Number(m[1]), m[2] === undefined ? Number(m[1]) : Number(m[2])];
}

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
  const forwards = n.port_forwards as ReadonlyArray<{ external_ip?: string; external_port: number | string; protocol: string }>;
  forwards.forEach((f, i) => {
    const ext = f.external_ip === undefined ? undefined : bareAddress(f.external_ip);
    if (ext !== undefined && !publicAddrs.has(ext))
      out.push([
        ["network", "port_forwards", i, "external_ip"],
        `external_ip ${f.external_ip} is neither public_ip (${n.public_ip}) nor a VIP address${snat ? " nor snat_address" : ""}: no packet to it reaches this node. Fix: use ${n.public_ip}${vipAddresses[0] ? ` or ${vipAddresses[0]}` : ""}`,
      ]);
    if (f.protocol === "udp") return;
    const [lo, hi] = portSpan(f.external_port);
    for (const l of listeners) {
      const wildcard = l.host === "0.0.0.0" || l.host === "::";
      const sameHost = ext === undefined || (ipaddr.isValid(l.host) && bareAddress(l.host) === ext);
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
