/**
 * The audit store: a SQLite database (better-sqlite3, WAL) holding sessions and events.
 * Every event row carries the SHA-256 of the previous row (a hash chain), so edits are detectable.
 * Callers must never pass passwords, codes or secrets in `data`.
 */
import { createHash, type KeyObject, sign } from "node:crypto";
import { mkdirSync, readFileSync } from "node:fs";
import { dirname } from "node:path";
import Database from "better-sqlite3";
import type { ReplicaEventRow, ReplicaSessionRow } from "../state/audit-replica.ts";
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
  | "recording_checkpoint"
  | "recording_failed"
  | "exec_output"
  | "audit_pruned"
  | "lock"
  | "unlock"
  | "break_glass"
  | "recovery_code_used"
  | "enrolled"
  | "enrolment_invited"
  | "totp_reset"
  | "mfa_remembered"
  | "mfa_forgotten"
  | "policy_reload"
  | "route_removed"
  | "web_login"
  | "web_login_refused"
  | "web_logout"
  | "web_view"
  | "web_csrf_refused"
  | "session_terminated"
  | "menu_choice";

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
  /** The gateway that served it (`gateway.node`), when the trail spans nodes (shared PostgreSQL state). */
  readonly node?: string | undefined;
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

/** The audit's state for /healthz: `ok` false while writes fail or too many events wait; `detail` says why (no secrets). */
export interface AuditHealth {
  readonly ok: boolean;
  readonly detail: string;
}

/**
 * The narrow interface the gateway writes through (injectable in tests).
 *
 * Failure contract: the calls that precede something the gateway then does, or that a session needs
 * (`append` of a non-batched type, `startSession`, `endSession`, `recordingStarted`,
 * `recordingClosed`) throw {@link AuditWriteError} when the database refuses the write (locked past
 * busy_timeout, disk full, I/O error); the caller must not go on as if it was written. Batched events
 * never throw: a failed batch goes back at the head of the queue, in order, and is retried.
 */
export interface AuditSink {
  /**
   * Appends an event: committed before returning, except high-rate types (file, login_refused,
   * channel_refused, policy_reload), queued and committed within the tick.
   * @throws AuditWriteError for a non-batched type the database did not commit (that event is not kept).
   * @throws TypeError when `data` cannot be serialised as JSON (checked before anything is queued).
   */
  append(event: AuditEventInput): void;
  /** Commits the session row and its session_start event before returning. @throws AuditWriteError */
  startSession(s: SessionStart): void;
  /**
   * Commits the session's end and its session_end event.
   * @throws AuditWriteError when it could not be committed now; the end stays queued (in order) and is written by the retry.
   */
  endSession(id: string, end: SessionEnd): void;
  /** Commits the row of a recording being written (status open) before returning. @throws AuditWriteError */
  recordingStarted(sessionId: string, channel: number, path: string): void;
  /**
   * Stores the recording's SHA-256 and chains a `recording` event with it.
   * @throws AuditWriteError when it could not be committed now; it stays queued (in order) and is written by the retry.
   */
  recordingClosed(sessionId: string, channel: number, r: { sha256: string; bytes: number; status: string }): void;
  /** Commits everything queued; never throws (what fails stays queued and is retried). */
  flush(): void;
  /** `healthy().ok` (kept for older callers; takes no lock). */
  writable(): boolean;
  /**
   * Whether audit writes succeed: not ok since the last write failed until one succeeds again, or
   * while at least 100 000 events wait in the queue. While not ok it probes with a real write at
   * most once a second; while ok it does no I/O.
   */
  healthy(): AuditHealth;
}

/**
 * A write the audit could not commit (SQLite said SQLITE_BUSY past busy_timeout, SQLITE_FULL,
 * SQLITE_IOERR…). `code` is SQLite's extended code name; the message names the call and SQLite's
 * text only (no event content, so no secret can leak through it).
 */
export class AuditWriteError extends Error {
  override readonly name = "AuditWriteError";
  constructor(
    /** Which store call failed (e.g. `append login`, `startSession`). */
    readonly call: string,
    /** SQLite's error code, e.g. `SQLITE_BUSY`, `SQLITE_FULL`, `SQLITE_IOERR_WRITE`. */
    readonly code: string,
    message: string,
  ) {
    super(`the audit log cannot be written (${call}): ${code}: ${message}`);
  }
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

/**
 * Event types committed in batches (once per tick) and never lost: high-rate ones, and facts recorded
 * after the fact by callers that cannot stop anything (a policy reload already happened). Every other
 * type is committed before `append` returns.
 */
const BATCHED: ReadonlySet<AuditEventType> = new Set(["file", "login_refused", "channel_refused", "policy_reload", "recording_checkpoint"]);

/** Events waiting past this many: `healthy()` is not ok (new sessions are refused); nothing is dropped. */
export const AUDIT_QUEUE_LIMIT = 100_000;
/** busy_timeout (ms) while writes succeed: a second writer (the CLI) is waited for this long. */
const BUSY_TIMEOUT_MS = 5000;
/** busy_timeout (ms) while writes fail: a known-bad database does not freeze the event loop 5 s per call. */
const BUSY_TIMEOUT_FAILING_MS = 250;
/** Retry backoff of the queue after a failed batch: next tick, then 50 ms doubling up to 5 s. */
const RETRY_MIN_MS = 50;
const RETRY_MAX_MS = 5000;
/** While unhealthy, `healthy()` probes with a real write at most this often (ms). */
const PROBE_INTERVAL_MS = 1000;

/**
 * The route alias of `sessions.account` in SQL (the part after the last `_`, NULL without one; the
 * same as query.ts `accountAlias`): built-in functions only, so it can be indexed and the store's
 * own connection needs nothing registered. `rtrim(a, replace(a, '_', ''))` keeps `a` up to its
 * last `_` (https://sqlite.org/lang_corefunc.html#rtrim). Queries must use this exact text for
 * SQLite to use the index on it.
 */
export const ACCOUNT_ALIAS_SQL =
  "(CASE WHEN instr(account, '_') > 0 THEN substr(account, length(rtrim(account, replace(account, '_', ''))) + 1) END)";

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
CREATE INDEX IF NOT EXISTS sessions_uid ON sessions(uid, started_at);
CREATE INDEX IF NOT EXISTS sessions_target ON sessions(target, started_at);
CREATE INDEX IF NOT EXISTS sessions_alias ON sessions(${ACCOUNT_ALIAS_SQL}, started_at);
CREATE INDEX IF NOT EXISTS sessions_result ON sessions(result, started_at);
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
CREATE TABLE IF NOT EXISTS write_probe (
  id INTEGER PRIMARY KEY CHECK (id = 1),
  ts TEXT NOT NULL
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

/** An `events` row as stored (the same shape is shipped to and pulled from the shared state). */
export type EventRow = ReplicaEventRow;

/** A `sessions` row as stored. */
export type SessionRow = ReplicaSessionRow;

/** A stored `events` row as an {@link AuditEvent} (`data` parsed). */
export function toEvent(r: EventRow): AuditEvent {
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

/** A stored `sessions` row as an {@link AuditSession}. */
export function toSession(r: SessionRow): AuditSession {
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

/** Options of {@link openAuditStore}. */
export interface AuditStoreOptions {
  /** Called when `healthy()` changes (a write failed, writes work again, the queue passed its limit). */
  readonly onHealthChange?: ((h: AuditHealth) => void) | undefined;
  /** busy_timeout in ms while writes succeed (default 5000; tests use less). */
  readonly busyTimeoutMs?: number | undefined;
  /**
   * Called after each successful commit with the events it wrote, in id order (never with an empty
   * list; not called for a rolled-back transaction). Runs synchronously after COMMIT: it must not
   * block; an exception it throws is caught and ignored (the events stay committed).
   */
  readonly onCommitted?: ((events: readonly AuditEvent[]) => void) | undefined;
}

/**
 * Opens (creating if needed) the audit database at `file` in WAL mode with `synchronous = FULL`
 * (a committed event survives a power loss, https://sqlite.org/pragma.html#pragma_synchronous).
 * Every write is one `BEGIN IMMEDIATE` transaction, so a second writer (the CLI) makes it wait up to
 * busy_timeout (5 s) instead of failing at once (https://sqlite.org/lang_transaction.html: a deferred
 * transaction that read first gets SQLITE_BUSY without the busy handler when it upgrades).
 * `append` queues batched events and commits them in one transaction per tick (fast, ordered); a
 * failed batch is put back at the head of the queue and retried (next tick, then 50 ms doubling to
 * 5 s). Session starts and recording starts are committed before the call returns.
 * `now` is injectable for tests.
 */
export function openAuditStore(file: string, now: () => Date = () => new Date(), options: AuditStoreOptions = {}): AuditStore {
  mkdirSync(dirname(file), { recursive: true, mode: 0o750 });
  const db = new Database(file);
  db.pragma("journal_mode = WAL");
  db.pragma("synchronous = FULL");
  const busyMs = options.busyTimeoutMs ?? BUSY_TIMEOUT_MS;
  db.pragma(`busy_timeout = ${busyMs}`);
  db.exec(SCHEMA);

  const lastEventStmt = db.prepare<[], { id: number; hash: string }>("SELECT id, hash FROM events ORDER BY id DESC LIMIT 1");
  const lastCheckpointStmt = db.prepare<[], { id: number; hash: string }>(
    "SELECT pruned_through_id AS id, last_hash AS hash FROM checkpoints ORDER BY pruned_through_id DESC LIMIT 1",
  );
  /** The chain head: the newest event, or (every event pruned) the newest prune checkpoint, so ids never restart. */
  const lastStmt = {
    get(): { id: number; hash: string } | undefined {
      const e = lastEventStmt.get();
      const c = lastCheckpointStmt.get();
      return c && (!e || c.id > e.id) ? c : e;
    },
  };
  const insertStmt = db.prepare(
    "INSERT INTO events (id, ts, type, session_id, uid, account, target, source, result, data, prev_hash, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
  );
  const probeStmt = db.prepare("INSERT OR REPLACE INTO write_probe (id, ts) VALUES (1, ?)");
  /** An event as queued: its time and its data's JSON fixed when it was appended; `apply` updates the row it goes with. */
  type Queued = { e: AuditEventInput; ts: string; data: string; apply?: () => void };
  let queue: Queued[] = [];
  let scheduled = false;
  let retryTimer: NodeJS.Timeout | undefined;
  let backoffMs = 0;
  let failure: { call: string; code: string; message: string; since: string } | undefined;
  let lastProbe = 0;
  let lastReported: AuditHealth = { ok: true, detail: "" };

  const health = (): AuditHealth => {
    if (!db.open) return { ok: false, detail: `${file}: closed` };
    if (failure)
      return {
        ok: false,
        detail: `${file}: writes fail since ${failure.since} (${failure.call}: ${failure.code}: ${failure.message}); ${queue.length} events waiting`,
      };
    if (queue.length >= AUDIT_QUEUE_LIMIT)
      return { ok: false, detail: `${file}: ${queue.length} events wait to be written (limit ${AUDIT_QUEUE_LIMIT})` };
    return { ok: true, detail: file };
  };
  const report = () => {
    const h = health();
    if (h.ok !== lastReported.ok) {
      lastReported = h;
      options.onHealthChange?.(h);
    }
  };

  /** Serialises `data` now: an event that cannot be stored is refused to its caller, never queued. */
  const queued = (e: AuditEventInput): Queued => ({ e, ts: now().toISOString(), data: JSON.stringify(e.data ?? {}) });

  /** Inserts events after the last stored row; call inside a write transaction only. */
  let written: AuditEvent[] = [];
  const insertEvents = (items: readonly Queued[]) => {
    if (items.length === 0) return;
    const last = lastStmt.get();
    let id = last?.id ?? 0;
    let prev = last?.hash ?? GENESIS;
    for (const { e, ts, data, apply } of items) {
      apply?.();
      id += 1;
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
      if (options.onCommitted) written.push({ ...e, id, ts, data: JSON.parse(data) as Record<string, unknown>, prevHash: prev, hash });
      prev = hash;
    }
  };

  const runTx = db.transaction((work: () => unknown) => work());
  /**
   * One IMMEDIATE transaction: the queued events (in order), then `work`. On a database error nothing
   * of it is committed, the queued events are back at the head of the queue, and AuditWriteError is
   * thrown; any other error is rethrown as is (after the same put-back).
   */
  const commit = <T>(call: string, work: (write: (q: Queued) => void) => T): T => {
    const pending = queue;
    queue = [];
    written = [];
    try {
      const out = runTx.immediate(() => {
        insertEvents(pending);
        return work((q) => insertEvents([q]));
      }) as T;
      const committed = written;
      written = [];
      if (committed.length > 0 && options.onCommitted) {
        try {
          options.onCommitted(committed);
        } catch {
          // The events are committed; a failing observer must not turn that into an error.
        }
      }
      if (failure) {
        failure = undefined;
        backoffMs = 0;
        db.pragma(`busy_timeout = ${busyMs}`);
      }
      report();
      return out;
    } catch (err) {
      queue = pending.length > 0 ? pending.concat(queue) : queue;
      if (!(err instanceof Database.SqliteError)) throw err;
      if (!failure) db.pragma(`busy_timeout = ${Math.min(busyMs, BUSY_TIMEOUT_FAILING_MS)}`);
      failure = { call, code: err.code, message: err.message, since: failure?.since ?? new Date().toISOString() };
      report();
      if (queue.length > 0) schedule();
      throw new AuditWriteError(call, err.code, err.message);
    }
  };

  /** Commits the queue; never throws for a database error (the queue stays, a retry is scheduled). */
  const flush = () => {
    if (queue.length === 0 || !db.open) return;
    try {
      commit("flush", () => undefined);
    } catch (err) {
      if (!(err instanceof AuditWriteError)) throw err;
    }
  };
  /** Next tick while healthy; with a bounded backoff while writes fail. Timers never keep the process up. */
  const schedule = () => {
    if (scheduled || !db.open) return;
    scheduled = true;
    const run = () => {
      scheduled = false;
      retryTimer = undefined;
      if (!db.open) return;
      try {
        flush();
      } catch {
        // Not a database error (cannot happen: data is serialised at append); never let a timer throw.
      }
      if (queue.length > 0 && failure) {
        backoffMs = backoffMs === 0 ? RETRY_MIN_MS : Math.min(backoffMs * 2, RETRY_MAX_MS);
        schedule();
      }
    };
    if (!failure || backoffMs === 0) setImmediate(run);
    else {
      retryTimer = setTimeout(run, backoffMs);
      retryTimer.unref();
    }
  };

  const append = (e: AuditEventInput) => {
    if (!db.open) return;
    const q = queued(e);
    // Events that precede something the gateway then does (an exec reaching the target, a login
    // being accepted) are committed before append returns; only batched ones wait for the tick.
    if (!BATCHED.has(e.type)) {
      commit(`append ${e.type}`, (write) => write(q));
      return;
    }
    queue.push(q);
    if (queue.length === AUDIT_QUEUE_LIMIT) report();
    schedule();
  };

  const startStmt = db.prepare("INSERT INTO sessions (id, started_at, uid, account, target, source) VALUES (?, ?, ?, ?, ?, ?)");
  const endStmt = db.prepare("UPDATE sessions SET ended_at = ?, result = ?, up_bytes = ?, down_bytes = ?, exit_status = ? WHERE id = ?");
  /**
   * Ends and recording closes are facts after the fact: queued like batched events (with the row
   * update they carry) and committed now; if that fails they stay queued, in order, and the caller
   * still gets AuditWriteError (the session ends either way).
   */
  const endSession = (id: string, end: SessionEnd) => {
    if (!db.open) return;
    const q = queued({
      type: "session_end",
      sessionId: id,
      result: end.result,
      data: { up_bytes: end.upBytes, down_bytes: end.downBytes, exit_status: end.exitStatus },
    });
    // ended_at is the session_end event's time.
    queue.push({ ...q, apply: () => endStmt.run(q.ts, end.result, end.upBytes, end.downBytes, end.exitStatus, id) });
    commit("endSession", () => undefined);
  };
  const recordingClosed = (sessionId: string, channel: number, r: { sha256: string; bytes: number; status: string }) => {
    if (!db.open) return;
    const row = db.prepare("SELECT path FROM recordings WHERE session_id = ? AND channel = ?").get(sessionId, channel) as
      | { path: string }
      | undefined;
    queue.push({
      ...queued({
        type: "recording",
        sessionId,
        result: r.status,
        data: { channel, path: row?.path ?? null, sha256: r.sha256, bytes: r.bytes },
      }),
      apply: () =>
        db
          .prepare("UPDATE recordings SET sha256 = ?, bytes = ?, status = ? WHERE session_id = ? AND channel = ?")
          .run(r.sha256, r.bytes, r.status, sessionId, channel),
    });
    commit("recordingClosed", () => undefined);
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
    healthy() {
      if (db.open && (failure || queue.length >= AUDIT_QUEUE_LIMIT) && Date.now() - lastProbe >= PROBE_INTERVAL_MS) {
        lastProbe = Date.now();
        // A real write (a WAL frame), so a full disk shows; a lock is not waited for long while failing.
        try {
          commit("probe", () => probeStmt.run(new Date().toISOString()));
        } catch (err) {
          if (!(err instanceof AuditWriteError)) throw err;
        }
      }
      return health();
    },
    writable() {
      return store.healthy().ok;
    },
    startSession(s) {
      if (!db.open) return;
      const q = queued({
        type: "session_start",
        sessionId: s.id,
        uid: s.uid,
        account: s.account,
        target: s.target ?? undefined,
        source: s.source,
      });
      commit("startSession", (write) => {
        // The row's started_at is its session_start event's time (verify compares them to the millisecond).
        startStmt.run(s.id, q.ts, s.uid, s.account, s.target, s.source);
        write(q);
      });
    },
    endSession,
    recordingStarted(sessionId, channel, path) {
      if (!db.open) return;
      commit("recordingStarted", () =>
        db
          .prepare("INSERT OR REPLACE INTO recordings (session_id, channel, path, status) VALUES (?, ?, ?, 'open')")
          .run(sessionId, channel, path),
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
      const cutoff = new Date(beforeMs).toISOString();
      return commit("prune", (write) => {
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
        write(
          queued({
            type: "audit_pruned",
            result: "ok",
            data: { before: cutoff, pruned_through_id: through, events, sessions: pruneIds.length },
          }),
        );
        return { events, sessions: pruneIds.length, recordings };
      });
    },
    close() {
      if (!db.open) return;
      clearTimeout(retryTimer);
      // Last chance for the queue, with the full busy_timeout.
      db.pragma(`busy_timeout = ${busyMs}`);
      flush();
      const lost = queue.length;
      const why = failure;
      queue = [];
      db.close();
      if (lost > 0) throw new AuditWriteError("close", why?.code ?? "SQLITE_ERROR", `${lost} queued events could not be written`);
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
