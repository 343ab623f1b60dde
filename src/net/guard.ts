/**
 * Checks of a network policy against the live host, made at plan time (a plan with refusals is
 * not applied). Each refusal says what is wrong and how to fix it. Pure: they read the host only
 * through what `live.ts` returned.
 */
import ipaddr from "ipaddr.js";
import type { NetworkPolicy } from "../policy/index.ts";
import { keepalivedHostRefusals } from "./keepalived.ts";
import { bridgeMember } from "./links.ts";
import type { LiveLink } from "./live.ts";
import type { CommandRunner } from "./runner.ts";

/**
 * VIPs against the node's own static addresses: keepalived adds a VIP when it becomes MASTER and
 * removes it on BACKUP/FAULT, so a VIP that is also a static address of the node takes that address
 * away (with the default route that used it). An address on a link cannot be told apart from one
 * keepalived added (`ip -j addr` shows no flag for either, keepalived 2.2.7), so `held` lists the
 * addresses the running keepalived holds by its installed config (`keepalivedHeld`): a VIP address
 * present on a link and not in `held` is static. Without `held` nothing is known about keepalived
 * and no live refusal is made (the static check in `policy check` still refuses public_ip).
 */
export function vipRefusals(n: NetworkPolicy, links: ReadonlyMap<string, LiveLink>, held?: ReadonlySet<string>): string[] {
  if (held === undefined) return [];
  const out: string[] = [];
  n.vips.forEach((v, i) => {
    for (const cidr of v.addresses) {
      const addr = normalise(cidr.split("/")[0] ?? cidr);
      if (held.has(addr)) continue;
      for (const link of links.values()) {
        if (!(link.addr_info ?? []).some((a) => normalise(a.local) === addr)) continue;
        out.push(
          `network.vips[${i}] (${v.instance}): ${addr} is already a static address of ${link.ifname}; keepalived would remove it on BACKUP/FAULT and take the node off the network. ` +
            `Fix: give the node its own address (network.public_ip, set statically) and use another address as the VIP, then remove ${addr} from ${link.ifname} (ip addr del ${addr}/${link.addr_info?.find((a) => normalise(a.local) === addr)?.prefixlen ?? 32} dev ${link.ifname}, and from the interface configuration)`,
        );
      }
    }
  });
  return out;
}

function normalise(ip: string): string {
  try {
    return ipaddr.process(ip).toString();
  } catch {
    return ip;
  }
}

/**
 * The VIP addresses the running keepalived may hold: those in the `virtual_ipaddress` blocks of
 * `network.keepalived.config_file` as installed, when the process in `pid_file` is alive
 * (`kill -0`, kill(1)). Empty when keepalived is not running. Reads through the runner.
 */
export async function keepalivedHeld(r: CommandRunner, n: NetworkPolicy): Promise<Set<string>> {
  const pid = (await r.readFile(n.keepalived.pid_file))?.trim();
  if (!pid || !/^\d+$/.test(pid)) return new Set();
  const alive = await r.run(["kill", "-0", pid], { allowFailure: true });
  if (alive.exitCode !== 0) return new Set();
  const conf = (await r.readFile(n.keepalived.config_file)) ?? "";
  const out = new Set<string>();
  for (const block of conf.matchAll(/virtual_ipaddress(?:_excluded)?\s*\{([^}]*)\}/g)) {
    for (const line of (block[1] ?? "").split("\n")) {
      const first = line.trim().split(/\s+/)[0]?.split("/")[0];
      if (first && ipaddr.isValid(first)) out.add(normalise(first));
    }
  }
  return out;
}

/** Addresses of a live link other than IPv6 link-local ones (every up link has one of those). */
function routableAddresses(l: LiveLink): string[] {
  return (l.addr_info ?? [])
    .filter((a) => {
      try {
        return ipaddr.parse(a.local).range() !== "linkLocal";
      } catch {
        return true;
      }
    })
    .map((a) => `${a.local}/${a.prefixlen}`);
}

/**
 * Bridge ports against the links that exist, so that an apply never takes a NIC from the host:
 * refused is a port that is the public interface, that is already enslaved to another bridge or a
 * bond (e.g. Proxmox's management bridge `vmbr0`), that is itself a bridge, or that carries
 * addresses (enslaving it removes them, and the routes through them: the management address, the
 * default route). A bridge name taken by a link that is not a bridge is refused too. A port that
 * is already a port of its own bridge is fine (re-apply). Nothing is checked in
 * `bridges_mode: render` (varco touches no link). Each refusal names the key and the fix.
 */
export function bridgeRefusals(n: NetworkPolicy, links: ReadonlyMap<string, LiveLink>): string[] {
  if (n.bridges_mode === "render") return [];
  const out: string[] = [];
  n.bridges.forEach((b, i) => {
    const key = `network.bridges[${i}]`;
    const self = links.get(b.name);
    const selfKind = self?.linkinfo?.info_kind;
    if (self && selfKind !== "bridge") {
      out.push(
        `${key}.name: ${b.name} exists on this host and is ${selfKind ? `a ${selfKind} link` : "not a bridge"}; choose another bridge name`,
      );
    }
    for (const port of b.ports) {
      const member = bridgeMember(b, port);
      const where = `${key}.ports: ${member}`;
      // ip-link(8) acts on a link by any of its names: resolve an altname to the link it names.
      const named = links.get(member) ?? [...links.values()].find((x) => x.altnames?.includes(member));
      const pub = links.get(n.public_interface) ?? [...links.values()].find((x) => x.altnames?.includes(n.public_interface));
      if (member === n.public_interface || (named !== undefined && named.ifname === pub?.ifname)) {
        out.push(
          `${where} is the public interface (network.public_interface); enslaving it would take the public address off the wire. Bridge another NIC`,
        );
        continue;
      }
      const l = named;
      if (!l) continue;
      if (l.master !== undefined && l.master !== b.name) {
        const kind = links.get(l.master)?.linkinfo?.info_kind ?? "link";
        out.push(
          `${where} is already a port of ${l.master} (a ${kind}); enslaving it to ${b.name} would take it from ${l.master} (on Proxmox VE, vmbr0 carries the management address). ` +
            `List a free NIC, or release it first (remove it from ${l.master}'s bridge-ports in /etc/network/interfaces, or \`ip link set dev ${member} nomaster\`)`,
        );
        continue;
      }
      if (l.linkinfo?.info_kind === "bridge") {
        out.push(`${where} is a bridge itself; a bridge port is a NIC, a VLAN sub-interface or a veth`);
        continue;
      }
      const addrs = routableAddresses(l);
      if (addrs.length > 0 && l.master !== b.name) {
        out.push(
          `${where} carries ${addrs.join(", ")}; enslaved, it would lose them and every route through them (the management address, the default route). ` +
            `Move the address to the bridge (${key}.address) by hand first, or bridge a NIC without addresses`,
        );
      }
    }
  });
  return out;
}

/**
 * `network.public_interface` given as an altname (ip-link(8) `altname`): nft's `iifname`/`oifname`
 * compare the link's name only, so the input chain, the inbound drop and outbound SNAT would never
 * match and the gateway would be unfiltered. Refused with the link's name to write instead.
 */
export function publicInterfaceRefusals(n: NetworkPolicy, links: ReadonlyMap<string, LiveLink>): string[] {
  if (links.has(n.public_interface)) return [];
  const l = [...links.values()].find((x) => x.altnames?.includes(n.public_interface));
  return l
    ? [
        `network.public_interface: ${n.public_interface} is an altname of ${l.ifname}; nft matches interface names only, so no rule would ever match it (the gateway would be unfiltered). Write public_interface: ${l.ifname}`,
      ]
    : [];
}

/**
 * Every refusal of `n` on this host: VIPs that are static addresses (`links`, and the VIPs the
 * running keepalived holds), bridge ports, and the keepalived files (main config including
 * varco's file, notify scripts), read through `r`.
 */
export async function liveRefusals(r: CommandRunner, n: NetworkPolicy, links: ReadonlyMap<string, LiveLink>): Promise<string[]> {
  const [held, keepalived] = await Promise.all([keepalivedHeld(r, n), keepalivedHostRefusals(n, (f) => r.readFile(f))]);
  return [...publicInterfaceRefusals(n, links), ...vipRefusals(n, links, held), ...bridgeRefusals(n, links), ...keepalived];
}
