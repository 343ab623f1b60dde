/**
 * The nft table for NAT and forwarding (src/net/nft.ts) and the checks of port_forwards /
 * forward_allow (src/policy/network.ts): hairpin, SNAT source, port ranges, tcp+udp, log/rate,
 * MSS clamping, the forward chain's default and IPv6. Real packets: test/e2e/net-nat.test.ts.
 */
import { describe, expect, it } from "vitest";
import { nftElements, renderNft } from "../../src/net/nft.ts";
import { parsePolicyText } from "../../src/policy/index.ts";
import { portSpan, publicAddress, snatSource } from "../../src/policy/network.ts";
import { networkIssues, networkOf, networkPolicyText } from "../helpers/network-policy.ts";

const OPTS = { privateNetworks: '[10.10.0.0/16, "2001:db8:10::/48"]' };
const net = (text: string) => networkOf(text, OPTS);
const issues = (text: string) => networkIssues(text, OPTS).join("\n");
const fwd = (line: string) => `  port_forwards:\n    - ${line}\n`;

describe("SNAT source and external_ip defaults", () => {
  it("SNATs to public_ip, not masquerade (which takes whatever address the interface lists first)", () => {
    const nft = renderNft(net(""));
    expect(nft).toContain('oifname "eth0" ip saddr @private4 snat ip to 203.0.113.10 comment "outbound SNAT"');
    expect(nft).not.toMatch(/oifname "eth0".*masquerade/);
  });

  it("prefers snat_address, then the first IPv4 address of a VIP on the public interface", () => {
    const vips = `  vips:
    - { instance: V6, interface: eth0, virtual_router_id: 50, addresses: ["2001:db8::5/64"] }
    - { instance: PRIV, interface: eth1, virtual_router_id: 52, addresses: [10.10.0.1/16] }
    - { instance: PUB, interface: eth0, virtual_router_id: 51, addresses: [203.0.113.20/24, 203.0.113.21/24] }
`;
    const n = net(vips);
    expect(publicAddress(n)).toBe("203.0.113.20");
    expect(snatSource(n)).toBe("203.0.113.20");
    expect(renderNft(n)).toContain("snat ip to 203.0.113.20");
    expect(renderNft(net(`${vips}  snat_address: 203.0.113.30\n`))).toContain("snat ip to 203.0.113.30");
    // A forward without external_ip is reached on the same address.
    expect(nftElements(net(`${vips}${fwd("{ name: w, external_port: 80, internal_ip: 10.10.0.5 }")}`)).dnat4).toEqual([
      "203.0.113.20 . tcp . 80 : 10.10.0.5 . 80",
    ]);
    expect(nftElements(net(fwd("{ name: w, external_port: 80, internal_ip: 10.10.0.5 }"))).dnat4).toEqual([
      "203.0.113.10 . tcp . 80 : 10.10.0.5 . 80",
    ]);
  });

  it("masquerade: false turns outbound SNAT off but keeps hairpin", () => {
    const nft = renderNft(net("  masquerade: false\n"));
    expect(nft).not.toContain("snat ip to");
    expect(nft).toContain('ct status dnat iifname != "eth0" ip saddr @private4 ip daddr @private4 masquerade comment "hairpin"');
  });

  it("refuses an IPv6 snat_address, and masquerade with no IPv4 source", () => {
    expect(issues('  snat_address: "2001:db8::1"\n')).toMatch(/snat_address 2001:db8::1 is IPv6: SNAT is IPv4 only/);
    const v6only = networkPolicyText("", OPTS).replace("public_ip: 203.0.113.10", 'public_ip: "2001:db8::10"');
    expect(() => parsePolicyText(v6only, "/p.yaml")).toThrow(/masquerade needs an IPv4 source address.*set network\.snat_address/);
  });
});

describe("port forwards: ranges, tcp+udp, log and rate", () => {
  it("puts a range that keeps its ports in the range map and renders a shifted range port by port", () => {
    const e = nftElements(
      net(`  port_forwards:
    - { name: r, external_port: "8000-8010", internal_ip: 10.10.0.5 }
    - { name: same, external_port: "8100-8101", internal_ip: 10.10.0.5, internal_port: "8100-8101" }
    - { name: s, external_port: "9000-9002", internal_ip: 10.10.0.5, internal_port: "7000-7002" }
    - { name: rs, protocol: udp, external_port: "6000-6001", internal_ip: 10.10.0.6, sources: [198.51.100.0/24] }
`),
    );
    expect(e.dnat4_range).toEqual([
      "0.0.0.0/0 . 203.0.113.10 . tcp . 8000-8010 : 10.10.0.5",
      "0.0.0.0/0 . 203.0.113.10 . tcp . 8100-8101 : 10.10.0.5",
      "198.51.100.0/24 . 203.0.113.10 . udp . 6000-6001 : 10.10.0.6",
    ]);
    expect(e.dnat4).toEqual([
      "203.0.113.10 . tcp . 9000 : 10.10.0.5 . 7000",
      "203.0.113.10 . tcp . 9001 : 10.10.0.5 . 7001",
      "203.0.113.10 . tcp . 9002 : 10.10.0.5 . 7002",
    ]);
    expect(renderNft(net(""))).toContain(
      "meta l4proto { tcp, udp } dnat ip to ip saddr . ip daddr . meta l4proto . th dport map @dnat4_range",
    );
  });

  it("refuses a range onto a range of another length, bad range text, and a too-long shifted range", () => {
    expect(issues(fwd('{ name: r, external_port: "8000-8010", internal_ip: 10.10.0.5, internal_port: "9000-9005" }'))).toMatch(
      /:11:\d+: internal_port 9000-9005 does not match external_port 8000-8010: a range maps onto a range of the same length/,
    );
    expect(issues(fwd('{ name: r, external_port: "8010-8000", internal_ip: 10.10.0.5 }'))).toMatch(/a port \(8080\) or a range/);
    expect(issues(fwd('{ name: r, external_port: "80-70000", internal_ip: 10.10.0.5 }'))).toMatch(/a port \(8080\) or a range/);
    expect(issues(fwd('{ name: r, external_port: 8000, internal_ip: 10.10.0.5, internal_port: "80-81" }'))).toMatch(
      /internal_port 80-81 does not match external_port 8000/,
    );
    expect(issues(fwd('{ name: r, external_port: "1000-9000", internal_ip: 10.10.0.5, internal_port: "11000-19000" }'))).toMatch(
      /at most 4096 ports/,
    );
    expect(portSpan("8000-8010")).toEqual([8000, 8010]);
    expect(portSpan(22)).toEqual([22, 22]);
  });

  it("refuses overlapping forwards (a port inside another forward's range; tcp+udp against udp)", () => {
    const found = issues(`  port_forwards:
    - { name: a, external_port: "8000-8010", internal_ip: 10.10.0.5 }
    - { name: b, external_port: 8005, internal_ip: 10.10.0.6 }
    - { name: c, protocol: tcp+udp, external_port: 53, internal_ip: 10.10.0.6 }
    - { name: d, protocol: udp, external_port: 53, internal_ip: 10.10.0.7 }
    - { name: e, protocol: udp, external_port: 8005, internal_ip: 10.10.0.7 }
`);
    expect(found).toMatch(/:12:\d+: 203\.0\.113\.10:8005\/tcp overlaps 203\.0\.113\.10:8000-8010\/tcp of "a"/);
    expect(found).toMatch(/:14:\d+: 203\.0\.113\.10:53\/udp is forwarded twice \(also by "c"\)/);
    expect(found).not.toMatch(/:15:/); // udp 8005 is a different key
  });

  it("renders tcp+udp as two elements and log/rate as rules naming the forward", () => {
    const n = net(`  port_forwards:
    - { name: dns, protocol: tcp+udp, external_port: 53, internal_ip: 10.10.0.5, log: true, rate: "100/second" }
    - { name: 'we"b x', external_port: 443, internal_ip: 10.10.0.6, sources: [198.51.100.0/24, 192.0.2.7], rate: "30/minute" }
`);
    expect(nftElements(n).dnat4).toEqual(["203.0.113.10 . tcp . 53 : 10.10.0.5 . 53", "203.0.113.10 . udp . 53 : 10.10.0.5 . 53"]);
    const nft = renderNft(n);
    expect(nft).toContain(
      'ip daddr 203.0.113.10 meta l4proto { tcp, udp } th dport 53 limit rate 10/second log prefix "varco fwd dns: " comment "log of dns"',
    );
    expect(nft).toContain(
      'ip daddr 203.0.113.10 meta l4proto { tcp, udp } th dport 53 limit rate over 100/second counter drop comment "rate of dns"',
    );
    // Quotes in a name cannot break out of the nft string; the source restriction is kept.
    expect(nft).toContain(
      'ip daddr 203.0.113.10 ip saddr { 198.51.100.0/24, 192.0.2.7 } meta l4proto tcp th dport 443 limit rate over 30/minute counter drop comment "rate of we_b_x"',
    );
    // Per-forward rules come before the DNAT maps (a DNAT ends the chain).
    expect(nft.indexOf("rate of dns")).toBeLessThan(nft.indexOf("map @dnat4"));
    expect(issues(fwd('{ name: r, external_port: 80, internal_ip: 10.10.0.5, rate: "100/s" }'))).toMatch(/a rate as nft spells it/);
  });

  it("clamps the MSS first in the forward chain only when mss_clamp is true", () => {
    expect(renderNft(net(""))).not.toContain("maxseg");
    const nft = renderNft(net("  mss_clamp: true\n"));
    const fwdChain = nft.slice(nft.indexOf("chain forward {"));
    expect(fwdChain.split("\n")[2]).toBe("\t\ttcp flags syn / syn,rst tcp option maxseg size set rt mtu");
  });
});

describe("forward chain default and IPv6", () => {
  it("drops what no rule names, for both families, and drops everything from the public side that is not a forward", () => {
    const nft = renderNft(net(""));
    expect(nft).toContain("type filter hook forward priority filter; policy drop;");
    expect(nft).toContain('iifname "eth0" counter drop comment "inbound without a port forward"');
    expect(nft).toContain('oifname "eth0" ip saddr @private4 accept comment "outbound"');
    expect(nft).toContain('oifname "eth0" ip6 saddr @private6 accept comment "outbound"');
    expect(nft).toContain("icmpv6 type { destination-unreachable, packet-too-big, time-exceeded, parameter-problem } accept");
    expect(nft).toMatch(/set private6 \{\n\t\ttype ipv6_addr\n\t\tflags interval\n\t\telements = \{ 2001:db8:10::\/48 \}/);
  });

  it("renders IPv6 allow-list entries and routed IPv6 forwards", () => {
    const e = nftElements(
      net(`  port_forwards:
    - { name: web6, protocol: tcp+udp, external_port: 443, internal_ip: "2001:db8:10:1::11" }
    - { name: ssh6, external_port: 22, internal_ip: "2001:db8:10:1::11", sources: ["2001:db8:ff::/64"] }
  forward_allow:
    - { name: db6, from: ["2001:db8:10:2::/64"], to: ["2001:db8:10:1::11"], ports: [5432, "6000-6001"] }
    - { name: db4, from: [10.10.2.0/24], to: [10.10.1.11], ports: [5432] }
`),
    );
    expect(e.forward6).toEqual([
      "::/0 . 2001:db8:10:1::11 . tcp . 443",
      "::/0 . 2001:db8:10:1::11 . udp . 443",
      "2001:db8:ff::/64 . 2001:db8:10:1::11 . tcp . 22",
    ]);
    expect(e.east_west6).toEqual([
      "2001:db8:10:2::/64 . 2001:db8:10:1::11 . tcp . 5432",
      "2001:db8:10:2::/64 . 2001:db8:10:1::11 . tcp . 6000-6001",
    ]);
    expect(e.east_west4).toEqual(["10.10.2.0/24 . 10.10.1.11 . tcp . 5432"]);
    expect(e.dnat4).toEqual([]);
  });

  it("accepts IPv6 where it used to refuse it, and refuses mixed families and NAT66 with the fix", () => {
    expect(issues(fwd('{ name: v6, external_port: 443, internal_ip: "2001:db8:10::5", sources: ["2001:db8::/32"] }'))).toBe("");
    expect(issues('  forward_allow: [ { name: a, from: ["2001:db8:10:1::/64"], to: ["2001:db8:10:2::5"], ports: [22] } ]\n')).toBe("");
    expect(issues('  forward_allow: [ { name: a, from: [10.10.1.0/24, "2001:db8:10:1::/64"], to: [10.10.2.5], ports: [22] } ]\n')).toMatch(
      /forward_allow "a" mixes IPv4 and IPv6 addresses in from\/to: .*split it into an IPv4 and an IPv6 entry/,
    );
    expect(issues(fwd('{ name: v6, external_ip: 203.0.113.10, external_port: 443, internal_ip: "2001:db8:10::5" }'))).toMatch(
      /IPv6 forwards are routed, not NATed: remove external_ip/,
    );
    expect(issues(fwd('{ name: v6, external_port: 443, internal_ip: "2001:db8:10::5", internal_port: 8443 }'))).toMatch(
      /internal_port must equal external_port 443/,
    );
    expect(issues(fwd('{ name: v4, external_port: 443, internal_ip: 10.10.0.5, sources: [198.51.100.0/24, "2001:db8::/32"] }'))).toMatch(
      /:11:\d+: source 2001:db8::\/32 is IPv6 but this forward is IPv4/,
    );
    expect(issues(fwd('{ name: v4, external_ip: "2001:db8::1", external_port: 443, internal_ip: 10.10.0.5 }'))).toMatch(
      /external_ip 2001:db8::1 is IPv6 but internal_ip 10\.10\.0\.5 is IPv4/,
    );
    expect(issues(fwd('{ name: v6, external_port: 443, internal_ip: "2001:db8:99::5" }'))).toMatch(
      /internal_ip 2001:db8:99::5 is not inside private_networks \(2001:db8:10::\/48\)/,
    );
  });
});
