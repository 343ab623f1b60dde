/**
 * The audit store under a second writer, a full disk and a poisoned event: nothing is lost, nothing
 * half-written, errors reach only the callers that must fail, and no timer ever throws.
 */
import { execFileSync, spawn } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import Database from "better-sqlite3";
import { afterEach, describe, expect, it } from "vitest";
import { AUDIT_QUEUE_LIMIT, AuditWriteError, openAuditStore } from "../../src/audit/store.ts";

const isRoot = process.getuid?.() === 0;
const dirs: string[] = [];
const cleanups: Array<() => void> = [];
afterEach(() => {
  for (const c of cleanups.splice(0).reverse()) c();
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});
const dbFile = () => {
  const d = mkdtempSync(join(tmpdir(), "varco-audit-durable-"));
  dirs.push(d);
  return join(d, "audit.db");
};
/** A second connection (as the CLI would be) holding the write lock until `release()`. */
const holdLock = (file: string) => {
  const other = new Database(file);
  other.exec("BEGIN IMMEDIATE");
  let held = true;
  const release = () => {
    if (held) other.exec("COMMIT");
    held = false;
    if (other.open) other.close();
  };
  cleanups.push(release);
  return release;
};
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
/** `type:path` of every stored event, read by a separate read-only connection. */
const types = (file: string): string[] => {
  const db = new Database(file, { readonly: true });
  try {
    const rows = db.prepare("SELECT type, data FROM events ORDER BY id").all() as Array<{ type: string; data: string }>;
    return rows.map((r) => `${r.type}:${(JSON.parse(r.data) as { path?: string }).path ?? ""}`);
  } finally {
    db.close();
  }
};

describe("audit store durability", () => {
  it("keeps the database in WAL mode", () => {
    const file = dbFile();
    openAuditStore(file).close();
    const db = new Database(file);
    expect(db.pragma("journal_mode", { simple: true })).toBe("wal");
    db.close();
  });

  it("waits for a second writer (another process holding BEGIN IMMEDIATE) instead of failing at once", async () => {
    const file = dbFile();
    const store = openAuditStore(file);
    store.append({ type: "login", uid: "u" });
    // The sqlite3 CLI takes the write lock, holds it ~1 s, commits one row of its own.
    const cli = spawn("sqlite3", [
      file,
      "BEGIN IMMEDIATE; INSERT INTO write_probe (id, ts) VALUES (1, 'cli');",
      ".shell sleep 1",
      "COMMIT;",
    ]);
    cleanups.push(() => cli.kill("SIGKILL"));
    await sleep(300); // the CLI holds the lock now
    const t0 = Date.now();
    store.append({ type: "exec", uid: "u", data: { command: "ls" } });
    store.startSession({ id: "s1", uid: "u", account: "u_vm1", target: "vm1", source: "127.0.0.1" });
    expect(Date.now() - t0).toBeGreaterThan(300);
    expect(store.healthy().ok).toBe(true);
    expect(store.allEvents().map((e) => e.type)).toEqual(["login", "exec", "session_start"]);
    expect(store.verify().ok).toBe(true);
    store.close();
  });

  it("throws AuditWriteError for a must-not-lose write locked past busy_timeout, keeps batched events queued, then writes them once in order", async () => {
    const file = dbFile();
    const health: boolean[] = [];
    const store = openAuditStore(file, undefined, { busyTimeoutMs: 100, onHealthChange: (h) => health.push(h.ok) });
    store.append({ type: "login", uid: "u" });
    const release = holdLock(file);
    store.append({ type: "file", data: { path: "/a" } });
    store.append({ type: "login_refused", uid: "x" });
    store.append({ type: "file", data: { path: "/b" } });
    let err: unknown;
    try {
      store.append({ type: "exec", uid: "u", data: { command: "rm -rf /" } });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(AuditWriteError);
    expect((err as AuditWriteError).code).toMatch(/^SQLITE_BUSY/);
    expect((err as Error).message).not.toContain("rm -rf");
    expect(() => store.startSession({ id: "s1", uid: "u", account: "a", target: "t", source: "s" })).toThrow(AuditWriteError);
    expect(() => store.endSession("s0", { result: "ok", upBytes: 0, downBytes: 0, exitStatus: 0 })).toThrow(AuditWriteError);
    expect(() => store.recordingStarted("s1", 1, "/r")).toThrow(AuditWriteError);
    expect(() => store.recordingClosed("s1", 1, { sha256: "0", bytes: 0, status: "complete" })).toThrow(AuditWriteError);
    // flush never throws; the events stay queued.
    store.flush();
    const h = store.healthy();
    expect(h.ok).toBe(false);
    expect(h.detail).toMatch(/SQLITE_BUSY/);
    expect(h.detail).toMatch(/5 events waiting/);
    store.append({ type: "file", data: { path: "/c" } });
    release();
    // The retry timer writes them without any further call (next tick, then ≤ 5 s backoff; well under here).
    for (let i = 0; i < 100 && store.healthy().ok === false; i++) await sleep(50);
    expect(store.healthy().ok).toBe(true);
    // The exec (it must not happen) and the session start (refused) are not kept; the end and the
    // recording close (facts after the fact) are, in order.
    expect(types(file)).toEqual(["login:", "file:/a", "login_refused:", "file:/b", "session_end:", "recording:", "file:/c"]);
    expect(store.listSessions()).toEqual([]);
    expect(store.recordings()).toEqual([]);
    // The chain is whole; verify names only the rows this test never created (s0 was never started).
    const report = store.verify();
    expect(report.issues.filter((i) => i.kind === "event" || i.kind === "checkpoint")).toEqual([]);
    expect(report.issues.every((i) => i.id.startsWith("s"))).toBe(true);
    expect(health).toEqual([false, true]);
    store.close();
  });

  it("recovers from a failing flush inside setImmediate without an uncaught exception", async () => {
    const file = dbFile();
    const store = openAuditStore(file, undefined, { busyTimeoutMs: 50 });
    const release = holdLock(file);
    for (let i = 0; i < 10; i++) store.append({ type: "file", data: { path: `/${i}` } });
    await sleep(400); // several retries fail in timers
    expect(store.healthy().ok).toBe(false);
    release();
    for (let i = 0; i < 100 && types(file).length < 10; i++) await sleep(50);
    expect(types(file)).toEqual(Array.from({ length: 10 }, (_, i) => `file:/${i}`));
    store.close();
  });

  it("refuses data that cannot be serialised at append time, so it can never poison the queue", () => {
    const file = dbFile();
    const store = openAuditStore(file);
    expect(() => store.append({ type: "file", data: { n: 1n } })).toThrow(TypeError);
    store.append({ type: "file", data: { path: "/ok" } });
    store.flush();
    expect(types(file)).toEqual(["file:/ok"]);
    store.close();
  });

  it("is not healthy past the queue limit and says why; nothing is dropped", async () => {
    const file = dbFile();
    const store = openAuditStore(file, undefined, { busyTimeoutMs: 20 });
    const release = holdLock(file);
    for (let i = 0; i < AUDIT_QUEUE_LIMIT - 1; i++) store.append({ type: "file", data: { i } });
    expect(store.healthy().ok).toBe(true); // below the limit, no write attempted yet: no I/O, ok
    for (let i = AUDIT_QUEUE_LIMIT - 1; i < AUDIT_QUEUE_LIMIT + 5; i++) store.append({ type: "file", data: { i } });
    const h = store.healthy(); // at the limit it probes (the lock is held: fails)
    expect(h.ok).toBe(false);
    expect(h.detail).toContain(`${AUDIT_QUEUE_LIMIT + 5} events waiting`);
    release();
    for (let i = 0; i < 100 && !store.healthy().ok; i++) await sleep(50);
    expect(store.healthy().ok).toBe(true);
    expect(store.allEvents()).toHaveLength(AUDIT_QUEUE_LIMIT + 5);
    store.close();
  }, 30_000);

  it("close() with events it cannot write throws AuditWriteError naming how many", () => {
    const file = dbFile();
    const store = openAuditStore(file, undefined, { busyTimeoutMs: 20 });
    const release = holdLock(file);
    store.append({ type: "file", data: { path: "/x" } });
    expect(() => store.close()).toThrow(/1 queued events could not be written/);
    release();
  });

  it("prune waits for the lock too (BEGIN IMMEDIATE) and keeps the queue", () => {
    const file = dbFile();
    const store = openAuditStore(file, () => new Date("2020-01-01T00:00:00Z"), { busyTimeoutMs: 20 });
    store.append({ type: "login", uid: "u" });
    const release = holdLock(file);
    store.append({ type: "file", data: { path: "/q" } });
    expect(() => store.prune(Date.parse("2021-01-01T00:00:00Z"))).toThrow(AuditWriteError);
    release();
    const r = store.prune(Date.parse("2021-01-01T00:00:00Z"));
    expect(r.events).toBe(2);
    expect(types(file)).toEqual(["audit_pruned:"]);
    expect(store.verify().ok).toBe(true);
    store.close();
  });
});

describe.runIf(isRoot)("audit store on a full disk (tmpfs of 1 MiB)", () => {
  it("throws SQLITE_FULL, reports not healthy, probes, and works again once space is back; the chain verifies", () => {
    const dir = mkdtempSync(join(tmpdir(), "varco-audit-full-"));
    dirs.push(dir);
    mkdirSync(join(dir, "fs"));
    execFileSync("mount", ["-t", "tmpfs", "-o", "size=1m", "tmpfs", join(dir, "fs")]);
    cleanups.push(() => execFileSync("umount", ["-l", join(dir, "fs")]));
    const file = join(dir, "fs", "audit.db");
    const store = openAuditStore(file);
    store.append({ type: "login", uid: "u" });
    const filler = join(dir, "fs", "filler");
    try {
      execFileSync("dd", ["if=/dev/zero", `of=${filler}`, "bs=4k", "count=100000"], { stdio: "ignore" });
    } catch {
      // ENOSPC: full, as wanted
    }
    let err: unknown;
    for (let i = 0; i < 200 && !err; i++) {
      try {
        store.append({ type: "exec", uid: "u", data: { command: "x".repeat(2000), i } });
      } catch (e) {
        err = e;
      }
    }
    expect(err).toBeInstanceOf(AuditWriteError);
    expect((err as AuditWriteError).code).toMatch(/SQLITE_FULL|SQLITE_IOERR/);
    store.append({ type: "file", data: { path: "/kept" } });
    store.flush();
    expect(store.healthy().ok).toBe(false);
    rmSync(filler);
    writeFileSync(join(dir, "fs", "small"), "x");
    // healthy() probes at most once a second.
    const until = Date.now() + 3000;
    while (!store.healthy().ok && Date.now() < until) execFileSync("sleep", ["0.1"]);
    expect(store.healthy().ok).toBe(true);
    expect(store.allEvents().filter((e) => e.type === "file")).toHaveLength(1);
    expect(store.verify().ok).toBe(true);
    store.close();
  });
});
