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
