/**
 * `verifyAuditDb` on databases written through the store API and then tampered with through a
 * second (raw) connection, as a root with the sqlite3 CLI would: every problem is reported, with
 * what was expected and what was found; an untouched database (including a legitimate prune) passes.
 */
import { createHash, generateKeyPairSync } from "node:crypto";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import Database from "better-sqlite3";
import { afterEach, describe, expect, it } from "vitest";
import { type AuditStore, hashEvent, openAuditStore } from "../../src/audit/index.ts";
import { type Anchor, parseAnchors, type VerifyIssue, verifyAuditDb } from "../../src/audit/verify.ts";

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});
const tmp = () => {
  const d = mkdtempSync(join(tmpdir(), "varco-verify-"));
  dirs.push(d);
  return d;
};

const DAY = 86_400_000;

/** A store with `n` sessions s1..sn, one recording each (file in `dir`), one day apart starting at `t0`. */
function populate(dir: string, n = 3, t0 = Date.UTC(2026, 0, 1)) {
  const file = join(dir, "audit.db");
  let now = t0;
  const store = openAuditStore(file, () => new Date(now));
  for (let i = 1; i <= n; i++) {
    const id = `s${i}`;
    store.append({ type: "login", uid: `u${i}`, source: "10.0.0.1", result: "ok" });
    store.startSession({ id, uid: `u${i}`, account: `u${i}_vm1`, target: "vm1", source: "10.0.0.1" });
    const path = join(dir, `${id}-1.cast`);
    store.recordingStarted(id, 1, path);
    writeFileSync(path, `{"version":2}\n[0.1,"o","hello ${i}"]\n`);
    store.append({ type: "exec", sessionId: id, data: { command: `echo ${i}` } });
    const sha256 = createHash("sha256").update(`{"version":2}\n[0.1,"o","hello ${i}"]\n`).digest("hex");
    store.recordingClosed(id, 1, { sha256, bytes: 30, status: "complete" });
    store.endSession(id, { result: "ok", upBytes: 10 * i, downBytes: 100 * i, exitStatus: 0 });
    now += DAY;
  }
  return {
    file,
    store,
    setNow: (t: number) => {
      now = t;
    },
  };
}

const raw = (file: string, sql: string, ...args: unknown[]) => {
  const db = new Database(file);
  db.prepare(sql).run(...args);
  db.close();
};
const rows = <T>(file: string, sql: string): T[] => {
  const db = new Database(file, { readonly: true });
  const r = db.prepare(sql).all() as T[];
  db.close();
  return r;
};
const anchorAt = (file: string, id: number, node = "gw1"): Anchor => {
  const [r] = rows<{ hash: string }>(file, `SELECT hash FROM events WHERE id = ${id}`);
  return { node, event_id: id, hash: r?.hash ?? "", epoch: 0, seal: "00" };
};
const lastId = (file: string) => rows<{ id: number }>(file, "SELECT MAX(id) AS id FROM events")[0]?.id ?? 0;
const has = (issues: VerifyIssue[], m: Partial<VerifyIssue> & { reason?: string }) =>
  issues.some(
    (i) =>
      (m.kind === undefined || i.kind === m.kind) &&
      (m.id === undefined || i.id === m.id) &&
      (m.reason === undefined || i.reason.includes(m.reason)),
  );

/** Recomputes every hash from event `fromId` on, as an attacker rewriting the tail would. */
function rechain(file: string, fromId: number) {
  const db = new Database(file);
  const all = db.prepare("SELECT * FROM events ORDER BY id").all() as Array<Record<string, unknown>>;
  let prev = "0".repeat(64);
  for (const row of all) {
    if ((row.id as number) >= fromId) {
      const hash = hashEvent({
        id: row.id as number,
        ts: row.ts as string,
        type: row.type as "exec",
        sessionId: (row.session_id as string | null) ?? undefined,
        uid: (row.uid as string | null) ?? undefined,
        account: (row.account as string | null) ?? undefined,
        target: (row.target as string | null) ?? undefined,
        source: (row.source as string | null) ?? undefined,
        result: (row.result as string | null) ?? undefined,
        data: JSON.parse(row.data as string) as Record<string, unknown>,
        prevHash: prev,
      });
      db.prepare("UPDATE events SET prev_hash = ?, hash = ? WHERE id = ?").run(prev, hash, row.id);
      prev = hash;
    } else prev = row.hash as string;
  }
  db.close();
}

describe("verifyAuditDb: an untouched database", () => {
  it("passes, counts rows and warns that nothing anchors the chain", () => {
    const dir = tmp();
    const { file, store } = populate(dir);
    store.close();
    const r = verifyAuditDb(file);
    expect(r.issues).toEqual([]);
    expect(r).toMatchObject({ ok: true, sessions: 3, recordings: 3 });
    expect(r.events).toBe(lastId(file));
    expect(r.warnings.join("\n")).toMatch(/no anchor covers this chain: all \d+ events \(since 2026-01-01T00:00:00.000Z\)/);
    // With an anchor at the head, there is no tail to warn about.
    const anchored = verifyAuditDb(file, { anchors: [anchorAt(file, lastId(file))] });
    expect(anchored).toMatchObject({ ok: true, warnings: [] });
  });

  it("opens read-only: a missing folder or database is a problem and nothing is created", () => {
    const dir = tmp();
    const r1 = verifyAuditDb(join(dir, "nope", "audit.db"));
    expect(r1.ok).toBe(false);
    expect(r1.issues[0]).toMatchObject({ kind: "file", reason: "the state folder does not exist" });
    expect(existsSync(join(dir, "nope"))).toBe(false);
    const r2 = verifyAuditDb(join(dir, "audit.db"));
    expect(r2.issues[0]).toMatchObject({ kind: "file", reason: "the audit database does not exist" });
    expect(readdirSync(dir)).toEqual([]);
    writeFileSync(join(dir, "audit.db"), "not a database at all, just some text that is long enough");
    const r3 = verifyAuditDb(join(dir, "audit.db"));
    expect(r3.ok).toBe(false);
    expect(r3.issues[0]?.kind).toBe("file");
  });

  it("does not write to the database it checks", () => {
    const dir = tmp();
    const { file, store } = populate(dir, 1);
    store.close();
    const before = createHash("sha256")
      .update(new Uint8Array(readFileSync(file)))
      .digest("hex");
    verifyAuditDb(file);
    const after = createHash("sha256")
      .update(new Uint8Array(readFileSync(file)))
      .digest("hex");
    expect(after).toBe(before);
  });
});

describe("verifyAuditDb: every problem, both directions", () => {
  it("reports all problems at once, each with expected and found", () => {
    const dir = tmp();
    const { file, store } = populate(dir);
    store.close();
    raw(file, "UPDATE events SET data = json_set(data, '$.command', 'true') WHERE type = 'exec' AND session_id = 's1'");
    raw(file, "DELETE FROM sessions WHERE id = 's2'");
    raw(file, "UPDATE sessions SET started_at = '2025-12-31T00:00:00.000Z' WHERE id = 's3'");
    const r = verifyAuditDb(file);
    expect(r.ok).toBe(false);
    expect(has(r.issues, { kind: "event", reason: "does not match its hash" })).toBe(true);
    expect(has(r.issues, { kind: "session", id: "s2", reason: "no session row (row deleted)" })).toBe(true);
    const back = r.issues.find((i) => i.id === "s3");
    expect(back).toMatchObject({
      kind: "session",
      expected: "2026-01-03T00:00:00.000Z",
      found: "2025-12-31T00:00:00.000Z",
      reason: expect.stringContaining("(started_at)"),
    });
    expect(r.issues).toHaveLength(3);
  });

  it("catches a back-dated end, a row reset to open and a row that claims an end never chained", () => {
    const dir = tmp();
    const { file, store } = populate(dir);
    store.startSession({ id: "s9", uid: "u9", account: "u9_vm1", target: "vm1", source: "10.0.0.9" });
    store.close();
    raw(file, "UPDATE sessions SET ended_at = '2026-01-01T00:00:02.000Z' WHERE id = 's1'");
    raw(file, "UPDATE sessions SET ended_at = NULL, result = 'open' WHERE id = 's2'");
    raw(file, "UPDATE sessions SET ended_at = '2026-01-04T00:00:00.000Z', result = 'ok' WHERE id = 's9'");
    const r = verifyAuditDb(file);
    expect(has(r.issues, { id: "s1", reason: "(ended_at)" })).toBe(true);
    expect(has(r.issues, { id: "s2", reason: "the session ended but its row says open" })).toBe(true);
    expect(has(r.issues, { id: "s9", reason: "says ended but no session_end event is chained" })).toBe(true);
  });

  it("catches a session row inserted without events, and other field edits", () => {
    const dir = tmp();
    const { file, store } = populate(dir, 1);
    store.close();
    raw(
      file,
      "INSERT INTO sessions (id, started_at, uid, account, source) VALUES ('fake', '2026-01-01T00:00:00.000Z', 'x', 'x_vm1', '1.1.1.1')",
    );
    raw(file, "UPDATE sessions SET uid = 'someone', target = NULL, exit_status = 1 WHERE id = 's1'");
    const r = verifyAuditDb(file);
    expect(has(r.issues, { id: "fake", reason: "no session_start event" })).toBe(true);
    for (const f of ["(uid)", "(target)", "(exit_status)"]) expect(has(r.issues, { id: "s1", reason: f })).toBe(true);
  });

  it("catches a recording row deleted with its file, and a row reset to open then closed again by a restart", () => {
    const dir = tmp();
    const { file, store } = populate(dir);
    store.close();
    raw(file, "DELETE FROM recordings WHERE session_id = 's1'");
    rmSync(join(dir, "s1-1.cast"));
    let r = verifyAuditDb(file);
    expect(has(r.issues, { kind: "recording", id: `s1-1 (${join(dir, "s1-1.cast")})`, reason: "no recording row" })).toBe(true);
    expect(has(r.issues, { kind: "recording", reason: "the recording file is missing" })).toBe(true);

    raw(file, "UPDATE recordings SET status = 'open', sha256 = NULL WHERE session_id = 's2'");
    writeFileSync(join(dir, "s2-1.cast"), '{"version":2}\n[0.1,"o","innocent"]\n');
    r = verifyAuditDb(file);
    expect(has(r.issues, { id: `s2-1 (${join(dir, "s2-1.cast")})`, reason: "says open but a chained recording event closed it" })).toBe(
      true,
    );
    // What the gateway does at its next start: close "interrupted" recordings, chaining the edited file's hash.
    const again = openAuditStore(file);
    again.closeInterrupted();
    again.close();
    r = verifyAuditDb(file);
    const s2 = r.issues.filter((i) => i.id.startsWith("s2-1"));
    expect(s2.map((i) => i.reason).join("\n")).toContain("closed more than once");
    expect(s2.map((i) => i.reason).join("\n")).toContain("SHA-256 does not match");
  });

  it("catches an edited recording file and a row edited to match it", () => {
    const dir = tmp();
    const { file, store } = populate(dir, 1);
    store.close();
    writeFileSync(join(dir, "s1-1.cast"), "edited");
    let r = verifyAuditDb(file);
    expect(has(r.issues, { reason: "SHA-256 does not match the one stored" })).toBe(true);
    const sha = createHash("sha256").update("edited").digest("hex");
    raw(file, "UPDATE recordings SET sha256 = ?, bytes = 6", sha);
    r = verifyAuditDb(file);
    expect(has(r.issues, { reason: "differs from its chained recording event (sha256)" })).toBe(true);
    expect(has(r.issues, { reason: "differs from its chained recording event (bytes)" })).toBe(true);
  });

  it("catches deleted middle events (id gap) even when the chain is re-linked", () => {
    const dir = tmp();
    const { file, store } = populate(dir);
    store.close();
    raw(file, "DELETE FROM events WHERE type = 'exec' AND session_id = 's2'");
    let r = verifyAuditDb(file);
    expect(has(r.issues, { kind: "event", reason: "event ids jump: 1 events missing" })).toBe(true);
    expect(has(r.issues, { kind: "event", reason: "prev_hash does not match" })).toBe(true);
    rechain(file, 1);
    r = verifyAuditDb(file);
    expect(r.issues.map((i) => i.reason)).toEqual([expect.stringContaining("event ids jump")]);
  });

  it("catches a chain restarted at GENESIS after its first events were deleted", () => {
    const dir = tmp();
    const { file, store } = populate(dir);
    store.close();
    raw(file, "DELETE FROM events WHERE id <= 6");
    raw(file, "DELETE FROM sessions WHERE id = 's1'");
    raw(file, "DELETE FROM recordings WHERE session_id = 's1'");
    let r = verifyAuditDb(file);
    expect(has(r.issues, { kind: "event", id: "7", reason: "neither starts the chain nor follows a prune checkpoint" })).toBe(true);
    raw(file, "UPDATE events SET prev_hash = ? WHERE id = 7", "0".repeat(64));
    rechain(file, 7);
    r = verifyAuditDb(file);
    expect(has(r.issues, { kind: "event", id: "7", reason: "restarts at GENESIS" })).toBe(true);
  });
});

describe("verifyAuditDb: prune checkpoints", () => {
  it("accepts a legitimate prune (warning that it cannot be authenticated without the seal key)", () => {
    const dir = tmp();
    const { file, store, setNow } = populate(dir, 3);
    setNow(Date.UTC(2026, 0, 10));
    const p = store.prune(Date.UTC(2026, 0, 2, 12));
    expect(p.sessions).toBe(2);
    store.close();
    const r = verifyAuditDb(file);
    expect(r.issues).toEqual([]);
    expect(r.warnings.join("\n")).toMatch(/chain starts at prune checkpoint 1 .* cannot be authenticated/);
  });

  it("accepts a session row whose start was pruned while its end was kept", () => {
    const dir = tmp();
    const file = join(dir, "audit.db");
    let now = Date.UTC(2026, 0, 1);
    const store = openAuditStore(file, () => new Date(now));
    store.startSession({ id: "long", uid: "u", account: "u_vm1", target: "vm1", source: "10.0.0.1" });
    store.recordingStarted("long", 1, join(dir, "long-1.cast"));
    writeFileSync(join(dir, "long-1.cast"), "x");
    store.recordingClosed("long", 1, { sha256: createHash("sha256").update("x").digest("hex"), bytes: 1, status: "complete" });
    store.append({ type: "exec", sessionId: "long", data: { command: "sleep" } });
    now = Date.UTC(2026, 0, 5);
    store.endSession("long", { result: "ok", upBytes: 1, downBytes: 2, exitStatus: 0 });
    store.prune(Date.UTC(2026, 0, 3));
    store.close();
    expect(rows(file, "SELECT id FROM sessions")).toEqual([{ id: "long" }]);
    const r = verifyAuditDb(file);
    expect(r.issues).toEqual([]);
    expect(r.warnings.join("\n")).toContain("its recording event was pruned");
    // Not a loophole: a row without any chained event of its session is still reported.
    raw(
      file,
      "INSERT INTO sessions (id, started_at, uid, account, source) VALUES ('fake', '2025-01-01T00:00:00.000Z', 'x', 'x_vm1', '1.1.1.1')",
    );
    expect(has(verifyAuditDb(file).issues, { id: "fake", reason: "no session_start event" })).toBe(true);
  });

  it("catches a forged prune: checkpoint inserted by hand, old events and their rows deleted", () => {
    const dir = tmp();
    const { file, store } = populate(dir, 3);
    store.close();
    const anchors = [anchorAt(file, 3), anchorAt(file, lastId(file))];
    const [endS1] = rows<{ id: number; hash: string }>(
      file,
      "SELECT id, hash FROM events WHERE type = 'session_end' AND session_id = 's1'",
    );
    raw(
      file,
      "INSERT INTO checkpoints (ts, pruned_through_id, last_hash) VALUES ('2026-01-09T00:00:00.000Z', ?, ?)",
      endS1?.id,
      endS1?.hash,
    );
    raw(file, "DELETE FROM events WHERE id <= ?", endS1?.id);
    raw(file, "DELETE FROM sessions WHERE id = 's1'");
    raw(file, "DELETE FROM recordings WHERE session_id = 's1'");
    const r = verifyAuditDb(file, { anchors });
    // An anchor below the first event is fine when a checkpoint covers it: the missing audit_pruned event is what gives it away.
    expect(r.issues).toEqual([
      expect.objectContaining({ kind: "checkpoint", id: "1", reason: expect.stringContaining("no chained audit_pruned") }),
    ]);
    expect(r.warnings.join("\n")).toContain("cannot be authenticated");
  });

  it("catches a checkpoint that claims a prune that did not happen", () => {
    const dir = tmp();
    const { file, store } = populate(dir, 1);
    store.close();
    raw(file, "INSERT INTO checkpoints (ts, pruned_through_id, last_hash) VALUES ('2026-01-09T00:00:00.000Z', 3, 'x')");
    expect(has(verifyAuditDb(file).issues, { kind: "checkpoint", reason: "claims a prune that did not happen" })).toBe(true);
  });
});

describe("verifyAuditDb: anchors", () => {
  it("parses anchor lines out of a log and ignores everything else", () => {
    const good = { node: "gw1", event_id: 7, hash: "a".repeat(64), epoch: 2, seal: "00ff" };
    const text = [
      "not json at all, mentions audit anchor",
      JSON.stringify({ level: 30, msg: "session ended" }),
      JSON.stringify({ level: 30, msg: "audit anchor", anchor: good }),
      `Nov 28 10:00:00 host varco[1]: ${JSON.stringify({ msg: "audit anchor", anchor: { ...good, event_id: 8 } })}`,
      JSON.stringify({ msg: "audit anchor", anchor: { ...good, hash: "nothex" } }),
      JSON.stringify({ msg: "audit anchor", anchor: { ...good, event_id: -1 } }),
      JSON.stringify({ msg: "not an audit anchor", anchor: good }),
      "{broken json audit anchor",
    ].join("\n");
    const p = parseAnchors(text);
    expect(p.anchors.map((a) => a.event_id)).toEqual([7, 8]);
    expect(p.malformed).toBe(2);
  });

  it("catches truncation of the newest events and reports the unanchored tail without anchors", () => {
    const dir = tmp();
    const { file, store } = populate(dir, 3);
    store.close();
    const anchors = [anchorAt(file, 5), anchorAt(file, lastId(file))];
    const [startS3] = rows<{ id: number }>(file, "SELECT id FROM events WHERE type = 'login' ORDER BY id DESC LIMIT 1");
    const cut = startS3?.id ?? 0;
    raw(file, "DELETE FROM events WHERE id >= ?", cut);
    raw(file, "DELETE FROM sessions WHERE id = 's3'");
    raw(file, "DELETE FROM recordings WHERE session_id = 's3'");
    rmSync(join(dir, "s3-1.cast"));
    const plain = verifyAuditDb(file);
    expect(plain.ok).toBe(true);
    expect(plain.warnings.join("\n")).toContain(`all ${cut - 1} events`);
    const r = verifyAuditDb(file, { anchors });
    expect(r.issues).toEqual([
      expect.objectContaining({ kind: "anchor", id: `gw1:${anchors[1]?.event_id}`, found: `the chain ends at event ${cut - 1}` }),
    ]);
  });

  it("does not see a rewrite after the newest anchor (reports the tail) but catches one before it", () => {
    const dir = tmp();
    const { file, store } = populate(dir, 3);
    store.close();
    const mid = 8;
    const anchors = [anchorAt(file, 3), anchorAt(file, mid)];
    const [exec3] = rows<{ id: number }>(file, "SELECT id FROM events WHERE type = 'exec' AND session_id = 's3'");
    raw(file, "UPDATE events SET data = json_set(data, '$.command', 'true') WHERE id = ?", exec3?.id);
    rechain(file, exec3?.id ?? 0);
    let r = verifyAuditDb(file, { anchors });
    expect(r.ok).toBe(true);
    const n = lastId(file) - mid;
    expect(r.warnings.join("\n")).toMatch(
      new RegExp(`unanchored tail: ${n} events after the newest anchor \\(event ${mid}\\), since 2026-01-02`),
    );
    raw(file, "UPDATE events SET data = json_set(data, '$.command', 'true') WHERE type = 'exec' AND session_id = 's1'");
    rechain(file, 1);
    r = verifyAuditDb(file, { anchors });
    expect(r.issues.map((i) => i.id)).toEqual(["gw1:3", "gw1:8"]);
    expect(r.issues[0]?.reason).toContain("hash changed");
  });

  it("ignores other nodes' anchors, warns when none is for this database, refuses to guess between nodes", () => {
    const dir = tmp();
    const { file, store } = populate(dir, 1);
    store.close();
    const other = { node: "gw2", event_id: 99, hash: "b".repeat(64), epoch: 0, seal: "00" };
    let r = verifyAuditDb(file, { anchors: [anchorAt(file, 2), other], node: "gw1" });
    expect(r.ok).toBe(true);
    expect(r.warnings.join("\n")).toContain("1 anchors of other nodes were ignored");
    r = verifyAuditDb(file, { anchors: [other], node: "gw1" });
    expect(r.warnings.join("\n")).toContain("none is for this database (node gw1)");
    r = verifyAuditDb(file, { anchors: [anchorAt(file, 2), other] });
    expect(has(r.issues, { kind: "anchor", reason: "several nodes" })).toBe(true);
    r = verifyAuditDb(file, { anchors: [] });
    expect(r.warnings.join("\n")).toContain("anchors were given but none is for this database");
  });

  it("an anchor below the first event needs a prune checkpoint that covers it (and agrees with it)", () => {
    const dir = tmp();
    const { file, store, setNow } = populate(dir, 3);
    const anchors = [anchorAt(file, 3)];
    setNow(Date.UTC(2026, 0, 10));
    store.prune(Date.UTC(2026, 0, 2, 12));
    store.close();
    expect(verifyAuditDb(file, { anchors }).issues).toEqual([]);
    const [cp] = rows<{ pruned_through_id: number }>(file, "SELECT pruned_through_id FROM checkpoints");
    const wrong = { ...anchorAt(file, 1), event_id: cp?.pruned_through_id ?? 0, hash: "c".repeat(64) };
    expect(has(verifyAuditDb(file, { anchors: [wrong] }).issues, { kind: "anchor", reason: "records another hash" })).toBe(true);
  });
});

describe("verifyAuditDb: keys", () => {
  function signed(dir: string): { file: string; store: AuditStore } {
    const { file, store } = populate(dir, 2);
    return { file, store };
  }

  it("checks ed25519 signatures with the public key, warns about them without it, reports every bad one", () => {
    const dir = tmp();
    const { privateKey, publicKey } = generateKeyPairSync("ed25519");
    const { file, store } = signed(dir);
    store.signHead(privateKey);
    store.append({ type: "lock", uid: "x", result: "ok" });
    store.signHead(privateKey);
    store.close();
    expect(verifyAuditDb(file, { publicKey }).issues).toEqual([]);
    expect(verifyAuditDb(file).warnings.join("\n")).toContain("2 ed25519 checkpoint signatures were not checked");
    const other = generateKeyPairSync("ed25519").publicKey;
    expect(verifyAuditDb(file, { publicKey: other }).issues).toHaveLength(2);
    expect(verifyAuditDb(join(tmp(), "x.db"), { publicKey }).ok).toBe(false);
  });

  it("hands the seals to checkSeals with the key, and warns when seals exist but no key was given", () => {
    const dir = tmp();
    const { file, store } = signed(dir);
    store.close();
    const k0 = Buffer.alloc(32, 7);
    // Without a seals table (a database from before sealing existed), a seal key is a problem.
    raw(file, "DROP TABLE IF EXISTS seals");
    expect(has(verifyAuditDb(file, { sealKey: k0 }).issues, { kind: "seal", reason: "no seals" })).toBe(true);
    raw(file, "CREATE TABLE seals (event_id INTEGER, epoch INTEGER, hash TEXT, node TEXT, ts TEXT, seal TEXT)");
    raw(file, "INSERT INTO seals VALUES (2, 0, 'h', 'gw7', 't', 'aa')");
    expect(verifyAuditDb(file).warnings.join("\n")).toContain("1 seals were not checked (no seal key)");
    const seen: Buffer[] = [];
    const r = verifyAuditDb(file, {
      sealKey: k0,
      checkSeals: (_db, k) => {
        seen.push(k);
        return [{ kind: "seal", id: "2", reason: "stub" }];
      },
    });
    expect(seen).toEqual([k0]);
    expect(r.issues).toEqual([{ kind: "seal", id: "2", reason: "stub" }]);
    // The node comes from the seals when not given: gw7's anchors apply, others are ignored.
    const a = verifyAuditDb(file, { anchors: [anchorAt(file, 2, "gw7"), anchorAt(file, 2, "gw8")] });
    expect(a.warnings.join("\n")).toContain("1 anchors of other nodes were ignored");
  });
});
