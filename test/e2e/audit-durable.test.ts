/**
 * The audit database under a second writer and a full disk, end to end through the gateway: a lock
 * held by the sqlite3 CLI is waited for (busy_timeout); one held longer ends only the affected
 * session, with a message on the user's terminal; a full disk does the same, /healthz says so, and
 * once space is back logins work again and `varco audit verify` passes (nothing half-written).
 */
import { randomBytes } from "node:crypto";
import { existsSync, mkdirSync, renameSync, rmSync, symlinkSync } from "node:fs";
import { request } from "node:http";
import { join } from "node:path";
import { execa } from "execa";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { freePort } from "../../src/demo/index.ts";
import { closedSessionOf, type Harness, ROOT, startHarness } from "../helpers/harness.ts";

const isRoot = process.getuid?.() === 0;
const MESSAGE = "varco: the audit log cannot be written; the session is ended.";
let h: Harness;
let metricsPort: number;
let auditFs: string | undefined;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

beforeAll(async () => {
  metricsPort = await freePort();
  h = await startHarness({
    extraUsers: ["d01", "d02", "d03", "d04", "d05", "d06", "d07"],
    templateEdit: (t) => t.replace("  state_dir: state\n", `  state_dir: state\n  metrics_listen: "127.0.0.1:${metricsPort}"\n`),
  });
});

afterAll(async () => {
  // Lazy unmount first (the gateway keeps its open files until it stops), so the harness can remove its folder.
  if (auditFs) await execa("umount", ["-l", auditFs], { reject: false });
  await h?.stop();
});

const db = () => join(h.dir, "state", "audit.db");
const varco = (...args: string[]) => execa("node", [join(ROOT, "bin/varco.mjs"), "--policy", h.env.policyFile, ...args], { reject: false });
const sql = async (query: string): Promise<Array<Record<string, unknown>>> => {
  const r = await execa("sqlite3", ["-json", db(), query]);
  return String(r.stdout).trim() ? (JSON.parse(String(r.stdout)) as Array<Record<string, unknown>>) : [];
};
const healthz = () =>
  new Promise<{ status: number; audit: { ok: boolean; detail: string } | undefined }>((resolve, reject) => {
    const req = request({ host: "127.0.0.1", port: metricsPort, path: "/healthz" }, (res) => {
      let body = "";
      res.on("data", (d: Buffer) => {
        body += d.toString();
      });
      res.on("end", () => {
        const checks = (JSON.parse(body) as { checks: Array<{ name: string; ok: boolean; detail: string }> }).checks;
        resolve({ status: res.statusCode ?? 0, audit: checks.find((c) => c.name === "audit_db") });
      });
    });
    req.on("error", reject);
    req.end();
  });

/** The sqlite3 CLI takes the write lock (BEGIN IMMEDIATE) and keeps it `seconds`; resolves once it holds it. */
async function holdLock(seconds: number): Promise<{ heldAt: number; released: Promise<number>; kill: () => void }> {
  // The CLI says when BEGIN IMMEDIATE returned (it holds the write lock from then on) through a
  // child `echo` (sqlite3's own output is block-buffered into a pipe): no probing with other
  // processes, whose start-up time on a loaded machine could outlast the lock.
  const cli = execa("sqlite3", [db(), ".timeout 20000", "BEGIN IMMEDIATE;", ".shell echo held", `.shell sleep ${seconds}`, "COMMIT;"], {
    reject: false,
  });
  const released = cli.then(() => Date.now());
  let out = "";
  cli.stdout?.on("data", (d: Buffer) => {
    out += d.toString();
  });
  for (let i = 0; i < 1000; i++) {
    if (out.includes("held")) return { heldAt: Date.now(), released, kill: () => cli.kill("SIGKILL") };
    if (cli.exitCode !== null) break;
    await sleep(20);
  }
  cli.kill("SIGKILL");
  throw new Error(`the sqlite3 CLI never held the lock: ${out}`);
}

describe("a second writer holding the audit database", () => {
  it("a lock shorter than busy_timeout: the login waits, succeeds, and its login event is chained exactly once", async () => {
    const lock = await holdLock(3);
    try {
      const r = await h.ssh("d01_vm1", ["echo through"]);
      const releasedAt = await lock.released;
      expect(r.stderr).toBe("");
      expect(r.stdout).toContain("through");
      expect(r.exitCode).toBe(0);
      const logins = await sql("SELECT ts FROM events WHERE type = 'login' AND uid = 'd01'");
      expect(logins).toHaveLength(1);
      // The login was made while the lock was held (so its write had to wait for it).
      const ts = Date.parse(String(logins[0]?.ts));
      expect(ts).toBeGreaterThanOrEqual(lock.heldAt - 1000);
      expect(ts).toBeLessThanOrEqual(releasedAt);
      // The session's end follows its recording's close (bounded wait for it, not a race with it).
      expect((await closedSessionOf(h.env.policyFile, "d01")).session.result).toBe("ok");
      expect(await sql("SELECT result FROM sessions WHERE uid = 'd01'")).toEqual([{ result: "ok" }]);
    } finally {
      lock.kill();
    }
  }, 60_000);

  it("a lock longer than busy_timeout: that session ends with the message, the gateway lives on and serves the next login once the lock is gone", async () => {
    const lock = await holdLock(9);
    try {
      const r = await h.ssh("d02_vm1", ["echo never-ran"]);
      expect(r.stderr).toContain(MESSAGE);
      expect(r.stdout).not.toContain("never-ran");
      expect(r.exitCode).not.toBe(0);
      await lock.released;
    } finally {
      lock.kill();
    }
    const r2 = await h.ssh("d03_vm1", ["echo again"]);
    expect(r2.stdout).toContain("again");
    expect(r2.exitCode).toBe(0);
    // Nothing of the refused login half-written: no session row, no login row (the write failed as a whole).
    expect(await sql("SELECT id FROM sessions WHERE uid = 'd02'")).toEqual([]);
    expect(await sql("SELECT id FROM events WHERE type = 'login' AND uid = 'd02'")).toEqual([]);
    expect(h.gatewayOutput()).toMatch(/"msg":"audit write failed"/);
    const v = await varco("audit", "verify");
    expect(v.stderr).toBe("");
    expect(v.exitCode).toBe(0);
  }, 90_000);

  it("an exec whose event cannot be written never reaches the target", async () => {
    const opts = await h.master("d04_vm1");
    const marker = join("/tmp", `varco-durable-${randomBytes(6).toString("hex")}`);
    const lock = await holdLock(8);
    try {
      const r = await execa("ssh", [...opts, "d04_vm1@127.0.0.1", `touch ${marker}; echo ran`], { reject: false, timeout: 60_000 });
      expect(String(r.stderr)).toContain(MESSAGE);
      expect(String(r.stdout)).not.toContain("ran");
      await lock.released;
    } finally {
      lock.kill();
    }
    expect(existsSync(marker)).toBe(false);
    rmSync(marker, { force: true });
    expect(await sql(`SELECT id FROM events WHERE type = 'exec' AND data LIKE '%${marker}%'`)).toEqual([]);
    let result: unknown;
    for (let i = 0; i < 100 && (result === undefined || result === "open"); i++) {
      result = (await sql("SELECT result FROM sessions WHERE uid = 'd04'"))[0]?.result;
      if (result === "open") await sleep(100);
    }
    expect(result).toBe("terminated");
  }, 90_000);
});

describe.runIf(isRoot)("a full disk under the audit database (tmpfs)", () => {
  beforeAll(async () => {
    // The audit database moves onto a tmpfs of its own (the rest of state_dir — TOTP steps, lockout,
    // recordings — stays where it is, so what fails is the audit and nothing else).
    const out = h.gatewayOutput().length;
    h.signalGateway("SIGTERM");
    for (let i = 0; i < 400 && !/"msg":"stopped"/.test(h.gatewayOutput().slice(out)); i++) await sleep(50);
    await sleep(300);
    auditFs = join(h.dir, "auditfs");
    mkdirSync(auditFs, { recursive: true });
    await execa("mount", ["-t", "tmpfs", "-o", "size=8m,mode=0700", "tmpfs", auditFs]);
    for (const suffix of ["-wal", "-shm"]) rmSync(`${db()}${suffix}`, { force: true });
    await execa("cp", ["-a", db(), join(auditFs, "audit.db")]);
    renameSync(db(), `${db()}.orig`);
    symlinkSync(join(auditFs, "audit.db"), db());
    await h.restartGateway();
  }, 60_000);

  it("ends the session with the message, /healthz says audit_db not ok, the process lives; after the space is back logins work and the chain verifies", async () => {
    const ok = await h.ssh("d05_vm1", ["echo before"]);
    expect(ok.stdout).toContain("before");
    expect((await healthz()).audit?.ok).toBe(true);
    // A truncated WAL: the next commit must grow a file, so a full disk shows at once.
    await execa("sqlite3", [db(), "PRAGMA wal_checkpoint(TRUNCATE);"]);
    const filler = join(auditFs as string, "filler");
    await execa("dd", ["if=/dev/zero", `of=${filler}`, "bs=4k", "count=10000"], { reject: false });
    try {
      const r = await h.ssh("d06_vm1", ["echo never-ran"]);
      expect(r.stderr).toContain(MESSAGE);
      expect(r.stdout).not.toContain("never-ran");
      const health = await healthz();
      expect(health.status).toBe(503);
      expect(health.audit?.ok).toBe(false);
      expect(health.audit?.detail).toMatch(/SQLITE_FULL|SQLITE_IOERR/);
      expect(h.gatewayOutput()).not.toMatch(/uncaught|unhandled/i);
    } finally {
      rmSync(filler, { force: true });
    }
    // healthz probes with a real write at most once a second.
    let back = false;
    for (let i = 0; i < 50 && !back; i++) {
      back = (await healthz()).audit?.ok === true;
      if (!back) await sleep(200);
    }
    expect(back).toBe(true);
    const again = await h.ssh("d07_vm1", ["echo after"]);
    expect(again.stdout).toContain("after");
    expect(again.exitCode).toBe(0);
    const v = await varco("audit", "verify");
    expect(v.stderr).toBe("");
    expect(v.exitCode).toBe(0);
    expect(await sql("SELECT id FROM sessions WHERE uid = 'd06'")).toEqual([]);
  }, 120_000);
});
