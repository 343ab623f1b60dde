/**
 * The input chain for real, in namespaces this test creates:
 *
 *   inet (203.0.113.50) ─┐
 *   mon  (203.0.113.51) ─┤ br0 in "lan" ── pub0 │ gw 203.0.113.11 │ gw1 (10.10.1.1) ─ vm (10.10.1.11)
 *   peer (203.0.113.12) ─┘                                    (probe servers on 22, 2222, 5432, 9108)
 *
 * Every case is decided twice: by `admits()` (the pure mirror the lockout refusal uses) and by real
 * packets, and the two must agree. Then the per-source SSH meter, VRRP from the configured peer with
 * two real keepalived daemons, and the admin-lockout refusal of `varco net apply` (SSH_CONNECTION).
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { execa, type ResultPromise } from "execa";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { admits, type GatewayServices, type InputPacket } from "../../src/net/input.ts";
import { renderNft } from "../../src/net/nft.ts";
import { type NetworkPolicy, parsePolicyText } from "../../src/policy/index.ts";
import { ROOT } from "../helpers/harness.ts";
import { createNetns, hasAddress, type Netns, spawnKeepalived, veth, waitFor } from "../helpers/netns.ts";

const isRoot = process.getuid?.() === 0;
let n: Netns;
let dir: string;
let policyFile: string;
const daemons: ResultPromise[] = [];

const KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFm6vDyUu3Cq0cVl3kKq6a2lJjJx1m4Hq0rS2y3gk1Xz";
const policyText = (input: string) => `version: 1
gateway: { listen: ["0.0.0.0:22"], metrics_listen: "0.0.0.0:9108", state_dir: state }
directory: { ldap: { url: "ldap://127.0.0.1:1", bind_dn: cn=x, bind_password_file: pw, user_base: ou=p } }
targets: { vm: { host: 10.10.1.11, host_key: "${KEY}" } }
routes: [ { users: [u], alias: vm, target: vm } ]
network:
  public_interface: pub0
  public_ip: 203.0.113.11
  private_networks: [10.10.0.0/16]
  port_forwards:
    - { name: web, external_ip: 203.0.113.11, external_port: 8080, internal_ip: 10.10.1.11, internal_port: 80 }
${input}
`;
const INPUT = `  input: { metrics_sources: [203.0.113.51/32] }
  input_allow:
    - { name: admin-ssh, protocol: tcp, ports: [2222], sources: [203.0.113.51/32] }`;
const services: GatewayServices = { listen: [{ host: "0.0.0.0", port: 22 }], metrics: { host: "0.0.0.0", port: 9108 } };
const networkOf = (text: string): NetworkPolicy => {
  const net = parsePolicyText(text, join(dir, "x.yaml")).policy.network;
  if (!net) throw new Error("no network");
  return net;
};

const varco = (args: string[], env: Record<string, string> = {}) =>
  execa("node", [join(ROOT, "bin/varco.mjs"), "--policy", policyFile, "net", "--netns", n.ns("gw"), ...args], {
    reject: false,
    env: { SSH_CONNECTION: "", SUDO_USER: "", ...env },
  });
const listing = async () => (await n.exec("gw", ["nft", "list", "table", "inet", "varco"])).stdout;
/** Without set elements: the per-source meter's elements count down by themselves. */
const rules = async () => (await n.exec("gw", ["nft", "-t", "list", "table", "inet", "varco"])).stdout;
const addr: Record<string, string> = { inet: "203.0.113.50", mon: "203.0.113.51", peer: "203.0.113.12", vm: "10.10.1.11" };

beforeAll(async () => {
  if (!isRoot) return;
  dir = mkdtempSync(join(tmpdir(), "varco-input-"));
  policyFile = join(dir, "gateway.yaml");
  writeFileSync(policyFile, policyText(INPUT));
  n = await createNetns(["lan", "gw", "inet", "mon", "peer", "vm"]);
  await n.ip("lan", "link", "add", "br0", "type", "bridge");
  await n.ip("lan", "link", "set", "br0", "up");
  await veth(n, { role: "lan", ifname: "l-gw" }, { role: "gw", ifname: "pub0" });
  for (const role of ["inet", "mon", "peer"]) {
    await veth(n, { role: "lan", ifname: `l-${role}` }, { role, ifname: "eth0" });
    await n.ip(role, "addr", "add", `${addr[role]}/24`, "dev", "eth0");
  }
  for (const port of ["l-gw", "l-inet", "l-mon", "l-peer"]) await n.ip("lan", "link", "set", port, "master", "br0");
  await n.ip("gw", "addr", "add", "203.0.113.11/24", "dev", "pub0");
  await veth(n, { role: "vm", ifname: "eth0" }, { role: "gw", ifname: "gw1" });
  await n.ip("gw", "addr", "add", "10.10.1.1/24", "dev", "gw1");
  await n.ip("vm", "addr", "add", "10.10.1.11/24", "dev", "eth0");
  await n.ip("vm", "route", "add", "default", "via", "10.10.1.1");
  await n.exec("gw", ["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
  await n.serve("gw", "gw", [22, 2222, 5432, 9108]);
  await n.serve("vm", "vm", [80]);
});

afterAll(async () => {
  for (const d of daemons) {
    d.kill("SIGTERM");
    await d.catch(() => undefined);
  }
  await n?.destroy();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe.runIf(isRoot)("the gateway protects itself (input chain in namespaces)", () => {
  it("before any apply every listening port is open from outside (the hole this closes)", async () => {
    expect(await n.probe("inet", "203.0.113.11", 5432)).toBe("gw:5432:203.0.113.50");
    expect(await n.probe("inet", "203.0.113.11", 9108)).toBe("gw:9108:203.0.113.50");
  });

  it("admits() and real packets agree: listen port open, other ports and metrics dropped from outside", async () => {
    const r = await varco(["apply"]);
    expect(r.stderr).toBe("");
    expect(r.exitCode).toBe(0);
    const net = networkOf(policyText(INPUT));
    const cases: Array<[role: string, daddr: string, port: number, expected: "accept" | "drop" | "dnat"]> = [
      ["inet", "203.0.113.11", 22, "accept"],
      ["inet", "203.0.113.11", 5432, "drop"],
      ["inet", "203.0.113.11", 9108, "drop"],
      ["mon", "203.0.113.11", 9108, "accept"],
      ["inet", "203.0.113.11", 2222, "drop"],
      ["mon", "203.0.113.11", 2222, "accept"],
      ["inet", "203.0.113.11", 8080, "dnat"],
      ["vm", "10.10.1.1", 5432, "accept"], // the private side is not filtered by the input chain
    ];
    for (const [role, daddr, port, expected] of cases) {
      const iif = role === "vm" ? "gw1" : "pub0";
      const p: InputPacket = { iif, saddr: addr[role] as string, daddr, protocol: "tcp", dport: port };
      const verdict = admits(net, services, p).verdict;
      const answer = await n.probe(role, daddr, port, verdict === "drop" ? 800 : 1500);
      const real = answer.startsWith("gw:") ? "accept" : answer.startsWith("vm:") ? "dnat" : answer === "TIMEOUT" ? "drop" : answer;
      expect({ role, port, verdict, real }).toEqual({ role, port, verdict: expected, real: expected });
    }
    expect(await listing()).toMatch(/counter packets [1-9]\d* bytes \d+ drop comment "public side: not accepted by the input chain"/);
  });

  it("refuses an apply that would lock out the administrator's SSH connection, unless --force", async () => {
    expect((await varco(["apply"])).exitCode).toBe(0);
    const before = await rules();
    // inet is logged in on 2222 (the host's sshd, say); a policy that keeps 2222 for mon only locks it out.
    const refused = await varco(["apply"], { SSH_CONNECTION: "203.0.113.50 40000 203.0.113.11 2222" });
    expect(refused.exitCode).toBe(1);
    expect(refused.stderr).toContain("REFUSED: this ruleset would lock you out");
    expect(refused.stderr).toContain("ports: [2222], sources: [203.0.113.50/32]");
    expect(await rules()).toBe(before);
    // The refusal's verdict is what real packets get.
    expect(await n.probe("inet", "203.0.113.11", 2222, 800)).toBe("TIMEOUT");
    // A connection the ruleset accepts (mon on 2222, anyone on 22) passes.
    expect((await varco(["apply"], { SSH_CONNECTION: "203.0.113.51 40000 203.0.113.11 2222" })).exitCode).toBe(0);
    expect((await varco(["apply"], { SSH_CONNECTION: "203.0.113.50 40000 203.0.113.11 22" })).exitCode).toBe(0);
    // A port forward capturing the admin's port is refused as well.
    const dnat = await varco(["apply"], { SSH_CONNECTION: "203.0.113.50 40000 203.0.113.11 8080" });
    expect(dnat.exitCode).toBe(1);
    expect(dnat.stderr).toMatch(/would be captured by port forward "web"/);
    expect(await n.probe("inet", "203.0.113.11", 8080)).toBe("vm:80:203.0.113.50");
    // --force applies and says what it overrode.
    const forced = await varco(["apply", "--force"], { SSH_CONNECTION: "203.0.113.50 40000 203.0.113.11 2222" });
    expect(forced.exitCode).toBe(0);
    expect(forced.stderr).toContain("--force: this ruleset would lock you out");
    // Opening 2222 to the admin makes the same apply pass, and the real packet agrees.
    writeFileSync(
      policyFile,
      policyText(INPUT.replace("ports: [2222], sources: [203.0.113.51/32]", "ports: [2222], sources: [203.0.113.51/32, 203.0.113.50/32]")),
    );
    expect((await varco(["apply"], { SSH_CONNECTION: "203.0.113.50 40000 203.0.113.11 2222" })).exitCode).toBe(0);
    expect(await n.probe("inet", "203.0.113.11", 2222)).toBe("gw:2222:203.0.113.50");
    writeFileSync(policyFile, policyText(INPUT));
  });

  it("the per-source meter drops a burst of new SSH connections over the rate, other sources unaffected", async () => {
    writeFileSync(policyFile, policyText(INPUT.replace("input: {", 'input: { ssh_rate: "6/minute", ssh_burst: 3,')));
    expect((await varco(["apply"])).exitCode).toBe(0);
    const answers: string[] = [];
    for (let i = 0; i < 8; i++) answers.push(await n.probe("inet", "203.0.113.11", 22, 700));
    const ok = answers.filter((a) => a === "gw:22:203.0.113.50").length;
    expect(ok).toBeGreaterThanOrEqual(3);
    expect(ok).toBeLessThanOrEqual(4);
    expect(answers.slice(-2)).toEqual(["TIMEOUT", "TIMEOUT"]);
    expect(await listing()).toMatch(/counter packets [1-9]\d* bytes \d+ drop comment "network.input.ssh_rate"/);
    // Another source has its own bucket.
    expect(await n.probe("mon", "203.0.113.11", 22)).toBe("gw:22:203.0.113.51");
    writeFileSync(policyFile, policyText(INPUT));
  });

  it("VRRP from the configured peer is accepted (the backup stays backup); from anyone else it is dropped", async () => {
    // unicast VRRP between peer (MASTER, 200) and gw (BACKUP, 100); the VIP is 203.0.113.10.
    for (const [role, src, peer, state, prio] of [
      ["peer", "203.0.113.12", "203.0.113.11", "MASTER", 200],
      ["gw", "203.0.113.11", "203.0.113.12", "BACKUP", 100],
    ] as const) {
      mkdirSync(join(dir, role), { recursive: true });
      writeFileSync(
        join(dir, role, "keepalived.conf"),
        `global_defs { enable_script_security\n script_user root\n }
vrrp_instance VI_PUBLIC {
  state ${state}
  interface ${role === "gw" ? "pub0" : "eth0"}
  virtual_router_id 51
  priority ${prio}
  advert_int 1
  unicast_src_ip ${src}
  unicast_peer {
    ${peer}
  }
  virtual_ipaddress {
    203.0.113.10/24
  }
}
`,
      );
    }
    const base = networkOf(policyText(INPUT));
    const withPeers = (peers: string[]) =>
      ({
        ...base,
        vips: [
          {
            instance: "VI_PUBLIC",
            interface: "pub0",
            virtual_router_id: 51,
            priority: 100,
            advert_interval: 1000,
            addresses: ["203.0.113.10/24"],
            track_gateway_health: false,
            unicast_peers: peers,
          },
        ],
      }) as unknown as NetworkPolicy;
    const load = async (net: NetworkPolicy) => {
      const r = await execa("ip", ["netns", "exec", n.ns("gw"), "nft", "-f", "-"], { input: renderNft(net, services), reject: false });
      expect(r.stderr).toBe("");
    };
    await load(withPeers(["203.0.113.12"]));
    daemons.push(spawnKeepalived(n, "peer", join(dir, "peer")));
    await waitFor(() => hasAddress(n, "peer", "eth0", "203.0.113.10/24"), 10_000, "the VIP on peer");
    daemons.push(spawnKeepalived(n, "gw", join(dir, "gw")));
    // gw hears peer's adverts: it never claims the VIP (bounded: 5 s, more than 3 advert intervals + skew).
    for (let i = 0; i < 25; i++) {
      expect(await hasAddress(n, "gw", "pub0", "203.0.113.10/24")).toBe(false);
      await new Promise((res) => setTimeout(res, 200));
    }
    expect(await listing()).toMatch(/meta l4proto vrrp ip saddr 203\.0\.113\.12 accept/);
    // The input chain is what lets them through: with another peer listed, gw stops hearing peer and takes the VIP.
    await load(withPeers(["203.0.113.99"]));
    await waitFor(() => hasAddress(n, "gw", "pub0", "203.0.113.10/24"), 10_000, "gw claiming the VIP once adverts are dropped");
  });
});
