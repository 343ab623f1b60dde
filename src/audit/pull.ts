/**
 * Reading the audit trail of every node from the shared PostgreSQL state: each node's rows are
 * pulled into a SQLite file with the audit.db schema, so the same list, search, show, export and
 * verify code reads them (one chain per node, exactly as that node wrote it).
 */
import { createHash } from "node:crypto";
import { join } from "node:path";
import Database from "better-sqlite3";
import type { AuditReplica, ReplicaEventRow } from "../state/audit-replica.ts";
import { openAuditStore } from "./store.ts";

/** What pulling needs of the shared state. */
export type ReplicaSource = Pick<AuditReplica, "nodes" | "events" | "sessions" | "recordings" | "checkpoints">;

/** One node's trail as a SQLite file. */
export interface NodeTrail {
  readonly node: string;
  readonly file: string;
}

const PAGE = 10_000;

/** A file name for the `index`th node: fixed length, whatever the node's name (no collision, no length limit). */
function fileNameOf(node: string, index: number): string {
  return `${index}-${createHash("sha256").update(node).digest("hex").slice(0, 16)}.db`;
}

/**
 * Pulls every node's events (in id order, pages of 10 000), session rows and recording rows into
 * `<dir>/<node>.db`; returns the nodes in name order. `skip` names nodes not to pull (read locally).
 * @throws pg errors when PostgreSQL cannot be read; SqliteError when `dir` cannot be written.
 */
export async function pullTrails(source: ReplicaSource, dir: string, skip: ReadonlySet<string> = new Set()): Promise<NodeTrail[]> {
  const out: NodeTrail[] = [];
  for (const [index, node] of (await source.nodes()).entries()) {
    if (skip.has(node)) continue;
    const file = join(dir, fileNameOf(node, index));
    openAuditStore(file).close();
    const db = new Database(file);
    try {
      const ev = db.prepare(
        "INSERT INTO events (id, ts, type, session_id, uid, account, target, source, result, data, prev_hash, hash) VALUES (@id, @ts, @type, @session_id, @uid, @account, @target, @source, @result, @data, @prev_hash, @hash)",
      );
      const insertEvents = db.transaction((rows: readonly ReplicaEventRow[]) => {
        for (const r of rows) ev.run(r);
      });
      let after = 0;
      for (let i = 0; i < 100_000; i++) {
        const rows = await source.events(node, after, PAGE);
        if (rows.length === 0) break;
        insertEvents(rows);
        after = (rows[rows.length - 1] as ReplicaEventRow).id;
        if (rows.length < PAGE) break;
      }
      const ss = db.prepare(
        "INSERT INTO sessions (id, started_at, ended_at, uid, account, target, source, result, up_bytes, down_bytes, exit_status) VALUES (@id, @started_at, @ended_at, @uid, @account, @target, @source, @result, @up_bytes, @down_bytes, @exit_status)",
      );
      const rs = db.prepare(
        "INSERT INTO recordings (session_id, channel, path, sha256, bytes, status) VALUES (@session_id, @channel, @path, @sha256, @bytes, @status)",
      );
      const cs = db.prepare(
        "INSERT INTO checkpoints (id, ts, pruned_through_id, last_hash) VALUES (@id, @ts, @pruned_through_id, @last_hash)",
      );
      const sessions = await source.sessions(node);
      const recordings = await source.recordings(node);
      // Only the checkpoints before the first event PostgreSQL holds: events pruned on the node after
      // they were shipped are still here, and their checkpoints would claim a prune of this trail.
      const firstId = (db.prepare("SELECT MIN(id) AS id FROM events").get() as { id: number | null }).id ?? Number.MAX_SAFE_INTEGER;
      const checkpoints = (await source.checkpoints(node)).filter((c) => c.pruned_through_id < firstId);
      db.transaction(() => {
        for (const r of sessions) ss.run(r);
        for (const r of recordings) rs.run(r);
        for (const r of checkpoints) cs.run(r);
      })();
    } finally {
      db.close();
    }
    out.push({ node, file });
  }
  return out;
}

/**
 * Compares this node's local audit.db with what PostgreSQL holds for it: every event there must
 * be the local event with the same id, byte for byte (hash and prev_hash). A whole chain rewritten
 * in PostgreSQL (consistent with itself) is caught here. Returns one line per difference (at most 20)
 * and how many local events are not there yet.
 */
export function compareWithLocal(localFile: string, pulledFile: string): { differences: string[]; notShipped: number } {
  const local = new Database(localFile, { readonly: true, fileMustExist: true });
  const pulled = new Database(pulledFile, { readonly: true, fileMustExist: true });
  try {
    const differences: string[] = [];
    const get = local.prepare<[number], { hash: string; prev_hash: string }>("SELECT hash, prev_hash FROM events WHERE id = ?");
    let max = 0;
    for (const r of pulled.prepare("SELECT id, hash, prev_hash FROM events ORDER BY id").iterate() as IterableIterator<{
      id: number;
      hash: string;
      prev_hash: string;
    }>) {
      max = r.id;
      const l = get.get(r.id);
      if (l && l.hash === r.hash && l.prev_hash === r.prev_hash) continue;
      if (!l) continue; // pruned locally: the chain check of the pulled trail covers it
      if (differences.length < 20) differences.push(`event ${r.id}: PostgreSQL holds hash ${r.hash}, this node's audit.db ${l.hash}`);
    }
    const tail = local.prepare<[number], { n: number }>("SELECT COUNT(*) AS n FROM events WHERE id > ?").get(max);
    return { differences, notShipped: tail?.n ?? 0 };
  } finally {
    local.close();
    pulled.close();
  }
}
