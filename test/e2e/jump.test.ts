/**
 * Jump-host mode with the real OpenSSH client: `ssh -J jumper@gateway user@target` (ProxyJump, a
 * direct-tcpip channel on a login without an alias) reaches the target of a route with
 * `allow: { jump: true }` end to end (the test's own key is in the target's authorized_keys; the
 * gateway's egress key plays no part), and is audited as a tunnel with bytes and duration. Any other
 * host or port, a route without jump, and a direct-tcpip on a uid_alias login are refused.
 * Real slapd, sshd targets and gateway (test/helpers/harness.ts).
 */
import { appendFileSync, readFileSync, writeFileSync } from "node:fs";
import { type AddressInfo, createServer } from "node:net";
import { join } from "node:path";
import Database from "better-sqlite3";
import { execa } from "execa";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Harness, startHarness } from "../helpers/harness.ts";

const ROUTES = `
  - users: [jumper]
    alias: vm1
    target: vm1-mario
    allow: { jump: true, shell: false, exec: false, sftp: false, scp: false }
  - users: [nojump]
    alias: vm1
    target: vm1-mario
    allow: { port_forwarding: true }
  - groups: [testers]
    alias: vm2
    target: vm2-anna
  - users: [jumper2]
    alias: vm1
    target: vm1-mario
    allow: { jump: true }
  - users: [jumper]
    alias: dead
    target: dead
    allow: { jump: true }
`;

/** A loopback port nothing listens on (bound, then closed). */
async function closedPort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((r) => srv.listen(0, "127.0.0.1", r));
  const { port } = srv.address() as AddressInfo;
  await new Promise((r) => srv.close(r));
  return port;
}

let h: Harness;
let cfg: string;
let targetUser: string;
let vm1Port: number;
let vm2Port: number;
let deadPort: number;

beforeAll(async () => {
  deadPort = await closedPort();
  h = await startHarness({
    extraUsers: ["jumper", "jumper2", "nojump"],
    extraRoutes: ROUTES,
    // Two channels at once per connection; a target whose port is closed.
    templateEdit: (t) =>
      t
        .replace("idle_timeout: 1h }", "idle_timeout: 1h, max_channels: 2 }")
        .replace("targets:\n", `targets:\n  dead: { host: 127.0.0.1, port: ${deadPort}, host_key: "@VM1_HOST_KEY@" }\n`),
  });
  const { vm1, vm2 } = h.env.targets;
  targetUser = vm1.user;
  vm1Port = vm1.port;
  vm2Port = vm2.port;
  const key = join(h.dir, "jump_client_key");
  await execa("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-f", key]);
  const pub = readFileSync(`${key}.pub`, "utf8").trim();
  // The user's own key on the targets: the end-to-end login does not use the gateway's egress key.
  appendFileSync(join(h.env.dir, "vm1/authorized_keys"), `${pub}\n`);
  appendFileSync(join(h.env.dir, "vm2/authorized_keys"), `${pub}\n`);
  const kh = join(h.dir, "known_hosts");
  appendFileSync(kh, `[127.0.0.1]:${vm1.port} ${vm1.hostKeyLine}\n[127.0.0.1]:${vm2.port} ${vm2.hostKeyLine}\n`);
  // Options for the jump host must come from a config file (ssh passes -F on to the -J process, not -o).
  cfg = join(h.dir, "jump_config");
  writeFileSync(
    cfg,
    [
      "Host gw-*",
      "    HostName 127.0.0.1",
      `    Port ${h.port}`,
      "    PubkeyAuthentication no",
      `    ControlPath ${join(h.dir, "jcm-%r")}`,
      "Host gw-jumper",
      "    User jumper",
      "Host gw-nojump",
      "    User nojump",
      "Host gw-alias",
      "    User jumper_vm1",
      // The README's workflow: connection sharing set up by the first -J itself.
      "Host gw-auto",
      "    HostName 127.0.0.1",
      `    Port ${h.port}`,
      "    User jumper2",
      "    PubkeyAuthentication no",
      "    ControlMaster auto",
      `    ControlPath ${join(h.dir, "jcm-auto")}`,
      "    ControlPersist 300",
      "Host 127.0.0.1 localhost",
      `    IdentityFile ${key}`,
      "    IdentitiesOnly yes",
      "    PasswordAuthentication no",
      "    KbdInteractiveAuthentication no",
      "Host *",
      `    UserKnownHostsFile ${kh}`,
      "    StrictHostKeyChecking yes",
      "    LogLevel ERROR",
      "    ConnectTimeout 20",
      "",
    ].join("\n"),
  );
}, 120_000);

afterAll(async () => {
  if (cfg)
    for (const gw of ["gw-jumper", "gw-nojump", "gw-auto"])
      await execa("ssh", ["-F", cfg, "-O", "exit", gw], { reject: false, timeout: 10_000 });
  await h?.stop();
});

/**
 * Opens the ControlMaster login to the gateway (password + code through askpass) that later `-J` runs
 * reuse; keeps a live one (a second login would spend another TOTP step of the same user).
 */
async function master(gw: string, uid: string): Promise<void> {
  const alive = await execa("ssh", ["-F", cfg, "-O", "check", gw], { reject: false, stdin: "ignore", timeout: 10_000 });
  if (alive.exitCode === 0) return;
  const u = h.env.users.find((x) => x.uid === uid);
  const r = await execa("ssh", ["-F", cfg, "-o", "ControlMaster=yes", "-o", "ControlPersist=300", "-f", "-N", gw], {
    reject: false,
    env: h.askpassEnv(u?.password ?? "", h.nextCode(uid)),
    stdin: "ignore",
    timeout: 60_000,
  });
  expect(r.exitCode, r.stderr).toBe(0);
}

/** `ssh -J GW [-p PORT] USER@HOST command…` with the test's config (jump logins reuse the master). */
function jump(gw: string, host: string, port: number, args: readonly string[], env: NodeJS.ProcessEnv = {}) {
  return execa("ssh", ["-F", cfg, "-o", "ControlMaster=no", "-J", gw, "-p", String(port), `${targetUser}@${host}`, ...args], {
    reject: false,
    env,
    stdin: "ignore",
    timeout: 60_000,
  });
}

interface Row {
  type: string;
  uid: string | null;
  target: string | null;
  result: string | null;
  data: Record<string, unknown>;
}

/** Audit events of `uid` of the given type (read-only from the gateway's audit.db). */
function events(uid: string, type: string): Row[] {
  const db = new Database(join(h.dir, "state/audit.db"), { readonly: true, fileMustExist: true });
  try {
    const rows = db
      .prepare("SELECT type, uid, target, result, data FROM events WHERE uid = ? AND type = ? ORDER BY id")
      .all(uid, type) as Array<Omit<Row, "data"> & { data: string }>;
    return rows.map((r) => ({ ...r, data: JSON.parse(r.data) as Record<string, unknown> }));
  } finally {
    db.close();
  }
}

async function waitFor<T>(what: string, f: () => T | undefined): Promise<T> {
  for (let i = 0; i < 100; i++) {
    const v = f();
    if (v !== undefined) return v;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`timed out waiting for ${what}`);
}

describe("jump-host mode (ssh -J)", () => {
  it("reaches the route's target end to end, runs a command, and audits the tunnel with bytes and duration", async () => {
    await master("gw-jumper", "jumper");
    const payload = "x".repeat(200_000);
    const r = await execa(
      "ssh",
      ["-F", cfg, "-o", "ControlMaster=no", "-J", "gw-jumper", "-p", String(vm1Port), `${targetUser}@127.0.0.1`, "wc -c; echo jumped-ok"],
      { reject: false, input: payload, timeout: 60_000 },
    );
    expect(r.exitCode, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^200000\njumped-ok$/);
    const end = await waitFor("the tunnel's end event", () => events("jumper", "forward").find((e) => e.data.phase === "end"));
    expect(end.target).toBe("vm1-mario");
    expect(end.data).toMatchObject({ jump: true, host: "127.0.0.1", port: vm1Port, result: "ok" });
    // The encrypted session carried the 200 kB both ways' handshakes: bytes each way, a duration.
    expect(end.data.up as number).toBeGreaterThan(200_000);
    expect(end.data.down as number).toBeGreaterThan(1000);
    expect(end.data.duration_ms as number).toBeGreaterThan(0);
    const open = events("jumper", "forward").find((e) => e.data.phase === "open");
    expect(open?.data).toMatchObject({ jump: true, host: "127.0.0.1", port: vm1Port, requested: "127.0.0.1" });
  }, 120_000);

  it("reaches it by the target's name too (the gateway dials the configured host)", async () => {
    // The client's ProxyJump asks for host "vm1-mario"; the end-to-end host key is then looked up under that name.
    const kh = join(h.dir, "known_hosts");
    appendFileSync(kh, `[vm1-mario]:${vm1Port} ${h.env.targets.vm1.hostKeyLine}\n`);
    const r = await execa(
      "ssh",
      [
        "-F",
        cfg,
        "-o",
        "ControlMaster=no",
        "-o",
        `IdentityFile=${join(h.dir, "jump_client_key")}`,
        "-o",
        "PasswordAuthentication=no",
        "-o",
        "KbdInteractiveAuthentication=no",
        "-J",
        "gw-jumper",
        "-p",
        String(vm1Port),
        `${targetUser}@vm1-mario`,
        "echo by-name",
      ],
      { reject: false, stdin: "ignore", timeout: 60_000 },
    );
    expect(r.exitCode, r.stderr).toBe(0);
    expect(r.stdout.trim()).toBe("by-name");
  }, 60_000);

  it("refuses any other host or port, cleanly, and audits the refusal", async () => {
    const attempts: Array<[string, number, string]> = [
      ["127.0.0.1", vm2Port, "not_a_target"], // a target the user reaches by a route without jump: see below
      ["localhost", vm1Port, "not_a_target"], // another name of the same address
      ["127.0.0.1", h.port, "not_a_target"], // the gateway itself
      ["127.0.0.1", 22, "not_a_target"],
    ];
    for (const [host, port] of attempts) {
      const r = await jump("gw-jumper", host, port, ["echo should-not-run"]);
      expect(r.exitCode, `${host}:${port}`).toBe(255);
      expect(r.stdout).not.toContain("should-not-run");
      expect(r.stderr, `${host}:${port}`).toMatch(/Stdio forwarding request failed|open failed|administratively prohibited/i);
    }
    const refused = await waitFor("the refusals", () => {
      const rows = events("jumper", "channel_refused").filter((e) => e.data.jump === true);
      return rows.length >= attempts.length ? rows : undefined;
    });
    // jumper's testers route to vm2 has no jump: refused by name of the reason.
    expect(refused.map((e) => [e.data.host, e.data.port, e.data.reason])).toEqual([
      ["127.0.0.1", vm2Port, "jump_not_allowed"],
      ["localhost", vm1Port, "not_a_target"],
      ["127.0.0.1", h.port, "not_a_target"],
      ["127.0.0.1", 22, "not_a_target"],
    ]);
    // Nothing else was opened: only the two tunnels of the tests above.
    // (The refusal test runs before the max_channels test, which opens more.)
    expect(events("jumper", "forward").filter((e) => e.data.phase === "open")).toHaveLength(2);
  }, 120_000);

  it("bounds tunnels by max_channels and frees a channel after a target that does not answer", async () => {
    // A target that refuses the TCP connection: a clean failure, audited; its channel is released.
    for (let i = 0; i < 3; i++) {
      const r = await jump("gw-jumper", "127.0.0.1", deadPort, ["echo should-not-run"]);
      expect(r.exitCode).toBe(255);
      expect(r.stderr).toMatch(/Stdio forwarding request failed|open failed/i);
    }
    const failed = await waitFor("the failed tunnels", () => {
      const rows = events("jumper", "forward").filter((e) => e.data.phase === "end" && e.data.result === "unreachable");
      return rows.length >= 3 ? rows : undefined;
    });
    expect(failed[0]?.target).toBe("dead");
    expect(events("jumper", "upstream_refused").filter((e) => e.target === "dead")).toHaveLength(3);
    // Two tunnels at once are fine (max_channels: 2, the failures above hold none); a third is refused.
    const before = events("jumper", "forward").filter((e) => e.data.phase === "open").length;
    const long = [
      jump("gw-jumper", "127.0.0.1", vm1Port, ["sleep 4; echo long"]),
      jump("gw-jumper", "127.0.0.1", vm1Port, ["sleep 4; echo long"]),
    ];
    await waitFor("two open tunnels", () =>
      events("jumper", "forward").filter((e) => e.data.phase === "open").length >= before + 2 ? true : undefined,
    );
    const third = await jump("gw-jumper", "127.0.0.1", vm1Port, ["echo should-not-run"]);
    expect(third.exitCode).toBe(255);
    expect(third.stdout).not.toContain("should-not-run");
    for (const r of await Promise.all(long)) expect(r.stdout.trim(), r.stderr).toBe("long");
    expect(events("jumper", "channel_refused").filter((e) => e.data.reason === "max_channels")).toHaveLength(1);
    // And the channels are free again afterwards.
    const again = await jump("gw-jumper", "127.0.0.1", vm1Port, ["echo again"]);
    expect(again.stdout.trim(), again.stderr).toBe("again");
  }, 120_000);

  it("with ControlMaster auto on the jump host, the second ssh -J needs no code", async () => {
    const u = h.env.users.find((x) => x.uid === "jumper2");
    const first = await execa("ssh", ["-F", cfg, "-J", "gw-auto", "-p", String(vm1Port), `${targetUser}@127.0.0.1`, "echo one"], {
      reject: false,
      env: h.askpassEnv(u?.password ?? "", h.nextCode("jumper2")),
      stdin: "ignore",
      timeout: 60_000,
    });
    expect(first.stdout.trim(), first.stderr).toBe("one");
    // No askpass: a second login would have no password and no code to give.
    const second = await execa("ssh", ["-F", cfg, "-J", "gw-auto", "-p", String(vm1Port), `${targetUser}@127.0.0.1`, "echo two"], {
      reject: false,
      env: { SSH_ASKPASS: "/bin/false", SSH_ASKPASS_REQUIRE: "force", DISPLAY: ":0" },
      stdin: "ignore",
      timeout: 60_000,
    });
    expect(second.stdout.trim(), second.stderr).toBe("two");
    expect(events("jumper2", "login")).toHaveLength(1);
  }, 120_000);

  it("keeps listing the aliases for a session on the no-alias connection", async () => {
    const r = await execa("ssh", ["-F", cfg, "-o", "ControlMaster=no", "gw-jumper"], { reject: false, stdin: "ignore", timeout: 30_000 });
    expect(r.stdout + r.stderr).toContain("jumper_vm1");
  }, 60_000);

  it("refuses a route without jump, even one that allows port_forwarding", async () => {
    await master("gw-nojump", "nojump");
    const r = await jump("gw-nojump", "127.0.0.1", vm1Port, ["echo should-not-run"]);
    expect(r.exitCode).toBe(255);
    expect(r.stdout).not.toContain("should-not-run");
    const row = await waitFor("the refusal", () => events("nojump", "channel_refused").find((e) => e.data.jump === true));
    expect(row.data).toMatchObject({ host: "127.0.0.1", port: vm1Port, reason: "jump_not_allowed" });
    expect(row.target).toBe("vm1-mario");
  }, 120_000);

  it("keeps a uid_alias login's direct-tcpip under port_forwarding (a jump route without it refuses)", async () => {
    const u = h.env.users.find((x) => x.uid === "jumper");
    const r = await execa("ssh", ["-F", cfg, "-J", "gw-alias", "-p", String(vm1Port), `${targetUser}@127.0.0.1`, "echo should-not-run"], {
      reject: false,
      env: h.askpassEnv(u?.password ?? "", h.nextCode("jumper")),
      stdin: "ignore",
      timeout: 60_000,
    });
    expect(r.exitCode).toBe(255);
    expect(r.stdout).not.toContain("should-not-run");
    const row = await waitFor("the refusal", () =>
      events("jumper", "channel_refused").find((e) => e.data.kind === "direct-tcpip" && e.data.jump === undefined),
    );
    expect(row.data).toMatchObject({ host: "127.0.0.1", port: vm1Port });
  }, 120_000);

  it("a reload that removes the jump ends an open tunnel (on_route_removed: terminate), audited", async () => {
    await master("gw-jumper", "jumper");
    const opened = events("jumper", "forward").filter((e) => e.data.phase === "open").length;
    const running = jump("gw-jumper", "127.0.0.1", vm1Port, ["sleep 30; echo late"]);
    await waitFor("the tunnel to open", () =>
      events("jumper", "forward").filter((e) => e.data.phase === "open").length > opened ? true : undefined,
    );
    const good = readFileSync(h.env.policyFile, "utf8");
    const edited = good
      .replace(
        "allow: { jump: true, shell: false, exec: false, sftp: false, scp: false }",
        "allow: { shell: false, exec: false, sftp: false, scp: false }",
      )
      .replace("  state_dir: state\n", "  state_dir: state\n  on_route_removed: terminate\n");
    expect(edited).not.toBe(good);
    writeFileSync(h.env.policyFile, edited);
    try {
      expect(await h.reloadGateway()).toBe("reloaded");
      const t0 = Date.now();
      const r = await running;
      expect(Date.now() - t0).toBeLessThan(15_000);
      expect(r.stdout).not.toContain("late");
      const end = await waitFor("the tunnel's end event", () =>
        events("jumper", "forward").find((e) => e.data.phase === "end" && e.data.result === "route_removed"),
      );
      expect(end.data).toMatchObject({ jump: true, port: vm1Port });
      expect(events("jumper", "route_removed").length).toBeGreaterThan(0);
    } finally {
      writeFileSync(h.env.policyFile, good);
      await h.reloadGateway();
    }
  }, 120_000);
});
