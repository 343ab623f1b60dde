/**
 * The network front-end for real, in namespaces this test creates:
 *   internet (203.0.113.50) ─ pub0 │ gateway │ vmbr1 (10.10.1.1) ─ vm1 (10.10.1.11)
 *                                  │         │ vmbr2 (10.10.2.1) ─ vm2 (10.10.2.12)
 * varco renders and applies the nft table and the bridges inside the gateway namespace; real
 * packets prove port forwards, masquerade and the east-west allow-list.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { execa } from "execa";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  ApplyError,
  apply,
  type CommandRunner,
  createExecaRunner,
  desiredState,
  listGenerations,
  netStateDir,
} from "../../src/net/index.ts";
import { parsePolicyText } from "../../src/policy/index.ts";
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
  masquerade: true
${network}
`;
const NETWORK_V1 = `  port_forwards:
    - { name: web-vm1, protocol: tcp, external_ip: 203.0.113.10, external_port: 8080, internal_ip: 10.10.1.11, internal_port: 80 }
    - { name: partners, protocol: tcp, external_ip: 203.0.113.10, external_port: 8443, internal_ip: 10.10.1.11, internal_port: 80, sources: [198.51.100.0/24] }
    - { name: office, protocol: tcp, external_ip: 203.0.113.10, external_port: 8444, internal_ip: 10.10.1.11, internal_port: 80, sources: [203.0.113.48/28] }
  forward_allow:
    - { name: app, protocol: tcp, from: [10.10.2.0/24], to: [10.10.1.11], ports: [8080] }
  bridges:
    - { name: vmbr1, ports: [gw1], address: 10.10.1.1/24 }
    - { name: vmbr2, ports: [gw2], address: 10.10.2.1/24 }`;

const varco = (...args: string[]) =>
  execa("node", [join(ROOT, "bin/varco.mjs"), "--policy", policyFile, "net", "--netns", n.ns("gw"), ...args], { reject: false });
const ruleset = async () => (await n.exec("gw", ["nft", "list", "ruleset"])).stdout;

beforeAll(async () => {
  if (!isRoot) return;
  dir = mkdtempSync(join(tmpdir(), "varco-net-"));
  policyFile = join(dir, "gateway.yaml");
  writeFileSync(policyFile, policyText(NETWORK_V1));
  n = await createNetns(["inet", "gw", "vm1", "vm2"]);
  await veth(n, { role: "inet", ifname: "eth0" }, { role: "gw", ifname: "pub0" });
  await veth(n, { role: "vm1", ifname: "eth0" }, { role: "gw", ifname: "gw1" });
  await veth(n, { role: "vm2", ifname: "eth0" }, { role: "gw", ifname: "gw2" });
  await n.ip("inet", "addr", "add", "203.0.113.50/24", "dev", "eth0");
  await n.ip("gw", "addr", "add", "203.0.113.10/24", "dev", "pub0");
  await n.ip("vm1", "addr", "add", "10.10.1.11/24", "dev", "eth0");
  await n.ip("vm1", "route", "add", "default", "via", "10.10.1.1");
  await n.ip("vm2", "addr", "add", "10.10.2.12/24", "dev", "eth0");
  await n.ip("vm2", "route", "add", "default", "via", "10.10.2.1");
  await n.exec("gw", ["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
  await n.serve("vm1", "vm1", [80, 8080, 9090]);
  await n.serve("inet", "inet", [7000]);
  // An "attacker" route straight to the private range through the gateway.
  await n.ip("inet", "route", "add", "10.10.0.0/16", "via", "203.0.113.10");
});

afterAll(async () => {
  await n?.destroy();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe.runIf(isRoot)("network front-end in namespaces", () => {
  it("plans the first apply as a diff of rules and link operations", async () => {
    const r = await varco("plan", "--commands");
    expect(r.exitCode).toBe(0);
    expect(r.stdout).toContain("+\tmap dnat4 {");
    expect(r.stdout).toContain("+ create bridge vmbr1");
    expect(r.stdout).toContain("ip link add name vmbr1 type bridge");
    expect(r.stdout).toContain("+ enslave gw2 to vmbr2");
    const json = JSON.parse(String((await varco("plan", "--json")).stdout)) as { changed: boolean; links: unknown[] };
    expect(json.changed).toBe(true);
    expect(json.links.length).toBeGreaterThan(4);
  });

  it("applies: port forward, masquerade and east-west allow-list hold for real packets", async () => {
    const r = await varco("apply");
    expect(r.stderr).toBe("");
    expect(r.stdout).toContain("applied generation 1");
    expect(await n.ip("gw", "-br", "addr", "show", "vmbr1")).toContain("10.10.1.1/24");
    // internet → 203.0.113.10:8080 reaches vm1:80, and vm1 sees the internet client's address.
    expect(await n.probe("inet", "203.0.113.10", 8080)).toBe("vm1:80:203.0.113.50");
    // Source-restricted forwards: only the listed sources get through.
    expect(await n.probe("inet", "203.0.113.10", 8443)).toMatch(/ERROR:ECONNREFUSED|TIMEOUT/);
    expect(await n.probe("inet", "203.0.113.10", 8444)).toBe("vm1:80:203.0.113.50");
    // An unforwarded port does not reach anything.
    expect(await n.probe("inet", "203.0.113.10", 9090)).toMatch(/ERROR:ECONNREFUSED|TIMEOUT/);
    // Straight to a private address from outside: dropped.
    expect(await n.probe("inet", "10.10.1.11", 80)).toBe("TIMEOUT");
    // vm1 → internet is masqueraded behind the public address.
    expect(await n.probe("vm1", "203.0.113.50", 7000)).toBe("inet:7000:203.0.113.10");
    // vm2 → vm1 on the allowed port only.
    expect(await n.probe("vm2", "10.10.1.11", 8080)).toBe("vm1:8080:10.10.2.12");
    expect(await n.probe("vm2", "10.10.1.11", 9090)).toBe("TIMEOUT");
    const listing = (await n.exec("gw", ["nft", "list", "table", "inet", "varco"])).stdout;
    expect(listing).toMatch(/counter packets [1-9]\d* bytes \d+ drop comment "east-west not in forward_allow"/);
    const st = await varco("status");
    expect(st.stdout).toContain("in sync");
    expect(st.exitCode).toBe(0);
  });

  it("never touches another table", async () => {
    await n.exec("gw", ["nft", "add", "table", "ip", "other"]);
    await n.exec("gw", ["nft", "add", "chain", "ip", "other", "c", "{ type filter hook input priority 0; policy accept; }"]);
    await n.exec("gw", ["nft", "add", "rule", "ip", "other", "c", "tcp", "dport", "4444", "accept"]);
    expect((await varco("apply")).exitCode).toBe(0);
    expect(await ruleset()).toContain("tcp dport 4444 accept");
    await n.exec("gw", ["nft", "delete", "table", "ip", "other"]);
  });

  it("reports hand-made drift and exits 1", async () => {
    await n.exec("gw", ["nft", "add", "rule", "inet", "varco", "forward", "tcp", "dport", "31337", "accept"]);
    const st = await varco("status");
    expect(st.exitCode).toBe(1);
    expect(st.stdout).toContain("OUT OF SYNC");
    expect(st.stdout).toContain("31337");
    const json = JSON.parse((await varco("status", "--json")).stdout) as Record<string, unknown>;
    expect(Object.keys(json).sort()).toEqual(["drift", "generation", "in_sync", "pending", "policy_changed"]);
    expect(json.in_sync).toBe(false);
    // apply puts it back.
    expect((await varco("apply")).exitCode).toBe(0);
    expect((await varco("status")).exitCode).toBe(0);
    await n.ip("gw", "link", "set", "vmbr2", "down");
    const down = await varco("status");
    expect(down.exitCode).toBe(1);
    expect(down.stdout).toContain("missing: bring vmbr2 up");
    expect((await varco("apply")).exitCode).toBe(0);
  });

  it("applies a changed policy as a diff (a new forward, one line in the map)", async () => {
    writeFileSync(
      policyFile,
      policyText(
        NETWORK_V1.replace(
          "  forward_allow:",
          "    - { name: ssh-vm1, protocol: tcp, external_ip: 203.0.113.10, external_port: 2201, internal_ip: 10.10.1.11, internal_port: 9090 }\n  forward_allow:",
        ),
      ),
    );
    const p = await varco("plan");
    expect(p.stdout).toMatch(/^\+.*203\.0\.113\.10 \. tcp \. 2201 : 10\.10\.1\.11 \. 9090/m);
    expect(p.stdout).not.toContain("create bridge");
    expect((await varco("apply")).exitCode).toBe(0);
    expect(await n.probe("inet", "203.0.113.10", 2201)).toBe("vm1:9090:203.0.113.50");
  });

  it("a failure mid-apply leaves the previous ruleset byte for byte and removes what it created", async () => {
    const before = await ruleset();
    const linksBefore = await n.ip("gw", "-br", "link");
    writeFileSync(policyFile, policyText(`${NETWORK_V1}\n    - { name: vmbr3, ports: [nosuchport0], address: 10.10.3.1/24 }`));
    const r = await varco("apply");
    expect(r.exitCode).toBe(1);
    expect(r.stderr).toContain("net apply failed at enslave nosuchport0 to vmbr3");
    expect(r.stderr).toContain("The previous state was restored");
    expect(await ruleset()).toBe(before);
    expect(await n.ip("gw", "-br", "link")).toBe(linksBefore);

    // A failure inside the nft step (injected: a runner that fails `nft -f`) also restores links and rules.
    const loaded = parsePolicyText(readFileSync(policyFile, "utf8").replace("nosuchport0", "gw9"), policyFile);
    const network = loaded.policy.network;
    if (!network) throw new Error("no network");
    const real = createExecaRunner({ netns: n.ns("gw") });
    const failingNft: CommandRunner = {
      ...real,
      run: (argv, o) => (argv[0] === "nft" && argv[1] === "-f" ? Promise.reject(new Error("injected nft failure")) : real.run(argv, o)),
    };
    // The restore itself must use the real runner: wrap so only the first nft -f fails.
    let failed = false;
    const onceFailing: CommandRunner = {
      ...real,
      run: (argv, o) => {
        if (!failed && argv[0] === "nft" && argv[1] === "-f") {
          failed = true;
          return failingNft.run(argv, o);
        }
        return real.run(argv, o);
      },
    };
    const desired = desiredState(
      { ...network, bridges: network.bridges.filter((b) => b.name !== "vmbr3") },
      { authPass: {}, healthCommand: "true" },
    );
    const gens = listGenerations(netStateDir(join(dir, "state"))).length;
    await expect(
      apply(onceFailing, { ...desired, nft: desired.nft.replace("9090", "9091") }, netStateDir(join(dir, "state"))),
    ).rejects.toBeInstanceOf(ApplyError);
    expect(await ruleset()).toBe(before);
    expect(listGenerations(netStateDir(join(dir, "state")))).toHaveLength(gens);
    writeFileSync(policyFile, policyText(NETWORK_V1));
  });

  it("--confirm reverts by itself when not confirmed, even after the applying CLI has exited", async () => {
    expect((await varco("apply")).exitCode).toBe(0);
    const before = await ruleset();
    writeFileSync(policyFile, policyText(NETWORK_V1.replace("external_port: 8080", "external_port: 8081")));
    const r = await varco("apply", "--confirm", "2s");
    expect(r.exitCode).toBe(0);
    expect(r.stdout).toContain("varco net confirm");
    expect(await n.probe("inet", "203.0.113.10", 8081)).toBe("vm1:80:203.0.113.50");
    // Bounded poll for the detached watcher's revert (deadline 2 s).
    let reverted = false;
    for (let i = 0; i < 100 && !reverted; i++) {
      await new Promise((res) => setTimeout(res, 100));
      reverted = (await ruleset()) === before;
    }
    expect(reverted).toBe(true);
    expect(await n.probe("inet", "203.0.113.10", 8080)).toBe("vm1:80:203.0.113.50");

    // Confirmed in time: it stays.
    expect((await varco("apply", "--confirm", "30s")).exitCode).toBe(0);
    expect((await varco("confirm")).exitCode).toBe(0);
    expect(await n.probe("inet", "203.0.113.10", 8081)).toBe("vm1:80:203.0.113.50");
  });

  it("rollback restores the previous generation", async () => {
    const r = await varco("rollback");
    expect(r.exitCode).toBe(0);
    expect(await n.probe("inet", "203.0.113.10", 8080)).toBe("vm1:80:203.0.113.50");
    expect(await n.probe("inet", "203.0.113.10", 8081)).toMatch(/ERROR|TIMEOUT/);
  });
});

describe.runIf(isRoot)("VLAN bridges live (where the kernel has 8021q)", () => {
  it("creates bridge + link.vlan sub-interface, or skips saying why", async (ctx) => {
    const probe = await n.exec("gw", ["ip", "link", "add", "link", "gw2", "name", "gw2.99", "type", "vlan", "id", "99"]);
    if (probe.exitCode !== 0) {
      ctx.skip(
        `this kernel cannot create VLAN devices (${probe.stderr.trim()}); the VLAN plan is verified in test/unit/net-render.test.ts`,
      );
      return;
    }
    await n.exec("gw", ["ip", "link", "del", "gw2.99"]);
    writeFileSync(policyFile, policyText(`${NETWORK_V1}\n    - { name: vmbr30, ports: [gw2], vlan: 30, address: 10.10.30.1/24 }`));
    const r = await varco("apply");
    expect(r.exitCode).toBe(0);
    expect(await n.ip("gw", "-d", "link", "show", "gw2.30")).toContain("vlan protocol 802.1Q id 30");
    expect(await n.ip("gw", "link", "show", "gw2.30")).toContain("master vmbr30");
    writeFileSync(policyFile, policyText(NETWORK_V1));
  });
});
