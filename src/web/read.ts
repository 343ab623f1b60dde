/**
 * The read side of the audit as the console uses it: the store's own rows (session, events,
 * recordings), a query connection of its own for lists and search (src/audit/query.ts), and a
 * worker thread (audit-worker.ts) for what may take long — building the search index, hashing a
 * recording — so the gateway's event loop, and with it every SSH relay, never waits for them.
 */
import type { Worker } from "node:worker_threads";
import Database from "better-sqlite3";
import type { AuditSession, AuditStore } from "../audit/index.ts";
import { rowHash } from "../audit/mirror.ts";
import { type AuditQuery, openAuditQuery, type RecordingCheck, type SearchHit, SearchTextError, transferOf } from "../audit/query.ts";
import { toEvent, toSession } from "../audit/store.ts";
import { startWorker } from "../audit/thread.ts";
import type { ReplicaEventRow, ReplicaSessionRow } from "../state/audit-replica.ts";
import type { AuditWorkerReply, AuditWorkerRequest } from "./audit-worker.ts";
import type { MirrorStatus } from "./mirrors.ts";
import type { SegmentCheck, WebAuditRead, WebNodeInfo } from "./server.ts";

/** How long a search waits for the index to catch up before answering from what is indexed (ms). */
export const SEARCH_WAIT_MS = 1500;

/** The audit worker as its callers see it. */
export interface AuditWorker {
  /** Brings the search index up to date; resolves with what was added. @throws Error (the worker's message) */
  index(): Promise<{ events: number; recordings: number }>;
  /** {@link AuditQuery.checkRecording} off the event loop. */
  checkRecording(sessionId: string, channel: number, path: string): Promise<RecordingCheck>;
  close(): Promise<void>;
}

/**
 * Starts the audit worker on the audit database `file`. A worker that dies fails the calls in
 * flight (with its error) and is started again by the next call.
 */
export function startAuditWorker(file: string): AuditWorker {
  let worker: Worker | undefined;
  let next = 1;
  const pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  const failAll = (err: Error) => {
    for (const p of pending.values()) p.reject(err);
    pending.clear();
  };
  const get = (): Worker => {
    if (worker) return worker;
    const w = startWorker(import.meta.url, "audit-worker", { file });
    w.unref();
    w.on("message", (m: AuditWorkerReply) => {
      const p = pending.get(m.id);
      if (!p) return;
      pending.delete(m.id);
      if (m.ok) p.resolve(m.value);
      else p.reject(new Error(m.error));
    });
    w.on("error", (err) => {
      if (worker === w) worker = undefined;
      failAll(err);
    });
    w.on("exit", () => {
      if (worker === w) worker = undefined;
      failAll(new Error("the audit worker stopped"));
    });
    worker = w;
    return w;
  };
  type Request = { op: "index" } | { op: "check"; sessionId: string; channel: number; path: string };
  const call = <T>(m: Request): Promise<T> =>
    new Promise<T>((resolve, reject) => {
      const id = next++;
      pending.set(id, { resolve: resolve as (v: unknown) => void, reject });
      get().postMessage({ ...m, id } satisfies AuditWorkerRequest);
    });
  return {
    index: () => call({ op: "index" }),
    checkRecording: (sessionId, channel, path) => call({ op: "check", sessionId, channel, path }),
    async close() {
      const w = worker;
      worker = undefined;
      if (!w) return;
      const gone = new Promise<void>((r) => w.once("exit", () => r()));
      w.postMessage({ op: "close" } satisfies AuditWorkerRequest);
      const timer = setTimeout(() => void w.terminate(), 2000);
      await gone;
      clearTimeout(timer);
      failAll(new Error("the audit worker stopped"));
    },
  };
}

export interface WebAuditReadHandle {
  readonly read: WebAuditRead;
  readonly transferOf: typeof transferOf;
  /** Resolves when the search index has caught up with the trail (benches and tests). */
  ready(): Promise<void>;
  close(): Promise<void>;
}

/** A session's events as stored, byte for byte (the chain check recomputes their hashes). */
type EventRow = ReplicaEventRow;

/** Read connections on one other node's mirror: a query handle (lists, search) and a plain reader (one session's rows). */
interface MirrorReader {
  readonly file: string;
  readonly headId: number;
  readonly query: AuditQuery;
  readonly db: Database.Database;
}

const byNewest = (a: { startedAt: string }, b: { startedAt: string }) =>
  a.startedAt < b.startedAt ? 1 : a.startedAt > b.startedAt ? -1 : 0;

/**
 * Opens the console's read side on the audit database `auditDb` written by `store`, and starts
 * building the search index in the background. With `o.mirrors` (a PostgreSQL state), lists and
 * search also read every other node's mirror (per-database queries merged newest first), and every
 * session says its node (`o.mirrors.self` for this one).
 * @param o.searchWaitMs how long a search waits for the index before answering from what is indexed (default {@link SEARCH_WAIT_MS}).
 * @throws SqliteError when the file cannot be opened.
 */
export function openWebAuditRead(
  store: AuditStore,
  auditDb: string,
  o: { searchWaitMs?: number; mirrors?: { self: string; states(): readonly MirrorStatus[] } } = {},
): WebAuditReadHandle {
  const query = openAuditQuery(auditDb);
  const worker = startAuditWorker(auditDb);
  const waitMs = o.searchWaitMs ?? SEARCH_WAIT_MS;
  const warm = worker.index().catch(() => undefined);
  const self = o.mirrors?.self;
  const readers = new Map<string, MirrorReader>();
  const closeReader = (r: MirrorReader) => {
    r.query.close();
    r.db.close();
  };
  /** The readable mirrors now; a mirror rebuilt by the worker (its head went back) is opened again. */
  const mirrors = (): Array<{ state: MirrorStatus; reader: MirrorReader }> => {
    const out: Array<{ state: MirrorStatus; reader: MirrorReader }> = [];
    for (const state of o.mirrors?.states() ?? []) {
      let r = readers.get(state.node);
      if (r && (r.file !== state.file || state.headId < r.headId)) {
        closeReader(r);
        readers.delete(state.node);
        r = undefined;
      }
      if (!r) {
        try {
          const db = new Database(state.file, { readonly: true, fileMustExist: true });
          db.pragma("busy_timeout = 5000");
          r = { file: state.file, headId: state.headId, query: openAuditQuery(state.file), db };
          readers.set(state.node, r);
        } catch {
          continue;
        }
      }
      out.push({ state, reader: r });
    }
    return out;
  };
  const mirrorOf = (node: string | undefined) => (node === undefined ? undefined : mirrors().find((m) => m.state.node === node));
  const withNode = (s: AuditSession, node: string | undefined): AuditSession => (node === undefined ? s : { ...s, node });

  const read: WebAuditRead = {
    sessions(q) {
      const { node, ...rest } = q;
      if (self === undefined) return node === undefined ? query.sessions(rest) : { sessions: [], total: 0 };
      const dbs: Array<{ node: string; q: AuditQuery }> = [
        { node: self, q: query },
        ...mirrors().map((m) => ({ node: m.state.node, q: m.reader.query })),
      ].filter((d) => node === undefined || d.node === node);
      if (dbs.length === 1 && dbs[0]) {
        const r = dbs[0].q.sessions(rest);
        return { sessions: r.sessions.map((s) => withNode(s, dbs[0]?.node)), total: r.total };
      }
      // A merged page: each database's newest offset+limit rows, merged newest first.
      const top = { ...rest, offset: 0, limit: rest.offset + rest.limit };
      let total = 0;
      const all: AuditSession[] = [];
      for (const d of dbs) {
        const r = d.q.sessions(top);
        total += r.total;
        for (const s of r.sessions) all.push(withNode(s, d.node));
      }
      all.sort(byNewest);
      return { sessions: all.slice(rest.offset, rest.offset + rest.limit), total };
    },
    async search(text, limit) {
      if ([...text].length < 3) throw new SearchTextError("the search text needs at least 3 characters (FTS5 trigram index)");
      let timer: NodeJS.Timeout | undefined;
      const caughtUp = await Promise.race([
        worker.index().then(
          () => true,
          () => false,
        ),
        new Promise<boolean>((r) => {
          timer = setTimeout(() => r(false), waitMs);
        }),
      ]).finally(() => clearTimeout(timer));
      const local = query.searchIndexed(text, limit);
      if (self === undefined) return { ...local, indexing: !caughtUp };
      let more = local.more;
      const hits: Array<SearchHit & { node?: string }> = local.hits.map((h) => ({ ...h, node: self }));
      for (const m of mirrors()) {
        try {
          const r = m.reader.query.searchIndexed(text, limit);
          more ||= r.more;
          for (const h of r.hits) hits.push({ ...h, node: m.state.node });
        } catch {
          // The mirror's index is being made by the mirror worker: its hits come with a later search.
        }
      }
      hits.sort((a, b) => (a.ts < b.ts ? 1 : a.ts > b.ts ? -1 : 0));
      return { hits: hits.slice(0, limit), more: more || hits.length > limit, indexing: !caughtUp };
    },
    checkRecording: (id, ch, path) => worker.checkRecording(id, ch, path),
    findSession(id) {
      const mine = store.findSession(id);
      if (mine || self === undefined) return mine && withNode(mine, self);
      for (const m of mirrors()) {
        const rows = m.reader.db
          .prepare("SELECT * FROM sessions WHERE id = ? OR substr(id, 1, length(?)) = ? ORDER BY id = ? DESC LIMIT 2")
          .all(id, id, id, id) as ReplicaSessionRow[];
        const hit = rows.find((r) => r.id === id) ?? (rows.length === 1 ? rows[0] : undefined);
        if (hit) return withNode(toSession(hit), m.state.node);
      }
      return undefined;
    },
    sessionEvents(id, node) {
      const m = node === self ? undefined : mirrorOf(node);
      if (!m) return store.sessionEvents(id);
      return (m.reader.db.prepare("SELECT * FROM events WHERE session_id = ? ORDER BY id").all(id) as EventRow[]).map(toEvent);
    },
    recordings(id, node) {
      const m = node === self ? undefined : mirrorOf(node);
      if (!m) return store.recordings(id);
      return (
        m.reader.db.prepare("SELECT * FROM recordings WHERE session_id = ? ORDER BY channel").all(id) as Array<{
          session_id: string;
          channel: number;
          path: string;
          sha256: string | null;
          bytes: number;
          status: string;
        }>
      ).map((r) => ({ sessionId: r.session_id, channel: r.channel, path: r.path, sha256: r.sha256, bytes: r.bytes, status: r.status }));
    },
    ...(self === undefined
      ? {}
      : {
          nodes: (): WebNodeInfo[] => [
            { node: self, local: true, syncedAt: null, error: null, chainIssue: null },
            ...mirrors().map((m) => ({
              node: m.state.node,
              local: false,
              syncedAt: m.state.syncedAt,
              error: m.state.error,
              chainIssue: m.state.chainIssue,
            })),
          ],
          segmentCheck: (node: string, sessionId: string): SegmentCheck => {
            const m = mirrorOf(node);
            if (!m) return { ok: false, events: 0, reason: `no mirror of node ${node}` };
            return segmentCheckOf(m.reader.db, sessionId, m.state.chainIssue);
          },
        }),
  };
  return {
    read,
    transferOf,
    ready: async () => {
      await warm;
      await worker.index();
    },
    async close() {
      await worker.close();
      query.close();
      for (const r of readers.values()) closeReader(r);
      readers.clear();
    },
  };
}

/**
 * The chain check of one session's segment of a mirrored trail: every event of the session
 * recomputes to its hash, links to the event before it and is linked to by the event after it
 * (when those are mirrored). `nodeIssue` is the first break the mirror saw anywhere (it fails the check too).
 */
export function segmentCheckOf(db: Database.Database, sessionId: string, nodeIssue: string | null): SegmentCheck {
  const rows = db.prepare("SELECT * FROM events WHERE session_id = ? ORDER BY id").all(sessionId) as EventRow[];
  const at = db.prepare<[number], { hash: string; prev_hash: string }>("SELECT hash, prev_hash FROM events WHERE id = ?");
  for (const r of rows) {
    if (rowHash(r) !== r.hash)
      return { ok: false, events: rows.length, reason: `event ${r.id}: its hash does not match its content (edited)` };
    const before = at.get(r.id - 1);
    if (before && before.hash !== r.prev_hash)
      return { ok: false, events: rows.length, reason: `event ${r.id}: does not link to event ${r.id - 1}` };
    const after = at.get(r.id + 1);
    if (after && after.prev_hash !== r.hash)
      return { ok: false, events: rows.length, reason: `event ${r.id + 1}: does not link to event ${r.id}` };
  }
  if (nodeIssue) return { ok: false, events: rows.length, reason: `this node's mirrored trail is broken: ${nodeIssue}` };
  return { ok: true, events: rows.length, reason: `the session's ${rows.length} events check (hashes and links) in the mirrored trail` };
}
