/**
 * The target menu and `ssh uid@gateway ssh-config` of a login without an alias, with the real
 * OpenSSH client through a pty (`ssh -tt`, keys piped in) and, where the test must act between the
 * menu and the choice (a reload, a resize, a second channel), the ssh2 client library with a pty.
 * Real slapd, sshd targets and gateway (test/helpers/harness.ts). Each target is told apart by the
 * port in $SSH_CONNECTION (both targets log in the same local user).
 */
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { execa } from "execa";
import type { ClientChannel } from "ssh2";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { openAuditStore } from "../../src/audit/index.ts";
import { CODE_PROMPT, PASSWORD_PROMPT } from "../../src/ssh/index.ts";
import { closedSessionOf, type Harness, ssh2LoginAt, startHarness } from "../helpers/harness.ts";

const ROUTES = `
  - groups: [testers]
    alias: alpha
    target: vm1-mario
    description: "First box \\u202e reversed"
  - groups: [testers]
    alias: beta
    target: vm2-anna
    description: "Second box"
  - users: [someone.else]
    alias: secret
    target: vm2-anna
  - users: [m15]
    alias: fwd
    target: vm1-mario
    allow: { port_forwarding: true }
  - users: [m13]
    alias: noshell
    target: vm1-mario
    allow: { shell: false }
`;
const USERS = Array.from({ length: 15 }, (_, i) => `m${String(i + 1).padStart(2, "0")}`);

let h: Harness;
let vm1Port: number;
let vm2Port: number;
/** Prints `on-<target sshd port>` (the typed command line shows `on-$(…`, never a number). */
const WHERE = "echo on-$(echo $SSH_CONNECTION | cut -d' ' -f4)";

beforeAll(async () => {
  h = await startHarness({ extraUsers: USERS, extraRoutes: ROUTES });
  vm1Port = h.env.targets.vm1.port;
  vm2Port = h.env.targets.vm2.port;
});
afterAll(async () => {
  await h?.stop();
});

/** `ssh -tt uid@gateway` (no alias, a pty) with `input` piped as the keys. */
const menuSsh = (uid: string, input: string) =>
  execa("ssh", [...h.sshOptions(["-tt"]), `${uid}@127.0.0.1`], {
    env: { ...h.askpassEnv(`${uid}-pw`, h.nextCode(uid)), TERM: "xterm" },
    input,
    reject: false,
    timeout: 60_000,
  });

/** The audit events of `uid` (all of them, in order). */
function eventsOf(uid: string) {
  const store = openAuditStore(join(h.dir, "state/audit.db"));
  try {
    return store.allEvents().filter((e) => e.uid === uid);
  } finally {
    store.close();
  }
}

/** An ssh2 client logged in as `uid` (no alias) with a shell on a pty of `cols`×`rows`; its output accumulates. */
async function menuClient(uid: string, cols = 100, rows = 30) {
  const c = await ssh2LoginAt(h.port, uid, (p) => (p === PASSWORD_PROMPT ? `${uid}-pw` : p === CODE_PROMPT ? h.nextCode(uid) : ""));
  const ch = await new Promise<ClientChannel>((resolve, reject) =>
    c.shell({ term: "xterm", cols, rows }, (err, s) => (err ? reject(err) : resolve(s))),
  );
  let out = "";
  let exit: number | undefined;
  ch.on("data", (d: Buffer) => {
    out += d.toString("latin1");
  });
  ch.stderr.on("data", (d: Buffer) => {
    out += d.toString("latin1");
  });
  ch.on("exit", (code: number) => {
    exit = code;
  });
  const closed = new Promise<void>((r) => ch.once("close", () => r()));
  /** Waits (bounded, 20 s) until the output since `from` matches. */
  const waitFor = async (re: RegExp, from = 0) => {
    for (let i = 0; i < 400; i++) {
      if (re.test(out.slice(from))) return;
      await new Promise((r) => setTimeout(r, 50));
    }
    throw new Error(`never saw ${re} in ${JSON.stringify(out)}`);
  };
  return { c, ch, waitFor, closed, output: () => out, exit: () => exit };
}

describe("the target menu (ssh -tt uid@gateway)", () => {
  it("lists only the user's own aliases with their descriptions, escaped; arrow down + Enter lands on the second", async () => {
    const r = await menuSsh("m01", `\x1b[B\r${WHERE}\nexit\n`);
    const out = String(r.stdout);
    expect(r.exitCode, out + String(r.stderr)).toBe(0);
    expect(out).toContain("choose a target for m01");
    expect(out).toContain("1) m01_alpha - First box \\u202e reversed");
    expect(out).toContain("2) m01_beta - Second box");
    expect(out).not.toContain("\u202e");
    expect(out).not.toContain("secret");
    expect(out).not.toContain("_vm1");
    expect(out).toContain("connecting to m01_beta");
    expect(out).toContain(`on-${vm2Port}`);
    expect(out).not.toContain(`on-${vm1Port}`);
    // Audited as the alias login would be (session row and session_start as m01_beta), plus the choice.
    const s = await closedSessionOf(h.env.policyFile, "m01");
    const choice = s.events.find((e) => e.type === "menu_choice");
    expect(choice).toMatchObject({ result: "ok", data: { via: "menu", alias: "beta" } });
    expect(s.events.map((e) => e.type)).toEqual(expect.arrayContaining(["menu_choice", "session_start", "shell", "session_end"]));
    const start = eventsOf("m01").find((e) => e.type === "session_start");
    expect(start).toMatchObject({ account: "m01_beta", target: "vm2-anna" });
    expect(s.recordings[0]?.status).toBe("complete");
  });

  it("chooses by number (the number wins over the highlight)", async () => {
    const r = await menuSsh("m02", `\x1b[B1\r${WHERE}\nexit\n`);
    expect(r.exitCode, String(r.stdout) + String(r.stderr)).toBe(0);
    expect(String(r.stdout)).toContain("connecting to m02_alpha");
    expect(String(r.stdout)).toContain(`on-${vm1Port}`);
    expect(String(r.stdout)).not.toContain(`on-${vm2Port}`);
  });

  it("never reaches anything with an out-of-range number, and q leaves cleanly (audited)", async () => {
    const r = await menuSsh("m03", "9\r0\r3\rq");
    const out = String(r.stdout);
    expect(r.exitCode, out + String(r.stderr)).toBe(0);
    // (The "no entry N" notices are redrawn once per chunk of input; the keys may arrive in one.)
    expect(out).toContain("no target chosen");
    expect(out).not.toContain("connecting to");
    const events = eventsOf("m03");
    expect(events.find((e) => e.type === "menu_choice")).toMatchObject({ result: "quit", account: "m03", data: { reason: "q" } });
    expect(events.some((e) => e.type === "session_start")).toBe(false);
  });

  it("a chosen route that allows no shell refuses it as the uid_alias login does", async () => {
    const r = await menuSsh("m13", "3\r");
    expect(r.exitCode).toBe(1);
    expect(String(r.stdout)).toContain("3) m13_noshell");
    expect(String(r.stdout) + String(r.stderr)).toContain("shell is not allowed on m13_noshell");
    const s = await closedSessionOf(h.env.policyFile, "m13");
    expect(s.events.find((e) => e.type === "channel_refused")).toMatchObject({ data: { kind: "shell" } });
  });

  it("Ctrl-C leaves too; the end of input without a choice leaves (eof)", async () => {
    const r = await menuSsh("m04", "\x1b[B\x03");
    expect(r.exitCode).toBe(0);
    expect(String(r.stdout)).toContain("no target chosen");
    const e = await menuSsh("m04", "\x1b[B");
    expect(e.exitCode).toBe(0);
    const reasons = eventsOf("m04")
      .filter((x) => x.type === "menu_choice")
      .map((x) => x.data?.reason);
    expect(reasons).toEqual(["ctrl_c", "eof"]);
  });

  it("a -L forward is refused before the choice and follows the chosen route's port_forwarding after it", async () => {
    const m = await menuClient("m15");
    const forward = () =>
      new Promise<string>((resolve, reject) =>
        m.c.forwardOut("127.0.0.1", 40000, "127.0.0.1", vm1Port, (err, s) => {
          if (err) return reject(err);
          s.once("data", (d: Buffer) => {
            resolve(d.toString());
            s.close();
          });
        }),
      );
    await m.waitFor(/3\) m15_fwd/);
    await expect(forward()).rejects.toThrow();
    m.ch.write("3\r");
    await m.waitFor(/connecting to m15_fwd/);
    // The target's sshd answers through the tunnel (its identification string).
    expect(await forward()).toMatch(/^SSH-2\.0-/);
    m.c.end();
    const s = await closedSessionOf(h.env.policyFile, "m15");
    expect(s.events.find((e) => e.type === "forward")).toMatchObject({ data: { host: "127.0.0.1", port: vm1Port } });
  });

  it("keeps the pty size of the request, passes later window changes on, and routes later channels to the chosen target", async () => {
    const m = await menuClient("m05", 100, 30);
    await m.waitFor(/2\) m05_beta/);
    m.ch.write("\x1b[B\r");
    await m.waitFor(/connecting to m05_beta/);
    let from = m.output().length;
    m.ch.write("stty size\n");
    await m.waitFor(/\r30 100\r\n/, from);
    m.ch.setWindow(50, 132, 0, 0);
    from = m.output().length;
    m.ch.write("stty size\n");
    await m.waitFor(/\r50 132\r\n/, from);
    // A second channel on the same connection goes to the chosen target, as on an m05_beta login.
    const second = await new Promise<string>((resolve, reject) =>
      m.c.exec("echo $SSH_CONNECTION", (err, s) => {
        if (err) return reject(err);
        let text = "";
        s.on("data", (d: Buffer) => {
          text += d.toString();
        });
        s.on("close", () => resolve(text));
        s.stderr.resume();
      }),
    );
    expect(second.trim().split(" ")[3]).toBe(String(vm2Port));
    // A second menu on the same connection cannot switch targets.
    const other = await new Promise<string>((resolve, reject) =>
      m.c.shell({ term: "xterm", cols: 80, rows: 24 }, (err, s) => {
        if (err) return reject(err);
        let text = "";
        s.on("data", (d: Buffer) => {
          text += d.toString();
        });
        s.stderr.on("data", (d: Buffer) => {
          text += d.toString();
        });
        s.on("close", () => resolve(text));
        s.write(`${WHERE}\nexit\n`);
      }),
    );
    expect(other).toContain(`on-${vm2Port}`);
    m.ch.write("exit\n");
    await m.closed;
    m.c.end();
  });

  it("checks the choice again: a route removed by a reload after the list was shown is refused", async () => {
    const m = await menuClient("m06");
    await m.waitFor(/2\) m06_beta/);
    const policy = readFileSync(h.env.policyFile, "utf8");
    const without = policy.replace(/\n {2}- groups: \[testers\]\n {4}alias: beta\n(?: {4}.*\n)*/, "\n");
    expect(without).not.toContain("alias: beta");
    writeFileSync(h.env.policyFile, without);
    try {
      expect(await h.reloadGateway()).toBe("reloaded");
      m.ch.write("\x1b[B\r");
      await m.closed;
      expect(m.output()).toContain('"m06_beta" is not a route you may use');
      expect(m.output()).not.toContain("m06_beta\r\n  m06_");
      expect(m.exit()).toBe(1);
    } finally {
      writeFileSync(h.env.policyFile, policy);
      await h.reloadGateway();
      m.c.end();
    }
    const events = eventsOf("m06");
    expect(events.find((e) => e.type === "menu_choice")).toMatchObject({ result: "refused", data: { alias: "beta" } });
    expect(events.some((e) => e.type === "session_start")).toBe(false);
  });
});

describe("without a terminal", () => {
  it("prints the list as before, for a shell or any other command", async () => {
    const shell = await h.ssh("m07", []);
    expect(shell.exitCode).toBe(1);
    expect(shell.stderr).toContain("m07_alpha");
    expect(shell.stderr).toContain("m07_beta");
    expect(shell.stdout).toBe("");
    const id = await h.ssh("m07", ["id"]);
    expect(id.exitCode).toBe(1);
    expect(id.stdout).toBe("");
    expect(id.stderr).toContain("m07_alpha");
  });

  it("ssh uid@gateway ssh-config prints the user's own blocks and the gateway's host key; ssh -F uses them", async () => {
    const r = await h.ssh("m08", ["ssh-config"]);
    expect(r.exitCode, r.stderr).toBe(0);
    expect(r.stdout).toContain(
      `Host alpha\n    # First box \\u202e reversed\n    HostName 127.0.0.1\n    Port ${h.port}\n    User m08_alpha\n`,
    );
    expect(r.stdout).toContain("Host beta\n");
    expect(r.stdout).not.toContain("secret");
    const hostPub = readFileSync(join(h.dir, "keys/ssh_host_ed25519_key.pub"), "utf8").trim().split(/\s+/).slice(0, 2).join(" ");
    const known = r.stdout.split("\n").filter((l) => l.startsWith(`# [127.0.0.1]:${h.port} `));
    expect(known).toEqual([`# [127.0.0.1]:${h.port} ${hostPub}`]);
    const cfg = join(h.dir, "m08-config");
    const kh = join(h.dir, "m08-known_hosts");
    writeFileSync(cfg, r.stdout);
    writeFileSync(kh, `${known[0]?.slice(2)}\n`);
    const used = await execa(
      "ssh",
      [
        "-F",
        cfg,
        "-o",
        `ControlPath=${join(h.dir, "m08-cm-%C")}`,
        "-o",
        "ControlMaster=no",
        "-o",
        `UserKnownHostsFile=${kh}`,
        "-o",
        "StrictHostKeyChecking=yes",
        "-o",
        "PubkeyAuthentication=no",
        "beta",
        WHERE,
      ],
      { env: h.askpassEnv("m08-pw", h.nextCode("m08")), reject: false, stdin: "ignore", timeout: 60_000 },
    );
    expect(used.stdout.trim(), used.stderr).toBe(`on-${vm2Port}`);
  });

  it("ssh-config --gateway HOST:PORT names that address", async () => {
    const r = await h.ssh("m09", ["ssh-config", "--gateway", "gw.example.org:2222"]);
    expect(r.exitCode, r.stderr).toBe(0);
    expect(r.stdout).toContain(
      "Host alpha\n    # First box \\u202e reversed\n    HostName gw.example.org\n    Port 2222\n    User m09_alpha\n",
    );
    expect(r.stdout).toMatch(/\n# \[gw\.example\.org\]:2222 ssh-ed25519 AAAA\S+\n/);
  });

  it("refuses ssh-config with anything else in the command line, and runs nothing", async () => {
    const chained = await h.ssh("m10", ["ssh-config; id"]);
    expect(chained.exitCode).toBe(2);
    expect(chained.stdout).toBe("");
    expect(chained.stderr).toContain("usage: ssh-config [--gateway HOST[:PORT]]");
    const injected = await h.ssh("m10", ["ssh-config --gateway 'x\nProxyCommand evil'"]);
    expect(injected.exitCode).toBe(2);
    expect(injected.stdout).toBe("");
    expect(injected.stderr).toContain("is not HOST[:PORT]");
    expect(injected.stderr).not.toContain("\nProxyCommand");
  });

  it("leaves uid_alias logins as they were: ssh-config there is the target's command", async () => {
    const r = await h.ssh("m11_alpha", ["ssh-config 2>/dev/null; echo exit=$?"]);
    expect(r.stdout).toBe("exit=127\n");
  });
});

describe("idle", () => {
  it("closes a menu left alone for gateway.limits.idle_timeout", async () => {
    const policy = readFileSync(h.env.policyFile, "utf8");
    writeFileSync(h.env.policyFile, policy.replace("idle_timeout: 1h", "idle_timeout: 2s"));
    try {
      expect(await h.reloadGateway()).toBe("reloaded");
      const m = await menuClient("m12");
      await m.waitFor(/m12_beta/);
      const t0 = Date.now();
      await m.closed;
      const waited = Date.now() - t0;
      expect(waited).toBeGreaterThan(1500);
      expect(waited).toBeLessThan(10_000);
      m.c.end();
    } finally {
      writeFileSync(h.env.policyFile, policy);
      await h.reloadGateway();
    }
  });
});
