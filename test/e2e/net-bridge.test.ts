/**
 * Bridges for real, in namespaces this test creates.
 *
 * East-west on a shared bridge (a Proxmox-like host):
 *   vm1 (10.10.1.11) ─┐
 *   vm2 (10.10.1.12) ─┼─ vmbr1 in "host"   (varco net apply --role host: table bridge varco)
 *   fe  (10.10.1.1)  ─┘
 * Bridge ports on the front-end: a NIC already in vmbr0 (the management bridge) is refused, a
 * bridge removed from the policy is removed (only if varco created it) and comes back on rollback.
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
const policyText = (network: string) => `version: 1
gateway: { state_dir: state }
directory: { ldap: { url: "ldap://127.0.0.1:1", bind_dn: cn=x, bind_password_file: pw, user_base: ou=p } }
targets: { vm1: { host: 10.10.1.11, host_key: "${KEY}" } }
routes: [ { users: [u], alias: vm1, target: vm1 } ]
network:
  table: varco
  public_interface: pub0
  public_ip: 203.0.113.10
  private_networks: [10.10.0.0/16]
${network}
`;
const EAST_WEST = `  forward_allow:
    - { name: app, protocol: tcp, from: [10.10.1.12], to: [10.10.1.11], ports: [8080] }
  host_bridge: { gateway_addresses: [10.10.1.1] }`;

const varco = (role: string, ...args: string[]) =>
  execa("node", [join(ROOT, "bin/varco.mjs"), "--policy", policyFile, "net", "--netns", n.ns(role), ...args], { reject: false });
const links = async (role: string) =>
  JSON.parse(await n.ip(role, "-j", "-d", "link", "show")) as Array<{ ifname: string; master?: string; flags: string[] }>;
const masterOf = async (role: string, ifname: string) => (await links(role)).find((l) => l.ifname === ifname)?.master;

beforeAll(async () => {
  if (!isRoot) return;
  dir = mkdtempSync(join(tmpdir(), "varco-netbr-"));
  policyFile = join(dir, "gateway.yaml");
  n = await createNetns(["host", "vm1", "vm2", "fe", "gw", "mgmt"]);
  // The host's shared bridge, three "VM" ports.
  await n.ip("host", "link", "add", "vmbr1", "type", "bridge");
  await n.ip("host", "link", "set", "vmbr1", "up");
  for (const [role, port, addr] of [
    ["vm1", "tap1", "10.10.1.11/24"],
    ["vm2", "tap2", "10.10.1.12/24"],
    ["fe", "tap3", "10.10.1.1/24"],
  ] as const) {
    await veth(n, { role: "host", ifname: port }, { role, ifname: "eth0" });
    await n.ip("host", "link", "set", port, "master", "vmbr1");
    await n.ip(role, "addr", "add", addr, "dev", "eth0");
  }
  await n.serve("vm1", "vm1", [8080, 9090]);
  await n.serve("vm2", "vm2", [8080]);
  // The front-end: vmbr0 (management, 192.0.2.2/24) holds eno1; eno2 is free; pub0 is public.
  await veth(n, { role: "gw", ifname: "eno1" }, { role: "mgmt", ifname: "m1" });
  await veth(n, { role: "gw", ifname: "eno2" }, { role: "mgmt", ifname: "m2" });
  await veth(n, { role: "gw", ifname: "eno3" }, { role: "mgmt", ifname: "m3" });
  await veth(n, { role: "gw", ifname: "pub0" }, { role: "mgmt", ifname: "p0" });
  await n.ip("gw", "link", "add", "vmbr0", "type", "bridge");
  await n.ip("gw", "link", "set", "eno1", "master", "vmbr0");
  await n.ip("gw", "addr", "add", "192.0.2.2/24", "dev", "vmbr0");
  await n.ip("gw", "link", "set", "vmbr0", "up");
  await n.ip("gw", "addr", "add", "203.0.113.10/24", "dev", "pub0");
  await n.ip("mgmt", "addr", "add", "192.0.2.9/24", "dev", "m1");
  await n.serve("gw", "gw", [7001]);
});

afterAll(async () => {
  await n?.destroy();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe.runIf(isRoot)("east-west on a shared host bridge", () => {
  it("before the table every port is reachable (the test sees the bridged traffic)", async () => {
    expect(await n.probe("vm2", "10.10.1.11", 8080)).toBe("vm1:8080:10.10.1.12");
    expect(await n.probe("vm2", "10.10.1.11", 9090)).toBe("vm1:9090:10.10.1.12");
    expect(await n.probe("vm1", "10.10.1.12", 8080)).toBe("vm2:8080:10.10.1.11");
  });

  it("render host-bridge prints the bridge-family table", async () => {
    writeFileSync(policyFile, policyText(EAST_WEST));
    const r = await varco("host", "render", "host-bridge");
    expect(r.exitCode).toBe(0);
    expect(r.stdout).toContain("table bridge varco {");
    expect(r.stdout).toContain("ct state established,related accept");
  });

  it("apply --role host: the allowed port is reached, a disallowed one dropped and counted", async () => {
    const r = await varco("host", "apply", "--role", "host");
    expect(r.exitCode).toBe(0);
    expect(r.stdout).toMatch(/applied table bridge varco \((stateful|stateless)\)/);
    if (r.stdout.includes("stateless")) expect(r.stderr).toContain("no bridge conntrack");
    expect(await n.probe("vm2", "10.10.1.11", 8080)).toBe("vm1:8080:10.10.1.12");
    expect(await n.probe("vm2", "10.10.1.11", 9090)).toBe("TIMEOUT");
    // The allow-list is one way: vm1 may not open connections to vm2.
    expect(await n.probe("vm1", "10.10.1.12", 8080)).toBe("TIMEOUT");
    // The front-end's own address (bastion sessions, hairpin) is not east-west.
    expect(await n.probe("fe", "10.10.1.11", 9090)).toBe("vm1:9090:10.10.1.1");
    const listing = (await n.exec("host", ["nft", "list", "table", "bridge", "varco"])).stdout;
    expect(listing).toMatch(/counter packets [1-9]\d* bytes \d+ drop comment "east-west not in forward_allow"/);
    // Only the bridge table: the host's inet family is untouched.
    expect((await n.exec("host", ["nft", "list", "tables"])).stdout.trim()).toBe("table bridge varco");
  });

  it("re-applying replaces the table atomically (one table, the new allow-list)", async () => {
    writeFileSync(policyFile, policyText(EAST_WEST.replace("ports: [8080]", "ports: [9090]")));
    expect((await varco("host", "apply", "--role", "host")).exitCode).toBe(0);
    expect(await n.probe("vm2", "10.10.1.11", 9090)).toBe("vm1:9090:10.10.1.12");
    expect(await n.probe("vm2", "10.10.1.11", 8080)).toBe("TIMEOUT");
    expect((await n.exec("host", ["nft", "list", "tables"])).stdout.trim()).toBe("table bridge varco");
    await n.exec("host", ["nft", "delete", "table", "bridge", "varco"]);
    expect(await n.probe("vm2", "10.10.1.11", 8080)).toBe("vm1:8080:10.10.1.12");
  });
});

describe.runIf(isRoot)("bridge ports on the front-end", () => {
  it("refuses a port already in vmbr0 (plan and apply), and changes nothing", async () => {
    writeFileSync(policyFile, policyText("  bridges:\n    - { name: vmbr1, ports: [eno1], address: 10.10.1.1/24 }"));
    const p = await varco("gw", "plan");
    expect(p.exitCode).toBe(1);
    expect(p.stdout).toContain("REFUSED: network.bridges[0].ports: eno1 is already a port of vmbr0 (a bridge)");
    expect(p.stdout).toContain("ip link set dev eno1 nomaster");
    const a = await varco("gw", "apply");
    expect(a.exitCode).toBe(1);
    expect(a.stderr).toContain("Nothing was changed");
    expect(await masterOf("gw", "eno1")).toBe("vmbr0");
    expect((await links("gw")).some((l) => l.ifname === "vmbr1")).toBe(false);
    // The management path still works.
    expect(await n.probe("mgmt", "192.0.2.2", 7001)).toBe("gw:7001:192.0.2.9");
  });

  it("refuses a port that carries an address", async () => {
    await n.ip("gw", "addr", "add", "198.51.100.7/24", "dev", "eno3");
    writeFileSync(policyFile, policyText("  bridges:\n    - { name: vmbr1, ports: [eno3] }"));
    const p = await varco("gw", "plan");
    expect(p.exitCode).toBe(1);
    expect(p.stdout).toContain("eno3 carries 198.51.100.7/24");
    await n.ip("gw", "addr", "del", "198.51.100.7/24", "dev", "eno3");
  });

  it("a bridge removed from the policy is removed (only one varco created), and rollback brings it back", async () => {
    // vmbr5 exists before varco: listed, then dropped from the policy, it must stay.
    await n.ip("gw", "link", "add", "vmbr5", "type", "bridge");
    const both = `  bridges:
    - { name: vmbr1, ports: [eno2], address: 10.10.1.1/24 }
    - { name: vmbr2, ports: [eno3], address: 10.10.2.1/24 }
    - { name: vmbr5, ports: [] }`;
    writeFileSync(policyFile, policyText(both));
    const a1 = await varco("gw", "apply");
    expect(a1.stderr).toBe("");
    expect(a1.exitCode).toBe(0);
    expect(await masterOf("gw", "eno3")).toBe("vmbr2");

    writeFileSync(policyFile, policyText("  bridges:\n    - { name: vmbr1, ports: [eno2], address: 10.10.1.1/24 }"));
    const p = await varco("gw", "plan");
    expect(p.stdout).toContain("+ delete bridge vmbr2 (removed from the policy)");
    expect(p.stdout).not.toContain("vmbr5");
    const a2 = await varco("gw", "apply");
    expect(a2.exitCode).toBe(0);
    const after = await links("gw");
    expect(after.some((l) => l.ifname === "vmbr2")).toBe(false);
    expect(after.some((l) => l.ifname === "vmbr5")).toBe(true);
    expect(await masterOf("gw", "eno3")).toBeUndefined();
    expect(await masterOf("gw", "eno1")).toBe("vmbr0");

    const rb = await varco("gw", "rollback");
    expect(rb.exitCode).toBe(0);
    expect(await masterOf("gw", "eno3")).toBe("vmbr2");
    expect(await n.ip("gw", "-br", "addr", "show", "vmbr2")).toMatch(/UP\s+10\.10\.2\.1\/24/);
  });

  it("vlan_aware: the plan creates the bridge with vlan_filtering 1 and gives its ports their VLANs", async () => {
    writeFileSync(
      policyFile,
      policyText(
        "  bridges:\n    - { name: vmbr1, ports: [eno2], address: 10.10.1.1/24 }\n    - { name: vmbr7, vlan_aware: true, vids: [10, '20-30'] }",
      ),
    );
    const p = await varco("gw", "plan", "--commands");
    expect(p.stdout).toContain("ip link add name vmbr7 type bridge vlan_filtering 1");
    const r = await varco("gw", "render", "interfaces");
    expect(r.stdout).toContain(
      "auto vmbr7\niface vmbr7 inet manual\n\tbridge-ports none\n\tbridge-stp off\n\tbridge-fd 0\n\tbridge-vlan-aware yes\n\tbridge-vids 10 20-30",
    );
  });
});
