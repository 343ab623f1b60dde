/**
 * Attacks on the front-end with real packets, in namespaces this test creates:
 *
 *   inet 203.0.113.50, 2001:db8:ff::50 ─ pub0 │ gw 203.0.113.10, 2001:db8:ff::1 │ l1 ─ vm1 10.10.1.11, 2001:db8:10:1::11
 *                                             │  (SSH on [::]:2200)             │ l2 ─ vm2 10.10.2.12, 2001:db8:10:2::12
 *
 * - a packet from the internet with a spoofed private source listed in forward_allow (vm2 → vm1:5432)
 *   must not be forwarded (IPv4 with loose rp_filter, as Debian sets it, and IPv6, which has none);
 * - the per-source SSH meter must not be bypassed by an IPv6 host using many addresses of its /64;
 * - SYNs spoofed from the administrator's (input_allow) address must not lock the administrator out;
 * - a flow another table DNATed to a VM does not pass varco's forward chain as a port forward.
 * Each failed before its fix (src/net/nft.ts, src/net/input.ts).
 */
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { execa } from "execa";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ROOT } from "../helpers/harness.ts";
import { createNetns, type Netns, veth } from "../helpers/netns.ts";

const isRoot = process.getuid?.() === 0;
let n: Netns;
let dir: string;
let policyFile: string;

const KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFm6vDyUu3Cq0cVl3kKq6a2lJjJx1m4Hq0rS2y3gk1Xz";
const POLICY = `version: 1
gateway: { listen: ["[::]:2200"], state_dir: state }
directory: { ldap: { url: "ldap://127.0.0.1:1", bind_dn: cn=x, bind_password_file: pw, user_base: ou=p } }
targets: { vm1: { host: 10.10.1.11, host_key: "${KEY}" } }
routes: [ { users: [u], alias: vm1, target: vm1 } ]
network:
  public_interface: pub0
  public_ip: 203.0.113.10
  private_networks: [10.10.0.0/16, "2001:db8:10::/48"]
  input: { ssh_rate: 1/minute, ssh_burst: 5 }
  input_allow:
    - { name: office, protocol: tcp, ports: [2200], sources: [203.0.113.77/32] }
  port_forwards:
    - { name: game, protocol: udp, external_port: 7001, internal_ip: 10.10.1.11 }
  forward_allow:
    - { name: db, protocol: udp, from: [10.10.2.12], to: [10.10.1.11], ports: [5432] }
    - { name: db6, protocol: udp, from: ["2001:db8:10:2::12"], to: ["2001:db8:10:1::11"], ports: [5432] }
`;
/** TCP server on [::]:PORT (dual-stack) answering "ok". */
const SERVER = `require("node:net").createServer((s) => s.end("ok\\n")).listen({ port: Number(process.argv[1]), host: "::", ipv6Only: false }, () => console.log("READY"));`;
/** CONNECT host port localAddress ms → "ok" | "TIMEOUT" | "ERROR:…"; UDP host port localAddress → sends one datagram. */
const CLIENT = `
const [mode, host, port, local, ms] = process.argv.slice(1);
const done = (s) => { console.log(s); process.exit(0); };
if (mode === "udp") {
  const u = require("node:dgram").createSocket(host.includes(":") ? "udp6" : "udp4");
  u.bind({ address: local }, () => u.send("x", Number(port), host, (e) => done(e ? "ERROR:" + e.code : "SENT")));
} else {
  setTimeout(() => done("TIMEOUT"), Number(ms));
  const s = require("node:net").connect({ host, port: Number(port), localAddress: local });
  let out = ""; s.on("data", (d) => { out += d; }); s.on("end", () => done(out.trim())); s.on("error", (e) => done("ERROR:" + e.code));
}`;
const client = async (...args: string[]) => (await n.exec("inet", ["node", "-e", CLIENT, ...args])).stdout.trim();
const vm1Udp = async () => {
  const out = (await n.exec("vm1", ["nft", "list", "table", "inet", "probe"])).stdout;
  return Number(/udp dport 5432 counter packets (\d+)/.exec(out)?.[1] ?? -1);
};

beforeAll(async () => {
  if (!isRoot) return;
  dir = mkdtempSync(join(tmpdir(), "varco-attack-"));
  policyFile = join(dir, "gateway.yaml");
  writeFileSync(policyFile, POLICY);
  n = await createNetns(["inet", "gw", "vm1", "vm2"]);
  await veth(n, { role: "inet", ifname: "eth0" }, { role: "gw", ifname: "pub0" });
  await veth(n, { role: "gw", ifname: "l1" }, { role: "vm1", ifname: "eth0" });
  await veth(n, { role: "gw", ifname: "l2" }, { role: "vm2", ifname: "eth0" });
  const add = (role: string, dev: string, a: string) =>
    n.ip(role, ...(a.includes(":") ? ["-6"] : []), "addr", "add", a, "dev", dev, ...(a.includes(":") ? ["nodad"] : []));
  for (const [role, dev, a] of [
    ["gw", "pub0", "203.0.113.10/24"],
    ["gw", "pub0", "2001:db8:ff::1/64"],
    ["gw", "l1", "10.10.1.1/24"],
    ["gw", "l1", "2001:db8:10:1::1/64"],
    ["gw", "l2", "10.10.2.1/24"],
    ["gw", "l2", "2001:db8:10:2::1/64"],
    ["vm1", "eth0", "10.10.1.11/24"],
    ["vm1", "eth0", "2001:db8:10:1::11/64"],
    ["vm2", "eth0", "10.10.2.12/24"],
    ["vm2", "eth0", "2001:db8:10:2::12/64"],
    ["inet", "eth0", "203.0.113.50/24"],
    ["inet", "eth0", "203.0.113.77/24"],
    ["inet", "eth0", "2001:db8:ff::50/64"],
    // The attacker's spoofed sources: vm2's addresses.
    ["inet", "lo", "10.10.2.12/32"],
    ["inet", "lo", "2001:db8:10:2::12/128"],
  ] as const)
    await add(role, dev, a);
  for (let i = 0; i < 12; i++) await add("inet", "eth0", `2001:db8:ff::${(0x100 + i).toString(16)}/64`);
  for (const [role, v4, v6] of [
    ["vm1", "10.10.1.1", "2001:db8:10:1::1"],
    ["vm2", "10.10.2.1", "2001:db8:10:2::1"],
  ] as const) {
    await n.ip(role, "route", "add", "default", "via", v4);
    await n.ip(role, "-6", "route", "add", "default", "via", v6);
  }
  await n.ip("inet", "route", "add", "10.10.0.0/16", "via", "203.0.113.10");
  await n.ip("inet", "-6", "route", "add", "2001:db8:10::/48", "via", "2001:db8:ff::1");
  for (const s of [
    "net.ipv4.ip_forward=1",
    "net.ipv6.conf.all.forwarding=1",
    "net.ipv4.conf.all.rp_filter=2",
    "net.ipv4.conf.pub0.rp_filter=2",
  ])
    await n.exec("gw", ["sysctl", "-qw", s]);
  await n.exec("vm1", [
    "nft",
    "add table inet probe; add chain inet probe in { type filter hook input priority 0; }; add rule inet probe in udp dport 5432 counter",
  ]);
  const server = n.spawn("gw", ["node", "-e", SERVER, "2200"]);
  await new Promise<void>((resolve, reject) => {
    const t = setTimeout(() => reject(new Error("server did not start")), 10_000);
    server.stdout?.on("data", (d: Buffer) => {
      if (!d.toString().includes("READY")) return;
      clearTimeout(t);
      resolve();
    });
  });
  const r = await execa("node", [join(ROOT, "bin/varco.mjs"), "--policy", policyFile, "net", "--netns", n.ns("gw"), "apply"], {
    reject: false,
    env: { SSH_CONNECTION: "", SUDO_USER: "" },
  });
  expect(r.stderr).toBe("");
  expect(r.exitCode).toBe(0);
}, 60_000);

afterAll(async () => {
  await n?.destroy();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe.runIf(isRoot)("attacks on the front-end, with real packets", () => {
  it("a private source spoofed from the internet is not forwarded through forward_allow (IPv4 and IPv6)", async () => {
    // The legitimate flow works: vm2 → vm1:5432/udp is listed.
    await n.exec("vm2", ["node", "-e", CLIENT, "udp", "10.10.1.11", "5432", "10.10.2.12"]);
    await new Promise((r) => setTimeout(r, 200));
    const before = await vm1Udp();
    expect(before).toBe(1);
    expect(await client("udp", "10.10.1.11", "5432", "10.10.2.12")).toBe("SENT");
    expect(await client("udp", "2001:db8:10:1::11", "5432", "2001:db8:10:2::12")).toBe("SENT");
    await new Promise((r) => setTimeout(r, 300));
    expect(await vm1Udp()).toBe(before);
  });

  it("a flow another table DNATed to a VM is not taken for one of varco's port forwards", async () => {
    // Another table on the node (Docker, a hand-made rule) DNATs 203.0.113.99:6000 to vm1:5432.
    await n.ip("gw", "addr", "add", "203.0.113.99/32", "dev", "lo");
    await n.exec("gw", [
      "nft",
      "add table ip other; add chain ip other pre { type nat hook prerouting priority -110; }; add rule ip other pre ip daddr 203.0.113.99 udp dport 6000 dnat to 10.10.1.11:5432",
    ]);
    try {
      const before = await vm1Udp();
      expect(await client("udp", "203.0.113.99", "6000", "203.0.113.50")).toBe("SENT");
      await new Promise((r) => setTimeout(r, 300));
      expect(await vm1Udp()).toBe(before);
    } finally {
      await n.exec("gw", ["nft", "delete table ip other"]);
    }
  });

  it("an IPv6 host cannot multiply the per-source SSH rate with the addresses of its /64", async () => {
    // Neighbour discovery first, so the first connection does not wait for it.
    await n.exec("inet", ["ping", "-6", "-c", "1", "-W", "2", "2001:db8:ff::1"]);
    const results: string[] = [];
    for (let i = 0; i < 12; i++)
      results.push(await client("tcp", "2001:db8:ff::1", "2200", `2001:db8:ff::${(0x100 + i).toString(16)}`, "1000"));
    // burst 5 at 1/minute for the whole /64: at most 6 get through.
    expect(results.filter((x) => x === "ok").length).toBeLessThanOrEqual(6);
    expect(results[0]).toBe("ok");
  }, 30_000);

  it("SYNs from the administrator's input_allow address do not lock the administrator out", async () => {
    // The same source opening 12 connections stands for an attacker spoofing it: the meter counts SYNs.
    const results: string[] = [];
    for (let i = 0; i < 12; i++) results.push(await client("tcp", "203.0.113.10", "2200", "203.0.113.77", "600"));
    expect(results.every((x) => x === "ok")).toBe(true);
    // Any other source is still limited.
    const other: string[] = [];
    for (let i = 0; i < 8; i++) other.push(await client("tcp", "203.0.113.10", "2200", "203.0.113.50", "600"));
    expect(other.filter((x) => x === "ok").length).toBeLessThanOrEqual(6);
  }, 30_000);
});
