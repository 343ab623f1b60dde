/**
 * The audit trails a CLI read command looks at: this node's audit.db and, with a PostgreSQL state,
 * every other node's trail pulled from it into a temporary folder (src/audit/pull.ts). One chain
 * per node; every command says which node served a session when there is more than one.
 */
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import Database from "better-sqlite3";
import { pullTrails } from "../audit/pull.ts";
import { nodeName, openAuditForPolicy, statePaths } from "../main.ts";
import type { LoadedPolicy } from "../policy/index.ts";
import { openAuditReplica, postgresUrl, StateError } from "../state/index.ts";
import { ExitError } from "./common.ts";

export interface Trail {
  readonly node: string;
  /** A SQLite file with the audit.db schema. */
  readonly file: string;
  /** true: this node's own audit.db (its recording files are here). */
  readonly local: boolean;
}

export interface Trails {
  /** This node first, then the others in name order. */
  readonly trails: readonly Trail[];
  /** true with a PostgreSQL state (sessions say their node). */
  readonly shared: boolean;
  /** With `replicaOfLocal`: this node's trail as PostgreSQL holds it. */
  readonly replicaOfLocal?: Trail | undefined;
  /** Removes the pulled copies. */
  close(): void;
}

/**
 * Opens the trails of `loaded`. With `replicaOfLocal`, this node's trail is also pulled from
 * PostgreSQL (for `audit verify`, which compares it with the local one).
 * @throws ExitError when PostgreSQL cannot be read.
 */
export async function openTrails(loaded: LoadedPolicy, o: { replicaOfLocal?: boolean; create?: boolean } = {}): Promise<Trails> {
  const node = nodeName(loaded.policy);
  const file = statePaths(loaded).auditDb;
  // The gateway creates the database; a missing one is opened (and created) through the store.
  if (o.create !== false) openAuditForPolicy(loaded).close();
  const local: Trail = { node, file, local: true };
  let url: string | undefined;
  try {
    url = postgresUrl({ state: loaded.policy.state, resolvePath: (x) => loaded.resolvePath(x) });
  } catch (err) {
    throw new ExitError(`state: ${(err as Error).message}`, 1);
  }
  if (url === undefined) return { trails: [local], shared: false, close: () => undefined };
  const dir = mkdtempSync(join(tmpdir(), "varco-trails-"));
  const close = () => rmSync(dir, { recursive: true, force: true });
  try {
    const replica = await openAuditReplica(url);
    try {
      const pulled = await pullTrails(replica, dir, o.replicaOfLocal ? new Set() : new Set([node]));
      const others = pulled.filter((t) => t.node !== node).map((t) => ({ ...t, local: false }));
      const mine = pulled.find((t) => t.node === node);
      return {
        trails: [local, ...others],
        shared: true,
        replicaOfLocal: mine ? { ...mine, local: false } : undefined,
        close,
      };
    } finally {
      await replica.close();
    }
  } catch (err) {
    close();
    if (err instanceof StateError) throw new ExitError(`state: ${err.message}`, 1);
    throw new ExitError(`state: cannot read the audit trail of the other nodes from PostgreSQL (${(err as Error).message})`, 1);
  }
}

/**
 * With a PostgreSQL state: how many of this node's events older than `beforeMs` are not in
 * PostgreSQL yet (0 for SQLite).
 * @throws ExitError when PostgreSQL cannot be read (nothing is pruned then).
 */
export async function unshippedBefore(loaded: LoadedPolicy, beforeMs: number): Promise<number> {
  const url = postgresUrl({ state: loaded.policy.state, resolvePath: (x) => loaded.resolvePath(x) });
  if (url === undefined) return 0;
  let head: number;
  try {
    const replica = await openAuditReplica(url);
    try {
      head = (await replica.head(nodeName(loaded.policy)))?.id ?? 0;
    } finally {
      await replica.close();
    }
  } catch (err) {
    throw new ExitError(`audit prune: cannot read PostgreSQL, nothing pruned (${(err as Error).message})`, 1);
  }
  if (!existsSync(statePaths(loaded).auditDb)) return 0;
  const db = new Database(statePaths(loaded).auditDb, { readonly: true, fileMustExist: true });
  try {
    const r = db
      .prepare<[number, string], { n: number }>("SELECT COUNT(*) AS n FROM events WHERE id > ? AND ts < ?")
      .get(head, new Date(beforeMs).toISOString());
    return r?.n ?? 0;
  } finally {
    db.close();
  }
}
