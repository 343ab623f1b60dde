/**
 * A gateway's local mirror of another node's audit trail, read from the shared PostgreSQL state
 * (src/state/audit-replica.ts) into `<dir>/<sha256(node)[0..32]>.db`, a SQLite file with the
 * audit.db schema (src/audit/store.ts), so the same list, search and show code reads it.
 *
 * Kept up to date incrementally: events after the mirror's newest id, in pages, then the session
 * and recording rows of the sessions those events touch (upserted: a session row changes when the
 * session ends), then the node's prune checkpoints. Rows are byte-for-byte copies, never
 * re-chained; each page is checked on arrival (every event's hash recomputed, every `prev_hash`
 * linked to the event before it), and the first break is kept in `mirror_state` for the console to
 * show. A mirror is only ever written here; a PostgreSQL outage leaves the last one, with the time
 * it was last brought up to date.
 */
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, readdirSync, rmSync } from "node:fs";
import { join } from "node:path";
import Database from "better-sqlite3";
import type { ReplicaCheckpointRow, ReplicaEventRow, ReplicaRecordingRow, ReplicaSessionRow } from "../state/audit-replica.ts";
import type { ReplicaSource } from "./pull.ts";
import { type AuditEventType, canonicalParts, openAuditStore } from "./store.ts";

/** What mirroring needs of the shared state: {@link ReplicaSource}, the node's head, and (optionally) rows of some sessions only. */
export interface MirrorSource extends ReplicaSource {
  head(node: string): Promise<{ id: number; hash: string } | undefined>;
  /** The session rows of `node` with these ids (absent: {@link ReplicaSource.sessions} is read whole). */
  sessionsOf?(node: string, ids: readonly string[]): Promise<ReplicaSessionRow[]>;
  /** The recording rows of `node`'s sessions with these ids. */
  recordingsOf?(node: string, ids: readonly string[]): Promise<ReplicaRecordingRow[]>;
}

/** How a mirror stands (stored in its `mirror_state` row). Times are ISO 8601 UTC. */
export interface MirrorState {
  readonly node: string;
  readonly file: string;
  /** The last time the mirror caught up with PostgreSQL (null: never). */
  readonly syncedAt: string | null;
  /** The newest mirrored event id (0: none). */
  readonly headId: number;
  /** The first chain break seen while mirroring (null: every mirrored event checks). */
  readonly chainIssue: string | null;
}

/** Events read from PostgreSQL per page. */
const PAGE = 5000;
/** Most pages per sync of one node (the next sync goes on from there). */
const MAX_PAGES = 200;
const GENESIS = "0".repeat(64);

const STATE_SQL = `CREATE TABLE IF NOT EXISTS mirror_state (
  id INTEGER PRIMARY KEY CHECK (id = 1),
  node TEXT NOT NULL,
  synced_at TEXT,
  chain_issue TEXT
)`;

/** The mirror file of `node` in `dir`: fixed length whatever the node's name (no path characters, no collision in practice). */
export function mirrorFileOf(dir: string, node: string): string {
  return join(dir, `${createHash("sha256").update(node).digest("hex").slice(0, 32)}.db`);
}

/** The state of the mirror `file`, or undefined when it is not a readable mirror. Never throws. */
export function readMirrorState(file: string): MirrorState | undefined {
  let db: Database.Database | undefined;
  try {
    db = new Database(file, { readonly: true, fileMustExist: true });
    const r = db.prepare("SELECT node, synced_at, chain_issue FROM mirror_state WHERE id = 1").get() as
      | { node: string; synced_at: string | null; chain_issue: string | null }
      | undefined;
    if (!r) return undefined;
    const head = (db.prepare("SELECT COALESCE(MAX(id), 0) AS id FROM events").get() as { id: number }).id;
    return { node: r.node, file, syncedAt: r.synced_at, headId: head, chainIssue: r.chain_issue };
  } catch {
    return undefined;
  } finally {
    db?.close();
  }
}

/** Every readable mirror in `dir` (none when it does not exist), in node name order. Never throws. */
export function listMirrors(dir: string): MirrorState[] {
  if (!existsSync(dir)) return [];
  const out: MirrorState[] = [];
  for (const f of readdirSync(dir)) {
    if (!/^[0-9a-f]{32}\.db$/.test(f)) continue;
    const s = readMirrorState(join(dir, f));
    if (s && mirrorFileOf(dir, s.node) === join(dir, f)) out.push(s);
  }
  return out.sort((a, b) => (a.node < b.node ? -1 : a.node > b.node ? 1 : 0));
}

/** The chain hash of an `events` row as stored (src/audit/store.ts `canonicalParts`). */
export function rowHash(r: ReplicaEventRow): string {
  const u = (v: string | null) => v ?? undefined;
  return createHash("sha256")
    .update(
      canonicalParts(
        r.id,
        r.ts,
        {
          type: r.type as AuditEventType,
          sessionId: u(r.session_id),
          uid: u(r.uid),
          account: u(r.account),
          target: u(r.target),
          source: u(r.source),
          result: u(r.result),
        },
        r.data,
        r.prev_hash,
      ),
    )
    .digest("hex");
}

/**
 * The first chain break in `rows` (ascending ids), given the hash of the event before them
 * (`prev`, undefined when unknown: the first row's link is not checked). Undefined when they check.
 */
export function chainBreak(rows: readonly ReplicaEventRow[], prev: { id: number; hash: string } | undefined): string | undefined {
  let before = prev;
  for (const r of rows) {
    if (rowHash(r) !== r.hash) return `event ${r.id}: its hash does not match its content (edited)`;
    if (before && before.id + 1 === r.id && r.prev_hash !== before.hash) return `event ${r.id}: does not link to event ${before.id}`;
    if (!before && r.id === 1 && r.prev_hash !== GENESIS) return `event 1: does not start the chain`;
    before = { id: r.id, hash: r.hash };
  }
  return undefined;
}

/**
 * Brings the mirror of `node` in `dir` up to date from `source` (creating it on first use).
 * A mirror ahead of PostgreSQL (rows deleted there, or another database behind the same name) is
 * rebuilt from scratch. Returns its state after the sync and how many events it added.
 * @throws pg errors when PostgreSQL cannot be read (the mirror keeps what it had: each page is one transaction).
 * @throws SqliteError when the mirror cannot be written.
 */
export async function syncMirror(source: MirrorSource, dir: string, node: string): Promise<{ state: MirrorState; added: number }> {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const file = mirrorFileOf(dir, node);
  const remoteHead = await source.head(node);
  let known = readMirrorState(file);
  if (known && known.node !== node) known = undefined;
  const stale = known && known.headId > 0 && (!remoteHead || remoteHead.id < known.headId);
  if (!known || stale) {
    for (const f of [file, `${file}-wal`, `${file}-shm`]) rmSync(f, { force: true });
    rmSync(file.replace(/\.db$/, "-search.db"), { force: true });
    for (const f of ["-wal", "-shm"]) rmSync(file.replace(/\.db$/, `-search.db${f}`), { force: true });
    openAuditStore(file).close();
  }
  const db = new Database(file);
  let added = 0;
  try {
    db.pragma("journal_mode = WAL");
    db.pragma("busy_timeout = 5000");
    db.exec(STATE_SQL);
    db.prepare("INSERT OR IGNORE INTO mirror_state (id, node) VALUES (1, ?)").run(node);
    const fresh = (db.prepare("SELECT COUNT(*) AS n FROM sessions").get() as { n: number }).n === 0;
    const ev = db.prepare(
      "INSERT INTO events (id, ts, type, session_id, uid, account, target, source, result, data, prev_hash, hash) VALUES (@id, @ts, @type, @session_id, @uid, @account, @target, @source, @result, @data, @prev_hash, @hash)",
    );
    const ss = db.prepare(
      `INSERT INTO sessions (id, started_at, ended_at, uid, account, target, source, result, up_bytes, down_bytes, exit_status)
       VALUES (@id, @started_at, @ended_at, @uid, @account, @target, @source, @result, @up_bytes, @down_bytes, @exit_status)
       ON CONFLICT (id) DO UPDATE SET ended_at = excluded.ended_at, result = excluded.result, up_bytes = excluded.up_bytes,
         down_bytes = excluded.down_bytes, exit_status = excluded.exit_status`,
    );
    const rs = db.prepare(
      `INSERT INTO recordings (session_id, channel, path, sha256, bytes, status) VALUES (@session_id, @channel, @path, @sha256, @bytes, @status)
       ON CONFLICT (session_id, channel) DO UPDATE SET path = excluded.path, sha256 = excluded.sha256, bytes = excluded.bytes, status = excluded.status`,
    );
    const cs = db.prepare(
      "INSERT OR IGNORE INTO checkpoints (id, ts, pruned_through_id, last_hash) VALUES (@id, @ts, @pruned_through_id, @last_hash)",
    );
    const issueOf = () =>
      (db.prepare("SELECT chain_issue FROM mirror_state WHERE id = 1").get() as { chain_issue: string | null }).chain_issue;
    const lastEvent = () =>
      db.prepare("SELECT id, hash FROM events ORDER BY id DESC LIMIT 1").get() as { id: number; hash: string } | undefined;
    const setIssue = db.prepare("UPDATE mirror_state SET chain_issue = ? WHERE id = 1 AND chain_issue IS NULL");

    const touched = new Set<string>();
    const insertPage = db.transaction((rows: readonly ReplicaEventRow[]) => {
      const broken = issueOf() === null ? chainBreak(rows, lastEvent()) : undefined;
      for (const r of rows) ev.run(r);
      if (broken) setIssue.run(broken);
    });
    let after = lastEvent()?.id ?? 0;
    for (let i = 0; i < MAX_PAGES; i++) {
      const rows = await source.events(node, after, PAGE);
      if (rows.length === 0) break;
      insertPage(rows);
      added += rows.length;
      for (const r of rows) if (r.session_id !== null) touched.add(r.session_id);
      after = (rows[rows.length - 1] as ReplicaEventRow).id;
      if (rows.length < PAGE) break;
    }
    const ids = [...touched];
    const whole = fresh || !source.sessionsOf || !source.recordingsOf;
    const sessions = whole ? await source.sessions(node) : ids.length ? await source.sessionsOf?.(node, ids) : [];
    const recordings = whole ? await source.recordings(node) : ids.length ? await source.recordingsOf?.(node, ids) : [];
    // Only the checkpoints before the first mirrored event (as pullTrails: a prune on the node after
    // its events were shipped is not a prune of this trail).
    const firstId = (db.prepare("SELECT MIN(id) AS id FROM events").get() as { id: number | null }).id ?? Number.MAX_SAFE_INTEGER;
    const checkpoints = (await source.checkpoints(node)).filter((c: ReplicaCheckpointRow) => c.pruned_through_id < firstId);
    db.transaction(() => {
      for (const r of sessions ?? []) ss.run(r);
      for (const r of recordings ?? []) rs.run(r);
      for (const r of checkpoints) cs.run(r);
      db.prepare("UPDATE mirror_state SET synced_at = ? WHERE id = 1").run(new Date().toISOString());
    })();
  } finally {
    db.close();
  }
  const state = readMirrorState(file);
  if (!state) throw new Error(`the mirror of node ${node} cannot be read back`);
  return { state, added };
}

/**
 * Syncs the mirror of every node PostgreSQL knows except `self` (this gateway, read from its own
 * audit.db). One node's failure does not stop the others: it is in `errors`.
 * @throws pg errors when the node list cannot be read.
 */
export async function syncMirrors(
  source: MirrorSource,
  dir: string,
  self: string,
): Promise<{ states: MirrorState[]; errors: Array<{ node: string; error: string }> }> {
  const states: MirrorState[] = [];
  const errors: Array<{ node: string; error: string }> = [];
  for (const node of await source.nodes()) {
    if (node === self) continue;
    try {
      states.push((await syncMirror(source, dir, node)).state);
    } catch (err) {
      errors.push({ node, error: (err as Error).message });
    }
  }
  return { states, errors };
}
