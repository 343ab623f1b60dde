/**
 * The console's mirror worker (a node:worker_threads entry; started by mirrors.ts): every
 * `intervalMs` it brings the local mirror of every other node's audit trail up to date from the
 * shared PostgreSQL state (src/audit/mirror.ts) and the mirrors' search indexes with it, on its
 * own connections, so neither the PostgreSQL reads nor the SQLite writes run on the gateway's
 * event loop. PostgreSQL away: the round fails, the mirrors stay as they were, the next round tries again.
 *
 * workerData: `{ url, dir, self, intervalMs }`. Messages in: `{ op: "sync" }` (a round now), `{ op: "close" }`.
 * Messages out: `{ op: "round", states, errors, error, at }` after every round (`error`: the round failed as a whole).
 */
import { parentPort, workerData } from "node:worker_threads";
import pg from "pg";
import { listMirrors, type MirrorSource, type MirrorState, syncMirrors } from "../audit/mirror.ts";
import { openAuditQuery } from "../audit/query.ts";
import { type AuditReplica, fromPgText, openAuditReplica, toPgText } from "../state/audit-replica.ts";
import type { ReplicaRecordingRow, ReplicaSessionRow } from "../state/index.ts";

export interface MirrorWorkerData {
  readonly url: string;
  readonly dir: string;
  readonly self: string;
  readonly intervalMs: number;
}

export type MirrorWorkerRequest = { readonly op: "sync" } | { readonly op: "close" };

export interface MirrorRound {
  readonly op: "round";
  readonly states: readonly MirrorState[];
  /** Nodes whose mirror could not be brought up to date this round. */
  readonly errors: ReadonlyArray<{ node: string; error: string }>;
  /** The round failed as a whole (PostgreSQL unreachable). */
  readonly error: string | null;
  /** When the round ended (ISO 8601 UTC). */
  readonly at: string;
}

/** Session ids per `= ANY` query. */
const IDS_PER_QUERY = 1000;

/** The rows of some sessions only (the replica reads a node's rows whole), on a one-connection pool. */
function subsetQueries(url: string): Pick<Required<MirrorSource>, "sessionsOf" | "recordingsOf"> & { close(): Promise<void> } {
  const pool = new pg.Pool({ connectionString: url, connectionTimeoutMillis: 5000, statement_timeout: 30_000, max: 1 });
  pool.on("error", () => undefined);
  const decode = (row: Record<string, unknown>) => {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(row)) out[k] = typeof v === "string" ? fromPgText(v) : v;
    return out;
  };
  const inChunks = async <R>(ids: readonly string[], sql: string, map: (r: Record<string, unknown>) => R, node: string): Promise<R[]> => {
    const out: R[] = [];
    for (let i = 0; i < ids.length; i += IDS_PER_QUERY) {
      const r = await pool.query(sql, [toPgText(node), ids.slice(i, i + IDS_PER_QUERY).map(toPgText)]);
      for (const row of r.rows) out.push(map(decode(row)));
    }
    return out;
  };
  return {
    sessionsOf: (node, ids) =>
      inChunks(
        ids,
        "SELECT id, started_at, ended_at, uid, account, target, source, result, up_bytes, down_bytes, exit_status FROM audit_sessions WHERE node = $1 AND id = ANY($2)",
        (x) =>
          ({
            ...(x as unknown as ReplicaSessionRow),
            up_bytes: Number(x.up_bytes),
            down_bytes: Number(x.down_bytes),
            exit_status: x.exit_status === null || x.exit_status === undefined ? null : Number(x.exit_status),
          }) satisfies ReplicaSessionRow,
        node,
      ),
    recordingsOf: (node, ids) =>
      inChunks(
        ids,
        "SELECT session_id, channel, path, sha256, bytes, status FROM audit_recordings WHERE node = $1 AND session_id = ANY($2)",
        (x) =>
          ({ ...(x as unknown as ReplicaRecordingRow), channel: Number(x.channel), bytes: Number(x.bytes) }) satisfies ReplicaRecordingRow,
        node,
      ),
    close: () => pool.end(),
  };
}

const port = parentPort;
if (port) {
  const o = workerData as MirrorWorkerData;
  let replica: AuditReplica | undefined;
  const subset = subsetQueries(o.url);
  let timer: NodeJS.Timeout | undefined;
  let running = false;
  let again = false;
  let closed = false;
  const indexAll = (states: readonly MirrorState[]) => {
    for (const s of states) {
      const q = openAuditQuery(s.file);
      try {
        q.index();
      } finally {
        q.close();
      }
    }
  };
  const round = async () => {
    if (closed) return;
    if (running) {
      again = true;
      return;
    }
    running = true;
    let msg: MirrorRound;
    try {
      replica ??= await openAuditReplica(o.url);
      const source: MirrorSource = {
        nodes: () => (replica as AuditReplica).nodes(),
        head: (n) => (replica as AuditReplica).head(n),
        events: (n, a, l) => (replica as AuditReplica).events(n, a, l),
        sessions: (n) => (replica as AuditReplica).sessions(n),
        recordings: (n) => (replica as AuditReplica).recordings(n),
        checkpoints: (n) => (replica as AuditReplica).checkpoints(n),
        sessionsOf: subset.sessionsOf,
        recordingsOf: subset.recordingsOf,
      };
      const r = await syncMirrors(source, o.dir, o.self);
      indexAll(r.states);
      msg = { op: "round", states: r.states, errors: r.errors, error: null, at: new Date().toISOString() };
    } catch (err) {
      msg = { op: "round", states: listMirrors(o.dir), errors: [], error: (err as Error).message, at: new Date().toISOString() };
    }
    running = false;
    if (closed) return;
    port.postMessage(msg);
    if (again) {
      again = false;
      setImmediate(() => void round());
    }
  };
  const schedule = () => {
    timer = setTimeout(() => {
      void round().finally(() => {
        if (!closed) schedule();
      });
    }, o.intervalMs);
  };
  port.on("message", (m: MirrorWorkerRequest) => {
    if (m.op === "sync") {
      void round();
      return;
    }
    closed = true;
    if (timer) clearTimeout(timer);
    void Promise.allSettled([replica?.close(), subset.close()]).finally(() => port.close());
  });
  void round().finally(() => {
    if (!closed) schedule();
  });
}
