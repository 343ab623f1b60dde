/**
 * Forward-secure sealing: the ratchet, seals made and checked through a real SQLite store, and the
 * attacks of someone who takes the box (and its state file) later.
 */
import { createHash, createHmac } from "node:crypto";
import {
  chmodSync,
  chownSync,
  copyFileSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import Database from "better-sqlite3";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import {
  type AuditStore,
  checkSeals,
  computeSeal,
  createSealer,
  createSealState,
  deriveEpochKey,
  hashEvent,
  openAuditStore,
  parseVerificationKey,
  ratchetKey,
  SealStateError,
  sealMessage,
} from "../../src/audit/index.ts";

let dir: string;
let dbFile: string;
let stateFile: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), "varco-seal-"));
  dbFile = join(dir, "audit.db");
  stateFile = join(dir, "seal.state");
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

/** The ratchet computed independently of seal.ts. */
const ratchet = (k: Buffer) => createHash("sha256").update("varco-audit-ratchet:v1").update(k).digest();
const hmac = (k: Buffer, m: string) => createHmac("sha256", k).update(m).digest("hex");
const login = (store: AuditStore, n: number) => {
  for (let i = 0; i < n; i++) store.append({ type: "login", uid: `u${i}`, result: "ok", data: { n: i } });
};
const withDb = <T>(f: (db: Database.Database) => T): T => {
  const db = new Database(dbFile);
  try {
    return f(db);
  } finally {
    db.close();
  }
};
const issuesWith = (k0: Buffer) => withDb((db) => checkSeals(db, k0));
const sealRows = () =>
  withDb((db) => db.prepare("SELECT * FROM seals ORDER BY epoch").all()) as Array<{
    event_id: number;
    epoch: number;
    hash: string;
    seal: string;
    node: string;
  }>;

/** Rewrites one event's data and recomputes every hash after it, as a root with sqlite3 would. */
function rewriteEvent(id: number, data: Record<string, unknown>): void {
  withDb((db) => {
    const rows = db.prepare("SELECT * FROM events ORDER BY id").all() as Array<Record<string, string | number | null>>;
    let prev: string | undefined;
    for (const r of rows) {
      const d = r.id === id ? JSON.stringify(data) : String(r.data);
      const prevHash = prev ?? String(r.prev_hash);
      const hash = hashEvent({
        id: Number(r.id),
        ts: String(r.ts),
        type: r.type as "login",
        sessionId: (r.session_id as string | null) ?? undefined,
        uid: (r.uid as string | null) ?? undefined,
        account: (r.account as string | null) ?? undefined,
        target: (r.target as string | null) ?? undefined,
        source: (r.source as string | null) ?? undefined,
        result: (r.result as string | null) ?? undefined,
        data: JSON.parse(d) as Record<string, unknown>,
        prevHash,
      });
      db.prepare("UPDATE events SET data = ?, prev_hash = ?, hash = ? WHERE id = ?").run(d, prevHash, hash, r.id);
      prev = hash;
    }
  });
}

describe("ratchet", () => {
  it("derives K_e by e SHA-256 steps with the agreed domain, leaving K0 untouched", () => {
    const k0 = Buffer.alloc(32, 7);
    expect(deriveEpochKey(k0, 0).equals(k0)).toBe(true);
    expect(deriveEpochKey(k0, 0)).not.toBe(k0);
    expect(deriveEpochKey(k0, 3).equals(ratchet(ratchet(ratchet(k0))))).toBe(true);
    expect(ratchetKey(k0).equals(ratchet(k0))).toBe(true);
    expect(k0.equals(Buffer.alloc(32, 7))).toBe(true);
    expect(() => deriveEpochKey(Buffer.alloc(16), 1)).toThrow(RangeError);
    expect(() => deriveEpochKey(k0, -1)).toThrow(RangeError);
    expect(() => deriveEpochKey(k0, 1.5)).toThrow(RangeError);
  });

  it("seals the agreed message text", () => {
    expect(sealMessage("gw1", 42, "ab".repeat(32), 7)).toBe(`varco-audit-seal:v1:gw1:42:${"ab".repeat(32)}:7`);
    const k = Buffer.alloc(32, 1);
    expect(computeSeal(k, "m")).toBe(hmac(k, "m"));
  });

  it("parses the verification key as printed, refusing other shapes without echoing them", () => {
    const k = Buffer.alloc(32, 0xab);
    expect(parseVerificationKey(` ${k.toString("hex").toUpperCase()}\r\n`).equals(k)).toBe(true);
    for (const bad of ["", "ab".repeat(31), "ab".repeat(33), `${"ab".repeat(31)}zz`, `${"ab".repeat(16)} ${"ab".repeat(16)}`]) {
      let message = "";
      try {
        parseVerificationKey(bad);
      } catch (err) {
        message = (err as Error).message;
      }
      expect(message).toMatch(/64 hex digits/);
      if (bad) expect(message).not.toContain(bad);
    }
  });
});

describe("state file", () => {
  it("keygen creates a 0600 state at epoch 0 holding K0 and never overwrites one", () => {
    const k0 = createSealState(stateFile);
    expect(statSync(stateFile).mode & 0o777).toBe(0o600);
    expect(readFileSync(stateFile, "utf8")).toBe(`varco-audit-seal-state v1\nepoch 0\nkey ${k0.toString("hex")}\n`);
    expect(() => createSealState(stateFile)).toThrow(SealStateError);
    expect(readFileSync(stateFile, "utf8")).toContain(k0.toString("hex"));
  });

  it("refuses a state readable by others, a symlink, a malformed file, a missing file and a bad node name", () => {
    const store = openAuditStore(dbFile);
    try {
      expect(() => createSealer(stateFile, "gw1", store)).toThrow(/varco audit keygen/);
      createSealState(stateFile);
      chmodSync(stateFile, 0o640);
      expect(() => createSealer(stateFile, "gw1", store)).toThrow(/group or others/);
      chmodSync(stateFile, 0o600);
      const link = join(dir, "link.state");
      symlinkSync(stateFile, link);
      expect(() => createSealer(link, "gw1", store)).toThrow(SealStateError);
      expect(() => createSealer(stateFile, "gw:1", store)).toThrow(/host name/);
      const bad = join(dir, "bad.state");
      writeFileSync(bad, "varco-audit-seal-state v1\nepoch 0\nkey 1234\n", { mode: 0o600 });
      expect(() => createSealer(bad, "gw1", store)).toThrow(/not a varco sealing state/);
      writeFileSync(bad, `varco-audit-seal-state v1\nepoch -1\nkey ${"ab".repeat(32)}\n`, { mode: 0o600 });
      expect(() => createSealer(bad, "gw1", store)).toThrow(/not a varco sealing state/);
    } finally {
      store.close();
    }
  });

  it.runIf(process.getuid?.() === 0)("keeps the state file's owner when root ratchets it (a root CLI prune)", () => {
    createSealState(stateFile);
    chownSync(stateFile, 4321, 4321);
    const store = openAuditStore(dbFile);
    login(store, 1);
    createSealer(stateFile, "gw1", store).sealHead();
    store.close();
    expect(statSync(stateFile).uid).toBe(4321);
    expect(statSync(stateFile).mode & 0o777).toBe(0o600);
  });
});

describe("sealing the head", () => {
  it("seals only when the head moved, with K_epoch, and the state file never holds an older key", () => {
    const k0 = createSealState(stateFile);
    const store = openAuditStore(dbFile);
    const sealer = createSealer(stateFile, "gw1", store);
    const keys = [k0.toString("hex")];
    expect(sealer.sealHead()).toBeUndefined(); // empty chain
    for (let e = 0; e < 4; e++) {
      login(store, 2);
      const row = sealer.sealHead();
      expect(row?.epoch).toBe(e);
      expect(row?.node).toBe("gw1");
      const ke = deriveEpochKey(k0, e);
      expect(row?.seal).toBe(hmac(ke, sealMessage("gw1", row?.eventId ?? 0, row?.hash ?? "", e)));
      // Only K_e verifies it: not the key before nor the one after.
      if (e > 0) expect(row?.seal).not.toBe(hmac(deriveEpochKey(k0, e - 1), sealMessage("gw1", row?.eventId ?? 0, row?.hash ?? "", e)));
      expect(row?.seal).not.toBe(hmac(deriveEpochKey(k0, e + 1), sealMessage("gw1", row?.eventId ?? 0, row?.hash ?? "", e)));
      expect(sealer.sealHead()).toBeUndefined(); // head did not move
      const state = readFileSync(stateFile, "utf8");
      const next = deriveEpochKey(k0, e + 1).toString("hex");
      expect(state).toBe(`varco-audit-seal-state v1\nepoch ${e + 1}\nkey ${next}\n`);
      for (const old of keys) expect(state).not.toContain(old);
      keys.push(next);
      expect(statSync(stateFile).mode & 0o777).toBe(0o600);
    }
    store.close();
    expect(issuesWith(k0)).toEqual([]);
    expect(issuesWith(Buffer.alloc(32, 1)).map((i) => i.kind)).toEqual(["seal", "seal", "seal", "seal"]);
    // No temp files left next to the state.
    expect(readdirSync(dir).filter((f) => !f.startsWith("audit.db"))).toEqual(["seal.state"]);
  });

  it("reports a database without seals when a key is given", () => {
    const k0 = createSealState(stateFile);
    const store = openAuditStore(dbFile);
    login(store, 1);
    store.close();
    expect(issuesWith(k0)).toEqual([expect.objectContaining({ kind: "seal", reason: expect.stringMatching(/no seal/) })]);
  });
});

describe("someone who takes the box at epoch j", () => {
  /** Seals three heads (epochs 0..2), returns K0 and a copy of the state file as the attacker finds it (K3). */
  function sealedHistory(): { k0: Buffer; stolen: Buffer; store: AuditStore } {
    const k0 = createSealState(stateFile);
    const store = openAuditStore(dbFile);
    const sealer = createSealer(stateFile, "gw1", store);
    for (let i = 0; i < 3; i++) {
      login(store, 3);
      sealer.sealHead();
    }
    const stolenFile = join(dir, "stolen.state");
    copyFileSync(stateFile, stolenFile);
    const text = readFileSync(stolenFile, "utf8");
    const stolen = Buffer.from(/key ([0-9a-f]{64})/.exec(text)?.[1] ?? "", "hex");
    expect(stolen.equals(deriveEpochKey(k0, 3))).toBe(true);
    return { k0, stolen, store };
  }

  it("rewriting a sealed event and recomputing the chain passes the hash chain but not the seals", () => {
    const { k0, store } = sealedHistory();
    store.close();
    rewriteEvent(2, { n: 99 });
    const again = openAuditStore(dbFile);
    expect(again.verify().ok).toBe(true); // the chain alone cannot see it
    again.close();
    const issues = issuesWith(k0);
    expect(issues.length).toBeGreaterThan(0);
    expect(issues.every((i) => i.kind === "seal" && /hash changed/.test(i.reason))).toBe(true);
  });

  it("re-sealing the rewritten heads with the stolen key at their old epochs is caught", () => {
    const { k0, stolen, store } = sealedHistory();
    store.close();
    rewriteEvent(2, { n: 99 });
    withDb((db) => {
      for (const s of db.prepare("SELECT rowid, * FROM seals").all() as Array<{ rowid: number; event_id: number; epoch: number }>) {
        const hash = (db.prepare("SELECT hash FROM events WHERE id = ?").get(s.event_id) as { hash: string }).hash;
        db.prepare("UPDATE seals SET hash = ?, seal = ? WHERE rowid = ?").run(
          hash,
          hmac(stolen, sealMessage("gw1", s.event_id, hash, s.epoch)),
          s.rowid,
        );
      }
    });
    const issues = issuesWith(k0);
    expect(issues).toHaveLength(3);
    expect(issues.every((i) => /does not verify/.test(i.reason))).toBe(true);
  });

  it("replacing the old seals by new ones made with the stolen key (epochs 3..) is caught as missing epochs", () => {
    const { k0, store } = sealedHistory();
    store.close();
    rewriteEvent(2, { n: 99 });
    withDb((db) => db.prepare("DELETE FROM seals").run());
    const again = openAuditStore(dbFile);
    const row = createSealer(stateFile, "gw1", again).sealHead(); // the attacker's state file (K3)
    again.close();
    expect(row?.epoch).toBe(3);
    const issues = issuesWith(k0);
    expect(issues).toEqual([
      expect.objectContaining({ kind: "seal", expected: "epoch 0", found: "epoch 3", reason: expect.stringMatching(/epochs 0\.\.2/) }),
    ]);
  });

  it("renumbering a seal's epoch, deleting one seal, or restoring an old state file copy is caught", () => {
    const { k0, store } = sealedHistory();
    withDb((db) => db.prepare("UPDATE seals SET epoch = 5 WHERE epoch = 2").run());
    expect(
      issuesWith(k0)
        .map((i) => i.reason)
        .join("\n"),
    ).toMatch(/no seal for epochs 2\.\.4[\s\S]*does not verify/);
    withDb((db) => db.prepare("UPDATE seals SET epoch = 2 WHERE epoch = 5").run());
    expect(issuesWith(k0)).toEqual([]);
    // A restored copy of an older state file (epoch 2 again) reuses K2.
    const dbCopy = sealRows();
    expect(dbCopy).toHaveLength(3);
    const old = join(dir, "old.state");
    writeFileSync(old, `varco-audit-seal-state v1\nepoch 2\nkey ${deriveEpochKey(k0, 2).toString("hex")}\n`, { mode: 0o600 });
    login(store, 1);
    createSealer(old, "gw1", store).sealHead();
    expect(issuesWith(k0)).toEqual([expect.objectContaining({ reason: expect.stringMatching(/used twice/) })]);
    withDb((db) => db.prepare("DELETE FROM seals WHERE epoch = 1").run());
    expect(issuesWith(k0).some((i) => /no seal for epoch 1/.test(i.reason))).toBe(true);
    store.close();
  });

  it("truncating the chain below a sealed head is caught", () => {
    const { k0, store } = sealedHistory();
    store.close();
    withDb((db) => db.prepare("DELETE FROM events WHERE id >= 7").run());
    expect(issuesWith(k0)).toEqual([
      expect.objectContaining({ kind: "seal", id: "epoch 2 (event 9)", reason: expect.stringMatching(/missing/) }),
    ]);
  });

  it("an absurd epoch is reported without hanging the verifier", () => {
    const { k0, store } = sealedHistory();
    store.close();
    withDb((db) => db.prepare("UPDATE seals SET epoch = 9007199254740991 WHERE epoch = 2").run());
    const t = Date.now();
    expect(issuesWith(k0).some((i) => /plausible/.test(i.reason))).toBe(true);
    expect(Date.now() - t).toBeLessThan(5000);
  });
});

describe("prune checkpoints", () => {
  it("a prune with the sealer seals its checkpoint; the pruned seals stay valid", () => {
    const k0 = createSealState(stateFile);
    let now = Date.parse("2026-01-01T00:00:00Z");
    const store = openAuditStore(dbFile, () => new Date(now));
    const sealer = createSealer(stateFile, "gw1", store);
    login(store, 3);
    sealer.sealHead();
    now += 86_400_000;
    login(store, 3);
    sealer.sealHead();
    const r = store.prune(now - 3_600_000, sealer.step);
    expect(r.events).toBe(3);
    sealer.sealHead();
    expect(store.verify().ok).toBe(true);
    store.close();
    expect(sealRows().map((s) => s.epoch)).toEqual([0, 1, 2, 3]);
    expect(issuesWith(k0)).toEqual([]);
  });

  it("a forged prune (checkpoint inserted, old events deleted) or a prune without the sealing state is reported", () => {
    const k0 = createSealState(stateFile);
    const store = openAuditStore(dbFile);
    const sealer = createSealer(stateFile, "gw1", store);
    login(store, 6);
    sealer.sealHead();
    login(store, 2);
    sealer.sealHead();
    store.close();
    // The root's forged prune: a checkpoint naming event 4, events 1..4 deleted; the chain verifies from the checkpoint.
    withDb((db) => {
      const h = (db.prepare("SELECT hash FROM events WHERE id = 4").get() as { hash: string }).hash;
      db.prepare("INSERT INTO checkpoints (ts, pruned_through_id, last_hash) VALUES ('2026-01-01T00:00:00.000Z', 4, ?)").run(h);
      db.prepare("DELETE FROM events WHERE id <= 4").run();
    });
    // verify without the key already sees no chained audit_pruned event for that checkpoint …
    const again = openAuditStore(dbFile);
    expect(again.verify().ok).toBe(false);
    again.close();
    // … and with the key, the checkpoint has no valid seal.
    expect(issuesWith(k0)).toEqual([
      expect.objectContaining({ kind: "checkpoint", id: "1", reason: expect.stringMatching(/no valid seal/) }),
    ]);
  });

  it("a forged checkpoint at a sealed head (history deleted up to it) is reported", () => {
    const k0 = createSealState(stateFile);
    const store = openAuditStore(dbFile);
    const sealer = createSealer(stateFile, "gw1", store);
    login(store, 3);
    sealer.sealHead(); // seals event 3
    login(store, 3);
    sealer.sealHead();
    store.close();
    withDb((db) => {
      const h = (db.prepare("SELECT hash FROM events WHERE id = 3").get() as { hash: string }).hash;
      db.prepare("INSERT INTO checkpoints (ts, pruned_through_id, last_hash) VALUES ('x', 3, ?)").run(h);
      db.prepare("DELETE FROM events WHERE id <= 3").run();
    });
    // The checkpoint's (3, hash) matches a genuine head seal: that must not pass for a checkpoint seal.
    expect(issuesWith(k0)).toEqual([expect.objectContaining({ kind: "checkpoint", reason: expect.stringMatching(/no valid seal/) })]);
    // Relabelling the head seal as a checkpoint seal breaks its HMAC (the kind is in the sealed text).
    withDb((db) => db.prepare("UPDATE seals SET kind = 'checkpoint' WHERE event_id = 3").run());
    const issues = issuesWith(k0);
    expect(issues.map((i) => i.kind).sort()).toEqual(["checkpoint", "seal"]);
    expect(issues.find((i) => i.kind === "seal")?.reason).toMatch(/does not verify/);
  });
});
