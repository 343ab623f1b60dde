/**
 * keepalived VRRP for real between two namespaces, with the config varco renders and installs
 * (`varco net apply` runs `keepalived --config-test` first). Kill the master: the VIP moves.
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

const KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFm6vDyUu3Cq0cVl3kKq6a2lJjJx1m4Hq0rS2y3gk1Xz";
const policy = (node: string, address: string, priority: number) => `version: 1
gateway: { state_dir: state-${node} }
directory: { ldap: { url: "ldap://127.0.0.1:1", bind_dn: cn=x, bind_password_file: pw, user_base: ou=p } }
targets: { t: { host: 192.0.2.9, host_key: "${KEY}" } }
routes: [ { users: [u], alias: t, target: t } ]
network:
  public_interface: eth0
  public_ip: ${address}
  vips:
    - { instance: VI_PUBLIC, interface: eth0, virtual_router_id: 51, priority: ${priority}, advert_interval: 1s,
        addresses: [192.0.2.100/24], auth_pass_file: vrrp.pw }
  keepalived: { config_file: ${node}/keepalived.conf, pid_file: ${node}/keepalived.pid, health_command: /bin/true }
`;

const vipOn = (role: string) => hasAddress(n, role, "eth0", "192.0.2.100/24");

beforeAll(async () => {
  if (!isRoot) return;
  dir = mkdtempSync(join(tmpdir(), "varco-vrrp-"));
  writeFileSync(join(dir, "vrrp.pw"), "s3cret-pw\n", { mode: 0o600 });
  n = await createNetns(["k1", "k2"]);
  await veth(n, { role: "k1", ifname: "eth0" }, { role: "k2", ifname: "eth0" });
  await n.ip("k1", "addr", "add", "192.0.2.1/24", "dev", "eth0");
  await n.ip("k2", "addr", "add", "192.0.2.2/24", "dev", "eth0");
});

afterAll(async () => {
  await n?.destroy();
  for (const d of daemons.values()) await d.catch(() => undefined);
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe.runIf(isRoot)("keepalived VIP failover between two namespaces", () => {
  it("renders, config-tests and installs keepalived.conf with the secret from its file", async () => {
    for (const [node, addr, prio] of [
      ["k1", "192.0.2.1", 150],
      ["k2", "192.0.2.2", 100],
    ] as const) {
      mkdirSync(join(dir, node), { recursive: true });
      const file = join(dir, `${node}.yaml`);
      writeFileSync(file, policy(node, addr, prio));
      const rendered = await execa("node", [join(ROOT, "bin/varco.mjs"), "--policy", file, "net", "render", "keepalived"]);
      expect(rendered.stdout).toContain("auth_pass ********");
      expect(rendered.stdout).not.toContain("s3cret");
      const r = await execa("node", [join(ROOT, "bin/varco.mjs"), "--policy", file, "net", "--netns", n.ns(node), "apply"], {
        reject: false,
      });
      expect(r.stderr).toBe("");
      expect(r.exitCode).toBe(0);
      const conf = readFileSync(join(dir, node, "keepalived.conf"), "utf8");
      expect(conf).toContain("virtual_router_id 51");
      expect(conf).toContain(`priority ${prio}`);
      expect(conf).toContain("auth_pass s3cret-p");
    }
  });

  it("moves the VIP to the backup when the master dies", async () => {
    for (const node of ["k1", "k2"]) {
      const d = spawnKeepalived(n, node, join(dir, node));
      daemons.set(node, d);
    }
    await waitFor(() => vipOn("k1"), 15_000, "the VIP on the master (k1)");
    expect(await vipOn("k2")).toBe(false);
    daemons.get("k1")?.kill("SIGKILL");
    const ms = await waitFor(() => vipOn("k2"), 15_000, "the VIP on the backup (k2)");
    expect(ms).toBeLessThan(15_000);
  });
});
