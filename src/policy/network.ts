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

/** Every check of the network section (none when the policy has no network section). */
export function checkNetwork(policy: Policy): Finding[] {
  const n = policy.network;
  if (!n) return [];
  return [...checkAddresses(n), ...checkForwards(n), ...checkEastWest(n), ...checkBridges(n), ...checkVips(policy)];
}
