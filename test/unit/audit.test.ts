import { generateKeyPairSync } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import Database from "better-sqlite3";
import { afterEach, describe, expect, it } from "vitest";
import { hashEvent, openAuditStore } from "../../src/audit/index.ts";

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});
const dbFile = () => {
  const d = mkdtempSync(join(tmpdir(), "varco-audit-"));
  dirs.push(d);
  return join(d, "audit.db");
};

describe("audit store", () => {
  it("chains every event to the previous one by SHA-256", () => {
    const file = dbFile();
    const store = openAuditStore(file);
    store.append({ type: "login", uid: "u", source: "127.0.0.1", result: "ok" });
    store.startSession({ id: "s1", uid: "u", account: "u_vm1", target: "vm1", source: "127.0.0.1" });
    store.append({ type: "exec", sessionId: "s1", data: { command: "ls" } });
    store.endSession("s1", { result: "ok", upBytes: 3, downBytes: 5, exitStatus: 0 });
    const events = store.allEvents();
    expect(events.map((e) => e.type)).toEqual(["login", "session_start", "exec", "session_end"]);
    expect(events[0]?.prevHash).toBe("0".repeat(64));
    for (let i = 0; i < events.length; i++) {
      const e = events[i];
      if (!e) continue;
      const { hash, ...rest } = e;
      expect(hashEvent(rest)).toBe(hash);
      if (i > 0) expect(e.prevHash).toBe(events[i - 1]?.hash);
    }
    expect(store.listSessions()[0]).toMatchObject({ id: "s1", result: "ok", upBytes: 3, downBytes: 5, exitStatus: 0 });
    store.close();
  });

  it("makes an edited row detectable", () => {
    const file = dbFile();
    const store = openAuditStore(file);
    store.append({ type: "exec", sessionId: "s", data: { command: "rm -rf /tmp/x" } });
    store.append({ type: "exec", sessionId: "s", data: { command: "ls" } });
    store.close();
    const raw = new Database(file);
    raw.prepare("UPDATE events SET data = ? WHERE id = 1").run(JSON.stringify({ command: "true" }));
    raw.close();
    const again = openAuditStore(file);
    const [first] = again.allEvents();
    again.close();
    if (!first) throw new Error("no event");
    const { hash, ...rest } = first;
    expect(hashEvent(rest)).not.toBe(hash);
  });

  it("closes sessions left open by a crash as interrupted", () => {
    const file = dbFile();
    const store = openAuditStore(file);
    store.startSession({ id: "s2", uid: "u", account: "u_vm1", target: "vm1", source: "::1" });
    store.close();
    const next = openAuditStore(file);
    expect(next.closeInterrupted()).toBe(1);
    expect(next.listSessions()[0]?.result).toBe("interrupted");
    next.close();
  });

  it("filters sessions by user, target and time", () => {
    let now = Date.UTC(2026, 0, 1);
    const store = openAuditStore(dbFile(), () => new Date(now));
    store.startSession({ id: "a", uid: "mario", account: "mario_vm1", target: "vm1", source: "1.2.3.4" });
    now += 86_400_000;
    store.startSession({ id: "b", uid: "anna", account: "anna_vm2", target: "vm2", source: "1.2.3.4" });
    expect(store.listSessions().map((s) => s.id)).toEqual(["b", "a"]);
    expect(store.listSessions({ user: "mario" }).map((s) => s.id)).toEqual(["a"]);
    expect(store.listSessions({ target: "vm2" }).map((s) => s.id)).toEqual(["b"]);
    expect(store.listSessions({ sinceMs: now - 1000 }).map((s) => s.id)).toEqual(["b"]);
    store.close();
  });
});

describe("signed checkpoints (ed25519)", () => {
  it("catch a root who rewrites the whole chain consistently", () => {
    const file = dbFile();
    const { privateKey, publicKey } = generateKeyPairSync("ed25519");
    const store = openAuditStore(file);
    store.append({ type: "exec", sessionId: "s", data: { command: "cat /etc/shadow" } });
    store.append({ type: "exec", sessionId: "s", data: { command: "ls" } });
    expect(store.signHead(privateKey)).toBe(2);
    expect(store.signHead(privateKey)).toBeUndefined();
    expect(store.verify(publicKey).ok).toBe(true);
    store.close();

    // Rewrite: edit the first command and recompute every hash so the plain chain still verifies.
    const raw = new Database(file);
    raw.prepare("UPDATE events SET data = ? WHERE id = 1").run(JSON.stringify({ command: "true" }));
    let prev = "0".repeat(64);
    for (const row of raw.prepare("SELECT * FROM events ORDER BY id").all() as Array<Record<string, unknown>>) {
      const hash = hashEvent({
        id: row.id as number,
        ts: row.ts as string,
        type: row.type as "exec",
        sessionId: (row.session_id as string | null) ?? undefined,
        data: JSON.parse(row.data as string) as Record<string, unknown>,
        prevHash: prev,
      });
      raw.prepare("UPDATE events SET prev_hash = ?, hash = ? WHERE id = ?").run(prev, hash, row.id);
      prev = hash;
    }
    raw.close();

    const again = openAuditStore(file);
    expect(again.verify().ok).toBe(true);
    const signed = again.verify(publicKey);
    expect(signed.ok).toBe(false);
    expect(signed.problem).toMatchObject({ kind: "checkpoint", id: "2", reason: expect.stringContaining("rewritten") });
    const other = generateKeyPairSync("ed25519").publicKey;
    expect(again.verify(other).problem?.reason).toContain("does not verify");
    again.close();
  });
});
