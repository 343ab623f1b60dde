/**
 * Two-node HA for real, in namespaces this test creates: two gateways with identical host keys
 * behind one keepalived VIP (configuration rendered and installed by `varco net apply`), TOTP
 * secrets shared through the directory, a client namespace and a LAN namespace holding slapd and
 * the target sshd. Cut the directory off: both gateways report it failing, yet the VIP stays on
 * exactly one node (keepalived asks liveness, not readiness). Kill the master gateway: its liveness
 * check fails, the VIP moves, and a new login through the VIP works on the backup with no host-key warning.
 * When Debian's PostgreSQL is installed, both nodes share one login state and audit trail on a
 * PostgreSQL in the LAN namespace: a code used through the VIP on the master is refused on the
 * backup after the failover, and the backup's `audit list` shows the master's sessions.
 */
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { execa, type ResultPromise } from "execa";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { currentCode, newSecret } from "../../src/auth/index.ts";
import { type Slapd, type Sshd, startSlapd, startSshd, waitForPort } from "../../src/demo/index.ts";
import { loadOrCreateKey, publicKeyLine } from "../../src/ssh/index.ts";
import { ASKPASS, ROOT } from "../helpers/harness.ts";
import { createNetns, hasAddress, type Netns, spawnKeepalived, veth, waitFor } from "../helpers/netns.ts";
import { havePostgres, startPostgres, type TestPostgres } from "../helpers/postgres.ts";

const isRoot = process.getuid?.() === 0;
const TOTP = { issuer: "varco", digits: 6 as const, periodMs: 30_000, window: 1 };
let n: Netns;
let dir: string;
let slapd: Slapd;
let target: Sshd;
const secrets = new Map<string, string>();
const gateways = new Map<string, ResultPromise>();
const keepaliveds = new Map<string, ResultPromise>();
const USERS = ["ha1", "ha2", "ha3"];
let pg: TestPostgres | undefined;

const ADDRESS: Record<string, string> = { g1: "192.0.2.1", g2: "192.0.2.2" };
const policy = (node: string, priority: number) => `version: 1
gateway:
  listen: ["0.0.0.0:2222"]
  host_keys: [${dir}/shared-keys/ssh_host_ed25519_key]
  egress_key: ${dir}/shared-keys/egress_ed25519
  state_dir: ${dir}/${node}/state
  node: ${node}
  metrics_listen: "127.0.0.1:9108"
directory:
  ldap:
    url: ${slapd.url}
    bind_dn: ${slapd.bindDn}
    bind_password_file: ${dir}/ldap.pw
    user_base: ou=people,dc=example,dc=org
    group_base: ou=groups,dc=example,dc=org
auth:
  totp: { secrets: ldap, ldap_attribute: employeeNumber }
targets:
  vm: { host: 192.0.2.9, port: ${target.port}, user: ${target.user}, host_key: "${target.hostKeyLine}" }
routes:
  - { groups: [ha], alias: vm, target: vm }
network:
  public_interface: eth0
  public_ip: ${ADDRESS[node]}
  vips:
    - { instance: VI_GW, interface: eth0, virtual_router_id: 77, priority: ${priority}, advert_interval: 1s,
        addresses: [192.0.2.100/24], auth_pass_file: ${dir}/vrrp.pw, track_gateway_health: true }
  keepalived: { config_file: ${dir}/${node}/varco.conf, main_config: ${dir}/${node}/keepalived.conf, pid_file: ${dir}/${node}/keepalived.pid }
${pg ? `state: { backend: postgres, url_file: ${dir}/pg.url }\n` : ""}`;

/** `varco audit list --json` on g2 (every node's sessions with a shared state). */
async function sessionsOnG2(): Promise<Array<{ uid: string; node?: string }>> {
  const list = await n.exec("g2", ["node", join(ROOT, "bin/varco.mjs"), "audit", "list", "--json", "--policy", join(dir, "g2.yaml")]);
  if (list.exitCode !== 0) throw new Error(`audit list on g2: ${list.stderr}`);
  return (JSON.parse(list.stdout) as { sessions: Array<{ uid: string; node?: string }> }).sessions;
}

const vipOn = (role: string) => hasAddress(n, role, "eth0", "192.0.2.100/24");

function startGateway(node: string): void {
  const g = n.spawn(node, ["node", join(ROOT, "bin/varco.mjs"), "serve", "--policy", join(dir, `${node}.yaml`)]);
  gateways.set(node, g);
}

async function loginThroughVip(
  uid: string,
  code = currentCode(TOTP, secrets.get(uid) ?? "", Date.now()),
): Promise<{ exitCode: number; stdout: string; stderr: string }> {
  const r = await n.exec("client", [
    "env",
    `SSH_ASKPASS=${ASKPASS}`,
    "SSH_ASKPASS_REQUIRE=force",
    "DISPLAY=:0",
    `VARCO_TEST_PASSWORD=${uid}-pw`,
    `VARCO_TEST_CODE=${code}`,
    "ssh",
    "-F",
    "/dev/null",
    "-p",
    "2222",
    "-o",
    `UserKnownHostsFile=${dir}/known_hosts`,
    "-o",
    "StrictHostKeyChecking=yes",
    "-o",
    "PubkeyAuthentication=no",
    "-o",
    "ConnectTimeout=10",
    "-o",
    "LogLevel=ERROR",
    `${uid}_vm@192.0.2.100`,
    "echo via-vip",
  ]);
  return r;
}

beforeAll(async () => {
  if (!isRoot) return;
  dir = mkdtempSync(join(tmpdir(), "varco-ha-"));
  n = await createNetns(["lan", "g1", "g2", "client"]);
  await n.ip("lan", "link", "add", "br0", "type", "bridge");
  await n.ip("lan", "link", "set", "br0", "up");
  await n.ip("lan", "addr", "add", "192.0.2.9/24", "dev", "br0");
  for (const [role, addr] of [
    ["g1", "192.0.2.1/24"],
    ["g2", "192.0.2.2/24"],
    ["client", "192.0.2.50/24"],
  ] as const) {
    await veth(n, { role, ifname: "eth0" }, { role: "lan", ifname: `p-${role}` });
    await n.ip("lan", "link", "set", `p-${role}`, "master", "br0");
    await n.ip(role, "addr", "add", addr, "dev", "eth0");
  }
  for (const u of USERS) secrets.set(u, newSecret());
  const servicePassword = "ha-svc-pw";
  writeFileSync(join(dir, "ldap.pw"), `${servicePassword}\n`, { mode: 0o600 });
  writeFileSync(join(dir, "vrrp.pw"), "vrrp-s3c\n", { mode: 0o600 });
  slapd = await startSlapd({
    dir: join(dir, "slapd"),
    netns: n.ns("lan"),
    host: "192.0.2.9",
    servicePassword,
    users: USERS.map((uid) => ({
      uid,
      password: `${uid}-pw`,
      givenName: uid,
      sn: "HA",
      attributes: { employeeNumber: secrets.get(uid) ?? "" },
    })),
    groups: [{ cn: "ha", gid: 7000, members: USERS }],
  });
  // One host key and one egress key shared by both nodes: clients see one server, targets one client.
  mkdirSync(join(dir, "shared-keys"), { recursive: true, mode: 0o700 });
  loadOrCreateKey(join(dir, "shared-keys/ssh_host_ed25519_key"), "varco-ha");
  const egress = loadOrCreateKey(join(dir, "shared-keys/egress_ed25519"), "varco-egress");
  target = await startSshd({ dir: join(dir, "target"), netns: n.ns("lan"), host: "192.0.2.9", authorizedKeys: [publicKeyLine(egress)] });
  const hostPub = readFileSync(join(dir, "shared-keys/ssh_host_ed25519_key.pub"), "utf8").trim().split(/\s+/).slice(0, 2).join(" ");
  writeFileSync(join(dir, "known_hosts"), `[192.0.2.100]:2222 ${hostPub}\n`);
  if (havePostgres) {
    pg = await startPostgres({ netns: n.ns("lan"), host: "192.0.2.9" });
    writeFileSync(join(dir, "pg.url"), `${pg.url}\n`, { mode: 0o600 });
  }
  for (const [node, prio] of [
    ["g1", 150],
    ["g2", 100],
  ] as const) {
    mkdirSync(join(dir, node), { recursive: true });
    // Nodes sharing a PostgreSQL state need the same totp.key: g2 gets the one g1 made.
    if (pg && node === "g2") {
      mkdirSync(join(dir, "g2/state"), { recursive: true, mode: 0o700 });
      copyFileSync(join(dir, "g1/state/totp.key"), join(dir, "g2/state/totp.key"));
    }
    writeFileSync(join(dir, node, "keepalived.conf"), `include ${join(dir, node, "varco.conf")}\n`);
    writeFileSync(join(dir, `${node}.yaml`), policy(node, prio));
    const r = await execa(
      "node",
      [join(ROOT, "bin/varco.mjs"), "--policy", join(dir, `${node}.yaml`), "net", "--netns", n.ns(node), "apply"],
      { reject: false },
    );
    if (r.exitCode !== 0) throw new Error(`net apply on ${node}: ${r.stderr}`);
    startGateway(node);
    await waitForPort(2222, node === "g1" ? "192.0.2.1" : "192.0.2.2", 30_000, n.ns(node)).catch(async (err: Error) => {
      const g = gateways.get(node);
      g?.kill("SIGKILL");
      const r = await g;
      throw new Error(`${err.message}\n${node}: ${String(r?.stdout ?? "").slice(-3000)}${String(r?.stderr ?? "").slice(-3000)}`);
    });
    const k = spawnKeepalived(n, node, join(dir, node));
    keepaliveds.set(node, k);
  }
  copyFileSync(join(dir, "known_hosts"), join(dir, "known_hosts.orig"));
});

afterAll(async () => {
  await pg?.destroy();
  await n?.destroy();
  for (const p of [...gateways.values(), ...keepaliveds.values()]) await p.catch(() => undefined);
  await target?.stop();
  await slapd?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe.runIf(isRoot)("two gateways behind one keepalived VIP", () => {
  it("logs in through the VIP on the master", async () => {
    await waitFor(() => vipOn("g1"), 20_000, "the VIP on g1");
    expect(await vipOn("g2")).toBe(false);
    const r = await loginThroughVip("ha1");
    expect(r.stderr).toBe("");
    expect(r.stdout.trim()).toBe("via-vip");
  });

  it("keeps the VIP on exactly one node during an LDAP outage, while varco health reports the directory failing", async () => {
    // Reject LDAP at the directory's host (a reset, so each bind fails at once).
    const block = `table inet ldapcut {\n chain in {\n type filter hook input priority 0;\n tcp dport ${slapd.port} reject with tcp reset\n }\n}\n`;
    const cut = await execa("ip", ["netns", "exec", n.ns("lan"), "nft", "-f", "-"], { input: block });
    expect(cut.exitCode).toBe(0);
    try {
      for (const node of ["g1", "g2"]) {
        const health = () => n.exec(node, ["node", join(ROOT, "bin/varco.mjs"), "health", "--policy", join(dir, `${node}.yaml`)]);
        await waitFor(async () => (await health()).exitCode === 1, 20_000, `varco health on ${node} to report the directory`);
        const h = await health();
        expect(h.stdout).toMatch(/FAIL\s+directory/);
        expect(h.stdout).toMatch(/ok\s+audit_db/);
      }
      // keepalived's track script (interval 1 s, fall 2) has had several rounds; watch the VIP for 8 s more.
      for (let i = 0; i < 16; i++) {
        const holders = [(await vipOn("g1")) ? "g1" : "", (await vipOn("g2")) ? "g2" : ""].filter(Boolean);
        expect(holders).toEqual(["g1"]);
        await new Promise((r) => setTimeout(r, 500));
      }
    } finally {
      await execa("ip", ["netns", "exec", n.ns("lan"), "nft", "delete", "table", "inet", "ldapcut"], { reject: false });
    }
  });

  it("moves the VIP to the backup when the master gateway dies, and the next login works with no host-key warning", async () => {
    // A login through the master just before it dies: its code is then used on the whole cluster.
    const code = currentCode(TOTP, secrets.get("ha3") ?? "", Date.now());
    const before = await loginThroughVip("ha3", code);
    expect(before.stdout.trim()).toBe("via-vip");
    // Shared audit: g2 lists the session g1 just served (shipped within a moment), with its node.
    if (pg) await waitFor(async () => (await sessionsOnG2()).some((x) => x.node === "g1" && x.uid === "ha3"), 10_000, "g1's session on g2");
    gateways.get("g1")?.kill("SIGKILL");
    // The goal is 5 s (measured here: 3–4 s, see the note); the assertion leaves room for a slow CI machine.
    const ms = await waitFor(() => vipOn("g2"), 15_000, "the VIP on g2");
    console.log(`VIP moved to the backup in ${ms} ms`);
    expect(ms).toBeLessThan(15_000);
    const r = await loginThroughVip("ha2");
    expect(r.stderr).toBe("");
    expect(r.stdout.trim()).toBe("via-vip");
    expect(readFileSync(join(dir, "known_hosts"), "utf8")).toBe(readFileSync(join(dir, "known_hosts.orig"), "utf8"));
    if (!pg) return;
    // Shared login state: the code ha3 used through g1 is refused by g2.
    const replay = await loginThroughVip("ha3", code);
    expect(replay.exitCode).not.toBe(0);
    expect(replay.stdout).not.toContain("via-vip");
    const sessions = await sessionsOnG2();
    expect(sessions.some((x) => x.node === "g1" && x.uid === "ha3")).toBe(true);
    expect(sessions.some((x) => x.node === "g2" && x.uid === "ha2")).toBe(true);
  });
});
