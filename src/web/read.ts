/**
 * The read side of the audit as the console uses it: the store's own rows (session, events,
 * recordings), a query connection of its own for lists and search (src/audit/query.ts), and a
 * worker thread (audit-worker.ts) for what may take long — building the search index, hashing a
 * recording — so the gateway's event loop, and with it every SSH relay, never waits for them.
 */
import { Worker } from "node:worker_threads";
import type { AuditStore } from "../audit/index.ts";
import { openAuditQuery, type RecordingCheck, SearchTextError, transferOf } from "../audit/query.ts";
import type { AuditWorkerReply, AuditWorkerRequest } from "./audit-worker.ts";
import type { WebAuditRead } from "./server.ts";

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

/** Run from the sources (tsx: benches, tests) rather than built into dist/. */
const fromSources = import.meta.url.endsWith(".ts");
/** The worker's module next to this one; from the sources, the worker loads tsx too (a loader is per thread). */
const workerUrl = () => new URL(fromSources ? "./audit-worker.ts" : "./audit-worker.js", import.meta.url);

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
    const w = fromSources
      ? new Worker(`import("tsx/esm/api").then((t) => { t.register(); return import(${JSON.stringify(workerUrl().href)}); });`, {
          eval: true,
          workerData: { file },
        })
      : new Worker(workerUrl(), { workerData: { file } });
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

/**
 * Opens the console's read side on the audit database `auditDb` written by `store`, and starts
 * building the search index in the background.
 * @param o.searchWaitMs how long a search waits for the index before answering from what is indexed (default {@link SEARCH_WAIT_MS}).
 * @throws SqliteError when the file cannot be opened.
 */
export function openWebAuditRead(store: AuditStore, auditDb: string, o: { searchWaitMs?: number } = {}): WebAuditReadHandle {
  const query = openAuditQuery(auditDb);
  const worker = startAuditWorker(auditDb);
  const waitMs = o.searchWaitMs ?? SEARCH_WAIT_MS;
  const warm = worker.index().catch(() => undefined);
  return {
    read: {
      sessions: (q) => query.sessions(q),
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
        return { ...query.searchIndexed(text, limit), indexing: !caughtUp };
      },
      checkRecording: (id, ch, path) => worker.checkRecording(id, ch, path),
      findSession: (id) => store.findSession(id),
      sessionEvents: (id) => store.sessionEvents(id),
      recordings: (id) => store.recordings(id),
    },
    transferOf,
    ready: async () => {
      await warm;
      await worker.index();
    },
    async close() {
      await worker.close();
      query.close();
    },
  };
}
