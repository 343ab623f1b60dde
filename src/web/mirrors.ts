/**
 * The console's view of the other nodes (shared PostgreSQL state): starts the mirror worker
 * (mirror-worker.ts), which keeps `<state_dir>/mirror/<hash>.db` up to date off the event loop,
 * and keeps the state of each mirror as the worker last reported it. At start the mirrors already
 * on disk are listed, so the console shows the other nodes (with the age of their data) even when
 * PostgreSQL is away.
 */
import { listMirrors, type MirrorState } from "../audit/mirror.ts";
import { startWorker } from "../audit/thread.ts";
import type { MirrorRound, MirrorWorkerData, MirrorWorkerRequest } from "./mirror-worker.ts";

/** How often the mirrors are brought up to date by default (ms). */
export const MIRROR_INTERVAL_MS = 2000;

/** One other node's mirror as the console shows it. */
export interface MirrorStatus extends MirrorState {
  /** Why the last round did not bring it up to date (null: it did). No secret: pg messages carry no password. */
  readonly error: string | null;
}

export interface Mirrors {
  /** The other nodes' mirrors, in node name order. */
  states(): MirrorStatus[];
  /** Resolves after the next round (tests and benches). */
  nextRound(): Promise<void>;
  close(): Promise<void>;
}

/**
 * Starts mirroring every node but `self` from the PostgreSQL at `url` into `dir`.
 * @param o.onError called with each failed round's message (for the log); never with a secret (the URL is not in pg's messages).
 */
export function startMirrors(o: {
  url: string;
  dir: string;
  self: string;
  intervalMs?: number;
  onError?: (message: string) => void;
}): Mirrors {
  let states: MirrorStatus[] = listMirrors(o.dir)
    .filter((s) => s.node !== o.self)
    .map((s) => ({ ...s, error: null }));
  let waiters: Array<() => void> = [];
  const data: MirrorWorkerData = { url: o.url, dir: o.dir, self: o.self, intervalMs: o.intervalMs ?? MIRROR_INTERVAL_MS };
  const worker = startWorker(import.meta.url, "mirror-worker", data);
  worker.unref();
  let lastError: string | null = null;
  worker.on("message", (m: MirrorRound) => {
    if (m.op !== "round") return;
    const failed = new Map(m.errors.map((e) => [e.node, e.error]));
    const byNode = new Map(m.states.filter((s) => s.node !== o.self).map((s) => [s.node, s]));
    // A node that failed this round keeps the state it had (its mirror is unchanged).
    for (const s of states) if (!byNode.has(s.node)) byNode.set(s.node, s);
    states = [...byNode.values()]
      .sort((a, b) => (a.node < b.node ? -1 : a.node > b.node ? 1 : 0))
      .map((s) => ({ ...s, error: m.error ?? failed.get(s.node) ?? null }));
    const err = m.error ?? (m.errors[0] ? `${m.errors[0].node}: ${m.errors[0].error}` : null);
    if (err && err !== lastError) o.onError?.(err);
    lastError = err;
    const w = waiters;
    waiters = [];
    for (const f of w) f();
  });
  let exited = false;
  worker.on("error", (err) => o.onError?.(`the mirror worker failed: ${err.message}`));
  worker.on("exit", () => {
    exited = true;
    const w = waiters;
    waiters = [];
    for (const f of w) f();
  });
  return {
    states: () => states,
    nextRound: () =>
      exited
        ? Promise.resolve()
        : new Promise<void>((r) => {
            waiters.push(r);
            worker.postMessage({ op: "sync" } satisfies MirrorWorkerRequest);
          }),
    async close() {
      if (exited) return;
      const gone = new Promise<void>((r) => worker.once("exit", () => r()));
      worker.postMessage({ op: "close" } satisfies MirrorWorkerRequest);
      const timer = setTimeout(() => void worker.terminate(), 2000);
      await gone;
      clearTimeout(timer);
    },
  };
}
