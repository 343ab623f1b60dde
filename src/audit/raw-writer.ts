/**
 * The recording writer thread (a node:worker_threads entry, started once per process by raw.ts):
 * hashes (SHA-256, FIPS 180-4) the blocks of every open raw recording as they arrive (file order)
 * and writes them, so neither the hash nor the write(2) and fsync(2) calls run on the gateway's
 * event loop, which relays and decrypts every SSH channel. Each recording's writes and fsyncs run one
 * after another in libuv's pool, so one recording waiting for the disk does not hold the others. The
 * blocks are transferred, not copied, and handed back once written.
 *
 * Messages in ({@link RawWriterRequest}), per recording `id`, processed in order:
 * `open` (a file descriptor the main thread opened), `write` (a block: its first `len` bytes),
 * `sync` (fsync(2), then a `checkpoint` with the hash of everything written so far), `close`
 * (fsync(2), then `closed` with the file's SHA-256; the descriptor stays the caller's to close).
 * Messages out ({@link RawWriterReply}): `written` (bytes written so far, the block given back),
 * `checkpoint`, `closed`, `error` (the errno code; the recording takes no more blocks).
 */
import { createHash, type Hash } from "node:crypto";
import { fsync, write } from "node:fs";
import { promisify } from "node:util";
import { parentPort } from "node:worker_threads";

export type RawWriterRequest =
  | { readonly op: "open"; readonly id: number; readonly fd: number }
  | { readonly op: "write"; readonly id: number; readonly buf: ArrayBuffer; readonly len: number }
  | { readonly op: "sync"; readonly id: number }
  | { readonly op: "close"; readonly id: number };

export type RawWriterReply =
  | { readonly op: "written"; readonly id: number; readonly bytes: number; readonly buf: ArrayBuffer }
  | { readonly op: "checkpoint"; readonly id: number; readonly bytes: number; readonly sha256: string }
  | { readonly op: "closed"; readonly id: number; readonly bytes: number; readonly sha256: string }
  | { readonly op: "error"; readonly id: number; readonly code: string; readonly message: string };

interface Open {
  readonly fd: number;
  readonly hash: Hash;
  /** Bytes received (hashed), in file order. */
  received: number;
  /** Bytes written (acknowledged by the kernel). */
  written: number;
  failed: boolean;
  /** This recording's file operations, one after another. */
  queue: Promise<void>;
}

/** write(2) of all of `view` at the file's current offset, continuing after a short write. */
async function writeAll(fd: number, view: Uint8Array): Promise<void> {
  for (let at = 0; at < view.length; ) {
    const { bytesWritten } = await writePromise(fd, view, at, view.length - at);
    if (bytesWritten === 0) throw Object.assign(new Error("short write"), { code: "EIO" });
    at += bytesWritten;
  }
}
const writePromise = promisify(write);
const fsyncPromise = promisify(fsync);

const port = parentPort;
if (port) {
  const open = new Map<number, Open>();
  const post = (m: RawWriterReply, transfer?: ArrayBuffer[]) => port.postMessage(m, transfer);
  const failed = (id: number, r: Open, err: unknown) => {
    if (r.failed) return;
    r.failed = true;
    const e = (err ?? {}) as Partial<NodeJS.ErrnoException>;
    post({ op: "error", id, code: typeof e.code === "string" ? e.code : "EIO", message: String(e.message ?? err) });
  };
  /** The end of every queue step: nothing may reject unhandled (that would end the thread and every recording). */
  const settled = (id: number, r: Open) => (err: unknown) => {
    try {
      failed(id, r, err);
    } catch {
      /* the main thread is gone */
    }
  };
  /** Runs `step` after this recording's earlier operations (in the libuv pool: recordings do not wait for each other's disk). */
  const then = (id: number, r: Open, step: () => Promise<void>) => {
    r.queue = r.queue.then(step).catch(settled(id, r));
  };
  port.on("message", (m: RawWriterRequest) => {
    if (m.op === "open") {
      open.set(m.id, { fd: m.fd, hash: createHash("sha256"), received: 0, written: 0, failed: false, queue: Promise.resolve() });
      return;
    }
    const r = open.get(m.id);
    if (!r) return;
    if (m.op === "write") {
      // Hashed on arrival, which is file order; written after this recording's earlier blocks.
      const view = new Uint8Array(m.buf, 0, m.len);
      if (!r.failed) {
        r.hash.update(view);
        r.received += m.len;
      }
      r.queue = r.queue
        .then(async () => {
          if (r.failed) return;
          await writeAll(r.fd, view);
          r.written += m.len;
        })
        .catch(settled(m.id, r))
        .then(() => post({ op: "written", id: m.id, bytes: r.written, buf: m.buf }, [m.buf]))
        .catch(settled(m.id, r));
      return;
    }
    if (m.op === "close") open.delete(m.id);
    if (r.failed) return;
    // The hash of everything received so far: once the queue has written it and fsync(2) returned, it is on disk.
    const bytes = r.received;
    const sha256 = m.op === "sync" ? r.hash.copy().digest("hex") : r.hash.digest("hex");
    then(m.id, r, async () => {
      if (r.failed) return;
      await fsyncPromise(r.fd);
      if (r.failed) return;
      // Cannot happen while every earlier step of this recording has run; answer rather than leave the caller waiting.
      if (r.written !== bytes) throw Object.assign(new Error(`${r.written} bytes written of ${bytes}`), { code: "EIO" });
      post(m.op === "sync" ? { op: "checkpoint", id: m.id, bytes, sha256 } : { op: "closed", id: m.id, bytes, sha256 });
    });
  });
}
