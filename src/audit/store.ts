/**
 * The audit store: a SQLite database (better-sqlite3, WAL) holding sessions and events.
 * Every event row carries the SHA-256 of the previous row (a hash chain), so edits are detectable.
 * Callers must never pass passwords, codes or secrets in `data`.
 */
import { createHash, type KeyObject, sign } from "node:crypto";
import { mkdirSync, readFileSync } from "node:fs";
import { dirname } from "node:path";
import Database from "better-sqlite3";
import { type VerifyIssue, type VerifyResult, verifyAuditDb } from "./verify.ts";

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
  | "forward"
  | "file"
  | "transfer_unparsed"
  | "recording"
  | "recording_failed"
  | "audit_pruned"
  | "lock"
  | "unlock"
  | "break_glass"
  | "recovery_code_used"
  | "enrolled"
  | "enrolment_invited"
  | "totp_reset"
  | "policy_reload"
  | "route_removed";

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
  /** Only sessions started before this time (ms since epoch). */
  readonly untilMs?: number | undefined;
  readonly result?: string | undefined;
  readonly limit?: number | undefined;
}

/** A recording's row: where it is and the SHA-256 it had when it was closed. */
export interface RecordingRow {
  readonly sessionId: string;
  readonly channel: number;
  readonly path: string;
  readonly sha256: string | null;
  readonly bytes: number;
  readonly status: string;
}

/** A problem `verify()` found, named so an auditor can find it (see verify.ts). */
export type VerifyProblem = VerifyIssue;

/** `verifyAuditDb`'s result plus `problem`, the first issue (if any). */
export interface VerifyReport extends VerifyResult {
  readonly problem?: VerifyProblem | undefined;
}

/** A row of the `seals` table: the forward-secure HMAC seal of one chain head (or prune checkpoint), see seal.ts. */
export interface SealRow {
  /** `head`: the chain head at a periodic seal (anchored in the log); `checkpoint`: a prune checkpoint's (pruned_through_id, last_hash). */
  readonly kind: "head" | "checkpoint";
  readonly eventId: number;
  /** Index of the ratchet key that made `seal` (0 = the verification key K0). */
  readonly epoch: number;
  readonly hash: string;
  readonly node: string;
  /** ISO 8601 UTC. */
  readonly ts: string;
  /** Hex HMAC-SHA256. */
  readonly seal: string;
}

/**
 * One sealing step, run by the store inside its write transaction: seals (eventId, hash) with the
 * current key, ratchets and persists the next key, and returns the epoch, node and seal to store.
 * Throwing aborts the transaction (nothing is stored).
 */
export type SealStep = (what: { kind: "head" | "checkpoint"; eventId: number; hash: string }) => {
  epoch: number;
  node: string;
  seal: string;
};

/** The narrow interface the gateway writes through (injectable in tests). */
export interface AuditSink {
  /** Appends an event: committed before returning, except high-rate types (file, login_refused, channel_refused), committed within the tick. */
  append(event: AuditEventInput): void;
  /** Commits the session row and its session_start event before returning. */
  startSession(s: SessionStart): void;
  endSession(id: string, end: SessionEnd): void;
  /** Commits the row of a recording being written (status open) before returning. */
  recordingStarted(sessionId: string, channel: number, path: string): void;
  /** Stores the recording's SHA-256 and chains a `recording` event with it. */
  recordingClosed(sessionId: string, channel: number, r: { sha256: string; bytes: number; status: string }): void;
  /** Commits everything queued. */
  flush(): void;
  /** Whether the database accepts writes right now (takes and releases a write lock). */
  writable(): boolean;
}

export interface AuditStore extends AuditSink {
  listSessions(filter?: SessionFilter): AuditSession[];
  /** The session with this id or, if unique, id prefix (as printed by `audit list`). */
  findSession(idOrPrefix: string): AuditSession | undefined;
  sessionEvents(id: string): AuditEvent[];
  allEvents(): AuditEvent[];
  /** Events in id order from `sinceMs` on, in pages (for export). */
  eventsSince(sinceMs: number, afterId: number, limit: number): AuditEvent[];
  recordings(sessionId?: string): RecordingRow[];
  /** Marks sessions (and recordings) left open by a crash as `interrupted`; returns how many sessions. */
  closeInterrupted(): number;
  /** Commits what is queued, then runs `verifyAuditDb` on this file (chain, rows, recording files; with `publicKey`, the signed checkpoints). */
  verify(publicKey?: KeyObject): VerifyReport;
  /** Signs the chain head with an ed25519 key if it moved since the last signature; returns the signed event id. */
  signHead(privateKey: KeyObject): number | undefined;
  /**
   * Seals the chain head with `step` if it moved since the newest seal, in one write transaction
   * (read head, seal, insert the `seals` row). Returns the stored row, or undefined if there was nothing new.
   */
  sealHead(step: SealStep): SealRow | undefined;
  /**
   * Deletes events and sessions older than `beforeMs`, keeping the chain verifiable with a checkpoint.
   * With `seal`, the checkpoint (pruned_through_id, last_hash) is sealed in the same transaction.
   * Returns rows deleted.
   */
  prune(beforeMs: number, seal?: SealStep): { events: number; sessions: number; recordings: string[] };
  close(): void;
}

const GENESIS = "0".repeat(64);

/** High-rate event types committed in batches (once per tick); every other type is committed at once. */
const BATCHED: ReadonlySet<AuditEventType> = new Set(["file", "login_refused", "channel_refused"]);

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
CREATE TABLE IF NOT EXISTS recordings (
  session_id TEXT NOT NULL,
  channel INTEGER NOT NULL,
  path TEXT NOT NULL,
  sha256 TEXT,
  bytes INTEGER NOT NULL DEFAULT 0,
  status TEXT NOT NULL DEFAULT 'open',
  PRIMARY KEY (session_id, channel)
);
CREATE TABLE IF NOT EXISTS signatures (
  event_id INTEGER PRIMARY KEY,
  hash TEXT NOT NULL,
  ts TEXT NOT NULL,
  signature TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS seals (
  event_id INTEGER NOT NULL,
  epoch INTEGER NOT NULL,
  hash TEXT NOT NULL,
  node TEXT NOT NULL,
  ts TEXT NOT NULL,
  seal TEXT NOT NULL,
  kind TEXT NOT NULL DEFAULT 'head'
);
CREATE TABLE IF NOT EXISTS checkpoints (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  ts TEXT NOT NULL,
  pruned_through_id INTEGER NOT NULL,
  last_hash TEXT NOT NULL
);
`;

/**
 * The canonical encoding hashed into the chain: a JSON array in fixed field order
 * `[id, ts, type, session_id, uid, account, target, source, result, data, prev_hash]`,
 * where `data` is the exact JSON text stored in the row.
 */
export function canonicalEvent(e: Omit<AuditEvent, "hash">): string {
  return canonicalParts(e.id, e.ts, e, JSON.stringify(e.data ?? {}), e.prevHash);
}

/** The canonical encoding from its parts; `dataJson` is the exact JSON text stored in the row. */
export function canonicalParts(id: number, ts: string, e: AuditEventInput, dataJson: string, prev: string): string {
  const j = (v: string | undefined) => (v === undefined ? "null" : JSON.stringify(v));
  return `[${id},${j(ts)},${j(e.type)},${j(e.sessionId)},${j(e.uid)},${j(e.account)},${j(e.target)},${j(e.source)},${j(e.result)},${dataJson},${j(prev)}]`;
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
 * `append` queues events and commits them in one transaction per tick (fast, ordered); session
 * starts and recording starts are committed before the call returns. `now` is injectable for tests.
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
    "INSERT INTO events (id, ts, type, session_id, uid, account, target, source, result, data, prev_hash, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
  );
  type Queued = { e: AuditEventInput; ts: string };
  let queue: Queued[] = [];
  let scheduled = false;

  /** Writes queued events; hashes are computed here, inside the transaction, from the last stored row. */
  const writeQueued = db.transaction((items: Queued[]) => {
    const last = lastStmt.get();
    let id = last?.id ?? 0;
    let prev = last?.hash ?? GENESIS;
    for (const { e, ts } of items) {
      id += 1;
      const data = JSON.stringify(e.data ?? {});
      const hash = createHash("sha256")
        .update(canonicalParts(id, ts, e, data, prev))
        .digest("hex");
      insertStmt.run(
        id,
        ts,
        e.type,
        e.sessionId ?? null,
        e.uid ?? null,
        e.account ?? null,
        e.target ?? null,
        e.source ?? null,
        e.result ?? null,
        data,
        prev,
        hash,
      );
      prev = hash;
    }
  });
  const flush = () => {
    if (queue.length === 0 || !db.open) return;
    const items = queue;
    queue = [];
    writeQueued(items);
  };
  const append = (e: AuditEventInput) => {
    queue.push({ e, ts: now().toISOString() });
    // Events that precede something the gateway then does (an exec reaching the target, a login
    // being accepted) are committed before append returns; only high-rate ones wait for the tick.
    if (!BATCHED.has(e.type)) {
      flush();
      return;
    }
    if (!scheduled) {
      scheduled = true;
      setImmediate(() => {
        scheduled = false;
        if (db.open) flush();
      });
    }
  };
  const appendNow = (e: AuditEventInput) => {
    queue.push({ e, ts: now().toISOString() });
    flush();
  };

  const startStmt = db.prepare("INSERT INTO sessions (id, started_at, uid, account, target, source) VALUES (?, ?, ?, ?, ?, ?)");
  const endStmt = db.prepare("UPDATE sessions SET ended_at = ?, result = ?, up_bytes = ?, down_bytes = ?, exit_status = ? WHERE id = ?");
  const endSession = (id: string, end: SessionEnd) => {
    if (!db.open) return;
    db.transaction(() => {
      flush();
      endStmt.run(now().toISOString(), end.result, end.upBytes, end.downBytes, end.exitStatus, id);
      appendNow({
        type: "session_end",
        sessionId: id,
        result: end.result,
        data: { up_bytes: end.upBytes, down_bytes: end.downBytes, exit_status: end.exitStatus },
      });
    })();
  };
  const recordingClosed = (sessionId: string, channel: number, r: { sha256: string; bytes: number; status: string }) => {
    if (!db.open) return;
    db.transaction(() => {
      flush();
      const row = db.prepare("SELECT path FROM recordings WHERE session_id = ? AND channel = ?").get(sessionId, channel) as
        | { path: string }
        | undefined;
      db.prepare("UPDATE recordings SET sha256 = ?, bytes = ?, status = ? WHERE session_id = ? AND channel = ?").run(
        r.sha256,
        r.bytes,
        r.status,
        sessionId,
        channel,
      );
      appendNow({
        type: "recording",
        sessionId,
        result: r.status,
        data: { channel, path: row?.path ?? null, sha256: r.sha256, bytes: r.bytes },
      });
    })();
  };

  const insertSeal = (kind: SealRow["kind"], eventId: number, hash: string, step: SealStep): SealRow => {
    const s = step({ kind, eventId, hash });
    const row: SealRow = { kind, eventId, hash, epoch: s.epoch, node: s.node, seal: s.seal, ts: now().toISOString() };
    db.prepare("INSERT INTO seals (event_id, epoch, hash, node, ts, seal, kind) VALUES (?, ?, ?, ?, ?, ?, ?)").run(
      row.eventId,
      row.epoch,
      row.hash,
      row.node,
      row.ts,
      row.seal,
      row.kind,
    );
    return row;
  };

  const store: AuditStore = {
    append,
    flush,
    writable() {
      try {
        db.exec("BEGIN IMMEDIATE; ROLLBACK;");
        return true;
      } catch {
        return false;
      }
    },
    startSession(s) {
      db.transaction(() => {
        flush();
        startStmt.run(s.id, now().toISOString(), s.uid, s.account, s.target, s.source);
        appendNow({
          type: "session_start",
          sessionId: s.id,
          uid: s.uid,
          account: s.account,
          target: s.target ?? undefined,
          source: s.source,
        });
      })();
    },
    endSession,
    recordingStarted(sessionId, channel, path) {
      if (!db.open) return;
      db.prepare("INSERT OR REPLACE INTO recordings (session_id, channel, path, status) VALUES (?, ?, ?, 'open')").run(
        sessionId,
        channel,
        path,
      );
    },
    recordingClosed,
    listSessions(filter = {}) {
      flush();
      const where: string[] = [];
      const args: unknown[] = [];
      const add = (sql: string, v: unknown) => {
        where.push(sql);
        args.push(v);
      };
      if (filter.user) add("uid = ?", filter.user);
      if (filter.target) add("target = ?", filter.target);
      if (filter.result) add("result = ?", filter.result);
      if (filter.sinceMs !== undefined) add("started_at >= ?", new Date(filter.sinceMs).toISOString());
      if (filter.untilMs !== undefined) add("started_at < ?", new Date(filter.untilMs).toISOString());
      const sql = `SELECT * FROM sessions ${where.length ? `WHERE ${where.join(" AND ")}` : ""} ORDER BY started_at DESC, rowid DESC LIMIT ?`;
      args.push(filter.limit ?? 1000);
      return (db.prepare(sql).all(...args) as SessionRow[]).map(toSession);
    },
    findSession(idOrPrefix) {
      const rows = db
        .prepare("SELECT * FROM sessions WHERE id = ? OR substr(id, 1, length(?)) = ? ORDER BY id = ? DESC LIMIT 2")
        .all(idOrPrefix, idOrPrefix, idOrPrefix, idOrPrefix) as SessionRow[];
      const exact = rows.find((r) => r.id === idOrPrefix);
      return exact ? toSession(exact) : rows.length === 1 && rows[0] ? toSession(rows[0]) : undefined;
    },
    sessionEvents(id) {
      flush();
      return (db.prepare("SELECT * FROM events WHERE session_id = ? ORDER BY id").all(id) as EventRow[]).map(toEvent);
    },
    allEvents() {
      flush();
      return (db.prepare("SELECT * FROM events ORDER BY id").all() as EventRow[]).map(toEvent);
    },
    eventsSince(sinceMs, afterId, limit) {
      flush();
      return (
        db
          .prepare("SELECT * FROM events WHERE ts >= ? AND id > ? ORDER BY id LIMIT ?")
          .all(new Date(sinceMs).toISOString(), afterId, limit) as EventRow[]
      ).map(toEvent);
    },
    recordings(sessionId) {
      const rows = (
        sessionId
          ? db.prepare("SELECT * FROM recordings WHERE session_id = ? ORDER BY channel").all(sessionId)
          : db.prepare("SELECT * FROM recordings ORDER BY session_id, channel").all()
      ) as Array<{ session_id: string; channel: number; path: string; sha256: string | null; bytes: number; status: string }>;
      return rows.map((r) => ({
        sessionId: r.session_id,
        channel: r.channel,
        path: r.path,
        sha256: r.sha256,
        bytes: r.bytes,
        status: r.status,
      }));
    },
    closeInterrupted() {
      flush();
      const openRecordings = db.prepare("SELECT session_id, channel, path FROM recordings WHERE status = 'open'").all() as Array<{
        session_id: string;
        channel: number;
        path: string;
      }>;
      for (const r of openRecordings) {
        const { sha256, bytes } = hashFile(r.path);
        recordingClosed(r.session_id, r.channel, { sha256, bytes, status: "interrupted" });
      }
      const open = db.prepare("SELECT id, up_bytes, down_bytes FROM sessions WHERE ended_at IS NULL").all() as Array<{
        id: string;
        up_bytes: number;
        down_bytes: number;
      }>;
      for (const row of open)
        endSession(row.id, { result: "interrupted", upBytes: row.up_bytes, downBytes: row.down_bytes, exitStatus: null });
      return open.length;
    },
    verify(publicKey) {
      flush();
      const report = verifyAuditDb(file, { publicKey });
      return { ...report, problem: report.issues[0] };
    },
    signHead(privateKey) {
      flush();
      const head = lastStmt.get();
      if (!head) return undefined;
      const last = db.prepare("SELECT event_id FROM signatures ORDER BY event_id DESC LIMIT 1").get() as { event_id: number } | undefined;
      if (last?.event_id === head.id) return undefined;
      const signature = sign(null, Buffer.from(checkpointMessage(head.id, head.hash)), privateKey).toString("base64");
      db.prepare("INSERT INTO signatures (event_id, hash, ts, signature) VALUES (?, ?, ?, ?)").run(
        head.id,
        head.hash,
        now().toISOString(),
        signature,
      );
      return head.id;
    },
    sealHead(step) {
      flush();
      return db
        .transaction((): SealRow | undefined => {
          const head = lastStmt.get();
          if (!head) return undefined;
          const last = db.prepare("SELECT event_id, hash FROM seals WHERE kind = 'head' ORDER BY epoch DESC, rowid DESC LIMIT 1").get() as
            | { event_id: number; hash: string }
            | undefined;
          if (last?.event_id === head.id && last.hash === head.hash) return undefined;
          return insertSeal("head", head.id, head.hash, step);
        })
        .immediate();
    },
    prune(beforeMs, seal) {
      flush();
      const cutoff = new Date(beforeMs).toISOString();
      return db.transaction(() => {
        const lastOld = db.prepare("SELECT id, hash FROM events WHERE ts < ? ORDER BY id DESC LIMIT 1").get(cutoff) as
          | { id: number; hash: string }
          | undefined;
        if (!lastOld) return { events: 0, sessions: 0, recordings: [] as string[] };
        const oldSessions = db.prepare("SELECT id FROM sessions WHERE started_at < ? AND ended_at IS NOT NULL").all(cutoff) as Array<{
          id: string;
        }>;
        const ids = new Set(oldSessions.map((r) => r.id));
        // Keep every event of a session that is kept, so its rows stay checkable: prune only below the first such event.
        const keepFrom = db
          .prepare(
            "SELECT MIN(e.id) AS id FROM events e WHERE e.id <= ? AND e.session_id IS NOT NULL AND e.session_id NOT IN (SELECT id FROM sessions WHERE started_at < ? AND ended_at IS NOT NULL) AND e.session_id IN (SELECT id FROM sessions)",
          )
          .get(lastOld.id, cutoff) as { id: number | null };
        const through = keepFrom.id !== null ? keepFrom.id - 1 : lastOld.id;
        if (through < 1) return { events: 0, sessions: 0, recordings: [] as string[] };
        const boundary = db.prepare("SELECT hash FROM events WHERE id = ?").get(through) as { hash: string };
        db.prepare("INSERT INTO checkpoints (ts, pruned_through_id, last_hash) VALUES (?, ?, ?)").run(
          now().toISOString(),
          through,
          boundary.hash,
        );
        if (seal) insertSeal("checkpoint", through, boundary.hash, seal);
        const events = db.prepare("DELETE FROM events WHERE id <= ?").run(through).changes;
        const pruneIds = [...ids].filter(
          (id) => (db.prepare("SELECT COUNT(*) AS n FROM events WHERE session_id = ?").get(id) as { n: number }).n === 0,
        );
        const recordings: string[] = [];
        for (const id of pruneIds) {
          for (const r of db.prepare("SELECT path FROM recordings WHERE session_id = ?").all(id) as Array<{ path: string }>)
            recordings.push(r.path);
          db.prepare("DELETE FROM recordings WHERE session_id = ?").run(id);
          db.prepare("DELETE FROM sessions WHERE id = ?").run(id);
        }
        appendNow({
          type: "audit_pruned",
          result: "ok",
          data: { before: cutoff, pruned_through_id: through, events, sessions: pruneIds.length },
        });
        return { events, sessions: pruneIds.length, recordings };
      })();
    },
    close() {
      if (!db.open) return;
      flush();
      db.close();
    },
  };
  return store;
}

/** SHA-256 and size of a file; a missing file hashes as the empty string's digest with size -1. */
export function hashFile(path: string): { sha256: string; bytes: number } {
  try {
    const buf = readFileSync(path);
    return { sha256: createHash("sha256").update(buf).digest("hex"), bytes: buf.length };
  } catch {
    return { sha256: createHash("sha256").digest("hex"), bytes: -1 };
  }
}

/** The bytes an audit checkpoint signature covers. */
export function checkpointMessage(eventId: number, hash: string): string {
  return `varco-audit-checkpoint:v1:${eventId}:${hash}`;
}
