import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import {
  createRecordingRunner,
  desiredState,
  plan,
  renderInterfaces,
  renderKeepalived,
  renderLinkOps,
  renderNft,
} from "../../src/net/index.ts";
import { networkIssues, networkOf } from "../helpers/network-policy.ts";

const net = (text: string) => networkOf(text);
const issues = (text: string) => networkIssues(text);

describe("network validation (file:line:col)", () => {
  it("rejects the same external ip:port/proto twice, internal IPs outside private_networks, bad VRRP ids and duplicate names", () => {
    const found = issues(`  port_forwards:
    - { name: a, external_ip: 203.0.113.10, external_port: 80, internal_ip: 10.10.0.5, internal_port: 80 }
    - { name: a, external_ip: 203.0.113.10, external_port: 80, internal_ip: 192.168.1.5, internal_port: 80 }
  vips:
    - { instance: V1, interface: eth0, virtual_router_id: 300, addresses: [203.0.113.10/24] }
`);
    expect(found).toEqual(expect.arrayContaining([expect.stringMatching(/^\/p\.yaml:\d+:\d+: .*virtual_router_id must be 1–255/)]));
    const found2 = issues(`  port_forwards:
    - { name: a, external_ip: 203.0.113.10, external_port: 80, internal_ip: 10.10.0.5, internal_port: 80 }
    - { name: a, external_ip: 203.0.113.10, external_port: 80, internal_ip: 192.168.1.5, internal_port: 80 }
  vips:
    - { instance: V1, interface: eth0, virtual_router_id: 51, addresses: [203.0.113.10/24] }
    - { instance: V2, interface: eth0, virtual_router_id: 51, addresses: [203.0.113.11/24] }
`);
    expect(found2.join("\n")).toMatch(/:12:\d+: duplicate port forward name "a"/);
    expect(found2.join("\n")).toMatch(/:12:\d+: 203\.0\.113\.10:80\/tcp is forwarded twice/);
    expect(found2.join("\n")).toMatch(/:12:\d+: internal_ip 192\.168\.1\.5 is not inside private_networks/);
    expect(found2.join("\n")).toMatch(/:15:\d+: virtual_router_id 51 is used twice on eth0/);
    expect(issues("  forward_allow: [ { name: x, from: [10.10.0.0/33], to: [10.10.1.1], ports: [22] } ]\n").join("\n")).toMatch(
      /^\/p\.yaml:10:\d+: network\.forward_allow\.0\.from\.0: not an address or CIDR prefix/,
    );
  });
});

describe("renderers", () => {
  it("puts open forwards in one hash map and source-restricted ones in one interval map", () => {
    const nft = renderNft(
      net(`  port_forwards:
    - { name: web, external_ip: 203.0.113.10, external_port: 8080, internal_ip: 10.10.0.11, internal_port: 80, sources: [198.51.100.0/24, 192.0.2.7] }
    - { name: ssh, external_ip: 203.0.113.10, external_port: 2201, internal_ip: 10.10.0.11, internal_port: 22 }
  forward_allow:
    - { name: db, from: [10.10.1.0/24], to: [10.10.2.10], ports: [5432, 5433] }
`),
    );
    expect(nft.split("\n").slice(0, 3)).toEqual(["table inet varco", "delete table inet varco", "table inet varco {"]);
    expect(nft).toContain("198.51.100.0/24 . 203.0.113.10 . tcp . 8080 : 10.10.0.11 . 80");
    expect(nft).toContain("192.0.2.7 . 203.0.113.10 . tcp . 8080 : 10.10.0.11 . 80");
    expect(nft).toContain("10.10.1.0/24 . 10.10.2.10 . tcp . 5433");
    expect(nft).toContain('oifname "eth0" ip saddr @private4 snat ip to 203.0.113.10 comment "outbound SNAT"');
    expect(nft).toContain("203.0.113.10 . tcp . 2201 : 10.10.0.11 . 22");
    expect(nft).toContain("dnat ip to ip daddr . meta l4proto . th dport map @dnat4");
    expect(nft).toContain("dnat ip to ip saddr . ip daddr . meta l4proto . th dport map @dnat4_src");
  });

  it("renders VLAN bridges as ordered ip operations with undo, and as ifupdown2 stanzas (Proxmox style)", () => {
    const n = net("  bridges:\n    - { name: vmbr10, ports: [eth1], vlan: 10, address: 10.10.10.1/24 }\n");
    const ops = renderLinkOps(n);
    expect(ops.map((o) => o.argv.join(" "))).toEqual([
      "ip link add name vmbr10 type bridge",
      "ip link add link eth1 name eth1.10 type vlan id 10",
      "ip link set dev eth1.10 master vmbr10",
      "ip link set dev eth1.10 up",
      "ip address add 10.10.10.1/24 dev vmbr10",
      "ip link set dev vmbr10 up",
    ]);
    expect(ops[1]?.undo).toEqual(["ip", "link", "del", "eth1.10"]);
    const ifaces = renderInterfaces(n);
    expect(ifaces).toContain("auto eth1.10\niface eth1.10 inet manual\n\tvlan-raw-device eth1\n\tvlan-id 10");
    expect(ifaces).toContain("auto vmbr10\niface vmbr10 inet static\n\taddress 10.10.10.1/24\n\tbridge-ports eth1.10");
  });

  it("plans the VLAN operations against live links (recorded runner: this kernel has no 8021q)", async () => {
    const dir = mkdtempSync(join(tmpdir(), "varco-plan-"));
    const n = net("  bridges:\n    - { name: vmbr10, ports: [eth1], vlan: 10, address: 10.10.10.1/24 }\n");
    const live = JSON.stringify([
      { ifname: "eth1", flags: ["UP"], addr_info: [] },
      { ifname: "vmbr10", flags: [], addr_info: [] },
    ]);
    const runner = createRecordingRunner([
      { prefix: ["ip", "-j", "-d", "addr", "show"], result: { stdout: live, stderr: "", exitCode: 0 } },
    ]);
    const p = await plan(runner, desiredState(n, { authPass: {}, healthCommand: "true" }), dir);
    // The bridge exists already; everything else is still to do, in order.
    expect(p.linkOps.map((o) => o.describe)).toEqual([
      "create VLAN 10 on eth1 as eth1.10",
      "enslave eth1.10 to vmbr10",
      "bring eth1.10 up",
      "address 10.10.10.1/24 on vmbr10",
      "bring vmbr10 up",
    ]);
    expect(runner.commands.map((c) => c.argv.join(" "))).toContain("nft -j list table inet varco");
    rmSync(dir, { recursive: true, force: true });
  });

  it("renders keepalived.conf(5) with track_script and masks the password in plans", () => {
    const n = net(`  vips:
    - { instance: VI_PUBLIC, interface: eth0, virtual_router_id: 51, priority: 150, advert_interval: 2s, addresses: [203.0.113.20/24], auth_pass_file: x, track_gateway_health: true }
`);
    const conf = renderKeepalived(n, { authPass: { VI_PUBLIC: "secret12" }, healthCommand: "/usr/bin/varco health" });
    expect(conf).toContain("vrrp_instance VI_PUBLIC {");
    expect(conf).toContain("\tadvert_int 2");
    expect(conf).toContain("\t\tauth_pass secret12");
    expect(conf).toContain('vrrp_script varco_live {\n\tscript "/usr/bin/varco health"');
    expect(conf).toContain("\ttrack_script {\n\t\tvarco_live\n\t}");
  });
});
