/**
 * Hostile and broken surroundings, with real daemons: a target whose host key changed, a target
 * that is down, the directory going away mid-run, an invalid policy file (check and reload).
 */
import { readFileSync, writeFileSync } from "node:fs";
import { type AddressInfo, createServer } from "node:net";
import { join } from "node:path";
import { execa } from "execa";
import ssh2 from "ssh2";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { openAuditStore } from "../../src/audit/index.ts";
import { type Harness, ROOT, startHarness, TEST_ROUTES } from "../helpers/harness.ts";

let h: Harness;

/** vm1's address with vm2's host key pinned: what a re-installed or impersonated target looks like. */
const EXTRA = `${TEST_ROUTES}
  - groups: [testers]
    alias: badkey
    target: vm1-wrongkey
`;

beforeAll(async () => {
  h = await startHarness({
    extraUsers: ["f01", "f02", "f03", "f04", "f05", "f06", "f07", "f08"],
    extraRoutes: EXTRA,
    templateEdit: (t) =>
      t
        .replace(
          "targets:\n",
          'targets:\n  vm1-wrongkey:\n    host: 127.0.0.1\n    port: @VM1_PORT@\n    user: @TARGET_USER@\n    host_key: "@VM2_HOST_KEY@"\n',
        )
        .replace("idle_timeout: 1h", "idle_timeout: 3s"),
  });
});

afterAll(async () => {
  await h?.stop();
});

const waitFor = async (fn: () => boolean, what: string) => {
  for (let i = 0; i < 100; i++) {
    if (fn()) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`timed out waiting for ${what}`);
};

describe("upstream", () => {
  it("refuses a target whose host key does not match the pin, tells the user, and audits it", async () => {
    const r = await h.ssh("f01_badkey", ["echo should-not-run"]);
    expect(r.exitCode).toBe(1);
    expect(r.stdout).toBe("");
    expect(r.stderr).toContain("the target's host key changed, contact an administrator");
    const store = openAuditStore(join(h.dir, "state/audit.db"));
    const ev = store.allEvents().find((e) => e.type === "host_key_mismatch" && e.uid === "f01");
    store.close();
    expect(ev?.target).toBe("vm1-wrongkey");
    expect(String(ev?.data?.presented)).toMatch(/^SHA256:/);
  });

  it("tells the user when the target is down, and keeps serving other routes", async () => {
    await h.env.targets.vm2.stop();
    const down = await h.ssh("f02_vm2", ["echo should-not-run"]);
    expect(down.exitCode).toBe(1);
    expect(down.stderr).toContain("the target is unreachable");
    const up = await h.ssh("f03_vm1", ["echo still-serving"]);
    expect(up.exitCode).toBe(0);
    expect(up.stdout).toBe("still-serving\n");
  });
});

describe("idle sessions", () => {
  it("closes a logged-in session that moves no data for idle_timeout (3 s here) and logs why", async () => {
    const c = new ssh2.Client();
    const closedAfter = await new Promise<number>((resolve, reject) => {
      let readyAt = 0;
      c.on("ready", () => {
        readyAt = Date.now();
        c.shell({ term: "xterm" }, (err) => err && reject(err));
      });
      c.on("close", () => resolve(Date.now() - readyAt));
      c.on("error", () => undefined);
      c.on("keyboard-interactive", (_n, _i, _l, prompts, finish) =>
        finish(prompts.map((p) => (p.prompt.startsWith("Password") ? "f08-pw" : h.nextCode("f08")))),
      );
      c.connect({ host: "127.0.0.1", port: h.port, username: "f08_vm1", tryKeyboard: true, readyTimeout: 20_000 });
      setTimeout(() => reject(new Error("the idle session was not closed within 20 s")), 20_000);
    });
    expect(closedAfter).toBeGreaterThanOrEqual(2500);
    await waitFor(() => h.gatewayOutput().includes("idle_timeout; closing"), "the idle_timeout log line");
  });
});

describe("idle sessions (forwarded traffic)", () => {
  it("a -L forward that moves data is activity: not cut by idle_timeout (3 s here)", async () => {
    // A loopback echo service the target (127.0.0.1 here) forwards to.
    const echo = createServer((sock) => sock.pipe(sock));
    await new Promise<void>((r) => echo.listen(0, "127.0.0.1", () => r()));
    const echoPort = (echo.address() as AddressInfo).port;
    const c = new ssh2.Client();
    let closed = false;
    c.on("close", () => {
      closed = true;
    });
    c.on("error", () => undefined);
    c.on("keyboard-interactive", (_n, _i, _l, prompts, finish) =>
      finish(prompts.map((p) => (p.prompt.startsWith("Password") ? "f05-pw" : h.nextCode("f05")))),
    );
    await new Promise<void>((resolve, reject) => {
      c.on("ready", () => resolve());
      c.connect({ host: "127.0.0.1", port: h.port, username: "f05_vm1", tryKeyboard: true, readyTimeout: 20_000 });
      setTimeout(() => reject(new Error("login timed out")), 20_000);
    });
    const stream = await new Promise<ssh2.ClientChannel>((resolve, reject) =>
      c.forwardOut("127.0.0.1", 40000, "127.0.0.1", echoPort, (err, ch) => (err ? reject(err) : resolve(ch))),
    );
    let echoed = 0;
    stream.on("data", (d: Buffer) => {
      echoed += d.length;
    });
    // 7 s of traffic, a chunk every 500 ms: more than twice idle_timeout, never idle for long.
    for (let i = 0; i < 14 && !closed; i++) {
      stream.write("ping\n");
      await new Promise((r) => setTimeout(r, 500));
    }
    expect(closed).toBe(false);
    expect(echoed).toBeGreaterThan(0);
    c.end();
    echo.close();
  });
});

describe("directory", () => {
  it("refuses logins generically while LDAP is down, logs why, and recovers when it is back", async () => {
    await h.env.slapd.stop();
    const r = await h.ssh("f04_vm1", ["echo should-not-run"]);
    expect(r.exitCode).toBe(255);
    expect(r.stderr).toContain("Permission denied");
    expect(r.stderr).not.toMatch(/ldap|directory/i);
    await waitFor(() => h.gatewayOutput().includes("directory_unavailable"), "the gateway to log the LDAP failure");
    await h.env.slapd.start();
    const ok = await h.ssh("f05_vm1", ["echo back"]);
    expect(ok.exitCode).toBe(0);
    expect(ok.stdout).toBe("back\n");
  });
});

describe("policy", () => {
  it("`varco policy check` reports every error as file:line:col and exits 1", async () => {
    const bad = join(h.dir, "bad.yaml");
    const text = readFileSync(h.env.policyFile, "utf8")
      .replace("version: 1", "version: 1\nbogus_key: true")
      .replace(/port: \d+\n/, "port: 70000\n")
      .replace("target: vm1-mario", "target: no-such-target");
    writeFileSync(bad, text);
    const r = await execa("node", [join(ROOT, "bin/varco.mjs"), "policy", "check", bad], { reject: false });
    expect(r.exitCode).toBe(1);
    const lines = String(r.stderr).trim().split("\n");
    expect(lines.length).toBeGreaterThanOrEqual(2);
    for (const l of lines) expect(l).toMatch(new RegExp(`^${bad.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}:\\d+:\\d+: `));
    const bogusLine = text.split("\n").findIndex((l) => l.startsWith("bogus_key")) + 1;
    expect(r.stderr).toContain(`:${bogusLine}:1: unknown key "bogus_key"`);
    expect(r.stderr).toMatch(/port: .*65535/);
  });

  it("`varco policy check` accepts the shipped example and the rendered demo policy", async () => {
    for (const f of [join(ROOT, "policies/gateway.yaml"), h.env.policyFile]) {
      const r = await execa("node", [join(ROOT, "bin/varco.mjs"), "policy", "check", f], { reject: false });
      expect(r.stderr).toBe("");
      expect(r.exitCode).toBe(0);
    }
  });

  it("keeps the last good policy when a reload finds an invalid file, and applies a valid one", async () => {
    const good = readFileSync(h.env.policyFile, "utf8");
    writeFileSync(h.env.policyFile, `${good}\nnot_a_key: 1\n`);
    expect(await h.reloadGateway()).toBe("refused");
    const still = await h.ssh("f06_vm1", ["echo old-policy"]);
    expect(still.exitCode).toBe(0);
    // A valid change (f07 loses the vm1 route by the testers group) applies to new logins.
    writeFileSync(h.env.policyFile, good.replace(/- groups: \[testers\]\n {4}alias: vm1\n/, "- groups: [nobody]\n    alias: vm1\n"));
    expect(await h.reloadGateway()).toBe("reloaded");
    const after = await h.ssh("f07_vm1", ["echo new-policy"]);
    expect(after.exitCode).toBe(1);
    expect(after.stderr).toContain("is not a route you may use");
    writeFileSync(h.env.policyFile, good);
  });

  it("stops promptly on SIGTERM even when the policy file on disk is broken (it uses the running policy)", async () => {
    const good = readFileSync(h.env.policyFile, "utf8");
    writeFileSync(h.env.policyFile, "version: [unterminated\n");
    const from = h.gatewayOutput().length;
    h.signalGateway("SIGTERM");
    let stopped = false;
    for (let i = 0; i < 200 && !stopped; i++) {
      stopped = h.gatewayOutput().slice(from).includes('"msg":"stopped"');
      if (!stopped) await new Promise((r) => setTimeout(r, 50));
    }
    writeFileSync(h.env.policyFile, good);
    expect(stopped, h.gatewayOutput().slice(from)).toBe(true);
    await h.restartGateway();
    expect((await h.ssh("f06_vm1", ["echo back"])).exitCode).toBe(0);
  });
});
