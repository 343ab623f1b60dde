/**
 * Running varco in production, for real: /healthz and /metrics, `varco health` (Nagios too),
 * hot reload with a live session (keep and terminate), graceful stop, `varco doctor`,
 * `varco keys scan`, the systemd units' syntax and the privilege split (the net role needs
 * CAP_NET_ADMIN, the SSH role does not).
 */

import { readFileSync, writeFileSync } from "node:fs";
import { get } from "node:http";
import { join } from "node:path";
import { execa } from "execa";
import ssh2 from "ssh2";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { openAuditStore } from "../../src/audit/index.ts";
import { freePort } from "../../src/demo/index.ts";
import { CODE_PROMPT, PASSWORD_PROMPT } from "../../src/ssh/index.ts";
import { type Harness, ROOT, startHarness } from "../helpers/harness.ts";
import { createNetns } from "../helpers/netns.ts";

let h: Harness;
let metricsPort: number;
const isRoot = process.getuid?.() === 0;
const varco = (...args: string[]) => execa("node", [join(ROOT, "bin/varco.mjs"), "--policy", h.env.policyFile, ...args], { reject: false });

beforeAll(async () => {
  metricsPort = await freePort();
  h = await startHarness({
    extraUsers: ["o01", "o02", "o03", "o04", "o05", "o06"],
    templateEdit: (t) =>
      t.replace(
        "  state_dir: state\n",
        `  state_dir: state\n  metrics_listen: "127.0.0.1:${metricsPort}"\n  stop_timeout: 20s\n  banner: "Authorized use only. Sessions are recorded."\n`,
      ),
  });
});

afterAll(async () => {
  if (process.env.DEBUG_GW)
    console.log(
      h
        ?.gatewayOutput()
        .split("\n")
        .filter((l) => /reload|o04|o05|stop|route|SIG/.test(l))
        .join("\n"),
    );
  await h?.stop();
});

const http = (path: string) =>
  new Promise<{ status: number; body: string }>((resolve, reject) => {
    get({ host: "127.0.0.1", port: metricsPort, path }, (res) => {
      let body = "";
      res.on("data", (d: Buffer) => {
        body += d.toString();
      });
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body }));
    }).on("error", reject);
  });

function ssh2Session(uid: string): Promise<{ client: InstanceType<typeof ssh2.Client>; run: (cmd: string) => Promise<string> }> {
  return new Promise((resolve, reject) => {
    const c = new ssh2.Client();
    c.on("ready", () =>
      resolve({
        client: c,
        run: (cmd) =>
          new Promise((res, rej) =>
            c.exec(cmd, (err, ch) => {
              if (err) return rej(err);
              let out = "";
              ch.on("data", (d: Buffer) => {
                out += d.toString();
              });
              ch.on("close", () => res(out));
            }),
          ),
      }),
    );
    c.on("error", reject);
    c.on("keyboard-interactive", (_n, _i, _l, prompts, finish) =>
      finish(prompts.map((p) => (p.prompt === PASSWORD_PROMPT ? `${uid}-pw` : p.prompt === CODE_PROMPT ? h.nextCode(uid) : ""))),
    );
    c.connect({ host: "127.0.0.1", port: h.port, username: `${uid}_vm1`, tryKeyboard: true, readyTimeout: 20_000 });
  });
}

describe("banner", () => {
  it("sends the policy's banner before authentication", async () => {
    const banner = await new Promise<string>((resolve, reject) => {
      const c = new ssh2.Client();
      c.on("banner", (msg: string) => {
        c.end();
        resolve(msg);
      });
      c.on("error", (err) => setTimeout(() => reject(err), 200));
      c.connect({
        host: "127.0.0.1",
        port: h.port,
        username: "o06_vm1",
        tryKeyboard: true,
        readyTimeout: 10_000,
        authHandler: ["none"] as never,
      });
    });
    expect(banner).toBe("Authorized use only. Sessions are recorded.\r\n");
  });
});

describe("health and metrics", () => {
  it("serves /healthz (ready) and Prometheus /metrics that count logins", async () => {
    expect((await h.ssh("o01_vm1", ["true"])).exitCode).toBe(0);
    const health = await http("/healthz");
    expect(health.status).toBe(200);
    expect(JSON.parse(health.body).checks.map((c: { name: string }) => c.name)).toEqual([
      "policy",
      "audit_db",
      "listener",
      "directory",
      "state",
    ]);
    const m = await http("/metrics");
    expect(m.body).toMatch(/varco_logins_total\{result="ok"\} [1-9]/);
    expect(m.body).toContain("varco_upstream_connect_seconds_bucket");
    expect(m.body).toContain("varco_sessions_active");
  });

  it("`varco health` exits 0 when ready and 2 with --nagios when the directory is down", async () => {
    const ok = await varco("health", "--nagios");
    expect(ok.stdout).toMatch(/^VARCO OK - all 5 checks pass \| policy=1 audit_db=1 listener=1 directory=1 state=1/);
    expect(ok.exitCode).toBe(0);
    await h.env.slapd.stop();
    await new Promise((r) => setTimeout(r, 5200)); // past the 5 s cache of the directory probe
    const down = await varco("health", "--nagios");
    expect(down.exitCode).toBe(2);
    expect(down.stdout).toMatch(/^VARCO CRITICAL - directory: /);
    expect((await varco("health")).exitCode).toBe(1);
    await h.env.slapd.start();
  });

  it("`varco health` asks the running gateway even when the policy file has been broken since (no false failover)", async () => {
    const broken = join(h.dir, "broken-since.yaml");
    writeFileSync(broken, `${readFileSync(h.env.policyFile, "utf8")}\nnot_a_key: 1\n`);
    expect((await varco("policy", "check", broken)).exitCode).toBe(1);
    const r = await execa("node", [join(ROOT, "bin/varco.mjs"), "--policy", broken, "health", "--nagios"], { reject: false });
    expect(r.stdout).toMatch(/^VARCO (OK|CRITICAL) - /);
    expect(r.exitCode === 0 || r.stdout.includes("directory")).toBe(true);
  });
});

describe("hot reload", () => {
  it("keeps a live session working across a reload that removes its route (audited), and refuses new logins", async () => {
    const s = await ssh2Session("o02");
    expect(await s.run("echo before")).toBe("before\n");
    const good = readFileSync(h.env.policyFile, "utf8");
    writeFileSync(h.env.policyFile, good.replace(/- groups: \[testers\]\n {4}alias: vm1\n/, "- groups: [nobody]\n    alias: vm1\n"));
    expect(await h.reloadGateway()).toBe("reloaded");
    expect(await s.run("echo after-reload")).toBe("after-reload\n");
    s.client.end();
    const refused = await h.ssh("o03_vm1", ["true"]);
    expect(refused.stderr).toContain("is not a route you may use");
    const store = openAuditStore(join(h.dir, "state/audit.db"));
    const ev = store.allEvents().find((e) => e.type === "route_removed" && e.uid === "o02");
    store.close();
    expect(ev?.result).toBe("keep");
    writeFileSync(h.env.policyFile, good);
    expect(await h.reloadGateway()).toBe("reloaded");
  });

  it("closes it instead with on_route_removed: terminate", async () => {
    const good = readFileSync(h.env.policyFile, "utf8");
    const s = await ssh2Session("o04");
    const closed = new Promise<void>((r) => s.client.on("close", () => r()));
    writeFileSync(
      h.env.policyFile,
      good
        .replace("  stop_timeout: 20s\n", "  stop_timeout: 20s\n  on_route_removed: terminate\n")
        .replace(/- groups: \[testers\]\n {4}alias: vm1\n/, "- groups: [nobody]\n    alias: vm1\n"),
    );
    expect(await h.reloadGateway()).toBe("reloaded");
    await closed;
    writeFileSync(h.env.policyFile, good);
    expect(await h.reloadGateway()).toBe("reloaded");
  });
});

describe("doctor and keys scan", () => {
  it("`varco keys scan` prints the target's host key as a policy line with its fingerprint", async () => {
    const r = await varco("keys", "scan", `127.0.0.1:${h.env.targets.vm1.port}`, "vm2-anna");
    expect(r.exitCode).toBe(0);
    expect(r.stdout).toContain(`host_key: "${h.env.targets.vm1.hostKeyLine}"  # SHA256:`);
    expect(r.stdout).toContain(`host_key: "${h.env.targets.vm2.hostKeyLine}"`);
  });

  it("`varco doctor` passes here and names a target whose pinned key is wrong, with the fix", async () => {
    const ok = await varco("doctor");
    expect(ok.stdout).toMatch(/ok\s+directory/);
    expect(ok.stdout).toMatch(/ok\s+target vm1-mario/);
    const bad = join(h.dir, "doctor.yaml");
    writeFileSync(bad, readFileSync(h.env.policyFile, "utf8").replace(h.env.targets.vm1.hostKeyLine, h.env.targets.vm2.hostKeyLine));
    const r = await execa("node", [join(ROOT, "bin/varco.mjs"), "doctor", "--policy", bad], { reject: false });
    expect(r.exitCode).toBe(1);
    expect(r.stdout).toMatch(/FAIL\s+target vm1-mario\s+.*does not match the pinned host_key\s+verify the VM, then: varco keys scan/);
  });

  it("`varco doctor` checks a target without target.user by its host key only (no login as root)", async () => {
    const file = join(h.dir, "doctor-nouser.yaml");
    const text = readFileSync(h.env.policyFile, "utf8").replace(/^( {4}user: .*\n)/m, "");
    expect(text).not.toBe(readFileSync(h.env.policyFile, "utf8"));
    writeFileSync(file, text);
    const r = await execa("node", [join(ROOT, "bin/varco.mjs"), "doctor", "--policy", file], { reject: false });
    expect(r.stdout).toMatch(/ok\s+target vm1-mario\s+.*pinned host key matches; users log in as their own uid/);
    writeFileSync(file, text.replace(h.env.targets.vm1.hostKeyLine, h.env.targets.vm2.hostKeyLine));
    const bad = await execa("node", [join(ROOT, "bin/varco.mjs"), "doctor", "--policy", file], { reject: false });
    expect(bad.stdout).toMatch(/FAIL\s+target vm1-mario\s+.*does not offer the pinned host key/);
    expect(bad.exitCode).toBe(1);
  });
});

describe.runIf(isRoot)("systemd units and the privilege split", () => {
  it("the units pass systemd-analyze verify", async (ctx) => {
    const which = await execa("which", ["systemd-analyze"], { reject: false });
    if (which.exitCode !== 0) return ctx.skip("systemd-analyze is not installed here");
    const r = await execa(
      "systemd-analyze",
      ["verify", ...["varco.service", "varco-net.service", "varco-net.path"].map((u) => join(ROOT, "deploy", u))],
      { reject: false },
    );
    expect(r.stderr.split("\n").filter((l) => l.trim() && !/is not executable|No such file|Failed to open|not found/i.test(l))).toEqual([]);
    expect(readFileSync(join(ROOT, "deploy/varco.service"), "utf8")).toMatch(/^CapabilityBoundingSet=CAP_NET_BIND_SERVICE$/m);
  });

  it("net apply fails without CAP_NET_ADMIN and works with it; the SSH role runs without it", async () => {
    const n = await createNetns(["cap"]);
    try {
      const policy = join(h.dir, "cap.yaml");
      writeFileSync(
        policy,
        `${readFileSync(h.env.policyFile, "utf8")}network:\n  public_interface: lo\n  public_ip: 192.0.2.1\n  private_networks: [10.99.0.0/16]\n`,
      );
      const apply = ["node", join(ROOT, "bin/varco.mjs"), "--policy", policy, "net", "--netns", n.ns("cap"), "apply"];
      const without = await execa("setpriv", ["--bounding-set=-net_admin", "--inh-caps=-net_admin", "--", ...apply], { reject: false });
      expect(without.exitCode).toBe(1);
      expect(without.stderr).toMatch(/Operation not permitted|Permission denied/);
      const withCap = await execa(apply[0] as string, apply.slice(1), { reject: false });
      expect(withCap.stderr).toBe("");
      expect(withCap.exitCode).toBe(0);
      // The SSH-facing role: `varco doctor` and a gateway process run fine without CAP_NET_ADMIN.
      const doc = await execa(
        "setpriv",
        [
          "--bounding-set=-net_admin",
          "--",
          "node",
          join(ROOT, "bin/varco.mjs"),
          "--policy",
          h.env.policyFile,
          "keys",
          "scan",
          `127.0.0.1:${h.env.targets.vm1.port}`,
        ],
        {
          reject: false,
        },
      );
      expect(doc.exitCode).toBe(0);
    } finally {
      await n.destroy();
    }
  });
});

describe("graceful stop", () => {
  it("SIGTERM lets a running command finish, records the session end, then exits", async () => {
    const s = await ssh2Session("o05");
    const pending = s.run("sleep 2; echo finished-after-sigterm");
    await new Promise((r) => setTimeout(r, 300));
    h.signalGateway("SIGTERM");
    expect(await pending).toBe("finished-after-sigterm\n");
    s.client.end();
    for (let i = 0; i < 100 && !h.gatewayOutput().includes('"msg":"stopped"'); i++) await new Promise((r) => setTimeout(r, 100));
    expect(h.gatewayOutput()).toContain('"msg":"stopped"');
    const store = openAuditStore(join(h.dir, "state/audit.db"));
    const s5 = store.listSessions({ user: "o05" })[0];
    store.close();
    expect(s5?.result).toBe("ok");
    await h.restartGateway();
    expect((await h.ssh("o06_vm1", ["echo back"])).stdout).toBe("back\n");
  });
});
