/**
 * Two gateways (`varco serve` × 2) on one PostgreSQL login state, with the real OpenSSH client:
 * the policies differ only in listen port, state_dir and gateway.node, and both nodes hold the
 * same totp.key. A code used through A is refused through B; failures spread over A and B lock
 * the uid on both; a user enrolled through A (`varco user totp enroll`) logs in through B;
 * PostgreSQL stopped: logins are refused with a clear log line, and work again once it is back.
 * The audit: each node ships its chained audit.db to PostgreSQL; `audit list` on either node shows
 * both nodes' sessions with their node, `audit verify` checks both chains there and catches an
 * event edited in PostgreSQL, and a session that ends while PostgreSQL is down arrives once it is back.
 */
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { execa } from "execa";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { currentCode, newSecret } from "../../src/auth/index.ts";
import { stopChild } from "../../src/demo/index.ts";
import { STATE_SCHEMA_VERSION } from "../../src/state/index.ts";
import { type Harness, ROOT, ssh2LoginAt, startHarness } from "../helpers/harness.ts";
import { havePostgres, startPostgres, type TestPostgres } from "../helpers/postgres.ts";
import { type SecondNode, startSecondNode } from "../helpers/second-node.ts";

const TOTP = { issuer: "varco", digits: 6 as const, periodMs: 30_000, window: 1 };
const BIN = join(ROOT, "bin/varco.mjs");
let pg: TestPostgres;
let h: Harness;
let nodeB: SecondNode | undefined;
const b = () => nodeB?.process;
const bPort = () => nodeB?.port ?? 0;
const bOutput = () => nodeB?.output() ?? "";
const policyB = () => nodeB?.policyFile ?? join(h.dir, "gateway-gw-b.yaml");

/** `varco …` with a policy, as a child process. */
const varco = (policy: string, args: string[]) => execa("node", [BIN, ...args, "--policy", policy], { reject: false, timeout: 60_000 });

/** Logs in through `port` with OpenSSH (password + code in one keyboard-interactive round) and runs `echo ok`. */
async function sshVia(port: number, knownHosts: string, account: string, password: string, code: string) {
  const r = await execa(
    "ssh",
    [
      "-p",
      String(port),
      "-o",
      `UserKnownHostsFile=${knownHosts}`,
      "-o",
      "NumberOfPasswordPrompts=1",
      ...h.sshOptions(),
      `${account}@127.0.0.1`,
      "echo ok",
    ],
    { reject: false, env: h.askpassEnv(password, code), stdin: "ignore", timeout: 60_000 },
  );
  return { exitCode: r.exitCode ?? -1, stdout: String(r.stdout), stderr: String(r.stderr) };
}
const viaA = (account: string, password: string, code: string) => sshVia(h.port, join(h.dir, "known_hosts"), account, password, code);
const viaB = (account: string, password: string, code: string) => sshVia(bPort(), nodeB?.knownHosts ?? "", account, password, code);

/** One refused keyboard-interactive round (wrong password) through `port`, with the ssh2 library: exactly one counted failure. */
async function wrongPassword(port: number, account: string): Promise<void> {
  const c = await ssh2LoginAt(port, account, (prompt) => (/code/i.test(prompt) ? "000000" : "wrong-password")).catch(() => undefined);
  if (c) {
    c.end();
    throw new Error("a wrong password was accepted");
  }
}

const pw = (uid: string) => h.env.users.find((u) => u.uid === uid)?.password ?? `${uid}-pw`;

beforeAll(async () => {
  if (!havePostgres) return;
  pg = await startPostgres();
  const dir = mkdtempSync(join(tmpdir(), "varco-shared-"));
  mkdirSync(join(dir, "secrets"), { recursive: true, mode: 0o700 });
  writeFileSync(join(dir, "secrets/pg.url"), `${pg.url}\n`, { mode: 0o600 });
  h = await startHarness({
    dir,
    extraUsers: ["carla.verdi", "dario.neri", "elena.russo"],
    templateEdit: (t) =>
      `${t.replace("  state_dir: state\n", "  state_dir: state\n  node: gw-a\n")}state: { backend: postgres, url_file: secrets/pg.url }\n`,
  });
  // The demo enrolled its users in this node's SQLite state.db: move them to PostgreSQL.
  const copy = await varco(h.env.policyFile, ["state", "copy", "--to", "postgres", "--force"]);
  expect(copy.exitCode, copy.stderr).toBe(0);
  // Node B: the same policy but its own port, state_dir and node name; the same totp.key.
  nodeB = await startSecondNode(dir, h.env.policyFile, { firstNode: "gw-a", node: "gw-b", env: { VARCO_LOG_LEVEL: "debug" } });
}, 180_000);

afterAll(async () => {
  const child = b();
  if (child) await stopChild(child);
  await h?.stop();
  await pg?.destroy();
}, 60_000);

describe.skipIf(!havePostgres)("two gateways on one PostgreSQL login state", () => {
  it("both nodes opened the PostgreSQL state", () => {
    expect(h.gatewayOutput()).toMatch(/"backend":"postgres".*"msg":"login state opened"/);
    expect(bOutput()).toMatch(/"backend":"postgres".*"msg":"login state opened"/);
    expect(bOutput()).not.toContain(new URL(pg.url).password);
  });

  it("a code used through A is refused through B (and B takes the next step's code)", async () => {
    const secret = h.env.secrets.get("mario.rossi") as string;
    const now = Date.now();
    const code = currentCode(TOTP, secret, now);
    const first = await viaA("mario.rossi_vm1", pw("mario.rossi"), code);
    expect(first.exitCode, first.stderr).toBe(0);
    expect(first.stdout.trim()).toBe("ok");
    const replay = await viaB("mario.rossi_vm1", pw("mario.rossi"), code);
    expect(replay.exitCode).not.toBe(0);
    expect(replay.stdout).not.toContain("ok");
    const next = await viaB("mario.rossi_vm1", pw("mario.rossi"), currentCode(TOTP, secret, now + 30_000));
    expect(next.exitCode, next.stderr).toBe(0);
  }, 120_000);

  it("failures spread over A and B lock the uid on both; unlock through A frees it on B", async () => {
    // auth.lockout.max_failures is 5 (default): 2 through A, 3 through B.
    for (const port of [h.port, h.port, bPort(), bPort(), bPort()]) await wrongPassword(port, "dario.neri_vm1");
    const secret = h.env.secrets.get("dario.neri") as string;
    const now = Date.now();
    const onA = await viaA("dario.neri_vm1", pw("dario.neri"), currentCode(TOTP, secret, now));
    expect(onA.exitCode).not.toBe(0);
    const onB = await viaB("dario.neri_vm1", pw("dario.neri"), currentCode(TOTP, secret, now));
    expect(onB.exitCode).not.toBe(0);
    expect(bOutput()).toMatch(/locked/);
    const unlock = await varco(h.env.policyFile, ["user", "unlock", "dario.neri"]);
    expect(unlock.exitCode, unlock.stderr).toBe(0);
    expect(unlock.stdout).toContain("5 recorded failures forgotten");
    const after = await viaB("dario.neri_vm1", pw("dario.neri"), currentCode(TOTP, secret, now + 30_000));
    expect(after.exitCode, after.stderr).toBe(0);
  }, 120_000);

  it("a user enrolled through A (varco user totp enroll) logs in through B", async () => {
    const secret = newSecret();
    const enrol = await varco(h.env.policyFile, ["user", "totp", "enroll", "carla.verdi", "--secret", secret, "--json", "--no-qr"]);
    expect(enrol.exitCode, enrol.stderr).toBe(0);
    const r = await viaB("carla.verdi_vm1", pw("carla.verdi"), currentCode(TOTP, secret, Date.now()));
    expect(r.exitCode, r.stderr).toBe(0);
    expect(r.stdout.trim()).toBe("ok");
  }, 120_000);

  it("`varco state copy` refuses a target that already holds rows, and `state migrate` reports the version", async () => {
    const copy = await varco(policyB(), ["state", "copy", "--to", "postgres"]);
    expect(copy.exitCode).toBe(1);
    expect(copy.stderr).toContain("already holds");
    expect(copy.stderr).not.toContain(new URL(pg.url).password);
    const migrate = await varco(policyB(), ["state", "migrate"]);
    expect(migrate.exitCode, migrate.stderr).toBe(0);
    expect(migrate.stdout).toMatch(new RegExp(`^postgres .*: schema version ${STATE_SCHEMA_VERSION}$`, "m"));
  }, 60_000);

  it("a node whose totp.key differs from the shared state's is refused at start, naming the file to copy", async () => {
    const other = join(h.dir, "state-c");
    mkdirSync(other, { recursive: true, mode: 0o700 });
    const policyC = join(h.dir, "gateway-c.yaml");
    writeFileSync(policyC, readFileSync(policyB(), "utf8").replace("  state_dir: state-gw-b\n", "  state_dir: state-c\n"), { mode: 0o600 });
    // No totp.key in state-c: serve would make a fresh one, which the shared state refuses.
    const r = await execa("node", [BIN, "serve", "--policy", policyC], { reject: false, timeout: 30_000 });
    expect(r.exitCode).not.toBe(0);
    expect(`${r.stdout}${r.stderr}`).toContain("is not the key the login state");
    expect(`${r.stdout}${r.stderr}`).toContain("state-c/totp.key");
    const enrol = await varco(policyC, ["user", "totp", "enroll", "carla.verdi", "--json", "--no-qr"]);
    expect(enrol.exitCode).not.toBe(0);
    expect(enrol.stderr).toContain("is not the key the login state");
  }, 60_000);

  it("PostgreSQL stopped: a login is refused with a clear log line, the gateway keeps running; back: logins work", async () => {
    const secret = h.env.secrets.get("anna.bianchi") as string;
    await pg.stop();
    try {
      const from = bOutput().length;
      const r = await viaB("anna.bianchi_vm2", pw("anna.bianchi"), currentCode(TOTP, secret, Date.now()));
      expect(r.exitCode).not.toBe(0);
      // B's log line travels through a pipe: it may arrive just after the client gave up.
      for (let i = 0; i < 100 && !bOutput().slice(from).includes("login state unavailable"); i++)
        await new Promise((r) => setTimeout(r, 50));
      expect(bOutput().slice(from)).toContain("login state unavailable");
      expect(b()?.exitCode).toBeNull();
    } finally {
      await pg.start();
    }
    const ok = await viaB("anna.bianchi_vm2", pw("anna.bianchi"), currentCode(TOTP, secret, Date.now() + 30_000));
    expect(ok.exitCode, ok.stderr).toBe(0);
  }, 120_000);

  it("`audit list` on either node shows both nodes' sessions and which node served each", async () => {
    const both = async (policy: string) => {
      for (let i = 0; i < 100; i++) {
        const r = await varco(policy, ["audit", "list", "--json", "--limit", "1000"]);
        expect(r.exitCode, r.stderr).toBe(0);
        const sessions = (JSON.parse(r.stdout) as { sessions: Array<{ uid: string; node?: string; result: string }> }).sessions;
        const nodes = new Set(sessions.map((x) => x.node));
        if (nodes.has("gw-a") && nodes.has("gw-b") && !sessions.some((x) => x.result === "open")) return sessions;
        await new Promise((r) => setTimeout(r, 200));
      }
      throw new Error("the sessions of both nodes never showed");
    };
    for (const policy of [h.env.policyFile, policyB()]) {
      const sessions = await both(policy);
      // mario through A, mario and carla through B.
      expect(sessions.filter((x) => x.node === "gw-a" && x.uid === "mario.rossi").length).toBeGreaterThan(0);
      expect(sessions.filter((x) => x.node === "gw-b" && x.uid === "carla.verdi").length).toBeGreaterThan(0);
    }
    const table = await varco(h.env.policyFile, ["audit", "list"]);
    expect(table.stdout).toMatch(/NODE/);
    expect(table.stdout).toMatch(/gw-b/);
  }, 120_000);

  it("`audit verify` checks every node's chain in PostgreSQL and catches a tampered event of either node", async () => {
    const ok = await varco(h.env.policyFile, ["audit", "verify"]);
    expect(ok.exitCode, `${ok.stdout}${ok.stderr}`).toBe(0);
    for (const node of ["gw-b", "gw-a"]) {
      const id = (await pg.psql(`SELECT min(id) FROM audit_events WHERE node = '${node}' AND type = 'session_start'`)).trim();
      expect(id).toMatch(/^\d+$/);
      const where = `node = '${node}' AND id = ${id}`;
      const before = (await pg.psql(`SELECT uid FROM audit_events WHERE ${where}`)).trim();
      await pg.psql(`UPDATE audit_events SET uid = 'someone.else' WHERE ${where}`);
      try {
        const r = await varco(policyB(), ["audit", "verify"]);
        expect(r.exitCode, r.stdout).toBe(1);
        expect(r.stderr).toContain(`node ${node} (PostgreSQL)`);
      } finally {
        await pg.psql(`UPDATE audit_events SET uid = '${before}' WHERE ${where}`);
      }
    }
    const again = await varco(policyB(), ["audit", "verify"]);
    expect(again.exitCode, `${again.stdout}${again.stderr}`).toBe(0);
    // A node the logged anchors know, whose whole trail is gone from PostgreSQL.
    const anchors = join(h.dir, "anchors.log");
    const anchor = { node: "gw-gone", event_id: 1, hash: "a".repeat(64), epoch: 0, seal: "b".repeat(64) };
    writeFileSync(anchors, `${JSON.stringify({ level: 30, msg: "audit anchor", anchor })}\n`);
    const gone = await varco(policyB(), ["audit", "verify", "--anchor", anchors]);
    expect(gone.exitCode, gone.stdout).toBe(1);
    expect(gone.stderr).toContain("an anchored node has no trail in PostgreSQL");
  }, 120_000);

  it("PostgreSQL stopped mid-session: the session finishes, its events reach PostgreSQL once it is back", async ({ onTestFailed }) => {
    const from = bOutput().length;
    onTestFailed(() => console.log(`gateway B:\n${bOutput().slice(from).slice(-6000)}`));
    const uid = "elena.russo";
    const code = currentCode(TOTP, h.env.secrets.get(uid) as string, Date.now());
    const running = execa(
      "ssh",
      [
        "-p",
        String(bPort()),
        "-o",
        `UserKnownHostsFile=${nodeB?.knownHosts}`,
        ...h.sshOptions(),
        `${uid}_vm1@127.0.0.1`,
        "sleep 3; echo finished",
      ],
      { reject: false, env: h.askpassEnv(pw(uid), code), stdin: "ignore", timeout: 60_000 },
    );
    // The session has started (its session_start is committed on B) before PostgreSQL goes away.
    for (let i = 0; i < 100 && !/"uid":"elena.russo".*"msg":"login ok"/.test(bOutput().slice(-20_000)); i++)
      await new Promise((r) => setTimeout(r, 50));
    await pg.stop();
    let sid = "";
    try {
      const r = await running;
      expect(r.exitCode, String(r.stderr)).toBe(0);
      expect(String(r.stdout)).toContain("finished");
      // The session ended on B while PostgreSQL was down: in B's own audit.db only.
      const local = await varco(policyB(), ["audit", "list", "--json", "--user", uid, "--limit", "1"]);
      expect(local.exitCode).not.toBe(0);
      expect(local.stderr).toContain("PostgreSQL");
      expect(b()?.exitCode).toBeNull();
    } finally {
      await pg.start();
    }
    for (let i = 0; i < 100 && !sid; i++) {
      const r = await varco(h.env.policyFile, ["audit", "list", "--json", "--user", uid, "--limit", "1"]);
      const [s] = (JSON.parse(r.stdout || '{"sessions":[]}') as { sessions: Array<{ id: string; node?: string; result: string }> })
        .sessions;
      if (s?.node === "gw-b" && s.result === "ok") sid = s.id;
      else await new Promise((r) => setTimeout(r, 200));
    }
    expect(sid).not.toBe("");
    const shown = await varco(h.env.policyFile, ["audit", "show", sid, "--json"]);
    const events = (JSON.parse(shown.stdout) as { events: Array<{ type: string }> }).events.map((e) => e.type);
    expect(events).toEqual(expect.arrayContaining(["login", "session_start", "exec", "recording", "session_end"]));
    const verify = await varco(h.env.policyFile, ["audit", "verify"]);
    expect(verify.exitCode, `${verify.stdout}${verify.stderr}`).toBe(0);
  }, 180_000);
});
