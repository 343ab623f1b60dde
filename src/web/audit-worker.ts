/**
 * The console's audit worker (a node:worker_threads entry; started by read.ts): builds the search
 * index and checks recording hashes on its own better-sqlite3 connections, so neither runs on the
 * gateway's event loop. The index is built in slices of at most {@link SLICE_MS} with a turn of
 * this worker's own event loop between them, so a recording check waits one slice at most.
 *
 * Messages in: `{ id, op: "index" }`, `{ id, op: "check", sessionId, channel, path }`, `{ op: "close" }`.
 * Messages out: `{ id, ok: true, value }` or `{ id, ok: false, error }` (the error's message only).
 */
import { parentPort, workerData } from "node:worker_threads";
import { openAuditQuery } from "../audit/query.ts";

/** Longest indexing slice (ms) before the worker looks at its messages again. */
const SLICE_MS = 50;
/** Events per indexing transaction: the index database's lock is held for a short while only. */
const PAGE_EVENTS = 500;

export type AuditWorkerRequest =
  | { readonly id: number; readonly op: "index" }
  | { readonly id: number; readonly op: "check"; readonly sessionId: string; readonly channel: number; readonly path: string }
  | { readonly op: "close" };

export type AuditWorkerReply =
  | { readonly id: number; readonly ok: true; readonly value: unknown }
  | { readonly id: number; readonly ok: false; readonly error: string };

const port = parentPort;
if (port) {
  const query = openAuditQuery((workerData as { file: string }).file);
  const reply = (m: AuditWorkerReply) => port.postMessage(m);
  let waiting: number[] = [];
  let running = false;
  let added = { events: 0, recordings: 0 };
  const slice = () => {
    try {
      const r = query.index({ pageEvents: PAGE_EVENTS, maxMs: SLICE_MS });
      added = { events: added.events + r.events, recordings: added.recordings + r.recordings };
      if (!r.done) {
        setImmediate(slice);
        return;
      }
      for (const id of waiting) reply({ id, ok: true, value: added });
    } catch (err) {
      for (const id of waiting) reply({ id, ok: false, error: (err as Error).message });
    }
    waiting = [];
    running = false;
    added = { events: 0, recordings: 0 };
  };
  port.on("message", (m: AuditWorkerRequest) => {
    if (m.op === "close") {
      query.close();
      port.close();
      return;
    }
    if (m.op === "index") {
      waiting.push(m.id);
      if (!running) {
        running = true;
        setImmediate(slice);
      }
      return;
    }
    try {
      reply({ id: m.id, ok: true, value: query.checkRecording(m.sessionId, m.channel, m.path) });
    } catch (err) {
      reply({ id: m.id, ok: false, error: (err as Error).message });
    }
  });
}
