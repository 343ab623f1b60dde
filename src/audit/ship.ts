/**
 * Ships this node's committed audit rows to the shared PostgreSQL state (src/state/audit-replica.ts),
 * in id order, in batches. The local audit.db stays the write-ahead journal: an event is committed
 * there (chained) before anything it describes happens, and it is the on-disk spool while
 * PostgreSQL is away. The shipper reads it through its own read-only connection (WAL readers never
 * block the writer), so shipping never slows down or blocks a session.
 *
 * PostgreSQL down: batches fail and are retried (200 ms doubling to 5 s); nothing is skipped or
 * reordered, because each batch starts after the head PostgreSQL holds for this node. The spool is
 * bounded: past `spoolLimit` unshipped events `health()` is not ok and the gateway refuses new
 * sessions (live ones go on and keep being recorded locally).
 */
import Database from "better-sqlite3";
import type {
  AuditReplica,
  ReplicaCheckpointRow,
  ReplicaEventRow,
  ReplicaRecordingRow,
  ReplicaSessionRow,
} from "../state/audit-replica.ts";

/** What the shipper needs of the shared state. */
export type ReplicaTarget = Pick<AuditReplica, "where" | "head" | "append">;

export interface ShipperOptions {
  /** The node's audit.db (created by the audit store before the shipper starts). */
  readonly file: string;
  /** `gateway.node`: the chain these rows belong to. */
  readonly node: string;
  readonly replica: ReplicaTarget;
  readonly log: {
    info(o: object, msg: string): void;
    warn(o: object, msg: string): void;
    error(o: object, msg: string): void;
  };
  /** Events per batch (default 5000). */
  readonly batch?: number;
  /** How often to look for new events when not nudged, ms (default 1000). */
  readonly intervalMs?: number;
  /** How often PostgreSQL's head is read again while idle, ms (default 10 000). */
  readonly recheckMs?: number;
  /** Unshipped events past which `health()` is not ok (default 1 000 000). */
  readonly spoolLimit?: number;
}

export interface ShipperHealth {
  readonly ok: boolean;
  /** Why not ok, or how far shipping is (no secrets: the URL is redacted). */
  readonly detail: string;
  /** Events committed locally and not yet in PostgreSQL. */
  readonly pending: number;
}

export interface AuditShipper {
  /** New events were committed: ship soon (coalesced). */
  nudge(): void;
  health(): ShipperHealth;
  /**
   * Ships until nothing is pending or `waitMs` passed, then stops; resolves with the events still
   * pending (they stay in audit.db and are shipped by the next start).
   */
  stop(waitMs?: number): Promise<number>;
}

const RETRY_MIN_MS = 200;
/** How often PostgreSQL's head of this node is read again while idle (ms). */
const RECHECK_MS = 10_000;
const RETRY_MAX_MS = 5000;

/**
 * Starts shipping `o.file`'s events to `o.replica`.
 * @throws SqliteError when the audit database cannot be opened read-only.
 */
export function startShipper(o: ShipperOptions): AuditShipper {
  const db = new Database(o.file, { readonly: true, fileMustExist: true });
  db.pragma("busy_timeout = 5000");
  const batch = o.batch ?? 5000;
  const spoolLimit = o.spoolLimit ?? 1_000_000;
  const eventsAfter = db.prepare<[number, number], ReplicaEventRow>(
    "SELECT id, ts, type, session_id, uid, account, target, source, result, data, prev_hash, hash FROM events WHERE id > ? ORDER BY id LIMIT ?",
  );
  const newest = db.prepare<[], { id: number }>("SELECT COALESCE(MAX(id), 0) AS id FROM events");
  const sessionsOf = db.prepare<[string], ReplicaSessionRow>("SELECT * FROM sessions WHERE id IN (SELECT value FROM json_each(?))");
  const recordingsOf = db.prepare<[string], ReplicaRecordingRow>(
    "SELECT session_id, channel, path, sha256, bytes, status FROM recordings WHERE session_id IN (SELECT value FROM json_each(?))",
  );

  /** The id PostgreSQL holds for this node (undefined until asked). */
  let shipped: number | undefined;
  let failing: string | undefined;
  let diverged: string | undefined;
  let poisoned: string | undefined;
  /** The newest id PostgreSQL confirmed in this process (a head below it later means rows were deleted there). */
  let confirmed = 0;
  let checkedAt = 0;
  let running = false;
  let stopped = false;
  let timer: NodeJS.Timeout | undefined;
  let backoff = 0;
  let idle: Array<() => void> = [];

  const pending = () => Math.max(0, newest.get()?.id ?? 0) - (shipped ?? 0);

  const checkpointsAll = db.prepare<[], ReplicaCheckpointRow>("SELECT id, ts, pruned_through_id, last_hash FROM checkpoints ORDER BY id");
  const hashAt = db.prepare<[number], { hash: string }>("SELECT hash FROM events WHERE id = ?");
  /**
   * Where PostgreSQL's copy of this node ends, checked against the local chain: the local audit.db
   * must hold that same event (or have pruned it, which only happens to shipped events) and must
   * not end before it. Otherwise another audit.db shipped as this node (two nodes with the same
   * gateway.node, or a database restored from a backup) and nothing is shipped.
   */
  const resume = async (): Promise<number> => {
    const head = await o.replica.head(o.node);
    checkedAt = Date.now();
    if ((head?.id ?? 0) < confirmed)
      o.log.error(
        { node: o.node, from: (head?.id ?? 0) + 1, to: confirmed },
        "audit events shipped earlier are missing in PostgreSQL (deleted there?); shipping them again",
      );
    if (!head) return 0;
    const mine = hashAt.get(head.id);
    const localHead = newest.get()?.id ?? 0;
    if ((mine && mine.hash !== head.hash) || localHead < head.id) {
      const err = new Error(
        `${o.replica.where}: node ${o.node}'s events in PostgreSQL end at id ${head.id} with another chain than this node's audit.db (${mine ? "a different event there" : `which ends at id ${localHead}`}): ` +
          "the local audit.db is not the one that shipped there (two nodes with the same gateway.node, or a replaced database)",
      );
      err.name = "AuditChainDiverged";
      throw err;
    }
    confirmed = Math.max(confirmed, head.id);
    return head.id;
  };

  const once = async (): Promise<boolean> => {
    // PostgreSQL's head is read again every RECHECK_MS even when idle: a tail deleted there is shipped again.
    if (shipped === undefined || Date.now() - checkedAt >= (o.recheckMs ?? RECHECK_MS)) shipped = await resume();
    const events = eventsAfter.all(shipped, batch);
    if (events.length === 0) return false;
    const ids = JSON.stringify([...new Set(events.map((e) => e.session_id).filter((s): s is string => s !== null))]);
    // Prune checkpoints are few (one per prune): all of them, so a trail that starts after a prune verifies.
    await o.replica.append(o.node, events, sessionsOf.all(ids), recordingsOf.all(ids), checkpointsAll.all());
    shipped = (events[events.length - 1] as ReplicaEventRow).id;
    confirmed = Math.max(confirmed, shipped);
    return events.length === batch;
  };

  const run = async () => {
    if (running || diverged) return;
    running = true;
    timer = undefined;
    try {
      while (await once()) {
        // A full batch: more may be waiting; yield to the event loop between batches.
        await new Promise((r) => setImmediate(r));
      }
      if (failing) o.log.info({ where: o.replica.where, node: o.node }, "audit shipping to PostgreSQL works again");
      failing = undefined;
      poisoned = undefined;
      backoff = 0;
    } catch (err) {
      const e = err as Error;
      shipped = undefined;
      if (e.name === "AuditChainDiverged") {
        diverged = e.message;
        o.log.error({ node: o.node }, e.message);
      } else if (e.name === "ReplicaDivergedError") {
        // PostgreSQL's copy no longer ends where this shipper left it (events deleted there, or a
        // restored database): the next run resumes from its head after checking it against the
        // local chain, so deleted events are shipped again and a foreign chain stops shipping.
        o.log.error({ node: o.node }, `audit events shipped earlier are missing in PostgreSQL; shipping again from its head: ${e.message}`);
        failing = e.message;
        backoff = RETRY_MIN_MS;
      } else {
        // A data or constraint error (SQLSTATE class 22/23) repeats on every retry: said at once by health.
        poisoned = /^2[23]/.test(String((err as { code?: unknown }).code ?? "")) ? e.message : undefined;
        if (!failing)
          o.log.error(
            { where: o.replica.where, node: o.node, err: e.message },
            "audit shipping to PostgreSQL fails; events stay in the local audit.db",
          );
        failing = e.message;
        backoff = backoff === 0 ? RETRY_MIN_MS : Math.min(backoff * 2, RETRY_MAX_MS);
      }
    } finally {
      running = false;
      for (const f of idle.splice(0)) f();
      if (!stopped && !diverged) arm(failing ? backoff : (o.intervalMs ?? 1000));
    }
  };
  const arm = (ms: number) => {
    if (timer) clearTimeout(timer);
    timer = setTimeout(() => void run(), ms);
    timer.unref();
  };

  arm(0);
  return {
    nudge() {
      if (!stopped && !failing && !running) arm(20);
    },
    health() {
      const n = pending();
      if (diverged) return { ok: false, detail: diverged, pending: n };
      if (poisoned)
        return {
          ok: false,
          detail: `PostgreSQL refuses a batch of audit events (${poisoned}); ${n} events wait in the local audit.db`,
          pending: n,
        };
      if (n >= spoolLimit)
        return {
          ok: false,
          detail: `${n} audit events wait to be shipped to ${o.replica.where} (limit ${spoolLimit})${failing ? `: ${failing}` : ""}`,
          pending: n,
        };
      if (failing)
        return {
          ok: true,
          detail: `shipping to ${o.replica.where} fails (${failing}); ${n} events spooled in the local audit.db`,
          pending: n,
        };
      return { ok: true, detail: `shipped to ${o.replica.where}; ${n} pending`, pending: n };
    },
    async stop(waitMs = 5000) {
      const deadline = Date.now() + waitMs;
      while (!diverged && Date.now() < deadline) {
        if (running) await new Promise<void>((r) => idle.push(r));
        if (shipped !== undefined && pending() === 0) break;
        await run();
        if (failing) break;
      }
      stopped = true;
      if (timer) clearTimeout(timer);
      if (running) await new Promise<void>((r) => idle.push(r));
      const left = pending();
      idle = [];
      db.close();
      return left;
    },
  };
}
