import { describe, expect, it } from "vitest";
import { admits, type GatewayServices, meterTimeoutSeconds, renderInputChain } from "../../src/net/input.ts";
import { findSshConnection, lockoutRefusal, parseSshConnection } from "../../src/net/lockout.ts";
import { renderNft } from "../../src/net/nft.ts";
import { type NetworkPolicy, parsePolicyText } from "../../src/policy/index.ts";

const KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFm6vDyUu3Cq0cVl3kKq6a2lJjJx1m4Hq0rS2y3gk1Xz";
const net = (network: string): NetworkPolicy => {
  const n = parsePolicyText(
    `version: 1
gateway: { listen: ["0.0.0.0:22"], metrics_listen: "0.0.0.0:9108" }
directory: { ldap: { url: "ldap://x", bind_dn: cn=a, bind_password_file: p, user_base: ou=p } }
targets: { t: { host: 10.0.0.1, host_key: "${KEY}" } }
routes: [ { users: [u], alias: t, target: t } ]
network:
  public_interface: eth0
  public_ip: 203.0.113.11
  private_networks: [10.10.0.0/16]
${network}`,
    "/p.yaml",
  ).policy.network;
  if (!n) throw new Error("no network");
  return n;
};
const services: GatewayServices = { listen: [{ host: "0.0.0.0", port: 22 }], metrics: { host: "0.0.0.0", port: 9108 } };
const pkt = (daddr: string, dport: number, saddr = "198.51.100.7", iif = "eth0", protocol: "tcp" | "udp" = "tcp") => ({
  iif,
  saddr,
  daddr,
  protocol,
  dport,
});

describe("input chain rendering", () => {
  it("sends only the public interface to a default-drop chain and accepts what the policy lists", () => {
    const n = net(`  vips:
    - { instance: V, interface: eth0, virtual_router_id: 51, addresses: [203.0.113.10/24] }
  input: { metrics_sources: [192.0.2.0/24] }
  input_allow:
    - { name: dns, protocol: udp, ports: [53], sources: [0.0.0.0/0, "::/0"] }`);
    const text = renderInputChain(n, services).join("\n");
    expect(text).toContain('iifname "eth0" jump input_public');
    expect(text).toContain("type filter hook input priority filter; policy accept;");
    expect(text.trimEnd().split("\n").at(-2)).toContain('counter drop comment "public side: not accepted by the input chain"');
    expect(text).toContain("update @ssh_meter4 { ip saddr limit rate over 30/minute burst 10 packets } counter drop");
    expect(text).toContain('meta nfproto ipv4 tcp dport 22 accept comment "gateway.listen"');
    expect(text).toContain("ip saddr { 192.0.2.0/24 } meta nfproto ipv4 tcp dport 9108 accept");
    expect(text).toContain("meta l4proto 112 ip daddr 224.0.0.18 accept");
    expect(text).toContain('ip6 saddr { ::/0 } udp dport 53 accept comment "input_allow dns"');
    // ND and PMTU before the invalid drop: ND packets may be untracked.
    expect(text.indexOf("nd-neighbor-solicit")).toBeLessThan(text.indexOf("ct state invalid drop"));
    expect(text).toContain("packet-too-big");
    // The whole table is still one script with the input chain inside it.
    expect(renderNft(n, services)).toContain("\tchain input_public {");
  });

  it("takes input_allow in the contract's form: one port or range, tcp+udp, a default name", () => {
    const n = net(`  input_allow:
    - { protocol: tcp, port: 2222, sources: [198.51.100.0/24] }
    - { name: rtp, protocol: tcp+udp, port: "60000-60100", sources: [0.0.0.0/0] }`);
    const text = renderInputChain(n, services).join("\n");
    expect(text).toContain('ip saddr { 198.51.100.0/24 } tcp dport 2222 accept comment "input_allow tcp-2222"');
    expect(text).toContain('ip saddr { 0.0.0.0/0 } tcp dport 60000-60100 accept comment "input_allow rtp"');
    expect(text).toContain('ip saddr { 0.0.0.0/0 } udp dport 60000-60100 accept comment "input_allow rtp"');
    expect(admits(n, services, pkt("203.0.113.11", 60050, "192.0.2.9", "eth0", "udp")).verdict).toBe("accept");
    expect(admits(n, services, pkt("203.0.113.11", 60101, "192.0.2.9", "eth0", "udp")).verdict).toBe("drop");
    expect(admits(n, services, pkt("203.0.113.11", 2222, "192.0.2.9")).verdict).toBe("drop");
    expect(() => net("  input_allow: [ { port: 1, ports: [2], sources: [0.0.0.0/0] } ]")).toThrow(/either port or ports/);
    expect(() => net("  input_allow: [ { sources: [0.0.0.0/0] } ]")).toThrow(/either port or ports/);
  });

  it("VRRP from unicast peers only, when the VIP lists them", () => {
    const n = net(`  vips:
    - { instance: V, interface: eth0, virtual_router_id: 51, addresses: [203.0.113.10/24] }`);
    const withPeers = { ...n, vips: n.vips.map((v) => ({ ...v, unicast_peers: ["203.0.113.12"] })) } as NetworkPolicy;
    const text = renderInputChain(withPeers, services).join("\n");
    expect(text).toContain("meta l4proto 112 ip saddr { 203.0.113.12 } accept");
    expect(text).not.toContain("224.0.0.18");
  });

  it("renders nothing when disabled, and no metrics rule without sources or for a loopback listener", () => {
    expect(renderInputChain(net("  input: { enabled: false }"), services)).toEqual([]);
    expect(renderInputChain(net(""), services).join("\n")).not.toContain("9108");
    const local = renderInputChain(net("  input: { metrics_sources: [192.0.2.0/24] }"), {
      listen: [{ host: "127.0.0.1", port: 22 }],
      metrics: { host: "127.0.0.1", port: 9108 },
    }).join("\n");
    expect(local).not.toContain("9108");
    expect(local).not.toContain("ssh_meter");
  });

  it("meter elements outlive a full bucket refill", () => {
    expect(meterTimeoutSeconds("30/minute", 10)).toBe(60);
    expect(meterTimeoutSeconds("1/minute", 10)).toBe(600);
    expect(meterTimeoutSeconds("2/hour", 5)).toBe(9000);
  });

  it("refuses a bad rate and an input_allow without sources", () => {
    expect(() => net('  input: { ssh_rate: "30 per minute" }')).toThrow(/a rate as nft spells it/);
    expect(() => net("  input_allow: [ { name: x, ports: [1], sources: [] } ]")).toThrow(/list the sources allowed/);
  });
});

describe("admits(): the input chain's decision per packet", () => {
  const n = net(`  vips:
    - { instance: V, interface: eth0, virtual_router_id: 51, addresses: [203.0.113.10/24] }
  input: { metrics_sources: [192.0.2.0/24] }
  input_allow:
    - { name: admin, protocol: tcp, ports: [2222], sources: [198.51.100.0/24] }
  port_forwards:
    - { name: web, external_ip: 203.0.113.10, external_port: 8080, internal_ip: 10.10.0.5, internal_port: 80 }`);
  it("accepts the listen port, the listed metrics sources and input_allow; drops the rest", () => {
    expect(admits(n, services, pkt("203.0.113.11", 22)).verdict).toBe("accept");
    expect(admits(n, services, pkt("203.0.113.11", 2222)).verdict).toBe("accept");
    expect(admits(n, services, pkt("203.0.113.11", 2222, "192.0.2.9")).verdict).toBe("drop");
    expect(admits(n, services, pkt("203.0.113.11", 9108)).verdict).toBe("drop");
    expect(admits(n, services, pkt("203.0.113.11", 9108, "192.0.2.9")).verdict).toBe("accept");
    expect(admits(n, services, pkt("203.0.113.11", 5432)).verdict).toBe("drop");
    expect(admits(n, services, pkt("203.0.113.11", 5432, "10.10.0.5", "vmbr1")).verdict).toBe("accept");
    expect(admits(n, services, pkt("203.0.113.10", 8080)).verdict).toBe("dnat");
    // 0.0.0.0 listeners are IPv4 only.
    expect(admits(n, services, pkt("2001:db8::11", 22, "2001:db8::7")).verdict).toBe("drop");
    expect(admits(n, { listen: [{ host: "::", port: 22 }] }, pkt("2001:db8::11", 22, "2001:db8::7")).verdict).toBe("accept");
    expect(admits(net("  input: { enabled: false }"), services, pkt("203.0.113.11", 5432)).verdict).toBe("accept");
  });

  it("a forward range or tcp+udp forward (later schemas) captures the port", () => {
    const ranged = {
      ...n,
      port_forwards: [{ ...n.port_forwards[0], external_port: "8000-8100", protocol: "tcp+udp" }],
    } as unknown as NetworkPolicy;
    expect(admits(ranged, services, pkt("203.0.113.10", 8050, undefined, "eth0", "udp")).verdict).toBe("dnat");
    expect(admits(ranged, services, pkt("203.0.113.10", 8101)).verdict).toBe("drop");
  });
});

describe("admin lockout", () => {
  const n = net("");
  it("parses SSH_CONNECTION and refuses only a connection the new ruleset would not accept", () => {
    expect(parseSshConnection("198.51.100.7 50000 203.0.113.11 22")).toEqual({
      clientIp: "198.51.100.7",
      clientPort: 50000,
      serverIp: "203.0.113.11",
      serverPort: 22,
    });
    expect(parseSshConnection("garbage")).toBeUndefined();
    expect(parseSshConnection("::ffff:198.51.100.7 1 203.0.113.11 0")).toBeUndefined();
    const ok = parseSshConnection("198.51.100.7 50000 203.0.113.11 22");
    const admin = parseSshConnection("198.51.100.7 50000 203.0.113.11 2222");
    if (!ok || !admin) throw new Error("parse");
    expect(lockoutRefusal(n, services, ok, "eth0")).toBeUndefined();
    const why = lockoutRefusal(n, services, admin, "eth0");
    expect(why).toMatch(/would be dropped by the input chain's default drop/);
    expect(why).toContain("network.input_allow { name: admin-ssh, protocol: tcp, ports: [2222], sources: [198.51.100.7/32] }");
    // From the private side nothing changes.
    expect(lockoutRefusal(n, services, admin, "vmbr1")).toBeUndefined();
  });

  it("finds SSH_CONNECTION in an ancestor only under sudo", () => {
    const procs: Record<number, { environ: string; stat: string }> = {
      500: { environ: "A=1\0", stat: "500 (sudo) S 400 0" },
      400: { environ: "SSH_CONNECTION=198.51.100.7 1 203.0.113.11 2222\0", stat: "400 (ba sh) S 1 0" },
    };
    const read = (pid: number, f: "environ" | "stat") => procs[pid]?.[f];
    expect(findSshConnection({ SUDO_USER: "admin" }, 500, read)).toBe("198.51.100.7 1 203.0.113.11 2222");
    expect(findSshConnection({}, 500, read)).toBeUndefined();
    expect(findSshConnection({ SSH_CONNECTION: "x" }, 500, read)).toBe("x");
  });
});
