/**
 * What keeps the console fast with a big trail without slowing the gateway: the indexed SQL alias
 * (the same answer as `accountAlias`, hostile spellings included, and the index is used), the
 * search index in its own database (indexing never takes the audit database's write lock), and
 * the audit worker (index and recording checks off the event loop).
 */
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import Database from "better-sqlite3";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { accountAlias, openAuditQuery, searchIndexFile } from "../../src/audit/query.ts";
import { ACCOUNT_ALIAS_SQL, type AuditStore, openAuditStore } from "../../src/audit/store.ts";

let dir: string;
let file: string;
let store: AuditStore;

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), "varco-webperf-"));
  file = join(dir, "audit.db");
  store = openAuditStore(file);
});
afterEach(() => {
  store.close();
  rmSync(dir, { recursive: true, force: true });
});

describe("the indexed alias", () => {
  it("is accountAlias in SQL for every spelling, and the alias filter uses its index", () => {
    const accounts = [
      "mario.rossi_vm1",
      "a_b_c",
      "plain",
      "a_",
      "_x",
      "__",
      "x_vm1_",
      "ü_ñ_日本",
      "日本_語",
      "é_e",
      "e_é",
      "a%_%",
      "a_[x]*?",
      "x_VM1",
      "ab_ba",
      "bab_aab",
    ];
    const db = new Database(":memory:");
    for (const a of accounts) {
      const r = db.prepare(`SELECT ${ACCOUNT_ALIAS_SQL} AS alias FROM (SELECT ? AS account)`).get(a) as { alias: string | null };
      expect(r.alias, a).toBe(accountAlias(a));
    }
    // SQLite's string functions stop at a NUL: such an account (never one of a session: the account
    // syntax check refuses control characters before a session starts) gets no alias, never another one.
    const nul = db.prepare(`SELECT ${ACCOUNT_ALIAS_SQL} AS alias FROM (SELECT ? AS account)`).get("a\u0000b_c") as { alias: string | null };
    expect(nul.alias === "" || nul.alias === null).toBe(true);
    db.close();
    store.startSession({ id: "s1", uid: "mario", account: "mario_vm1", target: "t1", source: "192.0.2.1" });
    store.flush();
    const plain = new Database(file, { readonly: true });
    const plan = plain
      .prepare(`EXPLAIN QUERY PLAN SELECT COUNT(*) FROM sessions WHERE (target = ? OR ${ACCOUNT_ALIAS_SQL} = ?)`)
      .all("vm1", "vm1") as Array<{ detail: string }>;
    plain.close();
    expect(plan.map((p) => p.detail).join("\n")).toMatch(/sessions_alias/);
    expect(plan.map((p) => p.detail).join("\n")).toMatch(/sessions_target/);
  });
});

describe("the search index database", () => {
  it("is a file of its own: indexing goes on while another connection holds the audit database's write lock", () => {
    store.startSession({ id: "s1", uid: "mario", account: "mario_vm1", target: "t1", source: "192.0.2.1" });
    store.append({ type: "exec", sessionId: "s1", uid: "mario", data: { command: "cat /etc/shadow", channel: 0 } });
    const cast = join(dir, "s1-1.cast");
    writeFileSync(cast, `${JSON.stringify({ version: 2, width: 80, height: 24 })}\n${JSON.stringify([0.1, "o", "MARKER-77\r\n"])}\n`);
    store.recordingStarted("s1", 1, cast);
    store.recordingClosed("s1", 1, { sha256: "0".repeat(64), bytes: 1, status: "ok" });
    store.flush();
    const writer = new Database(file);
    writer.pragma("busy_timeout = 0");
    writer.exec("BEGIN IMMEDIATE");
    const q = openAuditQuery(file, { busyTimeoutMs: 50 });
    try {
      // Before: the index tables were in the audit database, and this failed with SQLITE_BUSY.
      expect(q.index()).toMatchObject({ events: 1, recordings: 1, done: true });
      expect(q.searchIndexed("etc/shad", 10).hits.map((h) => h.kind)).toEqual(["command"]);
      expect(q.searchIndexed("MARKER-77", 10).hits.map((h) => h.kind)).toEqual(["recording"]);
    } finally {
      writer.exec("ROLLBACK");
      writer.close();
      q.close();
    }
    expect(searchIndexFile(file)).toBe(join(dir, "audit-search.db"));
    expect(searchIndexFile("/x/trail")).toBe("/x/trail-search.db");
    const audit = new Database(file, { readonly: true });
    const tables = audit.prepare("SELECT name FROM sqlite_master WHERE name LIKE 'search%'").all();
    audit.close();
    expect(tables).toEqual([]);
  });
  it("indexes in bounded slices: maxMs stops early and the next call goes on where it stopped", () => {
    store.startSession({ id: "s1", uid: "mario", account: "mario_vm1", target: "t1", source: "192.0.2.1" });
    for (let i = 0; i < 3000; i++)
      store.append({ type: "file", sessionId: "s1", uid: "mario", data: { protocol: "scp", op: "upload", path: `/p/f-${i}` } });
    store.flush();
    const q = openAuditQuery(file);
    try {
      const first = q.index({ pageEvents: 100, maxMs: 0 });
      expect(first).toMatchObject({ events: 99, done: false }); // the first page holds the session_start too
      let total = first.events;
      for (let i = 0; i < 100; i++) {
        const r = q.index({ pageEvents: 100, maxMs: 0 });
        total += r.events;
        if (r.done) break;
      }
      expect(total).toBe(3000);
      expect(q.searchIndexed("/p/f-2999", 10).hits).toHaveLength(1);
      expect(q.search("/p/f-1234", 10).hits).toHaveLength(1);
    } finally {
      q.close();
    }
  });
});
