/**
 * The audit trail of every node in the shared PostgreSQL state. Each gateway keeps writing its own
 * chained SQLite audit (`<state_dir>/audit.db`: committed before anything it describes happens,
 * fail-closed, and the on-disk spool while PostgreSQL is away); a shipper (src/audit/ship.ts) copies
 * its committed rows here in id order, byte for byte (the chain hashes are those the node computed).
 * Tables are keyed by `node`, so every node has its own chain: `(node, id)` is unique, and each
 * appended batch must continue the node's head (its first `prev_hash` equals the stored head's
 * hash), checked inside the inserting transaction.
 */
import pg from "pg";
import { redactUrl, tx } from "./postgres.ts";
import { StateError } from "./types.ts";

/** An `events` row as stored in a node's audit.db (the exact JSON text of `data`). */
export interface ReplicaEventRow {
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

/** A `sessions` row as stored in a node's audit.db. */
export interface ReplicaSessionRow {
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

/** A prune checkpoint of a node's audit.db: the chain continues after `pruned_through_id` from `last_hash`. */
export interface ReplicaCheckpointRow {
  id: number;
  ts: string;
  pruned_through_id: number;
  last_hash: string;
}

/** A `recordings` row as stored in a node's audit.db (the file stays on that node). */
export interface ReplicaRecordingRow {
  session_id: string;
  channel: number;
  path: string;
  sha256: string | null;
  bytes: number;
  status: string;
}

/** A batch that does not continue the node's chain in PostgreSQL (the local audit.db was replaced, or rows were edited). */
export class ReplicaDivergedError extends Error {
  override readonly name = "ReplicaDivergedError";
}

export interface AuditReplica {
  /** `where`: the redacted URL, for messages. */
  readonly where: string;
  /** The newest event of `node` in PostgreSQL (undefined: none yet). */
  head(node: string): Promise<{ id: number; hash: string } | undefined>;
  /**
   * Appends `events` of `node` (ascending ids continuing the head) and upserts the session and
   * recording rows they touch, in one transaction (multi-row INSERTs, 500 rows per statement).
   * @throws ReplicaDivergedError when the first event does not continue the stored head (nothing written).
   * @throws pg errors when PostgreSQL is unreachable (nothing written).
   */
  append(
    node: string,
    events: readonly ReplicaEventRow[],
    sessions: readonly ReplicaSessionRow[],
    recordings: readonly ReplicaRecordingRow[],
    checkpoints?: readonly ReplicaCheckpointRow[],
  ): Promise<void>;
  /** Every prune checkpoint `node` shipped. */
  checkpoints(node: string): Promise<ReplicaCheckpointRow[]>;
  /** The nodes that have shipped anything, sorted. */
  nodes(): Promise<string[]>;
  /** Events of `node` with id > `afterId`, ascending, at most `limit`. */
  events(node: string, afterId: number, limit: number): Promise<ReplicaEventRow[]>;
  /** Every session row of `node`. */
  sessions(node: string): Promise<ReplicaSessionRow[]>;
  /** Every recording row of `node`. */
  recordings(node: string): Promise<ReplicaRecordingRow[]>;
  close(): Promise<void>;
}

const EVENT_COLS = ["id", "ts", "type", "session_id", "uid", "account", "target", "source", "result", "data", "prev_hash", "hash"] as const;
const SESSION_COLS = [
  "id",
  "started_at",
  "ended_at",
  "uid",
  "account",
  "target",
  "source",
  "result",
  "up_bytes",
  "down_bytes",
  "exit_status",
] as const;
const RECORDING_COLS = ["session_id", "channel", "path", "sha256", "bytes", "status"] as const;
const CHECKPOINT_COLS = ["id", "ts", "pruned_through_id", "last_hash"] as const;
/** Rows per INSERT statement (12 columns × 500 stays far below PostgreSQL's 65 535 parameters). */
const ROWS_PER_STATEMENT = 500;

/** `INSERT INTO t (node, cols…) VALUES ($1, …), …` for `rows`; `node` is the first column of every row. */
function insertSql(table: string, cols: readonly string[], n: number, suffix: string): string {
  const width = cols.length + 1;
  const values = Array.from({ length: n }, (_, r) => `(${Array.from({ length: width }, (_, c) => `$${r * width + c + 1}`).join(", ")})`);
  return `INSERT INTO ${table} (node, ${cols.join(", ")}) VALUES ${values.join(", ")} ${suffix}`;
}

async function insertRows<R extends object>(
  c: pg.PoolClient,
  table: string,
  cols: readonly (keyof R & string)[],
  node: string,
  rows: readonly R[],
  suffix = "",
): Promise<void> {
  for (let i = 0; i < rows.length; i += ROWS_PER_STATEMENT) {
    const part = rows.slice(i, i + ROWS_PER_STATEMENT);
    const args: unknown[] = [];
    for (const r of part) {
      args.push(toPgText(node));
      for (const col of cols) args.push(enc(r[col]));
    }
    await c.query(insertSql(table, cols, part.length, suffix), args);
  }
}

/**
 * PostgreSQL TEXT cannot hold U+0000 (SQLite can, and a refused login stores the typed name as is):
 * such a value, or one that starts with the marker, is stored as the marker + base64 of its UTF-8,
 * and decoded when read, so the pulled rows are byte for byte the node's (their chain hashes hold).
 */
const MARK = "\u0001varco-b64:";
export function toPgText(v: string): string {
  return v.includes("\u0000") || v.startsWith(MARK) ? MARK + Buffer.from(v, "utf8").toString("base64") : v;
}
export function fromPgText(v: string): string {
  return v.startsWith(MARK) ? Buffer.from(v.slice(MARK.length), "base64").toString("utf8") : v;
}
const enc = (v: unknown): unknown => (typeof v === "string" ? toPgText(v) : v);
/** A row read back: every string column decoded. */
function decoded<R>(row: Record<string, unknown>): R {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(row)) out[k] = typeof v === "string" ? fromPgText(v) : v;
  return out as R;
}

const num = (v: unknown): number => Number(v);
const numOrNull = (v: unknown): number | null => (v === null || v === undefined ? null : Number(v));

/**
 * Connects to the PostgreSQL at `url` (the state's URL; its schema is migrated by `openState`).
 * @throws StateError with the redacted URL when it cannot connect.
 */
export async function openAuditReplica(
  url: string,
  o: { connectTimeoutMs?: number; statementTimeoutMs?: number } = {},
): Promise<AuditReplica> {
  const where = redactUrl(url);
  const pool = new pg.Pool({
    connectionString: url,
    connectionTimeoutMillis: o.connectTimeoutMs ?? 5000,
    statement_timeout: o.statementTimeoutMs ?? 30_000,
    max: 2,
  });
  pool.on("error", () => undefined);
  try {
    const t = await pool.query("SELECT to_regclass('audit_events') IS NOT NULL AS ok");
    if (!t.rows[0]?.ok) throw new StateError(`${where}: the audit tables are missing: run \`varco state migrate\``);
  } catch (err) {
    await pool.end().catch(() => undefined);
    if (err instanceof StateError) throw err;
    throw new StateError(`${where}: cannot use the PostgreSQL state (${(err as Error).message})`);
  }
  const head = async (c: pg.Pool | pg.PoolClient, node: string) => {
    const r = await c.query("SELECT id, hash FROM audit_events WHERE node = $1 ORDER BY id DESC LIMIT 1", [toPgText(node)]);
    const row = r.rows[0];
    return row ? { id: num(row.id), hash: String(row.hash) } : undefined;
  };
  return {
    where,
    head: async (node) => head(pool, node),
    async append(node, events, sessions, recordings, checkpoints = []) {
      if (events.length === 0 && sessions.length === 0 && recordings.length === 0 && checkpoints.length === 0) return;
      await tx(pool, async (c) => {
        // One shipper per node at a time: a second one (two processes claiming the same node) waits here.
        await c.query("SELECT pg_advisory_xact_lock(hashtext('varco-audit:' || $1))", [toPgText(node)]);
        const first = events[0];
        if (first) {
          const h = await head(c, node);
          const expected = h ? { id: h.id + 1, prev: h.hash } : { id: first.id, prev: first.prev_hash };
          if (first.id !== expected.id || first.prev_hash !== expected.prev)
            throw new ReplicaDivergedError(
              `${where}: node ${node}'s events in PostgreSQL end at ${h ? `id ${h.id}` : "nothing"}, but the local audit continues with id ${first.id} from another chain: ` +
                "the local audit.db is not the one that shipped there (two nodes with the same gateway.node, or a replaced database)",
            );
        }
        await insertRows(c, "audit_events", EVENT_COLS, node, events);
        await insertRows(
          c,
          "audit_sessions",
          SESSION_COLS,
          node,
          sessions,
          "ON CONFLICT (node, id) DO UPDATE SET ended_at = excluded.ended_at, result = excluded.result, up_bytes = excluded.up_bytes, down_bytes = excluded.down_bytes, exit_status = excluded.exit_status",
        );
        await insertRows(
          c,
          "audit_recordings",
          RECORDING_COLS,
          node,
          recordings,
          "ON CONFLICT (node, session_id, channel) DO UPDATE SET path = excluded.path, sha256 = excluded.sha256, bytes = excluded.bytes, status = excluded.status",
        );
        await insertRows(c, "audit_checkpoints", CHECKPOINT_COLS, node, checkpoints, "ON CONFLICT (node, id) DO NOTHING");
      });
    },
    async nodes() {
      const r = await pool.query(
        "SELECT node FROM audit_events GROUP BY node UNION SELECT node FROM audit_sessions GROUP BY node ORDER BY node",
      );
      return r.rows.map((x) => fromPgText(String(x.node)));
    },
    async events(node, afterId, limit) {
      const r = await pool.query(`SELECT ${EVENT_COLS.join(", ")} FROM audit_events WHERE node = $1 AND id > $2 ORDER BY id LIMIT $3`, [
        toPgText(node),
        afterId,
        limit,
      ]);
      return r.rows.map((x) => ({ ...decoded<ReplicaEventRow>(x), id: num(x.id) }));
    },
    async sessions(node) {
      const r = await pool.query(`SELECT ${SESSION_COLS.join(", ")} FROM audit_sessions WHERE node = $1`, [toPgText(node)]);
      return r.rows.map((x) => ({
        ...decoded<ReplicaSessionRow>(x),
        up_bytes: num(x.up_bytes),
        down_bytes: num(x.down_bytes),
        exit_status: numOrNull(x.exit_status),
      }));
    },
    async recordings(node) {
      const r = await pool.query(`SELECT ${RECORDING_COLS.join(", ")} FROM audit_recordings WHERE node = $1`, [toPgText(node)]);
      return r.rows.map((x) => ({ ...decoded<ReplicaRecordingRow>(x), channel: num(x.channel), bytes: num(x.bytes) }));
    },
    async checkpoints(node) {
      const r = await pool.query(`SELECT ${CHECKPOINT_COLS.join(", ")} FROM audit_checkpoints WHERE node = $1 ORDER BY id`, [
        toPgText(node),
      ]);
      return r.rows.map((x) => ({ ...decoded<ReplicaCheckpointRow>(x), id: num(x.id), pruned_through_id: num(x.pruned_through_id) }));
    },
    close: () => pool.end(),
  };
}
