/**
 * The read side for auditors (src/audit/query.ts) on a real SQLite file written through the store:
 * paging with totals, alias/target matching, FTS5 search (and its query-syntax escaping),
 * filtered export with the one transfer shape, the recording-hash check.
 */
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import Database from "better-sqlite3";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import {
  accountAlias,
  eventJsonSchema,
  ftsPhrase,
  openAuditQuery,
  SearchTextError,
  snakeKeys,
  terminalText,
  transferOf,
} from "../../src/audit/query.ts";
import { type AuditStore, hashFile, openAuditStore } from "../../src/audit/store.ts";

let dir: string;
let file: string;
let store: AuditStore;

function session(id: string, uid: string, alias: string, target: string) {
  store.startSession({ id, uid, account: `${uid}_${alias}`, target, source: "192.0.2.1" });
}

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), "varco-query-"));
  file = join(dir, "audit.db");
  store = openAuditStore(file);
});
afterEach(() => {
  store.close();
  rmSync(dir, { recursive: true, force: true });
});

describe("helpers", () => {
  it("alias is the part after the last underscore; no underscore: none", () => {
    expect(accountAlias("mario.rossi_vm1")).toBe("vm1");
    expect(accountAlias("a_b_c")).toBe("c");
    expect(accountAlias("plain")).toBeNull();
    expect(accountAlias(null)).toBeNull();
  });
  it("snake_cases keys at any depth, never values", () => {
    expect(snakeKeys({ upBytes: 1, data: { toPath: "keepMe", list: [{ bytesRead: 2 }] } })).toEqual({
      up_bytes: 1,
      data: { to_path: "keepMe", list: [{ bytes_read: 2 }] },
    });
  });
  it("one transfer shape for sftp, scp and rsync", () => {
    expect(transferOf({ protocol: "scp", op: "upload", path: "/a", size: 7 })).toMatchObject({ direction: "upload", bytes: 7 });
    expect(transferOf({ protocol: "rsync", op: "transfer", path: "/a", flags: "download", bytesRead: 9, bytesWritten: 0 })).toMatchObject({
      direction: "download",
      bytes: 9,
    });
    expect(transferOf({ protocol: "sftp", op: "close", path: "/a", bytesRead: 0, bytesWritten: 5 })).toMatchObject({
      direction: "upload",
      bytes: 5,
    });
    expect(transferOf({ protocol: "sftp", op: "rename", path: "/a", toPath: "/b" })).toMatchObject({ direction: "none", to_path: "/b" });
    expect(transferOf({ protocol: "ftp", op: "x", path: "/a" })).toBeUndefined();
  });
  it("strips CSI, OSC (BEL and ST ended), C1 CSI and controls from terminal text", () => {
    expect(terminalText("\x1b[31mred\x1b[0m\r\n\x1b]0;title\x07ok\x1b]2;t\x1b\\ \x9b2Jx\x07y\x1b(Bz abc\bd")).toBe("red\nok xyz abd");
  });
  it("FTS phrases double quotes so no FTS5 syntax gets through", () => {
    expect(ftsPhrase('a" OR "b')).toBe('"a"" OR ""b"');
  });
});

describe("sessions", () => {
  it("pages with a total, and --target matches the alias and the target name exactly", () => {
    for (let i = 0; i < 5; i++) session(`s${i}`, "mario", "vm1", "vm1-mario");
    session("t0", "anna", "db", "db-prod");
    session("t1", "x_vm1", "other", "vm2"); // alias "other": an underscore in the user part is not the alias
    store.flush();
    const q = openAuditQuery(file);
    try {
      const page = q.sessions({ limit: 2, offset: 0 });
      expect(page.total).toBe(7);
      expect(page.sessions).toHaveLength(2);
      expect(q.sessions({ limit: 100, offset: 6 }).sessions).toHaveLength(1);
      expect(q.sessions({ target: "vm1", limit: 100, offset: 0 }).total).toBe(5);
      expect(q.sessions({ target: "vm1-mario", limit: 100, offset: 0 }).total).toBe(5);
      expect(q.sessions({ target: "db", limit: 100, offset: 0 }).sessions.map((s) => s.id)).toEqual(["t0"]);
      // Not a LIKE: case and wildcards match nothing.
      expect(q.sessions({ target: "VM1", limit: 100, offset: 0 }).total).toBe(0);
      expect(q.sessions({ target: "%", limit: 100, offset: 0 }).total).toBe(0);
      expect(q.sessions({ target: "v_1", limit: 100, offset: 0 }).total).toBe(0);
    } finally {
      q.close();
    }
  });
});

describe("search", () => {
  it("finds commands, paths and recorded output; query syntax is literal text; needs 3 characters", () => {
    session("s1", "mario", "vm1", "vm1-mario");
    store.append({ type: "exec", sessionId: "s1", uid: "mario", data: { channel: 0, command: "cat /etc/shadow" } });
    store.append({ type: "file", sessionId: "s1", uid: "mario", data: { protocol: "sftp", op: "close", path: "/srv/Secret-Plans.pdf" } });
    const cast = join(dir, "s1.cast");
    writeFileSync(cast, `${JSON.stringify({ version: 2, width: 80, height: 24 })}\n[0.1,"o","\\u001b[1mMAR\\u001b[0mKER-77\\r\\n"]\n`);
    store.recordingStarted("s1", 0, cast);
    const h = hashFile(cast);
    store.recordingClosed("s1", 0, { sha256: h.sha256, bytes: h.bytes, status: "ok" });
    store.flush();
    const q = openAuditQuery(file);
    try {
      expect(q.search("etc/shad", 10).hits).toEqual([expect.objectContaining({ kind: "command", session_id: "s1", uid: "mario" })]);
      expect(q.search("secret-plans", 10).hits.map((x) => x.kind)).toEqual(["path"]);
      // The colour codes split the marker in the file; the index has the text as seen.
      expect(q.search("MARKER-77", 10).hits.map((x) => x.kind)).toEqual(["recording"]);
      expect(q.search('" OR "', 10).hits).toEqual([]);
      expect(q.search("shadow NOT cat", 10).hits).toEqual([]);
      expect(() => q.search("ab", 10)).toThrow(SearchTextError);
      // Incremental: a later event is indexed at the next search; nothing indexed twice.
      store.append({ type: "exec", sessionId: "s1", uid: "mario", data: { channel: 1, command: "cat /etc/shadow.bak" } });
      store.flush();
      expect(q.search("etc/shad", 10).hits).toHaveLength(2);
      expect(q.search("etc/shad", 1)).toMatchObject({ more: true });
    } finally {
      q.close();
    }
  });
});

describe("export", () => {
  it("filters by type, user, alias and after-id; every event has the session fields and file events a transfer", () => {
    session("s1", "mario", "vm1", "vm1-mario");
    session("s2", "anna", "db", "db-prod");
    store.append({ type: "exec", sessionId: "s1", data: { channel: 0, command: "id" } });
    store.append({ type: "file", sessionId: "s2", data: { protocol: "scp", op: "download", path: "/x", size: 3 } });
    store.append({ type: "lock", uid: "zed", data: {} });
    store.flush();
    const q = openAuditQuery(file);
    try {
      const all = q.events({}, "node1");
      expect(all.every((e) => e.node === "node1" && "session_id" in e && "uid" in e && "account" in e && "source" in e)).toBe(true);
      const exec = all.find((e) => e.type === "exec");
      expect(exec).toMatchObject({ uid: "mario", account: "mario_vm1", alias: "vm1", target: "vm1-mario", source: "192.0.2.1" });
      expect(all.find((e) => e.type === "file")?.transfer).toEqual({
        protocol: "scp",
        direction: "download",
        op: "download",
        path: "/x",
        to_path: null,
        bytes: 3,
      });
      expect(q.events({ types: ["exec", "file"] }, "n").map((e) => e.type)).toEqual(["exec", "file"]);
      expect(q.events({ user: "anna" }, "n").map((e) => e.session_id)).toEqual(["s2", "s2"]);
      expect(q.events({ target: "db" }, "n").every((e) => e.session_id === "s2")).toBe(true);
      const mid = all[2]?.id ?? 0;
      expect(q.events({ afterId: mid }, "n").map((e) => e.id)).toEqual(all.slice(3).map((e) => e.id));
      const schema = eventJsonSchema() as { required: string[] };
      for (const e of all) for (const k of schema.required) expect(e).toHaveProperty(k);
    } finally {
      q.close();
    }
  });
});

describe("recording check", () => {
  it("accepts the closed file, refuses an edited file, an edited chained hash, and an open recording", () => {
    session("s1", "mario", "vm1", "vm1-mario");
    const cast = join(dir, "r.cast");
    writeFileSync(cast, `${JSON.stringify({ version: 2, width: 80, height: 24 })}\n[0.1,"o","hi"]\n`);
    store.recordingStarted("s1", 0, cast);
    store.recordingStarted("s1", 1, join(dir, "open.cast"));
    const h = hashFile(cast);
    store.recordingClosed("s1", 0, { sha256: h.sha256, bytes: h.bytes, status: "ok" });
    store.append({ type: "exec", sessionId: "s1", data: { channel: 2, command: "true" } });
    store.flush();
    const q = openAuditQuery(file);
    try {
      expect(q.checkRecording("s1", 0, cast).ok).toBe(true);
      expect(q.checkRecording("s1", 1, join(dir, "open.cast"))).toMatchObject({ ok: false, expected: null });
      writeFileSync(cast, `${JSON.stringify({ version: 2, width: 80, height: 24 })}\n[0.1,"o","ho"]\n`);
      expect(q.checkRecording("s1", 0, cast)).toMatchObject({ ok: false, expected: h.sha256 });
      // The attacker also rewrites the chained hash to the new file's: the event no longer hashes.
      const forged = hashFile(cast).sha256;
      const raw = new Database(file);
      raw.prepare("UPDATE events SET data = replace(data, ?, ?) WHERE type = 'recording'").run(h.sha256, forged);
      raw.close();
      const c = q.checkRecording("s1", 0, cast);
      expect(c.ok).toBe(false);
      expect(c.reason).toContain("edited");
    } finally {
      q.close();
    }
  });
});
