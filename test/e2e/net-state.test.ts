/**
 * Honest state of the network front-end, for real in namespaces this test creates:
 *   internet (203.0.113.50) ─ pub0 │ gateway │ gw1 (10.10.1.1) ─ vm1 (10.10.1.11)
 * drift of hand-edited map/set elements, one apply at a time (a real second process holds the
 * lock), a no-op apply, element-delta applies, `plan --out` / `apply --plan`, and rollback and the
 * automatic revert reloading a real keepalived (k1 ─ k2 over a veth).
 */
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { execa, type ResultPromise } from "execa";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ROOT } from "../helpers/harness.ts";
import { createNetns, hasAddress, type Netns, spawnKeepalived, veth, waitFor } from "../helpers/netns.ts";

const isRoot = process.getuid?.() === 0;
let n: Netns;
let dir: string;
let policyFile: string;

const KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFm6vDyUu3Cq0cVl3kKq6a2lJjJx1m4Hq0rS2y3gk1Xz";
const HEAD = `version: 1
gateway: { state_dir: state }
directory: { ldap: { url: "ldap://127.0.0.1:1", bind_dn: cn=x, bind_password_file: pw, user_base: ou=p } }
targets: { vm1: { host: 10.10.1.11, host_key: "${KEY}" } }
routes: [ { users: [u], alias: vm1, target: vm1 } ]
`;
const fwd = (name: string, port: number, to: string, toPort: number) =>
  `    - { name: ${name}, protocol: tcp, external_ip: 203.0.113.10, external_port: ${port}, internal_ip: ${to}, internal_port: ${toPort} }\n`;
const policyText = (forwards: string) => `${HEAD}network:
  table: varco
  public_interface: pub0
  public_ip: 203.0.113.10
  private_networks: [10.10.0.0/16]
  masquerade: true
  port_forwards:
${fwd("web", 8080, "10.10.1.11", 80)}${forwards}`;
const setPolicy = (forwards = "") => writeFileSync(policyFile, policyText(forwards));

const varco = (...args: string[]) =>
  execa("node", [join(ROOT, "bin/varco.mjs"), "--policy", policyFile, "net", "--netns", n.ns("gw"), ...args], { reject: false });
const nft = (...args: string[]) => n.exec("gw", ["nft", ...args]);
const stateNet = () => join(dir, "state", "net");
const generations = () => readdirSync(stateNet()).filter((f) => /^gen-\d+\.json$/.test(f)).length;
const current = () => readFileSync(join(stateNet(), "current"), "utf8").trim();

beforeAll(async () => {
  if (!isRoot) return;
  dir = mkdtempSync(join(tmpdir(), "varco-netstate-"));
  policyFile = join(dir, "gateway.yaml");
  setPolicy();
  n = await createNetns(["inet", "gw", "vm1", "k1", "k2"]);
  await veth(n, { role: "inet", ifname: "eth0" }, { role: "gw", ifname: "pub0" });
  await veth(n, { role: "vm1", ifname: "eth0" }, { role: "gw", ifname: "gw1" });
  await n.ip("inet", "addr", "add", "203.0.113.50/24", "dev", "eth0");
  await n.ip("gw", "addr", "add", "203.0.113.10/24", "dev", "pub0");
  await n.ip("gw", "addr", "add", "10.10.1.1/24", "dev", "gw1");
  await n.ip("vm1", "addr", "add", "10.10.1.11/24", "dev", "eth0");
  await n.ip("vm1", "route", "add", "default", "via", "10.10.1.1");
  await n.exec("gw", ["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
  await n.serve("vm1", "vm1", [80, 9090]);
});

afterAll(async () => {
  await n?.destroy();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe.runIf(isRoot)("honest network state", () => {
  it("a no-op apply makes no new generation and says so", async () => {
    const first = await varco("apply");
    expect(first.stderr).toBe("");
    expect(first.stdout).toContain("applied generation 1");
    const again = await varco("apply");
    expect(again.exitCode).toBe(0);
    expect(again.stdout).toContain("no changes: generation 1 already matches the policy");
    expect(generations()).toBe(1);
    expect(current()).toBe("1");
  });

  it("status sees a port forward added to the map by hand, and names it", async () => {
    await nft("add", "element", "inet", "varco", "dnat4", "{ 203.0.113.10 . tcp . 2222 : 10.10.1.99 . 22 }");
    const st = await varco("status");
    expect(st.exitCode).toBe(1);
    expect(st.stdout).toContain("OUT OF SYNC");
    expect(st.stdout).toContain("map dnat4 in table inet varco: element added by hand: 203.0.113.10 . tcp . 2222 : 10.10.1.99 . 22");
    // A changed target of an existing forward, and an element added to a set.
    await nft("delete", "element", "inet", "varco", "dnat4", "{ 203.0.113.10 . tcp . 8080 }");
    await nft("add", "element", "inet", "varco", "dnat4", "{ 203.0.113.10 . tcp . 8080 : 10.10.1.99 . 80 }");
    await nft("add", "element", "inet", "varco", "private4", "{ 192.168.0.0/16 }");
    const st2 = await varco("status");
    expect(st2.stdout).toContain(
      "element changed by hand: 203.0.113.10 . tcp . 8080 : 10.10.1.11 . 80  →  203.0.113.10 . tcp . 8080 : 10.10.1.99 . 80",
    );
    expect(st2.stdout).toContain("set private4 in table inet varco: element added by hand: 192.168.0.0/16");
    // plan shows the drift; apply puts the table back (the policy itself did not change).
    expect((await varco("plan")).stdout).toContain("DRIFT: map dnat4");
    const a = await varco("apply");
    expect(a.stdout).toContain("applied generation 2");
    const ok = await varco("status");
    expect(ok.stdout).toContain("in sync");
    expect(ok.exitCode).toBe(0);
    expect(await n.probe("inet", "203.0.113.10", 8080)).toBe("vm1:80:203.0.113.50");
  });

  it("a one-forward change is applied as element commands, and the record stays exact", async () => {
    setPolicy(fwd("ssh", 2201, "10.10.1.11", 9090));
    const a = await varco("apply");
    expect(a.stdout).toContain("applied generation 3 (set/map elements only, one transaction)");
    expect(await n.probe("inet", "203.0.113.10", 2201)).toBe("vm1:9090:203.0.113.50");
    expect((await varco("status")).exitCode).toBe(0);
    // Removing it again is a delta too.
    setPolicy();
    expect((await varco("apply")).stdout).toContain("(set/map elements only");
    expect(await n.probe("inet", "203.0.113.10", 2201)).toMatch(/ERROR|TIMEOUT/);
    expect((await varco("status")).exitCode).toBe(0);
  });

  it("an element added by hand where a new forward goes makes the delta fail: the table is replaced instead", async () => {
    await nft("add", "element", "inet", "varco", "dnat4", "{ 203.0.113.10 . tcp . 2202 : 10.10.1.99 . 22 }");
    setPolicy(fwd("ssh2", 2202, "10.10.1.11", 9090));
    const a = await varco("apply");
    expect(a.exitCode).toBe(0);
    expect(a.stdout).not.toContain("elements only");
    expect(await n.probe("inet", "203.0.113.10", 2202)).toBe("vm1:9090:203.0.113.50");
    expect((await varco("status")).exitCode).toBe(0);
  });

  it("a rule added by hand is removed by an element-only change (the table is replaced)", async () => {
    await nft("add", "rule", "inet", "varco", "forward", "tcp", "dport", "31337", "accept");
    setPolicy(fwd("ssh2", 2202, "10.10.1.11", 9090) + fwd("ssh3", 2203, "10.10.1.11", 9090));
    const a = await varco("apply");
    expect(a.stdout).not.toContain("elements only");
    expect((await nft("list", "table", "inet", "varco")).stdout).not.toContain("31337");
    expect((await varco("status")).exitCode).toBe(0);
  });

  it("one apply at a time: a second process holding the lock makes apply fail at once, naming it", async () => {
    const script = join(dir, "hold-lock.mts");
    writeFileSync(
      script,
      `import { withNetLock } from ${JSON.stringify(join(ROOT, "src/net/index.ts"))};
await withNetLock(process.argv[2], "test holder", async () => { console.log("HOLDING"); await new Promise((r) => setTimeout(r, 60_000)); });\n`,
    );
    const holder: ResultPromise = execa("node", ["--import", "tsx", script, stateNet()], { reject: false, cwd: ROOT });
    try {
      await new Promise<void>((resolve, reject) => {
        const t = setTimeout(() => reject(new Error("the lock holder did not start")), 20_000);
        holder.stdout?.on("data", (d: Buffer) => {
          if (d.toString().includes("HOLDING")) {
            clearTimeout(t);
            resolve();
          }
        });
      });
      setPolicy(fwd("ssh4", 2204, "10.10.1.11", 9090));
      const before = generations();
      const t0 = Date.now();
      const r = await varco("apply");
      expect(Date.now() - t0).toBeLessThan(8000);
      expect(r.exitCode).toBe(1);
      expect(r.stderr).toContain("another varco net command is running: test holder");
      expect(r.stderr).toContain(`pid ${holder.pid}`);
      expect(generations()).toBe(before);
      expect((await varco("rollback")).stderr).toContain(`pid ${holder.pid}`);
      expect((await varco("confirm")).stderr).toContain(`pid ${holder.pid}`);
      // Reading is not blocked.
      expect((await varco("status")).stdout).toContain("the policy changed since the last apply");
    } finally {
      holder.kill("SIGTERM");
      await holder;
    }
    // Released: apply works again.
    expect((await varco("apply")).exitCode).toBe(0);
  });

  it("plan --out / apply --plan: applies exactly the saved plan, refused when the host or the policy changed", async () => {
    const file = join(dir, "next.plan");
    setPolicy(fwd("ssh4", 2204, "10.10.1.11", 9090) + fwd("ssh5", 2205, "10.10.1.11", 9090));
    expect((await varco("plan", "--out", file)).exitCode).toBe(0);
    expect(statSync(file).mode & 0o777).toBe(0o600);

    // The policy changed after the plan was made.
    setPolicy(fwd("ssh4", 2204, "10.10.1.11", 9090) + fwd("ssh5", 2205, "10.10.1.11", 9091));
    let r = await varco("apply", "--plan", file);
    expect(r.exitCode).toBe(1);
    expect(r.stderr).toContain("the policy renders differently now than when the plan was made (nft rules (table inet varco))");
    expect(r.stderr).toContain(`varco net plan --out ${file}`);
    setPolicy(fwd("ssh4", 2204, "10.10.1.11", 9090) + fwd("ssh5", 2205, "10.10.1.11", 9090));

    // The host changed after the plan was made.
    await nft("add", "element", "inet", "varco", "dnat4", "{ 203.0.113.10 . tcp . 2299 : 10.10.1.99 . 22 }");
    r = await varco("apply", "--plan", file);
    expect(r.exitCode).toBe(1);
    expect(r.stderr).toContain("the host changed since the plan was made (table inet varco)");
    expect(await n.probe("inet", "203.0.113.10", 2205)).toMatch(/ERROR|TIMEOUT/);
    await nft("delete", "element", "inet", "varco", "dnat4", "{ 203.0.113.10 . tcp . 2299 }");

    r = await varco("apply", "--plan", file);
    expect(r.exitCode).toBe(0);
    expect(await n.probe("inet", "203.0.113.10", 2205)).toBe("vm1:9090:203.0.113.50");
    // A plan is made against one host state: applying it again is refused.
    r = await varco("apply", "--plan", file);
    expect(r.exitCode).toBe(1);
    expect(r.stderr).toContain("the host changed since the plan was made");
    expect((await varco("apply", "--plan", join(dir, "nothing.plan"))).stderr).toContain("cannot read a saved plan");
  });
});

describe.runIf(isRoot)("rollback and the automatic revert reload keepalived", () => {
  let kaFile: string;
  let daemon: ResultPromise | undefined;
  const vipPolicy = (addresses: string) => `${HEAD.replace("state_dir: state", "state_dir: ka-state")}network:
  public_interface: eth0
  public_ip: 192.0.2.1
  vips:
    - { instance: VI_PUBLIC, interface: eth0, virtual_router_id: 52, priority: 150, advert_interval: 1s, addresses: [${addresses}] }
  keepalived: { config_file: ka/varco.conf, main_config: ka/keepalived.conf, pid_file: ka/keepalived.pid, health_command: /bin/true }
`;
  const ka = (...args: string[]) =>
    execa("node", [join(ROOT, "bin/varco.mjs"), "--policy", kaFile, "net", "--netns", n.ns("k1"), ...args], { reject: false });
  const vip = (cidr: string) => hasAddress(n, "k1", "eth0", cidr);

  beforeAll(async () => {
    if (!isRoot) return;
    kaFile = join(dir, "ka.yaml");
    mkdirSync(join(dir, "ka"), { recursive: true });
    // The operator's keepalived.conf: varco writes only the file it includes.
    writeFileSync(join(dir, "ka", "keepalived.conf"), `include ${join(dir, "ka", "varco.conf")}\n`);
    await veth(n, { role: "k1", ifname: "eth0" }, { role: "k2", ifname: "eth0" });
    await n.ip("k1", "addr", "add", "192.0.2.1/24", "dev", "eth0");
    await n.ip("k2", "addr", "add", "192.0.2.2/24", "dev", "eth0");
  });

  afterAll(async () => {
    daemon?.kill("SIGTERM");
    await daemon?.catch(() => undefined);
  });

  it("rollback takes the VIP the rolled-back generation added off the running keepalived", async () => {
    writeFileSync(kaFile, vipPolicy("192.0.2.100/24"));
    expect((await ka("apply")).exitCode).toBe(0);
    daemon = spawnKeepalived(n, "k1", join(dir, "ka"));
    await waitFor(() => vip("192.0.2.100/24"), 20_000, "the first VIP on k1");
    await waitFor(async () => existsSync(join(dir, "ka", "keepalived.pid")), 5_000, "keepalived's pid file");

    writeFileSync(kaFile, vipPolicy("192.0.2.100/24, 192.0.2.101/24"));
    expect((await ka("apply")).exitCode).toBe(0);
    await waitFor(() => vip("192.0.2.101/24"), 20_000, "the second VIP after apply");

    const r = await ka("rollback");
    expect(r.stdout).toContain("rolled back to generation 1");
    await waitFor(async () => !(await vip("192.0.2.101/24")), 20_000, "the second VIP gone after rollback");
    expect(await vip("192.0.2.100/24")).toBe(true);
  });

  it("the automatic revert of an unconfirmed apply reloads keepalived too", async () => {
    writeFileSync(kaFile, vipPolicy("192.0.2.100/24, 192.0.2.102/24"));
    expect((await ka("apply", "--confirm", "2s")).exitCode).toBe(0);
    await waitFor(() => vip("192.0.2.102/24"), 20_000, "the VIP of the unconfirmed apply");
    await waitFor(async () => !(await vip("192.0.2.102/24")), 20_000, "the VIP gone after the automatic revert");
    expect(await vip("192.0.2.100/24")).toBe(true);
  });
});
