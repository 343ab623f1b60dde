import { describe, expect, it } from "vitest";
import { formatIssue, PolicyError, parsePolicyText } from "../../src/policy/index.ts";
import { hostAllowed, hostNameOf } from "../../src/web/hosts.ts";
import { createWebSessions, html, roleOf, text } from "../../src/web/index.ts";
import { clientAddress } from "../../src/web/proxy.ts";
import { sameToken } from "../../src/web/sessions.ts";

const BASE = `version: 1
gateway:
  listen: ["0.0.0.0:2222"]
  metrics_listen: "127.0.0.1:9108"
directory:
  local_users: [{ uid: a, password_hash: "$argon2id$x" }]
targets:
  vm1: { host: 10.0.0.1, host_key: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFm6vDyUu3Cq0cVl3kKq6a2lJjJx1m4Hq0rS2y3gk1Xz" }
routes: [{ users: [a], alias: vm1, target: vm1 }]
`;

function issues(text: string): string[] {
  try {
    parsePolicyText(text, "/p/gateway.yaml");
  } catch (err) {
    if (err instanceof PolicyError) return err.issues.map(formatIssue);
    throw err;
  }
  return [];
}

describe("web policy block", () => {
  it("is off when absent and filled with defaults when present", () => {
    expect(parsePolicyText(BASE, "/p/g.yaml").policy.web).toBeUndefined();
    const w = parsePolicyText(`${BASE}web: { listen: "127.0.0.1:8443", auditor_groups: [audit] }\n`, "/p/g.yaml").policy.web;
    expect(w).toEqual({
      listen: "127.0.0.1:8443",
      auditor_groups: ["audit"],
      admin_groups: [],
      idle_timeout: 15 * 60_000,
      hostnames: [],
      trusted_proxies: [],
    });
  });
  it("refuses a web.listen on an SSH or metrics port (same address or a wildcard), and no groups at all", () => {
    expect(issues(`${BASE}web: { listen: "127.0.0.1:2222", auditor_groups: [a] }\n`).join("\n")).toMatch(
      /web\.listen|also gateway\.listen/,
    );
    expect(issues(`${BASE}web: { listen: "127.0.0.1:9108", admin_groups: [a] }\n`).join("\n")).toMatch(/gateway\.metrics_listen/);
    expect(issues(`${BASE}web: { listen: "0.0.0.0:9108", admin_groups: [a] }\n`).join("\n")).toMatch(/gateway\.metrics_listen/);
    expect(issues(`${BASE}web: { listen: "127.0.0.2:9108", admin_groups: [a] }\n`)).toEqual([]);
    expect(issues(`${BASE}web: { listen: "127.0.0.1:8443" }\n`).join("\n")).toMatch(/auditor_groups or admin_groups/);
    expect(issues(`${BASE}web: { listen: "127.0.0.1:8443", admin_groups: [a], extra: 1 }\n`).join("\n")).toMatch(/unknown key/);
  });
});

describe("web escaping", () => {
  it("makes HTML inert and control characters visible, in text and attributes", () => {
    const hostile = `"'><img src=x onerror=alert(1)><script>alert(2)</script>\x1b[2J\u202e`;
    const out = html`<td title="${hostile}">${hostile}</td>`.value;
    expect(out).not.toMatch(/<img|<script|"'>/);
    expect(out).toContain("&lt;script&gt;");
    expect(out).toContain("\\x1b[2J");
    expect(out).toContain("\\u202e");
    expect(text("a&b")).toBe("a&amp;b");
    expect(text(undefined)).toBe("");
  });
});

describe("web sessions", () => {
  it("expire when idle, refuse forged ids, and compare tokens in constant time", () => {
    let now = 0;
    const s = createWebSessions({ idleMs: () => 1000, now: () => now });
    const { id, session } = s.create("anna", "auditor", "127.0.0.1");
    expect(s.get(id)?.uid).toBe("anna");
    now = 900;
    expect(s.get(id)).toBeDefined();
    now = 1800; // 900 ms after the last use: still alive
    expect(s.get(id)).toBeDefined();
    now = 3000;
    expect(s.get(id)).toBeUndefined();
    expect(s.get(`${id.slice(0, -1)}A`)).toBeUndefined();
    expect(s.get("../../etc")).toBeUndefined();
    expect(sameToken(session.csrf, session.csrf)).toBe(true);
    expect(sameToken(session.csrf, `${session.csrf}x`)).toBe(false);
    expect(sameToken("", "")).toBe(false);
    expect(sameToken(undefined, session.csrf)).toBe(false);
  });
  it("gives admin before auditor and nothing to others", () => {
    const w = { auditor_groups: ["audit"], admin_groups: ["ops"] };
    expect(roleOf(["ops", "audit"], w)).toBe("admin");
    expect(roleOf(["audit"], w)).toBe("auditor");
    expect(roleOf(["Audit", "astro"], w)).toBeUndefined();
  });
});

describe("web.hostnames (the Host check against DNS rebinding)", () => {
  const allowed = ["bastion.example.org", "192.0.2.10", "2001:db8::10"];
  it("lets through the listed names whatever their case, port or absolute form", () => {
    for (const h of [
      "bastion.example.org",
      "BASTION.Example.ORG:8443",
      "bastion.example.org.",
      "192.0.2.10:443",
      "[2001:DB8::10]:8443",
      "[2001:db8:0::0010]",
    ])
      expect(hostAllowed(h, allowed), h).toBe(true);
  });
  it("refuses other names, look-alikes and malformed or missing headers", () => {
    for (const h of [
      "evil.example",
      "bastion.example.org.evil.example",
      "evil.example.bastion.example.org",
      "bastion.example.org..",
      "bastion.example.org@evil.example",
      "evil.example@bastion.example.org",
      "bastion.example.org:8443:1",
      "bastion.example.org:port",
      "bastion.example.org, evil.example",
      "bastion.example.org evil.example",
      "2001:db8::10",
      "[2001:db8::10",
      "[2001:db8::10]x",
      "[192.0.2.10]",
      "192.0.2.10.evil.example",
      "%62astion.example.org",
      "bastion.example.org\u0000",
      "",
      undefined,
    ])
      expect(hostAllowed(h, allowed), String(h)).toBe(false);
  });
  it("is off with no names", () => {
    expect(hostAllowed("evil.example", [])).toBe(true);
    expect(hostAllowed(undefined, [])).toBe(true);
  });
  it("reads the name of a Host header without its port", () => {
    expect(hostNameOf("Console.Example:80")).toBe("console.example");
    expect(hostNameOf("[::1]:8443")).toBe("::1");
  });
  it("is canonical in the policy, and the policy refuses what is not a host name", () => {
    const w = parsePolicyText(
      `${BASE}web: { listen: "127.0.0.1:8443", auditor_groups: [a], hostnames: [Bastion.Example.ORG., "[2001:DB8:0::10]", 192.0.2.10] }\n`,
      "/p/g.yaml",
    ).policy.web;
    expect(w?.hostnames).toEqual(["bastion.example.org", "2001:db8::10", "192.0.2.10"]);
    expect(
      parsePolicyText(`${BASE}web: { listen: "127.0.0.1:8443", auditor_groups: [a], hostnames: ["bücher.example"] }\n`, "/p/g.yaml").policy
        .web?.hostnames,
    ).toEqual(["xn--bcher-kva.example"]);
    // Forms a browser never sends in Host (it sends 127.0.0.1 for the first four), and zone ids.
    for (const bad of [
      '"127.1"',
      '"2130706433"',
      '"0x7f.0.0.1"',
      '"999.999.999.999"',
      '"fe80::1%eth0"',
      '"https://bastion.example.org"',
      '"bastion.example.org:8443"',
      '"*.example.org"',
      '"a..b"',
      '""',
    ])
      expect(issues(`${BASE}web: { listen: "127.0.0.1:8443", auditor_groups: [a], hostnames: [${bad}] }\n`).join("\n"), bad).toMatch(
        /not a host name or IP address/,
      );
  });
});

describe("web.trusted_proxies (the client address behind reverse proxies)", () => {
  const trusted = ["127.0.0.2", "10.0.0.0/8", "2001:db8::/64"];
  it("believes X-Forwarded-For only from a trusted proxy, read from the right", () => {
    expect(clientAddress("127.0.0.2", "198.51.100.7", trusted)).toBe("198.51.100.7");
    expect(clientAddress("::ffff:127.0.0.2", "198.51.100.7", trusted)).toBe("198.51.100.7");
    // Proxies chained: skip every trusted hop.
    expect(clientAddress("127.0.0.2", "198.51.100.7, 10.1.2.3", trusted)).toBe("198.51.100.7");
    expect(clientAddress("2001:db8::5", "2001:DB8:1::7", trusted)).toBe("2001:db8:1::7");
  });
  it("never believes what the client wrote itself, nor a header from an untrusted peer", () => {
    // The client sent its own X-Forwarded-For: the proxy appended the real address after it.
    expect(clientAddress("127.0.0.2", "203.0.113.66, 198.51.100.7", trusted)).toBe("198.51.100.7");
    expect(clientAddress("127.0.0.2", "10.9.9.9, 198.51.100.7", trusted)).toBe("198.51.100.7");
    expect(clientAddress("127.0.0.1", "198.51.100.7", trusted)).toBe("127.0.0.1");
    expect(clientAddress("198.51.100.9", "10.0.0.1", trusted)).toBe("198.51.100.9");
    expect(clientAddress("127.0.0.2", "198.51.100.7", [])).toBe("127.0.0.2");
  });
  it("stops at the last trusted hop on a missing or malformed entry", () => {
    for (const xff of [
      undefined,
      "",
      "unknown",
      "198.51.100.7, garbage",
      "198.51.100.7,",
      "127.1",
      "0x7f.0.0.1",
      "198.51.100.7:123456",
      "[2001:db8:1::7",
    ])
      expect(clientAddress("127.0.0.2", xff, trusted), String(xff)).toBe("127.0.0.2");
    expect(clientAddress("127.0.0.2", "garbage, 10.1.2.3", trusted)).toBe("10.1.2.3");
    // A port some proxies append is dropped.
    expect(clientAddress("127.0.0.2", "198.51.100.7:4444", trusted)).toBe("198.51.100.7");
    expect(clientAddress("127.0.0.2", "[2001:db8:1::7]:443", trusted)).toBe("2001:db8:1::7");
    expect(clientAddress("127.0.0.2", "[2001:db8:1::7]", trusted)).toBe("2001:db8:1::7");
    // Every hop trusted: the leftmost one.
    expect(clientAddress("127.0.0.2", "10.0.0.1, 10.0.0.2", trusted)).toBe("10.0.0.1");
  });
  it("is refused in the policy unless every entry is an address or CIDR", () => {
    expect(issues(`${BASE}web: { listen: "127.0.0.1:8443", auditor_groups: [a], trusted_proxies: [10.0.0.0/8, "::1"] }\n`)).toEqual([]);
    expect(issues(`${BASE}web: { listen: "127.0.0.1:8443", auditor_groups: [a], trusted_proxies: [proxy.example] }\n`).join("\n")).toMatch(
      /not an address or CIDR/,
    );
    // Node's isIP takes these zone ids, ipaddr.js (which compares the peers) does not: each login would fail.
    for (const zone of ['"fe80::1%eth0.5"', '"fe80::1%br-lan"', '"fe80::1%eth0"'])
      expect(
        issues(`${BASE}web: { listen: "127.0.0.1:8443", auditor_groups: [a], trusted_proxies: [${zone}] }\n`).join("\n"),
        zone,
      ).toMatch(/zone id/);
    // An IPv4-mapped entry would never match a peer (compared as IPv4): say which form to write.
    expect(
      issues(`${BASE}web: { listen: "127.0.0.1:8443", auditor_groups: [a], trusted_proxies: ["::ffff:10.0.0.0/104"] }\n`).join("\n"),
    ).toMatch(/IPv4 form: 10\.0\.0\.0\/8/);
  });
});
