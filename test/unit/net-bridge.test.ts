/**
 * Bridges without fighting the host: plan-time refusals of bridge ports taken from the host, the
 * undo of an enslave, removed bridges, VLAN-aware bridges, and the host's bridge-family table.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import {
  bridgeRefusals,
  createRecordingRunner,
  desiredState,
  type LiveLink,
  ownedLinks,
  plan,
  removedLinkOps,
  renderHostBridge,
  renderInterfaces,
  renderLinkOps,
  withLiveUndo,
} from "../../src/net/index.ts";
import { networkIssues, networkOf } from "../helpers/network-policy.ts";

const OPTS = { gateway: "{}" };
const net = (text: string) => networkOf(text, OPTS);
const issues = (text: string) => networkIssues(text, OPTS);
const links = (list: LiveLink[]) => new Map(list.map((l) => [l.ifname, l]));

/** A Proxmox-like host: vmbr0 (management) holds eno1; eno2 is free; eno3 carries an address. */
const HOST = links([
  { ifname: "eth0", flags: ["UP"], addr_info: [{ local: "203.0.113.10", prefixlen: 24 }] },
  { ifname: "vmbr0", flags: ["UP"], linkinfo: { info_kind: "bridge" }, addr_info: [{ local: "192.0.2.2", prefixlen: 24 }] },
  { ifname: "eno1", master: "vmbr0", flags: ["UP"], addr_info: [{ local: "fe80::1", prefixlen: 64 }] },
  { ifname: "eno2", flags: ["UP"], addr_info: [{ local: "fe80::2", prefixlen: 64 }] },
  { ifname: "eno3", flags: ["UP"], addr_info: [{ local: "198.51.100.7", prefixlen: 24 }] },
  { ifname: "bond0", flags: ["UP"], linkinfo: { info_kind: "bond" } },
  { ifname: "eno4", master: "bond0", flags: ["UP"] },
]);

describe("bridge ports against the live host (plan time)", () => {
  it("refuses a port enslaved to another bridge or a bond, with the fix", () => {
    const r = bridgeRefusals(net("  bridges:\n    - { name: vmbr1, ports: [eno1, eno4] }\n"), HOST);
    expect(r).toHaveLength(2);
    expect(r[0]).toMatch(/^network\.bridges\[0\]\.ports: eno1 is already a port of vmbr0 \(a bridge\)/);
    expect(r[0]).toContain("ip link set dev eno1 nomaster");
    expect(r[1]).toMatch(/eno4 is already a port of bond0 \(a bond\)/);
  });

  it("refuses the public interface and a port that carries addresses; link-local alone is fine", () => {
    // (policy check already refuses the public interface as a port; the live check holds on its own too)
    const n = { ...net("  bridges:\n    - { name: vmbr1, ports: [eno9, eno3, eno2] }\n"), public_interface: "eno9" };
    const r = bridgeRefusals(n, HOST);
    expect(r).toHaveLength(2);
    expect(r[0]).toMatch(/eno9 is the public interface/);
    expect(r[1]).toMatch(/eno3 carries 198\.51\.100\.7\/24; .*default route/);
  });

  it("accepts a re-apply (the port is already on its own bridge) and checks nothing in render mode", () => {
    const live = links([...HOST.values(), { ifname: "vmbr1", linkinfo: { info_kind: "bridge" } }, { ifname: "eno5", master: "vmbr1" }]);
    expect(bridgeRefusals(net("  bridges:\n    - { name: vmbr1, ports: [eno5] }\n"), live)).toEqual([]);
    expect(bridgeRefusals(net("  bridges_mode: render\n  bridges:\n    - { name: vmbr1, ports: [eno1] }\n"), HOST)).toEqual([]);
  });

  it("refuses a bridge name taken by a link that is not a bridge, and a bridge as a port", () => {
    const r = bridgeRefusals(net("  bridges:\n    - { name: bond0, ports: [] }\n    - { name: vmbr1, ports: [vmbr0] }\n"), HOST);
    expect(r.join("\n")).toMatch(/network\.bridges\[0\]\.name: bond0 exists on this host and is a bond link/);
    expect(r.join("\n")).toMatch(/network\.bridges\[1\]\.ports: vmbr0 is already a port of|vmbr0 is a bridge itself/);
  });

  it("a plan against that host carries the refusal (the old plan only said '+ enslave')", async () => {
    const dir = mkdtempSync(join(tmpdir(), "varco-plan-"));
    const runner = createRecordingRunner([
      { prefix: ["ip", "-j", "-d", "addr", "show"], result: { stdout: JSON.stringify([...HOST.values()]), stderr: "", exitCode: 0 } },
    ]);
    const n = net("  bridges:\n    - { name: vmbr1, ports: [eno1] }\n");
    const p = await plan(runner, desiredState(n, { authPass: {}, healthCommand: "true" }), dir);
    expect(p.refusals.join("\n")).toContain("eno1 is already a port of vmbr0");
    // Defence in depth: the enslave's undo gives eno1 back to vmbr0.
    const enslave = p.linkOps.find((o) => o.describe === "enslave eno1 to vmbr1");
    expect(enslave?.undo).toEqual(["ip", "link", "set", "dev", "eno1", "master", "vmbr0"]);
    rmSync(dir, { recursive: true, force: true });
  });
});

describe("bridges in the policy (static checks)", () => {
  it("refuses the public interface as a port, a port in two bridges, vids without vlan_aware, a subnet outside private_networks", () => {
    const found = issues(`  bridges:
    - { name: vmbr1, ports: [eth0, eno2], address: 192.168.5.1/24 }
    - { name: vmbr2, ports: [eno2], vids: [10] }
    - { name: vmbr3, ports: [eno3], vlan: 30, vlan_aware: true }
    - { name: eth0 }
`).join("\n");
    expect(found).toMatch(/eth0 is network\.public_interface/);
    expect(found).toMatch(/eno2 is a port of bridge vmbr1 too/);
    expect(found).toMatch(/vids needs vlan_aware: true/);
    expect(found).toMatch(/exclude each other/);
    expect(found).toMatch(/192\.168\.5\.1\/24 is not inside private_networks/);
    expect(found).toMatch(/bridge eth0 is network\.public_interface/);
  });

  it("accepts VLAN ranges and refuses a reversed one", () => {
    expect(issues("  bridges:\n    - { name: vmbr1, ports: [eno2], vlan_aware: true, vids: [10, '100-200'] }\n")).toEqual([]);
    expect(issues("  bridges:\n    - { name: vmbr1, ports: [eno2], vlan_aware: true, vids: ['200-100'] }\n").join("\n")).toMatch(
      /first ≤ last/,
    );
  });
});

describe("VLAN-aware bridges and bridges_mode", () => {
  it("renders vlan_filtering 1 and the ports' VLANs as ops, bridge-vlan-aware + bridge-vids as ifupdown2", () => {
    const n = net("  bridges:\n    - { name: vmbr1, ports: [eno2], vlan_aware: true }\n");
    expect(renderLinkOps(n).map((o) => o.argv.join(" "))).toEqual([
      "ip link add name vmbr1 type bridge vlan_filtering 1",
      "ip link set dev eno2 master vmbr1",
      "bridge vlan add dev eno2 vid 2-4094",
      "ip link set dev eno2 up",
      "ip link set dev vmbr1 up",
    ]);
    expect(renderInterfaces(n)).toContain(
      "\tbridge-ports eno2\n\tbridge-stp off\n\tbridge-fd 0\n\tbridge-vlan-aware yes\n\tbridge-vids 2-4094",
    );
    const m = net("  bridges:\n    - { name: vmbr1, ports: [eno2], vlan_aware: true, vids: [10, 20] }\n");
    expect(renderInterfaces(m)).toContain("\tbridge-vids 10 20");
  });

  it("render mode: no link operations at all, the ifupdown2 stanzas still render", () => {
    const n = net("  bridges_mode: render\n  bridges:\n    - { name: vmbr1, ports: [eno2], address: 10.10.1.1/24 }\n");
    expect(renderLinkOps(n)).toEqual([]);
    expect(removedLinkOps(["vmbr9"], n, links([{ ifname: "vmbr9", linkinfo: { info_kind: "bridge" } }]))).toEqual([]);
    expect(renderInterfaces(n)).toContain("auto vmbr1\niface vmbr1 inet static\n\taddress 10.10.1.1/24");
  });
});

describe("removed bridges", () => {
  const live = links([
    {
      ifname: "vmbr2",
      flags: ["UP"],
      linkinfo: { info_kind: "bridge" },
      addr_info: [
        { local: "10.10.2.1", prefixlen: 24 },
        { local: "fe80::9", prefixlen: 64 },
      ],
    },
    { ifname: "eno2", master: "vmbr2", flags: ["UP"] },
    { ifname: "eno3.30", master: "vmbr2", linkinfo: { info_kind: "vlan" } },
    { ifname: "vmbr5", linkinfo: { info_kind: "bridge" } },
  ]);
  it("removes only what varco created, each step undone by its inverse", () => {
    const n = net("  bridges: []\n");
    const ops = removedLinkOps(["eno3.30", "vmbr2"], n, live);
    expect(ops.map((o) => [o.argv.join(" "), o.undo?.join(" ")])).toEqual([
      ["ip link set dev vmbr2 down", "ip link set dev vmbr2 up"],
      ["ip address del 10.10.2.1/24 dev vmbr2", "ip address add 10.10.2.1/24 dev vmbr2"],
      ["ip link set dev eno2 nomaster", "ip link set dev eno2 master vmbr2"],
      ["ip link set dev eno3.30 nomaster", "ip link set dev eno3.30 master vmbr2"],
      ["ip link del vmbr2", "ip link add name vmbr2 type bridge"],
      ["ip link del eno3.30", "ip link add link eno3 name eno3.30 type vlan id 30"],
    ]);
    // vmbr5 existed before varco (never owned): never removed.
    expect(removedLinkOps(["vmbr2"], n, live).some((o) => o.argv.includes("vmbr5"))).toBe(false);
  });

  it("ownership: kept while listed, gained by creating, lost by removing; a pre-existing bridge is never owned", () => {
    const n = net("  bridges:\n    - { name: vmbr1, ports: [eno1] }\n    - { name: vmbr5, ports: [] }\n");
    const created = renderLinkOps(n).filter((o) => o.argv.includes("vmbr1"));
    expect(ownedLinks(["vmbr2"], n, created)).toEqual(["vmbr1"]);
    expect(ownedLinks(["vmbr1"], n, [])).toEqual(["vmbr1"]);
  });

  it("withLiveUndo leaves a free port's undo as nomaster", () => {
    const op = renderLinkOps(net("  bridges:\n    - { name: vmbr1, ports: [eno2] }\n"))[1];
    if (!op) throw new Error("no op");
    expect(withLiveUndo(op, HOST).undo).toEqual(["ip", "link", "set", "dev", "eno2", "nomaster"]);
  });
});

describe("host bridge table (east-west on a shared bridge)", () => {
  const v4 = net(`  bridges:
    - { name: vmbr1, ports: [eno2], address: 10.10.1.1/24 }
  forward_allow:
    - { name: app, protocol: tcp, from: [10.10.2.0/24], to: [10.10.1.11], ports: [8080] }
`);
  // IPv6 private networks (accepted by policy check once IPv6 is supported there).
  const n = { ...v4, private_networks: [...v4.private_networks, "fd00:10::/48"] };

  it("stateful: conntrack first, the allow-list, then a counted drop between private addresses", () => {
    const t = renderHostBridge(n);
    expect(t.startsWith("table bridge varco\ndelete table bridge varco\ntable bridge varco {")).toBe(true);
    expect(t).toContain("type filter hook forward priority filter; policy accept;");
    expect(t).toContain("ether type arp accept");
    expect(t).toContain("nd-neighbor-solicit");
    expect(t).toContain("ct state established,related accept");
    expect(t).toContain("elements = { 10.10.2.0/24 . 10.10.1.11 . tcp . 8080 }");
    expect(t).toContain("elements = { 10.10.1.1 }");
    expect(t).toContain('ether type ip ip saddr @private4 ip daddr @private4 counter drop comment "east-west not in forward_allow"');
    expect(t).toContain("ether type ip6 ip6 saddr @private6 ip6 daddr @private6 counter drop");
    expect(t).not.toContain("th sport");
    // The allow comes before the drop.
    expect(t.indexOf("@east_west4 accept")).toBeLessThan(t.indexOf("@private4 counter drop"));
  });

  it("stateless: replies matched backwards, a bare SYN from the server side is not a reply", () => {
    const t = renderHostBridge(n, { stateful: false });
    expect(t).not.toContain("ct state");
    expect(t).toContain("meta l4proto tcp tcp flags & (syn | ack) != syn ip daddr . ip saddr . meta l4proto . th sport @east_west4 accept");
  });
});
