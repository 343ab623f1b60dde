/**
 * keepalived VRRP for real between two namespaces, with the file varco renders and installs
 * (`varco net apply` runs `keepalived --config-test` first) included by an operator's main config.
 * Adverts go by unicast: multicast VRRP is dropped in both namespaces, as in clouds without it.
 * Kill the master: the VIP moves. Bring the higher-priority node back: nopreempt keeps the VIP
 * where it is. `varco net restore` puts back the last generation even when the policy is broken.
 */
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { execa, type ResultPromise } from "execa";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ROOT } from "../helpers/harness.ts";
import { createNetns, hasAddress, type Netns, spawnKeepalived, veth, waitFor } from "../helpers/netns.ts";

const isRoot = process.getuid?.() === 0;
let n: Netns;
let dir: string;
const daemons = new Map<string, ResultPromise>();
const BIN = join(ROOT, "bin/varco.mjs");

const KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFm6vDyUu3Cq0cVl3kKq6a2lJjJx1m4Hq0rS2y3gk1Xz";
const NODES = [
  ["k1", "192.0.2.1", "192.0.2.2", 150],
  ["k2", "192.0.2.2", "192.0.2.1", 100],
] as const;
const policy = (node: string, address: string, peer: string, priority: number) => `version: 1
gateway: { state_dir: state-${node} }
directory: { ldap: { url: "ldap://127.0.0.1:1", bind_dn: cn=x, bind_password_file: pw, user_base: ou=p } }
targets: { t: { host: 192.0.2.9, host_key: "${KEY}" } }
routes: [ { users: [u], alias: t, target: t } ]
network:
  public_interface: eth0
  public_ip: ${address}
  vips:
    - { instance: VI_PUBLIC, interface: eth0, virtual_router_id: 51, priority: ${priority}, advert_interval: 1s,
        addresses: [192.0.2.100/24], auth_pass_file: vrrp.pw, unicast_src_ip: ${address}, unicast_peers: [${peer}] }
  keepalived: { config_file: ${node}/varco.conf, main_config: ${node}/keepalived.conf, pid_file: ${node}/keepalived.pid,
                health_command: /bin/true }
`;

const vipOn = (role: string) => hasAddress(n, role, "eth0", "192.0.2.100/24");
const varco = (node: string, ...args: string[]) =>
  execa("node", [BIN, "--policy", join(dir, `${node}.yaml`), "net", "--netns", n.ns(node), ...args], { reject: false });

beforeAll(async () => {
  if (!isRoot) return;
  dir = mkdtempSync(join(tmpdir(), "varco-vrrp-"));
  writeFileSync(join(dir, "vrrp.pw"), "s3cret-p\n", { mode: 0o600 });
  n = await createNetns(["k1", "k2"]);
  await veth(n, { role: "k1", ifname: "eth0" }, { role: "k2", ifname: "eth0" });
  for (const [node, addr] of NODES) {
    await n.ip(node, "addr", "add", `${addr}/24`, "dev", "eth0");
    // No multicast VRRP (224.0.0.18) leaves either node: only unicast adverts can elect one master.
    const block = "table inet nomcast {\n chain out {\n type filter hook output priority 0;\n ip daddr 224.0.0.0/4 drop\n }\n}\n";
    const r = await execa("ip", ["netns", "exec", n.ns(node), "nft", "-f", "-"], { input: block });
    expect(r.exitCode).toBe(0);
  }
});

afterAll(async () => {
  await n?.destroy();
  for (const d of daemons.values()) await d.catch(() => undefined);
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe.runIf(isRoot)("keepalived VRRP between two namespaces over unicast", () => {
  it("refuses an auth_pass longer than 8 characters instead of cutting it", async () => {
    mkdirSync(join(dir, "k1"), { recursive: true });
    writeFileSync(join(dir, "long.pw"), "s3cret-pw\n", { mode: 0o600 });
    writeFileSync(join(dir, "k1.yaml"), policy("k1", "192.0.2.1", "192.0.2.2", 150).replace("vrrp.pw", "long.pw"));
    const r = await varco("k1", "render", "keepalived");
    expect(r.exitCode).toBe(1);
    expect(r.stderr).toMatch(/network\.vips\[0\]\.auth_pass_file .*long\.pw.*9 characters, keepalived uses at most 8/);
    expect(r.stderr).not.toMatch(/at .*\.ts:\d+/); // a message, not a stack trace
  });

  it("renders, config-tests and installs varco's file only; the operator's main config includes it", async () => {
    for (const [node, addr, peer, prio] of NODES) {
      mkdirSync(join(dir, node), { recursive: true });
      const main = `global_defs {\n\trouter_id ${node}\n}\ninclude varco.conf\n`;
      writeFileSync(join(dir, node, "keepalived.conf"), main);
      writeFileSync(join(dir, `${node}.yaml`), policy(node, addr, peer, prio));
      const rendered = await varco(node, "render", "keepalived");
      expect(rendered.stdout).toContain("auth_pass ********");
      expect(rendered.stdout).not.toContain("s3cret");
      const r = await varco(node, "apply");
      expect(r.stderr).toBe("");
      expect(r.exitCode).toBe(0);
      const conf = readFileSync(join(dir, node, "varco.conf"), "utf8");
      expect(conf).toContain("virtual_router_id 51");
      expect(conf).toContain(`priority ${prio}`);
      expect(conf).toContain("auth_pass s3cret-p");
      expect(conf).toContain(`unicast_src_ip ${addr}`);
      expect(conf).toContain("nopreempt");
      expect(readFileSync(join(dir, node, "keepalived.conf"), "utf8")).toBe(main);
    }
  });

  it("elects one master over unicast and moves the VIP to the backup when the master dies", async () => {
    for (const [node] of NODES) daemons.set(node, spawnKeepalived(n, node, join(dir, node)));
    await waitFor(() => vipOn("k1"), 15_000, "the VIP on the master (k1)");
    // Give a split brain (both MASTER, as without unicast peers here) time to show.
    await new Promise((r) => setTimeout(r, 4000));
    expect(await vipOn("k1")).toBe(true);
    expect(await vipOn("k2")).toBe(false);
    daemons.get("k1")?.kill("SIGKILL");
    await daemons.get("k1")?.catch(() => undefined);
    const ms = await waitFor(() => vipOn("k2"), 15_000, "the VIP on the backup (k2)");
    console.log(`VIP moved over unicast VRRP in ${ms} ms`);
    expect(ms).toBeLessThan(15_000);
  });

  it("nopreempt: the higher-priority node coming back does not take the VIP back", async () => {
    // keepalived SIGKILLed leaves its VIP behind: a reboot would not; remove it as a reboot would.
    await n.ip("k1", "addr", "del", "192.0.2.100/24", "dev", "eth0").catch(() => "");
    rmSync(join(dir, "k1", "keepalived.pid"), { force: true });
    rmSync(join(dir, "k1", "vrrp.pid"), { force: true });
    daemons.set("k1", spawnKeepalived(n, "k1", join(dir, "k1")));
    // Three adverts' worth and more: with preemption k1 (150) would be MASTER again within ~4 s.
    await new Promise((r) => setTimeout(r, 8000));
    expect(await vipOn("k2")).toBe(true);
    expect(await vipOn("k1")).toBe(false);
  });

  it("varco net restore puts back the last generation (nft table, keepalived file) even with a broken policy", async () => {
    const applied = readFileSync(join(dir, "k2", "varco.conf"), "utf8");
    await n.exec("k2", ["nft", "delete", "table", "inet", "varco"]);
    rmSync(join(dir, "k2", "varco.conf"));
    expect((await n.exec("k2", ["nft", "list", "table", "inet", "varco"])).exitCode).not.toBe(0);
    // A broken policy (invalid YAML for the schema) must not stop the restore.
    const good = readFileSync(join(dir, "k2.yaml"), "utf8");
    writeFileSync(join(dir, "k2.yaml"), `${good.replace("public_ip: 192.0.2.2", "public_ip: not-an-address")}\nbogus_key: 1\n`);
    expect((await varco("k2", "status")).exitCode).not.toBe(0);
    const r = await varco("k2", "restore");
    expect(r.stderr).toBe("");
    expect(r.stdout).toMatch(/restored generation 1 \(keepalived file rewritten\)/);
    expect((await n.exec("k2", ["nft", "list", "table", "inet", "varco"])).exitCode).toBe(0);
    expect(readFileSync(join(dir, "k2", "varco.conf"), "utf8")).toBe(applied);
    writeFileSync(join(dir, "k2.yaml"), good);
    const st = await varco("k2", "status");
    expect(st.stdout).toContain("in sync");
  });
});
