/**
 * The audit store: a SQLite database (better-sqlite3, WAL) holding sessions and events.
 * Every event row carries the SHA-256 of the previous row (a hash chain), so edits are detectable.
 * Callers must never pass passwords, codes or secrets in `data`.
 */
import { createHash } from "node:crypto";
import { mkdirSync } from "node:fs";
import { dirname } from "node:path";
import Database from "better-sqlite3";

/** Event types written by the gateway. */
export type AuditEventType =
  | "login"
  | "login_refused"
  | "route_refused"
  | "session_start"
  | "session_end"
  | "channel_open"
  | "channel_refused"
  | "exec"
  | "shell"
  | "subsystem"
  | "upstream_refused"
  | "host_key_mismatch"
  | "forward";

/** One audit event as appended. `data` is free-form JSON without secrets. */
export interface AuditEventInput {
  readonly type: AuditEventType;
  readonly sessionId?: string | undefined;
  readonly uid?: string | undefined;
  readonly account?: string | undefined;
  readonly target?: string | undefined;
  readonly source?: string | undefined;
  readonly result?: string | undefined;
  readonly data?: Record<string, unknown> | undefined;
}

/** A stored event. `ts` is ISO 8601 UTC. */
export interface AuditEvent extends AuditEventInput {
  readonly id: number;
  readonly ts: string;
  readonly prevHash: string;
  readonly hash: string;
}

/** A session row; byte counts are bytes, `upBytes` = user → target, `downBytes` = target → user. */
export interface AuditSession {
  readonly id: string;
  readonly startedAt: string;
  readonly endedAt: string | null;
  readonly uid: string;
  readonly account: string;
  readonly target: string | null;
  readonly source: string;
  readonly result: string;
  readonly upBytes: number;
  readonly downBytes: number;
  readonly exitStatus: number | null;
}

export interface SessionStart {
  readonly id: string;
  readonly uid: string;
  readonly account: string;
  readonly target: string | null;
  readonly source: string;
}

export interface SessionEnd {
  readonly result: string;
  readonly upBytes: number;
  readonly downBytes: number;
  readonly exitStatus: number | null;
}

export interface SessionFilter {
  readonly user?: string | undefined;
  readonly target?: string | undefined;
  /** Only sessions started at or after this time (ms since epoch). */
  readonly sinceMs?: number | undefined;
  readonly limit?: number | undefined;
}

/** The narrow interface the gateway writes through (injectable in tests). */
export interface AuditSink {
  append(event: AuditEventInput): void;
  startSession(s: SessionStart): void;
  endSession(id: string, end: SessionEnd): void;
}

export interface AuditStore extends AuditSink {
  listSessions(filter?: SessionFilter): AuditSession[];
  sessionEvents(id: string): AuditEvent[];
  allEvents(): AuditEvent[];
  /** Marks sessions left open by a crash as `interrupted`; returns how many. */
  closeInterrupted(): number;
  close(): void;
}

const GENESIS = "0".repeat(64);

const SCHEMA = `
CREATE TABLE IF NOT EXISTS events (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  ts TEXT NOT NULL,
  type TEXT NOT NULL,
  session_id TEXT,
  uid TEXT,
  account TEXT,
  target TEXT,
  source TEXT,
  result TEXT,
  data TEXT NOT NULL,
  prev_hash TEXT NOT NULL,
  hash TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_session ON events(session_id);
CREATE TABLE IF NOT EXISTS sessions (
  id TEXT PRIMARY KEY,
  started_at TEXT NOT NULL,
  ended_at TEXT,
  uid TEXT NOT NULL,
  account TEXT NOT NULL,
  target TEXT,
  source TEXT NOT NULL,
  result TEXT NOT NULL DEFAULT 'open',
  up_bytes INTEGER NOT NULL DEFAULT 0,
  down_bytes INTEGER NOT NULL DEFAULT 0,
  exit_status INTEGER
);
CREATE INDEX IF NOT EXISTS sessions_started ON sessions(started_at);
`;

/** The canonical encoding hashed into the chain: fixed field order, JSON. */
export function canonicalEvent(e: Omit<AuditEvent, "hash">): string {
  return JSON.stringify([
    e.id,
    e.ts,
    e.type,
    e.sessionId ?? null,
    e.uid ?? null,
    e.account ?? null,
    e.target ?? null,
    e.source ?? null,
    e.result ?? null,
    e.data ?? {},
    e.prevHash,
  ]);
}

export function hashEvent(e: Omit<AuditEvent, "hash">): string {
  return createHash("sha256").update(canonicalEvent(e)).digest("hex");
}

interface EventRow {
  id: number;
  ts: string;
  type: string;
  session_id: string | null;
  uid: string | null;
  account: string | null;
  target: string | null;
  source: string | null;
  result: string | null;
  data: string;
  prev_hash: string;
  hash: string;
}

interface SessionRow {
  id: string;
  started_at: string;
  ended_at: string | null;
  uid: string;
  account: string;
  target: string | null;
  source: string;
  result: string;
  up_bytes: number;
  down_bytes: number;
  exit_status: number | null;
}

function toEvent(r: EventRow): AuditEvent {
  return {
    id: r.id,
    ts: r.ts,
    type: r.type as AuditEventType,
    sessionId: r.session_id ?? undefined,
    uid: r.uid ?? undefined,
    account: r.account ?? undefined,
    target: r.target ?? undefined,
    source: r.source ?? undefined,
    result: r.result ?? undefined,
    data: JSON.parse(r.data) as Record<string, unknown>,
    prevHash: r.prev_hash,
    hash: r.hash,
  };
}

function toSession(r: SessionRow): AuditSession {
  return {
    id: r.id,
    startedAt: r.started_at,
    endedAt: r.ended_at,
    uid: r.uid,
    account: r.account,
    target: r.target,
    source: r.source,
    result: r.result,
    upBytes: r.up_bytes,
    downBytes: r.down_bytes,
    exitStatus: r.exit_status,
  };
}

/**
 * Opens (creating if needed) the audit database at `file` in WAL mode.
 * `now` is injectable for tests. Writes are synchronous and committed on return.
 */
export function openAuditStore(file: string, now: () => Date = () => new Date()): AuditStore {
  mkdirSync(dirname(file), { recursive: true, mode: 0o750 });
  const db = new Database(file);
  db.pragma("journal_mode = WAL");
  db.pragma("synchronous = NORMAL");
  db.pragma("busy_timeout = 5000");
  db.exec(SCHEMA);

  const lastStmt = db.prepare<[], { id: number; hash: string }>("SELECT id, hash FROM events ORDER BY id DESC LIMIT 1");
  const insertStmt = db.prepare(
    `INSERT INTO events (id, ts, type, session_id, uid, account, target, source, result, data, prev_hash, hash)
     VALUES (@id, @ts, @type, @session_id, @uid, @account, @target, @source, @result, @data, @prev_hash, @hash)`,
  );
  const append = db.transaction((e: AuditEventInput) => {
    const last = lastStmt.get();
    const base: Omit<AuditEvent, "hash"> = {
      ...e,
      id: (last?.id ?? 0) + 1,
      ts: now().toISOString(),
      data: e.data ?? {},
      prevHash: last?.hash ?? GENESIS,
    };
    const hash = hashEvent(base);
    insertStmt.run({
      id: base.id,
      ts: base.ts,
      type: base.type,
      session_id: base.sessionId ?? null,
      uid: base.uid ?? null,
      account: base.account ?? null,
      target: base.target ?? null,
      source: base.source ?? null,
      result: base.result ?? null,
      data: JSON.stringify(base.data),
      prev_hash: base.prevHash,
      hash,
    });
  });

  const startStmt = db.prepare("INSERT INTO sessions (id, started_at, uid, account, target, source) VALUES (?, ?, ?, ?, ?, ?)");
  const endStmt = db.prepare("UPDATE sessions SET ended_at = ?, result = ?, up_bytes = ?, down_bytes = ?, exit_status = ? WHERE id = ?");

  return {
    append: (e) => append(e),
    startSession(s) {
      db.transaction(() => {
        startStmt.run(s.id, now().toISOString(), s.uid, s.account, s.target, s.source);
        append({ type: "session_start", sessionId: s.id, uid: s.uid, account: s.account, target: s.target ?? undefined, source: s.source });
      })();
    },
    endSession(id, end) {
      db.transaction(() => {
        endStmt.run(now().toISOString(), end.result, end.upBytes, end.downBytes, end.exitStatus, id);
        append({
          type: "session_end",
          sessionId: id,
          result: end.result,
          data: { up_bytes: end.upBytes, down_bytes: end.downBytes, exit_status: end.exitStatus },
        });
      })();
    },
    listSessions(filter = {}) {
      const where: string[] = [];
      const args: unknown[] = [];
      if (filter.user) {
        where.push("uid = ?");
        args.push(filter.user);
      }
      if (filter.target) {
        where.push("target = ?");
        args.push(filter.target);
      }
      if (filter.sinceMs !== undefined) {
        where.push("started_at >= ?");
        args.push(new Date(filter.sinceMs).toISOString());
      }
      const sql = `SELECT * FROM sessions ${where.length ? `WHERE ${where.join(" AND ")}` : ""} ORDER BY started_at DESC, rowid DESC LIMIT ?`;
      args.push(filter.limit ?? 1000);
      return (db.prepare(sql).all(...args) as SessionRow[]).map(toSession);
    },
    sessionEvents(id) {
      return (db.prepare("SELECT * FROM events WHERE session_id = ? ORDER BY id").all(id) as EventRow[]).map(toEvent);
    },
    allEvents() {
      return (db.prepare("SELECT * FROM events ORDER BY id").all() as EventRow[]).map(toEvent);
    },
    closeInterrupted() {
      const open = db.prepare("SELECT id FROM sessions WHERE ended_at IS NULL").all() as Array<{ id: string }>;
      for (const { id } of open) {
        const row = db.prepare("SELECT up_bytes, down_bytes FROM sessions WHERE id = ?").get(id) as {
          up_bytes: number;
          down_bytes: number;
        };
        this.endSession(id, { result: "interrupted", upBytes: row.up_bytes, downBytes: row.down_bytes, exitStatus: null });
      }
      return open.length;
    },
    close() {
      db.close();
    },
  };
}
