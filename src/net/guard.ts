/**
 * Checks of a network policy against the live host, made at plan time (a plan with refusals is
 * not applied). Each refusal says what is wrong and how to fix it. Pure: they read the host only
 * through what `live.ts` returned.
 */
import ipaddr from "ipaddr.js";
import type { NetworkPolicy } from "../policy/index.ts";
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

/** Bridge ports against the links that exist (public interface, ports of other bridges). */
export function bridgeRefusals(_n: NetworkPolicy, _links: ReadonlyMap<string, LiveLink>): string[] {
  return [];
}

/** Every refusal of `n` on a host whose links are `links`. */
export function liveRefusals(n: NetworkPolicy, links: ReadonlyMap<string, LiveLink>): string[] {
  return [...vipRefusals(n, links), ...bridgeRefusals(n, links)];
}
