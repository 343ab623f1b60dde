/**
 * NAT and forwarding for real, in namespaces this test creates:
 *
 *   inet 203.0.113.50, 2001:db8:ff::50 ─ pub0 (203.0.113.9 primary, 203.0.113.10 = public_ip, 2001:db8:ff::1)
 *                                        │ gw │ vmbr1 (10.10.1.1, 2001:db8:10:1::1) ─ host bridge br0 ─┬─ vm1 (10.10.1.11, 2001:db8:10:1::11)
 *                                        │    │                                                       └─ vm3 (10.10.1.13)
 *                                        │    │ gw2 (10.10.2.1, 2001:db8:10:2::1) ── vm2 (10.10.2.12, 2001:db8:10:2::12)
 *                                        │    │ mgmt0 (192.0.2.1) ────────────────── mgmt (192.0.2.5)  not in private_networks
 *
 * varco applies its table in gw (`varco net apply --netns`); real TCP and UDP packets prove
 * hairpin, the SNAT source, port ranges, tcp+udp, per-forward rate, MSS clamping, the forward
 * chain's default drop and IPv6 (dropped unless listed, routed forwards).
 */
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { execa, type ResultPromise } from "execa";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ROOT } from "../helpers/harness.ts";
import { createNetns, type Netns, veth } from "../helpers/netns.ts";

const isRoot = process.getuid?.() === 0;
let n: Netns;
let dir: string;
let policyFile: string;

/** Dual-stack TCP + UDP server: answers "NAME:PORT:<peer address>" on every port given. */
const SERVER = `
const net = require("node:net"), dgram = require("node:dgram");
const [name, ...ports] = process.argv.slice(1);
const clean = (a) => String(a).replace(/^::ffff:/, "");
let up = 0;
const ready = () => { if (++up === ports.length * 2) console.log("READY"); };
for (const p of ports) {
  net.createServer((s) => s.end(name + ":" + p + ":" + clean(s.remoteAddress) + "\\n"))
    .listen({ port: Number(p), host: "::", ipv6Only: false }, ready);
  const u = dgram.createSocket({ type: "udp6", ipv6Only: false });
  u.on("message", (m, r) => u.send(name + ":" + p + ":" + clean(r.address) + "\\n", r.port, r.address));
  u.bind(Number(p), "::", ready);
}`;
/** Client: prints the answer, TIMEOUT or ERROR:<code>; always exits 0. */
const CLIENT = `
const net = require("node:net"), dgram = require("node:dgram");
const [proto, host, port, ms] = process.argv.slice(1);
const done = (s) => { console.log(s); process.exit(0); };
setTimeout(() => done("TIMEOUT"), Number(ms));
if (proto === "udp") {
  const u = dgram.createSocket(host.includes(":") ? "udp6" : "udp4");
  u.on("message", (m) => done(String(m).trim()));
  u.on("error", (e) => done("ERROR:" + e.code));
  u.send("x", Number(port), host);
} else {
  const s = net.connect({ host, port: Number(port) });
  let out = "";
  s.on("data", (d) => { out += d; });
  s.on("end", () => done(out.trim()));
  s.on("error", (e) => done("ERROR:" + e.code));
}`;

const KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFm6vDyUu3Cq0cVl3kKq6a2lJjJx1m4Hq0rS2y3gk1Xz";
const policyText = (extra = "") => `version: 1
gateway: { state_dir: state }
directory: { ldap: { url: "ldap://127.0.0.1:1", bind_dn: cn=x, bind_password_file: pw, user_base: ou=p } }
targets: { vm1: { host: 10.10.1.11, host_key: "${KEY}" } }
routes: [ { users: [u], alias: vm1, target: vm1 } ]
network:
  table: varco
  public_interface: pub0
  public_ip: 203.0.113.10
  private_networks: [10.10.0.0/16, "2001:db8:10::/48"]
  masquerade: true
${extra}  port_forwards:
    - { name: web, external_port: 8080, internal_ip: 10.10.1.11, internal_port: 80 }
    - { name: range, external_port: "8000-8002", internal_ip: 10.10.1.11 }
    - { name: shifted, external_port: "9000-9001", internal_ip: 10.10.1.11, internal_port: "7000-7001" }
    - { name: dns, protocol: tcp+udp, external_port: 5353, internal_ip: 10.10.1.11 }
    - { name: partners, external_port: 8443, internal_ip: 10.10.1.11, internal_port: 80, sources: [198.51.100.0/24] }
    - { name: limited, external_port: 8081, internal_ip: 10.10.1.11, internal_port: 80, rate: "1/minute", log: true }
    - { name: web6, external_port: 443, internal_ip: "2001:db8:10:1::11" }
  forward_allow:
    - { name: db6, from: ["2001:db8:10:2::/64"], to: ["2001:db8:10:1::11"], ports: [5432] }
`;

const varco = (...args: string[]) =>
  execa("node", [join(ROOT, "bin/varco.mjs"), "--policy", policyFile, "net", "--netns", n.ns("gw"), ...args], { reject: false });
const probe = async (role: string, proto: "tcp" | "udp", host: string, port: number, ms = 1500) =>
  (await n.exec(role, ["node", "-e", CLIENT, proto, host, String(port), String(ms)])).stdout.trim();
const table = async () => (await n.exec("gw", ["nft", "list", "table", "inet", "varco"])).stdout;
const counter = async (comment: string) => {
  const m = new RegExp(`counter packets (\\d+) bytes \\d+ drop comment "${comment}"`).exec(await table());
  return Number(m?.[1] ?? -1);
};

async function serve(role: string, ports: readonly number[]): Promise<void> {
  const child: ResultPromise = n.spawn(role, ["node", "-e", SERVER, role, ...ports.map(String)]);
  await new Promise<void>((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`server in ${role} did not start`)), 10_000);
    child.stdout?.on("data", (d: Buffer) => {
      if (d.toString().includes("READY")) {
        clearTimeout(t);
        resolve();
      }
    });
  });
}

async function apply(text: string): Promise<void> {
  writeFileSync(policyFile, text);
  const r = await varco("apply");
  expect(r.stderr).toBe("");
  expect(r.exitCode).toBe(0);
}

beforeAll(async () => {
  if (!isRoot) return;
  dir = mkdtempSync(join(tmpdir(), "varco-nat-"));
  policyFile = join(dir, "gateway.yaml");
  n = await createNetns(["inet", "gw", "host", "vm1", "vm2", "vm3", "mgmt"]);
  await veth(n, { role: "inet", ifname: "eth0" }, { role: "gw", ifname: "pub0" });
  // Proxmox-like: the gateway and two VMs are ports of one bridge on a separate host, so traffic
  // between vm1 and vm3 never crosses the gateway.
  await veth(n, { role: "gw", ifname: "vmbr1" }, { role: "host", ifname: "p-gw" });
  await veth(n, { role: "vm1", ifname: "eth0" }, { role: "host", ifname: "p-vm1" });
  await veth(n, { role: "vm3", ifname: "eth0" }, { role: "host", ifname: "p-vm3" });
  await veth(n, { role: "vm2", ifname: "eth0" }, { role: "gw", ifname: "gw2" });
  await veth(n, { role: "mgmt", ifname: "eth0" }, { role: "gw", ifname: "mgmt0" });
  await n.ip("host", "link", "add", "br0", "type", "bridge");
  for (const port of ["p-gw", "p-vm1", "p-vm3"]) await n.ip("host", "link", "set", port, "master", "br0");
  await n.ip("host", "link", "set", "br0", "up");
  const addr = (role: string, dev: string, a: string) =>
    n.ip(role, ...(a.includes(":") ? ["-6"] : []), "addr", "add", a, "dev", dev, ...(a.includes(":") ? ["nodad"] : []));
  // Two addresses on the public interface; public_ip is the secondary one, so masquerade would pick .9.
  await addr("gw", "pub0", "203.0.113.9/24");
  await addr("gw", "pub0", "203.0.113.10/24");
  await addr("gw", "pub0", "2001:db8:ff::1/64");
  await addr("gw", "vmbr1", "10.10.1.1/24");
  await addr("gw", "vmbr1", "2001:db8:10:1::1/64");
  await addr("gw", "gw2", "10.10.2.1/24");
  await addr("gw", "gw2", "2001:db8:10:2::1/64");
  await addr("gw", "mgmt0", "192.0.2.1/24");
  await addr("inet", "eth0", "203.0.113.50/24");
  await addr("inet", "eth0", "2001:db8:ff::50/64");
  await addr("vm1", "eth0", "10.10.1.11/24");
  await addr("vm1", "eth0", "2001:db8:10:1::11/64");
  await addr("vm3", "eth0", "10.10.1.13/24");
  await addr("vm2", "eth0", "10.10.2.12/24");
  await addr("vm2", "eth0", "2001:db8:10:2::12/64");
  await addr("mgmt", "eth0", "192.0.2.5/24");
  for (const [role, v4, v6] of [
    ["vm1", "10.10.1.1", "2001:db8:10:1::1"],
    ["vm3", "10.10.1.1", undefined],
    ["vm2", "10.10.2.1", "2001:db8:10:2::1"],
    ["mgmt", "192.0.2.1", undefined],
  ] as const) {
    await n.ip(role, "route", "add", "default", "via", v4);
    if (v6) await n.ip(role, "-6", "route", "add", "default", "via", v6);
  }
  // An "attacker" on the internet routes the private and management ranges through the gateway.
  await n.ip("inet", "route", "add", "10.10.0.0/16", "via", "203.0.113.10");
  await n.ip("inet", "route", "add", "192.0.2.0/24", "via", "203.0.113.10");
  await n.ip("inet", "-6", "route", "add", "2001:db8:10::/48", "via", "2001:db8:ff::1");
  await n.exec("gw", ["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
  await n.exec("gw", ["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"]);
  await serve("vm1", [80, 443, 5353, 5432, 7001, 8000, 8002, 8003, 9443]);
  await serve("inet", [7000]);
  await serve("mgmt", [22]);
  await apply(policyText());
}, 60_000);

afterAll(async () => {
  await n?.destroy();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe.runIf(isRoot)("NAT and forwarding in namespaces", () => {
  it("hairpin: a VM on the target's own bridge, and one on another link, reach public_ip:port of a forward", async () => {
    // Without the hairpin SNAT, vm1 answers vm3 directly from 10.10.1.11 and vm3 drops the reply.
    expect(await probe("vm3", "tcp", "203.0.113.10", 8080)).toBe("vm1:80:10.10.1.1");
    expect(await probe("vm2", "tcp", "203.0.113.10", 8080)).toBe("vm1:80:10.10.1.1");
    expect(await probe("vm1", "tcp", "203.0.113.10", 8080)).toBe("vm1:80:10.10.1.1");
    // From outside the client's own address is kept (hairpin SNAT is only for private sources).
    expect(await probe("inet", "tcp", "203.0.113.10", 8080)).toBe("vm1:80:203.0.113.50");
    // A source-restricted forward stays restricted from inside too.
    expect(await probe("vm3", "tcp", "203.0.113.10", 8443)).not.toMatch(/^vm1/);
  });

  it("SNATs outbound traffic to public_ip (the secondary address), then to snat_address", async () => {
    expect(await probe("vm1", "tcp", "203.0.113.50", 7000)).toBe("inet:7000:203.0.113.10");
    await apply(policyText("  snat_address: 203.0.113.9\n"));
    expect(await probe("vm1", "tcp", "203.0.113.50", 7000)).toBe("inet:7000:203.0.113.9");
    await apply(policyText());
  });

  it("forwards port ranges (same ports, and shifted) and tcp+udp in one forward", async () => {
    expect(await probe("inet", "tcp", "203.0.113.10", 8000)).toBe("vm1:8000:203.0.113.50");
    expect(await probe("inet", "tcp", "203.0.113.10", 8002)).toBe("vm1:8002:203.0.113.50");
    expect(await probe("inet", "tcp", "203.0.113.10", 8003, 800)).not.toMatch(/^vm1/);
    expect(await probe("inet", "tcp", "203.0.113.10", 9001)).toBe("vm1:7001:203.0.113.50");
    expect(await probe("inet", "tcp", "203.0.113.10", 5353)).toBe("vm1:5353:203.0.113.50");
    expect(await probe("inet", "udp", "203.0.113.10", 5353)).toBe("vm1:5353:203.0.113.50");
  });

  it("drops new connections over a forward's rate and counts them", async () => {
    const answers: string[] = [];
    for (let i = 0; i < 10; i++) answers.push(await probe("inet", "tcp", "203.0.113.10", 8081, 400));
    expect(answers[0]).toBe("vm1:80:203.0.113.50");
    expect(answers).toContain("TIMEOUT");
    expect(await counter("rate of limited")).toBeGreaterThan(0);
    expect(await table()).toContain('log prefix "varco fwd limited: "');
  });

  it("drops what no rule names: inbound to a network that is not in private_networks, and straight to a VM", async () => {
    // The old forward chain (policy accept) let the internet reach any network behind the gateway not listed.
    expect(await probe("inet", "tcp", "192.0.2.5", 22, 800)).toBe("TIMEOUT");
    expect(await probe("inet", "tcp", "10.10.1.11", 80, 800)).toBe("TIMEOUT");
    expect(await counter("inbound without a port forward")).toBeGreaterThan(0);
    // The VMs' own outbound traffic still flows.
    expect(await probe("vm2", "tcp", "203.0.113.50", 7000)).toBe("inet:7000:203.0.113.10");
  });

  it("IPv6: dropped unless listed; a routed forward opens one port on a VM's global address; forward_allow works", async () => {
    // Not listed: dropped (the old table let every IPv6 packet through).
    expect(await probe("inet", "tcp", "2001:db8:10:1::11", 9443, 800)).toBe("TIMEOUT");
    expect(await probe("inet", "tcp", "2001:db8:10:1::11", 5432, 800)).toBe("TIMEOUT");
    // Routed forward: the VM sees the real client address (no NAT).
    expect(await probe("inet", "tcp", "2001:db8:10:1::11", 443)).toBe("vm1:443:2001:db8:ff::50");
    // East-west allow-list, IPv6.
    expect(await probe("vm2", "tcp", "2001:db8:10:1::11", 5432)).toBe("vm1:5432:2001:db8:10:2::12");
    expect(await probe("vm2", "tcp", "2001:db8:10:1::11", 9443, 800)).toBe("TIMEOUT");
    // Outbound IPv6 from a private network is routed.
    expect(await probe("vm1", "tcp", "2001:db8:ff::50", 7000)).toBe("inet:7000:2001:db8:10:1::11");
    const st = await varco("status");
    expect(st.stdout).toContain("in sync");
  });

  it("clamps the TCP MSS of forwarded SYNs to the route MTU with mss_clamp: true", async () => {
    // vm1 counts SYNs by the MSS they carry; the gateway's route to vm1's network has MTU 1280.
    await n.exec("vm1", ["nft", "add", "table", "inet", "probe"]);
    await n.exec("vm1", ["nft", "add", "chain", "inet", "probe", "in", "{ type filter hook input priority 0; policy accept; }"]);
    await n.exec("vm1", [
      "nft",
      "add",
      "rule",
      "inet",
      "probe",
      "in",
      "tcp",
      "flags",
      "syn",
      "tcp",
      "option",
      "maxseg",
      "size",
      "1240",
      "counter",
    ]);
    await n.ip("gw", "route", "replace", "10.10.1.0/24", "dev", "vmbr1", "src", "10.10.1.1", "mtu", "1280");
    const clamped = async () => {
      const m = /counter packets (\d+)/.exec((await n.exec("vm1", ["nft", "list", "table", "inet", "probe"])).stdout);
      return Number(m?.[1] ?? -1);
    };
    expect(await probe("inet", "tcp", "203.0.113.10", 8080)).toBe("vm1:80:203.0.113.50");
    expect(await clamped()).toBe(0);
    await apply(policyText("  mss_clamp: true\n"));
    expect(await probe("inet", "tcp", "203.0.113.10", 8080)).toBe("vm1:80:203.0.113.50");
    expect(await clamped()).toBe(1);
  });
});
