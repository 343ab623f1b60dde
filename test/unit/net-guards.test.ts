import { describe, expect, it } from "vitest";
import { keepalivedHeld, vipRefusals } from "../../src/net/guard.ts";
import type { LiveLink } from "../../src/net/live.ts";
import { createRecordingRunner } from "../../src/net/runner.ts";
import { formatIssue, type PolicyError, parsePolicyText } from "../../src/policy/index.ts";

const KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFm6vDyUu3Cq0cVl3kKq6a2lJjJx1m4Hq0rS2y3gk1Xz";
const text = (network: string, gateway = '{ listen: ["0.0.0.0:22"], metrics_listen: "127.0.0.1:9108" }') => `version: 1
gateway: ${gateway}
directory: { ldap: { url: "ldap://x", bind_dn: cn=a, bind_password_file: p, user_base: ou=p } }
targets: { t: { host: 10.0.0.1, host_key: "${KEY}" } }
routes: [ { users: [u], alias: t, target: t } ]
network:
  public_interface: eth0
  public_ip: 203.0.113.11
  private_networks: [10.10.0.0/16]
${network}`;
const issues = (network: string, gateway?: string) => {
  try {
    parsePolicyText(text(network, gateway), "/p.yaml");
    return "";
  } catch (err) {
    return (err as PolicyError).issues.map(formatIssue).join("\n");
  }
};

describe("policy check guard rails", () => {
  it("refuses a VIP equal to public_ip (the shipped example's mistake)", () => {
    const found = issues(`  vips:
    - { instance: V, interface: eth0, virtual_router_id: 51, addresses: [203.0.113.11/24] }`);
    expect(found).toMatch(/:\d+:\d+: 203\.0\.113\.11\/24: public_ip is the node's own static address; a VIP must be another address/);
    expect(
      issues(`  vips:
    - { instance: V, interface: eth0, virtual_router_id: 51, addresses: [203.0.113.10/24] }`),
    ).toBe("");
  });

  it("refuses the public interface as a bridge port and a bridge subnet outside private_networks", () => {
    expect(issues("  bridges: [ { name: vmbr1, ports: [eth0], address: 10.10.1.1/24 } ]")).toMatch(
      /eth0 is network\.public_interface: enslaving it to vmbr1/,
    );
    expect(issues("  bridges: [ { name: vmbr1, ports: [eth1], address: 192.168.5.1/24 } ]")).toMatch(
      /192\.168\.5\.1\/24: the bridge's subnet is not inside private_networks/,
    );
    // A bridge subnet wider than the private network is not inside it either.
    expect(issues("  bridges: [ { name: vmbr1, ports: [eth1], address: 10.0.0.1/8 } ]")).toMatch(/not inside private_networks/);
    expect(issues("  bridges: [ { name: vmbr1, ports: [eth1], address: 10.10.1.1/24 } ]")).toBe("");
  });

  it("refuses a forward on the gateway's own listen or metrics port, a range containing it included", () => {
    const fwd = (ip: string, port: string | number, proto = "tcp") =>
      `  port_forwards: [ { name: f, protocol: ${proto}, external_ip: ${ip}, external_port: ${port}, internal_ip: 10.10.0.5, internal_port: 22 } ]`;
    expect(issues(fwd("203.0.113.11", 22))).toMatch(/203\.0\.113\.11:22\/tcp is the gateway's own gateway\.listen \(0\.0\.0\.0:22\)/);
    expect(issues(fwd("203.0.113.11", 22, "udp"))).toBe("");
    expect(issues(fwd("203.0.113.11", 9108))).toBe(""); // metrics on loopback only
    expect(issues(fwd("203.0.113.11", 9108), '{ listen: ["0.0.0.0:22"], metrics_listen: "203.0.113.11:9108" }')).toMatch(
      /gateway\.metrics_listen/,
    );
    expect(issues(fwd("203.0.113.11", 2222), '{ listen: ["203.0.113.11:2222"] }')).toMatch(/gateway\.listen/);
    expect(issues(fwd("203.0.113.11", 2222), '{ listen: ["192.0.2.1:2222"] }')).toBe("");
  });

  it("refuses an external_ip that is neither public_ip nor a VIP address", () => {
    const fwd = (ip: string) =>
      `  vips: [ { instance: V, interface: eth0, virtual_router_id: 51, addresses: [203.0.113.10/24] } ]
  port_forwards: [ { name: f, external_ip: ${ip}, external_port: 8080, internal_ip: 10.10.0.5, internal_port: 80 } ]`;
    expect(issues(fwd("203.0.113.99"))).toMatch(/external_ip 203\.0\.113\.99 is neither public_ip \(203\.0\.113\.11\) nor a VIP address/);
    expect(issues(fwd("203.0.113.10"))).toBe("");
    expect(issues(fwd("203.0.113.11"))).toBe("");
  });
});

describe("live VIP refusal", () => {
  const loaded = parsePolicyText(
    text(`  vips: [ { instance: VI_PUBLIC, interface: eth0, virtual_router_id: 51, addresses: [203.0.113.10/24] } ]
  keepalived: { config_file: /k/keepalived.conf, pid_file: /k/keepalived.pid }`),
    "/p.yaml",
  );
  const n = loaded.policy.network;
  if (!n) throw new Error("no network");
  const links = new Map<string, LiveLink>([
    [
      "eth0",
      {
        ifname: "eth0",
        addr_info: [
          { local: "203.0.113.11", prefixlen: 24 },
          { local: "203.0.113.10", prefixlen: 24 },
        ],
      },
    ],
  ]);
  it("refuses a VIP that is a static address, with the fix; not one the running keepalived holds", () => {
    const [r] = vipRefusals(n, links, new Set());
    expect(r).toMatch(/network\.vips\[0\] \(VI_PUBLIC\): 203\.0\.113\.10 is already a static address of eth0/);
    expect(r).toContain("ip addr del 203.0.113.10/24 dev eth0");
    expect(vipRefusals(n, links, new Set(["203.0.113.10"]))).toEqual([]);
    expect(
      vipRefusals(n, new Map([["eth0", { ifname: "eth0", addr_info: [{ local: "203.0.113.11", prefixlen: 24 }] }]]), new Set()),
    ).toEqual([]);
  });

  it("keepalivedHeld reads the installed config only while keepalived runs", async () => {
    const conf = "vrrp_instance V {\n  virtual_ipaddress {\n    203.0.113.10/24 dev eth0\n  }\n}\n";
    const alive = createRecordingRunner([{ prefix: ["kill", "-0"], result: { stdout: "", stderr: "", exitCode: 0 } }]);
    const dead = createRecordingRunner([{ prefix: ["kill", "-0"], result: { stdout: "", stderr: "", exitCode: 1 } }]);
    for (const r of [alive, dead]) {
      r.files.set("/k/keepalived.pid", "4242\n");
      r.files.set("/k/keepalived.conf", conf);
    }
    expect([...(await keepalivedHeld(alive, n))]).toEqual(["203.0.113.10"]);
    expect([...(await keepalivedHeld(dead, n))]).toEqual([]);
  });
});

describe("doctor: other firewalls", () => {
  it("warns about pve-firewall, a Docker FORWARD drop policy, iptables-legacy rules and other drop chains; not about varco's own", async () => {
    const { firewallWarnings } = await import("../../src/cli/ops.ts");
    const chains = JSON.stringify({
      nftables: [
        { metainfo: {} },
        { chain: { family: "inet", table: "varco", name: "forward", hook: "forward", policy: "drop" } },
        { chain: { family: "ip", table: "filter", name: "INPUT", hook: "input", policy: "drop" } },
        { chain: { family: "ip", table: "nat", name: "PREROUTING", hook: "prerouting", policy: "accept" } },
      ],
    });
    const rows = firewallWarnings({
      pveFirewall: "Status: enabled/running\n",
      iptablesForward: "-P FORWARD DROP\n-A FORWARD -j DOCKER-USER\n",
      legacySave: "*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -p tcp --dport 22 -j DROP\nCOMMIT\n",
      nftChains: chains,
    });
    expect(rows.map((r) => r.check)).toEqual(["pve-firewall", "iptables FORWARD", "iptables-legacy", "nft ip filter"]);
    expect(rows.every((r) => r.ok && r.warning)).toBe(true);
    expect(rows[1]?.detail).toContain("Docker");
    expect(firewallWarnings({ pveFirewall: "Status: disabled/stopped", iptablesForward: "-P FORWARD ACCEPT\n" })).toEqual([]);
  });
});
