/**
 * What the host has now, read through the CommandRunner: links with their masters, flags and
 * addresses (`ip -j -d addr show`, ip-address(8)).
 */
import type { CommandRunner } from "./runner.ts";

/** One link as `ip -j -d addr show` prints it (the fields varco reads). */
export interface LiveLink {
  ifname: string;
  /** Alternative names (ip-link(8) `property add altname`); `ip link set ALTNAME …` acts on the link. */
  altnames?: string[];
  master?: string;
  flags?: string[];
  operstate?: string;
  addr_info?: Array<{ local: string; prefixlen: number }>;
  linkinfo?: { info_kind?: string };
}

/** Links of the host (or namespace) by name; empty when `ip` fails. */
export async function liveLinks(r: CommandRunner): Promise<Map<string, LiveLink>> {
  const res = await r.run(["ip", "-j", "-d", "addr", "show"], { allowFailure: true });
  const list = res.exitCode === 0 && res.stdout.trim() ? (JSON.parse(res.stdout) as LiveLink[]) : [];
  return new Map(list.map((l) => [l.ifname, l]));
}
