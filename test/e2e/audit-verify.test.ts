/**
 * `varco audit verify` against a root who edits the audit database with the sqlite3 CLI and the
 * recordings with file edits (issue 12). Real sessions with recordings go through the gateway once;
 * each test then tampers with its own consistent copy of the database (`sqlite3 .backup`), checked
 * through a copy of the policy whose `state_dir` points at that copy. Recording files are shared:
 * a test that edits or removes one puts it back.
 * The gateway does not emit anchor lines yet, so the tests write them from the database, in the
 * agreed format, after the gateway's own output (which the reader must skip).
 */
import { mkdirSync, readdirSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import Database from "better-sqlite3";
import { execa } from "execa";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { hashEvent, openAuditStore } from "../../src/audit/index.ts";
import { type Harness, ROOT, startHarness } from "../helpers/harness.ts";

const USERS = ["v01", "v02", "v03", "v04"];
let h: Harness;
let liveDb: string;
/** Session id of each user's one session, in the order they ran. */
const sid: Record<string, string> = {};

beforeAll(async () => {
  h = await startHarness({ extraUsers: USERS });
  liveDb = join(h.dir, "state/audit.db");
  for (const u of USERS) {
    const r = await h.ssh(`${u}_vm1`, [`echo recorded-by-${u}`]);
    expect(r.exitCode).toBe(0);
    for (let i = 0; i < 100 && !sid[u]; i++) {
      const [s] = rows<{ id: string }>(liveDb, `SELECT id FROM sessions WHERE uid = '${u}' AND result != 'open'`);
      if (s) sid[u] = s.id;
      else await new Promise((res) => setTimeout(res, 100));
    }
    if (!sid[u]) throw new Error(`the session of ${u} never closed`);
  }
}, 180_000);

afterAll(async () => {
  await h?.stop();
});

function rows<T>(file: string, sql: string, ...args: unknown[]): T[] {
  const db = new Database(file, { readonly: true, fileMustExist: true });
  try {
    return db.prepare(sql).all(...args) as T[];
  } finally {
    db.close();
  }
}
const sqlite = async (file: string, sql: string) => {
  const r = await execa("sqlite3", [file, sql], { reject: false });
  expect(r.stderr).toBe("");
  return String(r.stdout).trim();
};

interface Case {
  dir: string;
  db: string;
  policy: string;
  verify(...args: string[]): Promise<{ exitCode: number; stdout: string; stderr: string }>;
}
let n = 0;
/** A consistent copy of the live database in a fresh state folder, and a policy that points at it. */
async function copyCase(): Promise<Case> {
  n += 1;
  const dir = join(h.dir, `case-${n}`);
  mkdirSync(join(dir, "state"), { recursive: true });
  const db = join(dir, "state/audit.db");
  await sqlite(liveDb, `.backup '${db}'`);
  return { dir, db, ...policyFor(join(dir, "state"), n) };
}
function policyFor(stateDir: string, k: number | string): Pick<Case, "policy" | "verify"> {
  const text = readFileSync(h.env.policyFile, "utf8");
  expect(text).toContain("  state_dir: state\n");
  const policy = join(h.dir, `policy-verify-${k}.yaml`);
  writeFileSync(policy, text.replace("  state_dir: state\n", `  state_dir: ${stateDir}\n`), { mode: 0o600 });
  return {
    policy,
    verify: async (...args: string[]) => {
      const r = await execa("node", [join(ROOT, "bin/varco.mjs"), "--policy", policy, "audit", "verify", ...args], {
        reject: false,
        ...(args.includes("-") ? {} : { stdin: "ignore" as const }),
      });
      return { exitCode: r.exitCode ?? -1, stdout: String(r.stdout), stderr: String(r.stderr) };
    },
  };
}

const anchorLine = (db: string, id: number) => {
  const [e] = rows<{ hash: string }>(db, "SELECT hash FROM events WHERE id = ?", id);
  if (!e) throw new Error(`no event ${id}`);
  return JSON.stringify({
    level: 30,
    time: Date.now(),
    msg: "audit anchor",
    anchor: { node: "gw-test", event_id: id, hash: e.hash, epoch: 0, seal: "00" },
  });
};
/** The gateway's output saved to a file, with anchor lines for these event ids (in the agreed format) appended. */
function anchorFile(c: Case, ids: number[]): string {
  const file = join(c.dir, "gateway.log");
  writeFileSync(file, `${h.gatewayOutput()}\n${ids.map((id) => anchorLine(c.db, id)).join("\n")}\n`);
  return file;
}
const idOf = (db: string, sql: string): number => {
  const [r] = rows<{ id: number }>(db, sql);
  if (!r) throw new Error(`nothing for ${sql}`);
  return r.id;
};
const headId = (db: string) => idOf(db, "SELECT MAX(id) AS id FROM events");
const recordingOf = (db: string, u: string) => {
  const [r] = rows<{ path: string }>(db, "SELECT path FROM recordings WHERE session_id = ?", sid[u]);
  if (!r) throw new Error(`no recording for ${u}`);
  return r.path;
};

/** Recomputes every hash from event `fromId` on, as a root rewriting the chain would. */
function rechain(file: string, fromId: number) {
  const db = new Database(file);
  try {
    let prev = "0".repeat(64);
    for (const row of db.prepare("SELECT * FROM events ORDER BY id").all() as Array<Record<string, unknown>>) {
      if ((row.id as number) < fromId) {
        prev = row.hash as string;
        continue;
      }
      const opt = (k: string) => (row[k] as string | null) ?? undefined;
      const hash = hashEvent({
        id: row.id as number,
        ts: row.ts as string,
        type: row.type as "exec",
        sessionId: opt("session_id"),
        uid: opt("uid"),
        account: opt("account"),
        target: opt("target"),
        source: opt("source"),
        result: opt("result"),
        data: JSON.parse(row.data as string) as Record<string, unknown>,
        prevHash: prev,
      });
      db.prepare("UPDATE events SET prev_hash = ?, hash = ? WHERE id = ?").run(prev, hash, row.id);
      prev = hash;
    }
  } finally {
    db.close();
  }
}

describe("an untouched audit log", () => {
  it("passes, with and without anchors, and --json gives the report in snake_case", async () => {
    const c = await copyCase();
    let r = await c.verify();
    expect(r.stderr).toBe("");
    expect(r.exitCode).toBe(0);
    expect(r.stdout).toMatch(/^audit verify: ok \(\d+ events, 4 sessions, 4 recordings\)/);
    expect(r.stdout).toMatch(/warning: no anchor covers this chain: all \d+ events \(since \d{4}-/);
    r = await c.verify("--anchor", anchorFile(c, [3, headId(c.db)]));
    expect(r.exitCode).toBe(0);
    expect(r.stdout).not.toContain("warning");
    r = await c.verify("--json");
    expect(r.exitCode).toBe(0);
    const report = JSON.parse(r.stdout) as Record<string, unknown>;
    expect(Object.keys(report).sort()).toEqual(["events", "issues", "ok", "recordings", "sessions", "warnings"]);
    expect(report).toMatchObject({ ok: true, sessions: 4, recordings: 4, issues: [] });
  });
});

describe("tampering a root can do with sqlite3 and an editor", () => {
  it("deleting the newest events with their session row and recording: caught by an anchor, otherwise reported as unanchored", async () => {
    const c = await copyCase();
    const anchors = anchorFile(c, [3, headId(c.db)]);
    const last = sid.v04 ?? "";
    const from = idOf(c.db, `SELECT MIN(id) AS id FROM events WHERE session_id = '${last}'`);
    const file = recordingOf(c.db, "v04");
    await sqlite(
      c.db,
      `DELETE FROM events WHERE id >= ${from}; DELETE FROM sessions WHERE id = '${last}'; DELETE FROM recordings WHERE session_id = '${last}';`,
    );
    renameSync(file, `${file}.away`);
    try {
      const plain = await c.verify();
      expect(plain.exitCode).toBe(0);
      expect(plain.stdout).toContain(`warning: no anchor covers this chain: all ${from - 1} events`);
      const r = await c.verify("--anchor", anchors);
      expect(r.exitCode).toBe(1);
      expect(r.stderr).toContain(`FAILED at anchor gw-test:`);
      expect(r.stderr).toContain(`the anchored event is missing: the chain was truncated (expected event`);
      expect(r.stderr).toContain(`found the chain ends at event ${from - 1})`);
      // The same log piped in (journalctl -u varco -o cat | varco audit verify --anchor -).
      const viaStdin = await execa("node", [join(ROOT, "bin/varco.mjs"), "--policy", c.policy, "audit", "verify", "--anchor", "-"], {
        reject: false,
        input: readFileSync(anchors),
      });
      expect(viaStdin.exitCode).toBe(1);
      expect(String(viaStdin.stderr)).toContain("the chain was truncated");
    } finally {
      renameSync(`${file}.away`, file);
    }
  });

  it("rewriting everything after the newest anchor passes the chain (tail reported); a rewrite before it does not", async () => {
    const c = await copyCase();
    const anchored = idOf(c.db, `SELECT id FROM events WHERE type = 'session_end' AND session_id = '${sid.v02}'`);
    const anchors = anchorFile(c, [2, anchored]);
    const exec4 = idOf(c.db, `SELECT id FROM events WHERE type = 'exec' AND session_id = '${sid.v04}'`);
    await sqlite(c.db, `UPDATE events SET data = json_set(data, '$.command', 'true') WHERE id = ${exec4}`);
    rechain(c.db, exec4);
    const tail = headId(c.db) - anchored;
    const [next] = rows<{ ts: string }>(c.db, "SELECT ts FROM events WHERE id = ?", anchored + 1);
    let r = await c.verify("--anchor", anchors);
    expect(r.stderr).toBe("");
    expect(r.exitCode).toBe(0);
    expect(r.stdout).toContain(
      `warning: unanchored tail: ${tail} events after the newest anchor (event ${anchored}), since ${next?.ts}, are protected by the chain only`,
    );
    const exec1 = idOf(c.db, `SELECT id FROM events WHERE type = 'exec' AND session_id = '${sid.v01}'`);
    await sqlite(c.db, `UPDATE events SET data = json_set(data, '$.command', 'true') WHERE id = ${exec1}`);
    rechain(c.db, exec1);
    r = await c.verify("--anchor", anchors);
    expect(r.exitCode).toBe(1);
    expect(r.stderr).toContain(`FAILED at anchor gw-test:${anchored}: the anchored event's hash changed: the chain was rewritten`);
    expect(r.stderr).not.toContain("FAILED at event"); // the chain itself is consistent
  });

  it("a forged prune (checkpoint inserted, old events deleted) is caught and reported as unauthenticated", async () => {
    const c = await copyCase();
    const anchors = anchorFile(c, [3]);
    const first = sid.v01 ?? "";
    const end = idOf(c.db, `SELECT id FROM events WHERE type = 'session_end' AND session_id = '${first}'`);
    await sqlite(
      c.db,
      `INSERT INTO checkpoints (ts, pruned_through_id, last_hash) SELECT strftime('%Y-%m-%dT%H:%M:%fZ'), id, hash FROM events WHERE id = ${end};
       DELETE FROM events WHERE id <= ${end}; DELETE FROM sessions WHERE id = '${first}'; DELETE FROM recordings WHERE session_id = '${first}';`,
    );
    const r = await c.verify("--anchor", anchors);
    expect(r.exitCode).toBe(1);
    expect(r.stderr).toContain("FAILED at checkpoint 1: no chained audit_pruned event records the prune the chain starts at");
    expect(r.stdout).toMatch(
      /warning: the chain starts at prune checkpoint 1 \(events through \d+ pruned at .*\); without the seal key it cannot be authenticated/,
    );
    // The anchor below the new first event is covered by the (forged) checkpoint: not what catches it.
    expect(r.stderr).not.toContain("FAILED at anchor");
  });

  it("deleting a sessions row", async () => {
    const c = await copyCase();
    await sqlite(c.db, `DELETE FROM sessions WHERE id = '${sid.v02}'`);
    const r = await c.verify();
    expect(r.exitCode).toBe(1);
    expect(r.stderr).toContain(`FAILED at session ${sid.v02}: a chained session has no session row (row deleted)`);
  });

  it("back-dating a sessions row (and every other problem in the same run)", async () => {
    const c = await copyCase();
    const [s] = rows<{ started_at: string }>(c.db, "SELECT started_at FROM sessions WHERE id = ?", sid.v03);
    await sqlite(
      c.db,
      `UPDATE sessions SET started_at = '2020-01-01T00:00:00.000Z', ended_at = '2020-01-01T00:05:00.000Z' WHERE id = '${sid.v03}';
       DELETE FROM sessions WHERE id = '${sid.v01}';`,
    );
    const r = await c.verify();
    expect(r.exitCode).toBe(1);
    expect(r.stderr).toContain(
      `FAILED at session ${sid.v03}: the session row differs from its chained session_start event (started_at) (expected ${s?.started_at}, found 2020-01-01T00:00:00.000Z)`,
    );
    expect(r.stderr).toContain(`FAILED at session ${sid.v03}: the session row differs from its chained session_end event (ended_at)`);
    expect(r.stderr).toContain(`FAILED at session ${sid.v01}: a chained session has no session row`);
    expect(r.stderr).toMatch(/audit verify: FAILED: 3 problems \(\d+ events, 3 sessions, 4 recordings\)/);
    const json = await c.verify("--json");
    expect(json.exitCode).toBe(1);
    const report = JSON.parse(json.stdout) as { ok: boolean; issues: Array<Record<string, string>> };
    expect(report.ok).toBe(false);
    expect(report.issues).toContainEqual({
      kind: "session",
      id: sid.v03,
      expected: s?.started_at,
      found: "2020-01-01T00:00:00.000Z",
      reason: "the session row differs from its chained session_start event (started_at)",
    });
  });

  it("setting a recordings row back to open and editing the file (before and after the restart that closes it again)", async () => {
    const c = await copyCase();
    const file = recordingOf(c.db, "v02");
    const original = readFileSync(file);
    await sqlite(c.db, `UPDATE recordings SET status = 'open', sha256 = NULL, bytes = 0 WHERE session_id = '${sid.v02}'`);
    writeFileSync(file, original.toString().replace("recorded-by-v02", "recorded-by-nobody"));
    try {
      let r = await c.verify();
      expect(r.exitCode).toBe(1);
      expect(r.stderr).toContain(
        `FAILED at recording ${sid.v02}-1 (${file}): the recording row says open but a chained recording event closed it`,
      );
      // What the gateway does when it next starts: close open recordings as interrupted, chaining the edited file's hash.
      const store = openAuditStore(c.db);
      store.closeInterrupted();
      store.close();
      r = await c.verify();
      expect(r.exitCode).toBe(1);
      expect(r.stderr).toContain(`FAILED at recording ${sid.v02}-1 (${file}): the recording was closed more than once`);
      expect(r.stderr).toContain("the recording file's SHA-256 does not match the one stored when it was closed");
    } finally {
      writeFileSync(file, original);
    }
  });

  it("deleting a recording row and its file", async () => {
    const c = await copyCase();
    const file = recordingOf(c.db, "v03");
    await sqlite(c.db, `DELETE FROM recordings WHERE session_id = '${sid.v03}'`);
    renameSync(file, `${file}.away`);
    try {
      const r = await c.verify();
      expect(r.exitCode).toBe(1);
      expect(r.stderr).toContain(`FAILED at recording ${sid.v03}-1 (${file}): a chained recording has no recording row (row deleted)`);
      expect(r.stderr).toContain(`FAILED at recording ${sid.v03}-1 (${file}): the recording file is missing`);
    } finally {
      renameSync(`${file}.away`, file);
    }
  });
});

describe("nothing to verify", () => {
  it("a missing state folder: exit 1 saying so, and nothing is created", async () => {
    const missing = join(h.dir, "no-such-state");
    const p = policyFor(missing, "missing");
    const r = await p.verify();
    expect(r.exitCode).toBe(1);
    expect(r.stderr).toContain(`FAILED at file ${missing}: the state folder does not exist`);
    expect(readdirSync(h.dir)).not.toContain("no-such-state");
  });

  it("a state folder without a database: exit 1 saying so, and nothing is created", async () => {
    const empty = join(h.dir, "empty-state");
    mkdirSync(empty);
    const r = await policyFor(empty, "empty").verify();
    expect(r.exitCode).toBe(1);
    expect(r.stderr).toContain(`FAILED at file ${join(empty, "audit.db")}: the audit database does not exist`);
    expect(readdirSync(empty)).toEqual([]);
  });

  it("unreadable --anchor and --seal-key files are usage errors; a bad key is not echoed", async () => {
    const c = await copyCase();
    let r = await c.verify("--anchor", join(c.dir, "nope.log"));
    expect(r.exitCode).toBe(2);
    expect(r.stderr).toContain("--anchor: cannot read");
    const keyFile = join(c.dir, "seal.key");
    writeFileSync(keyFile, "secret-not-hex-secret\n", { mode: 0o600 });
    r = await c.verify("--seal-key", keyFile);
    expect(r.exitCode).toBe(2);
    expect(r.stderr).not.toContain("secret");
    writeFileSync(keyFile, `${"ab".repeat(32)}\n`);
    r = await c.verify("--seal-key", keyFile);
    expect(r.exitCode).toBe(1);
    expect(r.stderr).toContain("FAILED at seal -: no seal in the database");
    expect(r.stdout + r.stderr).not.toContain("ab".repeat(32));
  });
});
