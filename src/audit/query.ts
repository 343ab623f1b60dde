/**
 * Answers for auditors, read side of the audit database: paged session lists (by user, target
 * name or route alias), full-text search (SQLite FTS5) over commands, transfer paths and
 * recording text, filtered event export (JSON lines for a SIEM) with a versioned JSON Schema, and
 * the recording-hash check done before a replay.
 *
 * Opens its own connection to the audit database, which it never writes. The search index
 * (`search_fts`, `search_index_state`, `search_recordings`: not part of the hash chain) lives in a
 * database of its own beside it ({@link searchIndexFile}), so building it never holds the audit
 * database's write lock: the gateway's audit writes never wait for it.
 * JSON shapes produced here are snake_case; the store's TypeScript types stay camelCase.
 */

import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import Database from "better-sqlite3";
import { isRawRecording } from "./raw.ts";
import { readCast } from "./replay.ts";
import { ACCOUNT_ALIAS_SQL, type AuditEventType, type AuditSession, canonicalParts } from "./store.ts";

/** Version of the exported event shape; bumped on any incompatible change (see {@link eventJsonSchema}). */
export const EXPORT_SCHEMA_VERSION = 1;
/** `$id` of the JSON Schema of exported events. */
export const EXPORT_SCHEMA_ID = `urn:varco:audit:event:v${EXPORT_SCHEMA_VERSION}`;

/** Most recording text indexed per recording (characters, after stripping control sequences). */
export const RECORDING_INDEX_LIMIT = 4 * 1024 * 1024;

/** Thrown for a search text FTS5 cannot use (trigram matching needs at least 3 characters). */
export class SearchTextError extends Error {
  override readonly name = "SearchTextError";
}

const SEARCH_SCHEMA = `
CREATE VIRTUAL TABLE IF NOT EXISTS search_fts USING fts5(
  text, kind UNINDEXED, event_id UNINDEXED, session_id UNINDEXED, channel UNINDEXED, ts UNINDEXED, uid UNINDEXED,
  tokenize = 'trigram'
);
CREATE TABLE IF NOT EXISTS search_index_state (
  id INTEGER PRIMARY KEY CHECK (id = 1),
  last_event_id INTEGER NOT NULL,
  pruned_through_id INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS search_recordings (
  session_id TEXT NOT NULL,
  channel INTEGER NOT NULL,
  sha256 TEXT,
  PRIMARY KEY (session_id, channel)
);
`;

/** The search index database of the audit database `auditFile`: `audit.db` → `audit-search.db` (any other name: `-search.db` appended). */
export function searchIndexFile(auditFile: string): string {
  return auditFile.endsWith(".db") ? `${auditFile.slice(0, -3)}-search.db` : `${auditFile}-search.db`;
}

/** `foo_bar` from `fooBar` (keys only; `bytesRead` → `bytes_read`). */
export function snakeCase(key: string): string {
  return key.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);
}

/** `value` with every object key, at any depth, converted by {@link snakeCase}; values are unchanged. */
export function snakeKeys(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(snakeKeys);
  if (value !== null && typeof value === "object") {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(value)) out[snakeCase(k)] = snakeKeys(v);
    return out;
  }
  return value;
}

/** The route alias of an account (`mario.rossi_vm1` → `vm1`): the part after the last `_` (CONTRACT: accounts are `user_alias`). */
export function accountAlias(account: string | null | undefined): string | null {
  if (!account) return null;
  const i = account.lastIndexOf("_");
  return i < 0 ? null : account.slice(i + 1);
}

/** A session row as JSON (snake_case). */
export function sessionJson(s: AuditSession): Record<string, unknown> {
  return snakeKeys(s) as Record<string, unknown>;
}

/** The one transfer shape of `file` events, whatever the protocol. Bytes are payload bytes. */
export interface Transfer {
  readonly protocol: "sftp" | "scp" | "rsync";
  /** upload = user → target, download = target → user, both (an SFTP handle read and written), none (no payload: mkdir, rename…). */
  readonly direction: "upload" | "download" | "both" | "none";
  readonly op: string;
  readonly path: string;
  readonly to_path: string | null;
  readonly bytes: number;
}

const num = (v: unknown): number => (typeof v === "number" && Number.isFinite(v) ? v : 0);

/**
 * The transfer of a `file` event's data (see transfers.ts `FileEvent`): scp `upload`/`download`
 * with `size`; rsync `transfer` with the direction in `flags` and the channel's bytes; sftp
 * `close` with `bytesRead`/`bytesWritten` of the handle; other sftp operations move no payload
 * (`copy` is server-side: direction none, bytes = its length). Undefined for a non-file shape.
 */
export function transferOf(data: Record<string, unknown> | undefined): Transfer | undefined {
  const protocol = data?.protocol;
  if (!data || (protocol !== "sftp" && protocol !== "scp" && protocol !== "rsync")) return undefined;
  const op = typeof data.op === "string" ? data.op : "";
  const path = typeof data.path === "string" ? data.path : "";
  const toPath = typeof data.toPath === "string" ? data.toPath : null;
  const read = num(data.bytesRead);
  const written = num(data.bytesWritten);
  let direction: Transfer["direction"] = "none";
  let bytes = 0;
  if (op === "upload" || op === "download") {
    direction = op;
    bytes = num(data.size);
  } else if (op === "transfer") {
    direction = data.flags === "download" ? "download" : "upload";
    bytes = read + written;
  } else if (op === "close" || op === "read" || op === "write") {
    direction = read > 0 && written > 0 ? "both" : written > 0 ? "upload" : read > 0 ? "download" : "none";
    bytes = read + written;
  } else if (op === "copy") bytes = num(data.size);
  return { protocol, direction, op, path, to_path: toPath, bytes };
}

/** An exported event (snake_case). `session_id`, `uid`, `account`, `source`, `node` are on every event (null when unknown). */
export interface ExportedEvent {
  readonly schema_version: number;
  readonly id: number;
  readonly ts: string;
  readonly type: string;
  readonly node: string;
  readonly session_id: string | null;
  readonly uid: string | null;
  readonly account: string | null;
  readonly alias: string | null;
  readonly target: string | null;
  readonly source: string | null;
  readonly result: string | null;
  readonly data: Record<string, unknown>;
  readonly transfer?: Transfer;
  readonly prev_hash: string;
  readonly hash: string;
}

/** The JSON Schema (draft 2020-12) of one line of `varco audit export --format jsonl`. */
export function eventJsonSchema(): Record<string, unknown> {
  const str = { type: "string" };
  const strOrNull = { type: ["string", "null"] };
  return {
    $schema: "https://json-schema.org/draft/2020-12/schema",
    $id: EXPORT_SCHEMA_ID,
    title: "varco audit event",
    description:
      "One line of `varco audit export --format jsonl`. session_id, uid, account, source and node are on every event (null when the event has no session, e.g. a refused login before a user is known). File events (type file) carry one transfer shape for sftp, scp and rsync. Keys are snake_case.",
    type: "object",
    required: [
      "schema_version",
      "id",
      "ts",
      "type",
      "node",
      "session_id",
      "uid",
      "account",
      "alias",
      "target",
      "source",
      "result",
      "data",
      "prev_hash",
      "hash",
    ],
    properties: {
      schema_version: { const: EXPORT_SCHEMA_VERSION },
      id: { type: "integer", minimum: 1, description: "position in the hash chain; resume an export after it with --after-id" },
      ts: { ...str, format: "date-time", description: "ISO 8601 UTC" },
      type: str,
      node: { ...str, description: "the gateway that wrote the event (gateway.node, else the host name)" },
      session_id: strOrNull,
      uid: { ...strOrNull, description: "the directory user" },
      account: { ...strOrNull, description: "the SSH user name typed (user_alias)" },
      alias: { ...strOrNull, description: "the route alias: the account after its last _" },
      target: { ...strOrNull, description: "the target name" },
      source: { ...strOrNull, description: "the client address" },
      result: strOrNull,
      data: { type: "object", description: "event details, keys snake_case" },
      transfer: { $ref: "#/$defs/transfer" },
      prev_hash: { type: "string", pattern: "^[0-9a-f]{64}$" },
      hash: { type: "string", pattern: "^[0-9a-f]{64}$" },
    },
    // biome-ignore lint/suspicious/noThenProperty: JSON Schema's if/then keywords (draft 2020-12 §10.2.2).
    allOf: [{ if: { properties: { type: { const: "file" } } }, then: { required: ["transfer"] } }],
    $defs: {
      transfer: {
        type: "object",
        required: ["protocol", "direction", "op", "path", "to_path", "bytes"],
        additionalProperties: false,
        properties: {
          protocol: { enum: ["sftp", "scp", "rsync"] },
          direction: { enum: ["upload", "download", "both", "none"], description: "upload = user to target" },
          op: str,
          path: str,
          to_path: strOrNull,
          bytes: { type: "integer", minimum: 0 },
        },
      },
    },
  };
}

/** Filters of {@link AuditQuery.events}. Times are ms since the epoch; `types` is a set of event types. */
export interface EventFilter {
  readonly sinceMs?: number | undefined;
  readonly untilMs?: number | undefined;
  readonly user?: string | undefined;
  /** The target name or the route alias. */
  readonly target?: string | undefined;
  readonly types?: readonly string[] | undefined;
  /** Only events with a larger id. */
  readonly afterId?: number | undefined;
  /** At most this many (default 1000). */
  readonly limit?: number | undefined;
}

/** Filters of {@link AuditQuery.sessions}. */
export interface SessionQuery {
  readonly user?: string | undefined;
  /** The target name or the route alias (the account after its last `_`). */
  readonly target?: string | undefined;
  readonly result?: string | undefined;
  readonly sinceMs?: number | undefined;
  readonly untilMs?: number | undefined;
  readonly limit: number;
  readonly offset: number;
}

/** One search hit. `snippet` is raw text from the audit (escape it with printable() before printing). */
export interface SearchHit {
  readonly kind: "command" | "path" | "recording";
  readonly session_id: string | null;
  readonly event_id: number | null;
  readonly channel: number | null;
  readonly ts: string;
  readonly uid: string | null;
  readonly snippet: string;
}

/** The outcome of {@link AuditQuery.checkRecording}. */
export interface RecordingCheck {
  readonly ok: boolean;
  /** The SHA-256 in the chained `recording` event (null: no such event, e.g. still open). */
  readonly expected: string | null;
  /** The file's SHA-256 now (null: unreadable). */
  readonly found: string | null;
  readonly reason: string;
}

/** The read-side handle (see the module comment). */
export interface AuditQuery {
  /** A page of sessions, newest first, and how many match in all (for the "N more" line). */
  sessions(q: SessionQuery): { sessions: AuditSession[]; total: number };
  /** Events in id order matching `f`, enriched from their session row, at most `f.limit`. */
  events(f: EventFilter, node: string): ExportedEvent[];
  /** The newest event id (0 when empty). */
  headId(): number;
  /**
   * Brings the search index up to date (events after the last indexed id; closed recordings not
   * yet indexed; rows of pruned events and sessions removed). Returns what was added.
   * Each step is one short write transaction on the search index database only (`pageEvents`
   * events, default 2000, or one recording); `maxMs` stops after about that long (the next call
   * goes on from there). `done` is false when it stopped early.
   * @throws SqliteError when the index database cannot be written or stays locked past busy_timeout.
   */
  index(o?: { pageEvents?: number; maxMs?: number }): { events: number; recordings: number; done: boolean };
  /** Searches what is indexed now, without indexing first (see {@link search}). @throws SearchTextError */
  searchIndexed(text: string, limit: number): { hits: SearchHit[]; more: boolean };
  /**
   * Full-text search (case-insensitive substring, FTS5 trigram) after {@link index}; newest first.
   * @throws SearchTextError for a text shorter than 3 characters.
   */
  search(text: string, limit: number): { hits: SearchHit[]; more: boolean };
  /**
   * Compares the recording file's SHA-256 with the one in its chained `recording` event, after
   * checking that event's own hash and its link to the next event (a local check; `audit verify`
   * proves the whole chain).
   */
  checkRecording(sessionId: string, channel: number, path: string): RecordingCheck;
  close(): void;
}

type Row = Record<string, unknown>;
const s = (v: unknown): string | null => (typeof v === "string" ? v : null);

/** Control sequences and controls removed from terminal output: CSI, OSC/DCS/APC/PM/SOS strings, two-byte ESC sequences, C1. */
const CONTROL = new RegExp(
  [
    "\\x1b\\[[0-?]*[ -/]*[@-~]",
    "\\x9b[0-?]*[ -/]*[@-~]",
    "\\x1b[\\]P_^X][\\s\\S]*?(?:\\x07|\\x1b\\\\|\\x9c)",
    "[\\x9d\\x90\\x9e\\x9f\\x98][\\s\\S]*?(?:\\x07|\\x1b\\\\|\\x9c)",
    "\\x1b[ -/]*[0-~]",
    "[\\x00-\\x08\\x0b-\\x1f\\x7f-\\x9f]",
  ].join("|"),
  "g",
);

/** A character followed by a backspace (the terminal moves back over it). */
// biome-ignore lint/suspicious/noControlCharactersInRegex: backspace is what this matches.
const BACKSPACED = /[^\x08]\x08/g;

/**
 * Terminal output as plain text: ANSI/ECMA-48 control sequences (CSI, OSC, DCS…, ECMA-48 §5.4,
 * §8.3.89) and remaining controls removed, `\r\n` and lone `\r` as `\n`, backspaces applied
 * naively (the character before is dropped). Used to index recordings for search.
 */
export function terminalText(output: string): string {
  const noCr = output.replace(/\r\n?/g, "\n");
  return noCr.replace(BACKSPACED, "").replace(CONTROL, "");
}

/** The output text of an asciicast v2 recording ("o" events, decoded), via {@link terminalText}, at most `limit` characters; "" for a raw recording (`.raw`: bytes, not indexed). */
export function recordingText(file: string, limit = RECORDING_INDEX_LIMIT): string {
  // A raw recording (output of a command without a terminal) is bytes, often binary: not indexed.
  if (isRawRecording(file)) return "";
  const { events } = readCast(file);
  const parts: string[] = [];
  let n = 0;
  for (const [, code, data] of events) {
    if (code !== "o" || typeof data !== "string") continue;
    parts.push(data);
    n += data.length;
    if (n > limit) break;
  }
  return terminalText(parts.join("")).slice(0, limit);
}

/** Escapes `text` as one FTS5 phrase (a string: `"` doubled, https://sqlite.org/fts5.html §3.1), so no query syntax gets through. */
export function ftsPhrase(text: string): string {
  return `"${text.replace(/"/g, '""')}"`;
}

/** A window of `text` around the first case-insensitive occurrence of `needle` (≈ `width` characters each side). */
export function snippetOf(text: string, needle: string, width = 60): string {
  const at = text.toLowerCase().indexOf(needle.toLowerCase());
  if (at < 0) return text.slice(0, width * 2);
  const from = Math.max(0, at - width);
  const to = Math.min(text.length, at + needle.length + width);
  return `${from > 0 ? "…" : ""}${text.slice(from, to)}${to < text.length ? "…" : ""}`;
}

/**
 * Opens the read side of the audit database `file` (which must exist). `busyTimeoutMs` is how
 * long a write to the search tables waits for the gateway's own transaction (default 5 s).
 * @throws SqliteError when the file cannot be opened.
 */
export function openAuditQuery(file: string, o: { busyTimeoutMs?: number } = {}): AuditQuery {
  const db = new Database(file, { fileMustExist: true });
  db.pragma(`busy_timeout = ${o.busyTimeoutMs ?? 5000}`);
  db.function("account_alias", { deterministic: true }, (a: unknown) => accountAlias(s(a)));
  /** The search index connection: the index database, with the audit database attached as `audit` (read only by it). */
  let sdb: Database.Database | undefined;
  const searchDb = (): Database.Database => {
    if (sdb) return sdb;
    const c = new Database(searchIndexFile(file));
    try {
      c.pragma("journal_mode = WAL");
      c.pragma(`busy_timeout = ${o.busyTimeoutMs ?? 5000}`);
      c.exec(SEARCH_SCHEMA);
      c.prepare("ATTACH DATABASE ? AS audit").run(file);
    } catch (err) {
      c.close();
      throw err;
    }
    sdb = c;
    return c;
  };

  const sessionWhere = (q: Omit<SessionQuery, "limit" | "offset">) => {
    const where: string[] = [];
    const args: unknown[] = [];
    if (q.user !== undefined) where.push("uid = ?") && args.push(q.user);
    if (q.target !== undefined) where.push(`(target = ? OR ${ACCOUNT_ALIAS_SQL} = ?)`) && args.push(q.target, q.target);
    if (q.result !== undefined) where.push("result = ?") && args.push(q.result);
    if (q.sinceMs !== undefined) where.push("started_at >= ?") && args.push(new Date(q.sinceMs).toISOString());
    if (q.untilMs !== undefined) where.push("started_at < ?") && args.push(new Date(q.untilMs).toISOString());
    return { sql: where.length ? `WHERE ${where.join(" AND ")}` : "", args };
  };

  const toSession = (r: Row): AuditSession => ({
    id: String(r.id),
    startedAt: String(r.started_at),
    endedAt: s(r.ended_at),
    uid: String(r.uid),
    account: String(r.account),
    target: s(r.target),
    source: String(r.source),
    result: String(r.result),
    upBytes: Number(r.up_bytes),
    downBytes: Number(r.down_bytes),
    exitStatus: r.exit_status === null ? null : Number(r.exit_status),
  });

  const exported = (r: Row, node: string): ExportedEvent => {
    const data = JSON.parse(String(r.data)) as Record<string, unknown>;
    const type = String(r.type);
    const transfer = type === "file" ? transferOf(data) : undefined;
    const account = s(r.x_account);
    return {
      schema_version: EXPORT_SCHEMA_VERSION,
      id: Number(r.id),
      ts: String(r.ts),
      type,
      node,
      session_id: s(r.session_id),
      uid: s(r.x_uid),
      account,
      alias: accountAlias(account),
      target: s(r.x_target),
      source: s(r.x_source),
      result: s(r.result),
      data: snakeKeys(data) as Record<string, unknown>,
      ...(transfer ? { transfer } : {}),
      prev_hash: String(r.prev_hash),
      hash: String(r.hash),
    };
  };

  /** Events read per indexing transaction (default). */
  const PAGE = 2000;
  /**
   * Indexing transactions are DEFERRED and start with a write to the index database: a write
   * lock is taken on it alone (an IMMEDIATE one would also lock every attached database, the
   * audit one included), and its busy handler applies since nothing was read before.
   */
  const index = (opts: { pageEvents?: number; maxMs?: number } = {}) => {
    const c = searchDb();
    const pageSize = Math.max(1, Math.min(100_000, opts.pageEvents ?? PAGE));
    const deadline = opts.maxMs === undefined ? Number.POSITIVE_INFINITY : Date.now() + opts.maxMs;
    const lock = c.prepare("INSERT OR IGNORE INTO main.search_index_state (id, last_event_id) VALUES (1, 0)");
    const insert = c.prepare(
      "INSERT INTO main.search_fts (text, kind, event_id, session_id, channel, ts, uid) VALUES (?, ?, ?, ?, ?, ?, ?)",
    );
    const page = c.prepare(
      "SELECT e.id, e.ts, e.type, e.session_id, e.data, COALESCE(e.uid, s.uid) AS uid FROM audit.events e LEFT JOIN audit.sessions s ON s.id = e.session_id WHERE e.id > ? ORDER BY e.id LIMIT ?",
    );
    const indexPage = c.transaction((): { read: number; added: number } => {
      lock.run();
      const state = c.prepare("SELECT last_event_id AS id FROM main.search_index_state WHERE id = 1").get() as { id: number } | undefined;
      const rows = page.all(state?.id ?? 0, pageSize) as Row[];
      let added = 0;
      for (const r of rows) {
        if (r.type !== "exec" && r.type !== "file") continue;
        const data = JSON.parse(String(r.data)) as Record<string, unknown>;
        const channel = typeof data.channel === "number" ? data.channel : null;
        const texts =
          r.type === "exec"
            ? [["command", data.command]]
            : [
                ["path", data.path],
                ["path", data.toPath],
              ];
        for (const [kind, text] of texts)
          if (typeof text === "string" && text) {
            insert.run(text, kind, r.id, r.session_id, channel, r.ts, r.uid);
            added++;
          }
      }
      const last = rows[rows.length - 1];
      if (last) c.prepare("UPDATE main.search_index_state SET last_event_id = ? WHERE id = 1").run(last.id);
      return { read: rows.length, added };
    });
    let events = 0;
    let done = true;
    for (let i = 0; i < 1_000_000; i++) {
      const r = indexPage.deferred();
      events += r.added;
      if (r.read < pageSize) break;
      if (Date.now() >= deadline) {
        done = false;
        break;
      }
    }

    let recordings = 0;
    const todo = done
      ? (c
          .prepare(
            `SELECT r.session_id, r.channel, r.path, r.sha256, s.uid, s.started_at FROM audit.recordings r LEFT JOIN audit.sessions s ON s.id = r.session_id
             WHERE r.status != 'open' AND NOT EXISTS (SELECT 1 FROM main.search_recordings x WHERE x.session_id = r.session_id AND x.channel = r.channel)`,
          )
          .all() as Row[])
      : [];
    for (const r of todo) {
      if (Date.now() >= deadline) {
        done = false;
        break;
      }
      let text = "";
      try {
        text = recordingText(String(r.path));
      } catch {
        // Missing or not asciicast: nothing to index (verify reports it); remembered so it is not re-read each time.
      }
      c.transaction(() => {
        lock.run();
        const seen = c.prepare("SELECT 1 FROM main.search_recordings WHERE session_id = ? AND channel = ?").get(r.session_id, r.channel);
        if (seen) return;
        if (text) {
          insert.run(text, "recording", null, r.session_id, r.channel, r.started_at ?? "", r.uid ?? null);
          recordings++;
        }
        c.prepare("INSERT INTO main.search_recordings (session_id, channel, sha256) VALUES (?, ?, ?)").run(
          r.session_id,
          r.channel,
          r.sha256,
        );
      }).deferred();
    }
    if (!done) return { events, recordings, done };
    // Pruned since the last look (a prune deletes events, sessions and their recordings together,
    // under a new checkpoint): events below the newest checkpoint, recordings of sessions gone.
    c.transaction(() => {
      lock.run();
      const cp = c.prepare("SELECT MAX(pruned_through_id) AS id FROM audit.checkpoints").get() as { id: number | null };
      const seen = c.prepare("SELECT pruned_through_id AS id FROM main.search_index_state WHERE id = 1").get() as { id: number };
      if (cp.id === null || cp.id <= seen.id) return;
      c.prepare("DELETE FROM main.search_fts WHERE event_id IS NOT NULL AND event_id <= ?").run(cp.id);
      c.prepare(
        "DELETE FROM main.search_fts WHERE kind = 'recording' AND NOT EXISTS (SELECT 1 FROM audit.recordings r WHERE r.session_id = search_fts.session_id AND r.channel = search_fts.channel)",
      ).run();
      c.prepare(
        "DELETE FROM main.search_recordings WHERE NOT EXISTS (SELECT 1 FROM audit.recordings r WHERE r.session_id = search_recordings.session_id AND r.channel = search_recordings.channel)",
      ).run();
      c.prepare("UPDATE main.search_index_state SET pruned_through_id = ? WHERE id = 1").run(cp.id);
    }).deferred();
    return { events, recordings, done };
  };
  const searchIndexed = (text: string, limit: number): { hits: SearchHit[]; more: boolean } => {
    if ([...text].length < 3) throw new SearchTextError("the search text needs at least 3 characters (FTS5 trigram index)");
    const rows = searchDb()
      .prepare(
        "SELECT text, kind, event_id, session_id, channel, ts, uid FROM main.search_fts WHERE search_fts MATCH ? ORDER BY ts DESC, rowid DESC LIMIT ?",
      )
      .all(ftsPhrase(text), limit + 1) as Row[];
    const hits = rows.slice(0, limit).map(
      (r): SearchHit => ({
        kind: r.kind as SearchHit["kind"],
        session_id: s(r.session_id),
        event_id: r.event_id === null ? null : Number(r.event_id),
        channel: r.channel === null ? null : Number(r.channel),
        ts: String(r.ts),
        uid: s(r.uid),
        snippet: snippetOf(String(r.text), text),
      }),
    );
    return { hits, more: rows.length > limit };
  };
  return {
    sessions(q) {
      const w = sessionWhere(q);
      const total = (db.prepare(`SELECT COUNT(*) AS n FROM sessions ${w.sql}`).get(...w.args) as { n: number }).n;
      const rows = db
        .prepare(`SELECT * FROM sessions ${w.sql} ORDER BY started_at DESC, rowid DESC LIMIT ? OFFSET ?`)
        .all(...w.args, q.limit, q.offset) as Row[];
      return { sessions: rows.map(toSession), total };
    },
    events(f, node) {
      const where: string[] = ["e.id > ?"];
      const args: unknown[] = [f.afterId ?? 0];
      if (f.sinceMs !== undefined) where.push("e.ts >= ?") && args.push(new Date(f.sinceMs).toISOString());
      if (f.untilMs !== undefined) where.push("e.ts < ?") && args.push(new Date(f.untilMs).toISOString());
      if (f.user !== undefined) where.push("COALESCE(e.uid, s.uid) = ?") && args.push(f.user);
      if (f.target !== undefined)
        where.push("(COALESCE(e.target, s.target) = ? OR account_alias(COALESCE(e.account, s.account)) = ?)") &&
          args.push(f.target, f.target);
      if (f.types?.length) where.push(`e.type IN (${f.types.map(() => "?").join(", ")})`) && args.push(...f.types);
      const rows = db
        .prepare(
          `SELECT e.*, COALESCE(e.uid, s.uid) AS x_uid, COALESCE(e.account, s.account) AS x_account,
                  COALESCE(e.target, s.target) AS x_target, COALESCE(e.source, s.source) AS x_source
           FROM events e LEFT JOIN sessions s ON s.id = e.session_id WHERE ${where.join(" AND ")} ORDER BY e.id LIMIT ?`,
        )
        .all(...args, f.limit ?? 1000) as Row[];
      return rows.map((r) => exported(r, node));
    },
    headId() {
      return (db.prepare("SELECT COALESCE(MAX(id), 0) AS id FROM events").get() as { id: number }).id;
    },
    index,
    search(text, limit) {
      if ([...text].length < 3) throw new SearchTextError("the search text needs at least 3 characters (FTS5 trigram index)");
      index();
      return searchIndexed(text, limit);
    },
    searchIndexed,
    checkRecording(sessionId, channel, path) {
      const events = db
        .prepare("SELECT * FROM events WHERE type = 'recording' AND session_id = ? ORDER BY id DESC")
        .all(sessionId) as Row[];
      const ev = events.find((r) => (JSON.parse(String(r.data)) as { channel?: unknown }).channel === channel);
      let found: string | null = null;
      try {
        found = createHash("sha256").update(readFileSync(path)).digest("hex");
      } catch {
        found = null;
      }
      if (!ev) return { ok: false, expected: null, found, reason: "no chained recording event (still open, or its event is missing)" };
      const data = JSON.parse(String(ev.data)) as { sha256?: unknown };
      const expected = typeof data.sha256 === "string" ? data.sha256 : null;
      const recomputed = createHash("sha256")
        .update(
          canonicalParts(
            Number(ev.id),
            String(ev.ts),
            {
              type: ev.type as AuditEventType,
              sessionId: s(ev.session_id) ?? undefined,
              uid: s(ev.uid) ?? undefined,
              account: s(ev.account) ?? undefined,
              target: s(ev.target) ?? undefined,
              source: s(ev.source) ?? undefined,
              result: s(ev.result) ?? undefined,
            },
            String(ev.data),
            String(ev.prev_hash),
          ),
        )
        .digest("hex");
      const next = db.prepare("SELECT prev_hash FROM events WHERE id > ? ORDER BY id LIMIT 1").get(ev.id) as
        | { prev_hash: string }
        | undefined;
      if (recomputed !== ev.hash || (next && next.prev_hash !== ev.hash))
        return { ok: false, expected, found, reason: `the recording event ${String(ev.id)} was edited (its chain hash does not match)` };
      if (found === null) return { ok: false, expected, found, reason: "the recording file cannot be read" };
      if (expected !== found)
        return { ok: false, expected, found, reason: "the recording file's SHA-256 differs from the one chained when it was closed" };
      return { ok: true, expected, found, reason: "ok" };
    },
    close() {
      if (sdb?.open) sdb.close();
      if (db.open) db.close();
    },
  };
}
