/**
 * Bridges and VLAN sub-interfaces: an ordered list of `ip` operations (ip-link(8), ip-address(8),
 * bridge(8)) with their undo, and the same bridges as an ifupdown2 snippet. Pure functions, no I/O:
 * the live host is passed in as `liveLinks` returned it.
 */
import ipaddr from "ipaddr.js";
import type { NetworkPolicy } from "../policy/index.ts";
import type { LiveLink } from "./live.ts";

/** One host operation with its inverse. `argv` are `ip` (or `bridge`) argument arrays. */
export interface LinkOp {
  readonly describe: string;
  readonly argv: readonly string[];
  readonly undo: readonly string[] | undefined;
  /** What must be true after it (used to decide whether the op is still needed). */
  readonly check: LinkCheck;
}

export type LinkCheck =
  | { readonly kind: "link-exists"; readonly name: string; readonly type?: string }
  | { readonly kind: "master"; readonly name: string; readonly master: string }
  | { readonly kind: "address"; readonly name: string; readonly cidr: string }
  | { readonly kind: "up"; readonly name: string }
  | { readonly kind: "absent"; readonly name: string }
  | { readonly kind: "no-master"; readonly name: string }
  | { readonly kind: "no-address"; readonly name: string; readonly cidr: string }
  | { readonly kind: "down"; readonly name: string };

/** Default VLANs of a VLAN-aware bridge's ports, as Proxmox VE writes them (`bridge-vids 2-4094`). */
export const DEFAULT_BRIDGE_VIDS: readonly (number | string)[] = ["2-4094"];

/** The bridge port name varco enslaves for `port` of bridge `b` (`eth1.30` for a `vlan: 30` bridge). */
export function bridgeMember(b: { vlan?: number | undefined }, port: string): string {
  return b.vlan !== undefined ? `${port}.${b.vlan}` : port;
}

/**
 * Bridges and VLAN sub-interfaces as ordered `ip` operations (bridge, link.vlan, master, VLANs,
 * address, up). Empty when `network.bridges_mode` is `render` (the host's ifupdown2 owns the links).
 * A `vlan_aware` bridge is created with `vlan_filtering 1` (ip-link(8)) and its ports carry `vids`
 * (`bridge vlan add dev PORT vid V`, bridge(8)).
 */
export function renderLinkOps(n: NetworkPolicy): LinkOp[] {
  const ops: LinkOp[] = [];
  if (n.bridges_mode === "render") return ops;
  for (const b of n.bridges) {
    ops.push({
      describe: `create ${b.vlan_aware ? "VLAN-aware " : ""}bridge ${b.name}`,
      argv: ["ip", "link", "add", "name", b.name, "type", "bridge", ...(b.vlan_aware ? ["vlan_filtering", "1"] : [])],
      undo: ["ip", "link", "del", b.name],
      check: { kind: "link-exists", name: b.name, type: "bridge" },
    });
    for (const port of b.ports) {
      const member = bridgeMember(b, port);
      if (b.vlan !== undefined) {
        ops.push({
          describe: `create VLAN ${b.vlan} on ${port} as ${member}`,
          argv: ["ip", "link", "add", "link", port, "name", member, "type", "vlan", "id", String(b.vlan)],
          undo: ["ip", "link", "del", member],
          check: { kind: "link-exists", name: member, type: "vlan" },
        });
      }
      ops.push({
        describe: `enslave ${member} to ${b.name}`,
        argv: ["ip", "link", "set", "dev", member, "master", b.name],
        undo: ["ip", "link", "set", "dev", member, "nomaster"],
        check: { kind: "master", name: member, master: b.name },
      });
      if (b.vlan_aware) {
        for (const vid of b.vids ?? DEFAULT_BRIDGE_VIDS) {
          ops.push({
            describe: `carry VLANs ${vid} on ${member}`,
            argv: ["bridge", "vlan", "add", "dev", member, "vid", String(vid)],
            undo: ["bridge", "vlan", "del", "dev", member, "vid", String(vid)],
            // Done together with the enslave (the live link listing does not show bridge VLANs).
            check: { kind: "master", name: member, master: b.name },
          });
        }
      }
      ops.push({
        describe: `bring ${member} up`,
        argv: ["ip", "link", "set", "dev", member, "up"],
        undo: undefined,
        check: { kind: "up", name: member },
      });
    }
    if (b.address) {
      ops.push({
        describe: `address ${b.address} on ${b.name}`,
        argv: ["ip", "address", "add", b.address, "dev", b.name],
        undo: ["ip", "address", "del", b.address, "dev", b.name],
        check: { kind: "address", name: b.name, cidr: b.address },
      });
    }
    ops.push({
      describe: `bring ${b.name} up`,
      argv: ["ip", "link", "set", "dev", b.name, "up"],
      undo: undefined,
      check: { kind: "up", name: b.name },
    });
  }
  return ops;
}

/** Whether `c` holds on a host whose links are `live` (as `liveLinks` returned them). */
export function linkCheckHolds(c: LinkCheck, live: ReadonlyMap<string, LiveLink>): boolean {
  const l = live.get(c.name);
  switch (c.kind) {
    case "link-exists":
      return l !== undefined;
    case "absent":
      return l === undefined;
    case "master":
      return l?.master === c.master;
    case "no-master":
      return l?.master === undefined;
    case "up":
      return Boolean(l?.flags?.includes("UP"));
    case "down":
      return !l?.flags?.includes("UP");
    case "address":
    case "no-address": {
      const [addr, len] = c.cidr.split("/");
      const has = Boolean(l?.addr_info?.some((a) => a.local === addr && String(a.prefixlen) === (len ?? "32")));
      return c.kind === "address" ? has : !has;
    }
  }
}

/**
 * `op` with its undo taken from the live host: undoing an enslave gives the port back to the master
 * it had before (`set master <old>`), not `nomaster`. Other operations are returned unchanged.
 */
export function withLiveUndo(op: LinkOp, live: ReadonlyMap<string, LiveLink>): LinkOp {
  if (op.check.kind !== "master" || op.argv[0] !== "ip") return op;
  const old = live.get(op.check.name)?.master;
  if (old === undefined || old === op.check.master) return op;
  return { ...op, undo: ["ip", "link", "set", "dev", op.check.name, "master", old] };
}

function isLinkLocal(addr: string): boolean {
  try {
    const a = ipaddr.parse(addr);
    return a.range() === "linkLocal";
  } catch {
    return false;
  }
}

/**
 * Operations that remove the links varco created (`owned`, from the previous generation) and the
 * policy no longer lists: a bridge is brought down, its addresses removed, its ports released, then
 * deleted; a VLAN sub-interface (`raw.id`) is deleted. Every step's undo rebuilds what it removed,
 * so a rollback gives the bridge back with its ports and addresses. Links varco did not create are
 * never in `owned`, so never removed.
 */
export function removedLinkOps(owned: readonly string[], n: NetworkPolicy, live: ReadonlyMap<string, LiveLink>): LinkOp[] {
  const ops: LinkOp[] = [];
  // In `render` mode varco touches no link, not even to remove one.
  if (n.bridges_mode === "render") return ops;
  const wanted = new Set(n.bridges.flatMap((b) => [b.name, ...b.ports.map((p) => bridgeMember(b, p))]));
  const gone = owned.filter((name) => !wanted.has(name) && live.has(name));
  const isBridge = (name: string) => live.get(name)?.linkinfo?.info_kind === "bridge";
  for (const name of gone.filter(isBridge)) {
    const l = live.get(name) as LiveLink;
    if (l.flags?.includes("UP")) {
      ops.push({
        describe: `bring ${name} down (removed from the policy)`,
        argv: ["ip", "link", "set", "dev", name, "down"],
        undo: ["ip", "link", "set", "dev", name, "up"],
        check: { kind: "down", name },
      });
    }
    for (const a of l.addr_info ?? []) {
      if (isLinkLocal(a.local)) continue;
      const cidr = `${a.local}/${a.prefixlen}`;
      ops.push({
        describe: `remove address ${cidr} from ${name}`,
        argv: ["ip", "address", "del", cidr, "dev", name],
        undo: ["ip", "address", "add", cidr, "dev", name],
        check: { kind: "no-address", name, cidr },
      });
    }
    for (const port of [...live.values()].filter((p) => p.master === name)) {
      ops.push({
        describe: `release ${port.ifname} from ${name}`,
        argv: ["ip", "link", "set", "dev", port.ifname, "nomaster"],
        undo: ["ip", "link", "set", "dev", port.ifname, "master", name],
        check: { kind: "no-master", name: port.ifname },
      });
    }
    const vlanFiltering = (l.linkinfo as { info_data?: { vlan_filtering?: number } } | undefined)?.info_data?.vlan_filtering === 1;
    ops.push({
      describe: `delete bridge ${name} (removed from the policy)`,
      argv: ["ip", "link", "del", name],
      undo: ["ip", "link", "add", "name", name, "type", "bridge", ...(vlanFiltering ? ["vlan_filtering", "1"] : [])],
      check: { kind: "absent", name },
    });
  }
  for (const name of gone.filter((x) => !isBridge(x))) {
    const m = /^(.+)\.(\d{1,4})$/.exec(name);
    ops.push({
      describe: `delete VLAN sub-interface ${name} (removed from the policy)`,
      argv: ["ip", "link", "del", name],
      undo: m ? ["ip", "link", "add", "link", m[1] as string, "name", name, "type", "vlan", "id", m[2] as string] : undefined,
      check: { kind: "absent", name },
    });
  }
  return ops;
}

/**
 * The links varco owns after an apply that ran `applied`: those it owned before and the policy
 * still lists, plus those `applied` created. A link that existed before varco is never owned.
 */
export function ownedLinks(before: readonly string[], n: NetworkPolicy, applied: readonly LinkOp[]): string[] {
  const removed = new Set(applied.filter((o) => o.check.kind === "absent").map((o) => o.check.name));
  const created = applied.filter((o) => o.check.kind === "link-exists").map((o) => o.check.name);
  const listed = new Set(n.bridges.flatMap((b) => [b.name, ...b.ports.map((p) => bridgeMember(b, p))]));
  return [...new Set([...before.filter((x) => listed.has(x) && !removed.has(x)), ...created])].sort();
}

/**
 * The same bridges as an ifupdown2 `/etc/network/interfaces` snippet, in the Proxmox VE style
 * (interfaces(5) as extended by ifupdown2: `bridge-ports`, `bridge-vlan-aware`, `bridge-vids`).
 */
export function renderInterfaces(n: NetworkPolicy): string {
  const out: string[] = ["# Generated by varco from the policy's network.bridges; paste into /etc/network/interfaces(.d)."];
  for (const b of n.bridges) {
    const ports = b.ports.map((p) => bridgeMember(b, p));
    if (b.vlan !== undefined) {
      for (const p of b.ports)
        out.push("", `auto ${p}.${b.vlan}`, `iface ${p}.${b.vlan} inet manual`, `\tvlan-raw-device ${p}`, `\tvlan-id ${b.vlan}`);
    }
    out.push("", `auto ${b.name}`, `iface ${b.name} inet ${b.address ? "static" : "manual"}`);
    if (b.address) out.push(`\taddress ${b.address}`);
    out.push(`\tbridge-ports ${ports.length > 0 ? ports.join(" ") : "none"}`, "\tbridge-stp off", "\tbridge-fd 0");
    if (b.vlan_aware) out.push("\tbridge-vlan-aware yes", `\tbridge-vids ${(b.vids ?? DEFAULT_BRIDGE_VIDS).join(" ")}`);
  }
  return `${out.join("\n")}\n`;
}
