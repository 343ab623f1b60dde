/**
 * The pieces of drift and element deltas that need no host: reading element lists out of a rendered
 * nft script, printing `nft -j` elements back in nft syntax, and which elements are canonical.
 */
import { describe, expect, it } from "vitest";
import { canonicalElement, desiredState, formatElement, splitElements } from "../../src/net/index.ts";
import type { NetworkPolicy } from "../../src/policy/index.ts";

const network = (ports: number[]): NetworkPolicy =>
  ({
    table: "varco",
    public_interface: "eth0",
    public_ip: "203.0.113.10",
    private_networks: ["10.10.0.0/16"],
    masquerade: true,
    port_forwards: ports.map((p, i) => ({
      name: `f${i}`,
      protocol: "tcp",
      external_ip: "203.0.113.10",
      external_port: p,
      internal_ip: "10.10.1.11",
      internal_port: 22,
      sources: i === 0 ? ["198.51.100.0/24"] : ["0.0.0.0/0"],
    })),
    forward_allow: [],
    bridges: [],
    vips: [],
    keepalived: { config_file: "/nonexistent/k.conf", pid_file: "/nonexistent/k.pid" },
  }) as unknown as NetworkPolicy;
const render = (ports: number[]) => desiredState(network(ports), { authPass: {}, healthCommand: "true" }).nft;

describe("splitElements", () => {
  it("finds every set's and map's elements by name, and a one-forward change leaves the skeleton alone", () => {
    const a = splitElements(render([2000, 2001, 2002]));
    expect(a.elements.get("map dnat4")).toEqual([
      "203.0.113.10 . tcp . 2001 : 10.10.1.11 . 22",
      "203.0.113.10 . tcp . 2002 : 10.10.1.11 . 22",
    ]);
    expect(a.elements.get("map dnat4_src")).toEqual(["198.51.100.0/24 . 203.0.113.10 . tcp . 2000 : 10.10.1.11 . 22"]);
    expect(a.elements.get("set private4")).toEqual(["10.10.0.0/16"]);
    const b = splitElements(render([2000, 2001, 2003]));
    expect(b.skeleton).toBe(a.skeleton);
    expect(a.skeleton).not.toContain("2001");
  });

  it("keeps commas and braces inside quoted comments within one element", () => {
    const s = splitElements(
      'table inet t {\n\tset s {\n\t\ttype ipv4_addr\n\t\telements = { 192.0.2.1 comment "a, {b}", 192.0.2.2 }\n\t}\n}\n',
    );
    expect(s.elements.get("set s")).toEqual(['192.0.2.1 comment "a, {b}"', "192.0.2.2"]);
  });
});

describe("formatElement (nft -j elements in nft syntax)", () => {
  it("prints concatenations, map values, prefixes, ranges and verdicts as nft.ts writes them", () => {
    expect(formatElement([{ concat: ["203.0.113.10", "tcp", 2222] }, { concat: ["10.10.1.99", 22] }])).toBe(
      "203.0.113.10 . tcp . 2222 : 10.10.1.99 . 22",
    );
    expect(formatElement({ prefix: { addr: "10.10.0.0", len: 16 } })).toBe("10.10.0.0/16");
    expect(formatElement({ range: [8000, 8010] })).toBe("8000-8010");
    expect(formatElement([{ concat: ["192.0.2.1", 22] }, { accept: null }])).toBe("192.0.2.1 . 22 : accept");
    expect(formatElement([{ concat: ["192.0.2.1", 22] }, { jump: { target: "c" } }])).toBe("192.0.2.1 . 22 : jump c");
    expect(formatElement({ elem: { val: "192.0.2.1", comment: "x", counter: { packets: 3, bytes: 9 } } })).toBe('192.0.2.1 comment "x"');
  });
});

describe("canonicalElement (safe to apply as a delta)", () => {
  it("accepts what nft lists back unchanged", () => {
    for (const e of [
      "203.0.113.10 . tcp . 2222 : 10.10.1.99 . 22",
      "198.51.100.0/24 . 203.0.113.10 . udp . 53 : 10.10.1.2 . 53",
      "2001:db8::1 . tcp . 443",
      "203.0.113.10 . tcp . 8000-8010 : 10.10.1.2 . 8000",
    ])
      expect(canonicalElement(e), e).toBe(true);
  });
  it("refuses spellings nft would list differently (so the record would be wrong)", () => {
    for (const e of [
      "2001:DB8::1 . tcp . 443",
      "2001:db8:0::1 . tcp . 443",
      "10.10.1.5/24 . tcp . 22",
      "192.0.2.5/32 . tcp . 22",
      "203.0.113.10 . tcp . 022",
      "203.0.113.10 . TCP . 22",
      '192.0.2.1 comment "x"',
      "203.0.113.10 . tcp . 9000-8000",
    ])
      expect(canonicalElement(e), e).toBe(false);
  });
});
