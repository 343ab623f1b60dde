/**
 * The recording writer thread (a node:worker_threads entry, started once per process by raw.ts):
 * hashes (SHA-256, FIPS 180-4) and writes the blocks of every open raw recording, in the order the
 * blocks arrive, so neither the hash nor the write(2) calls run on the gateway's event loop, which
 * relays and decrypts every SSH channel. The blocks are transferred, not copied, and handed back
 * once written.
 *
 * Messages in ({@link RawWriterRequest}), per recording `id`, processed in order:
 * `open` (a file descriptor the main thread opened), `write` (a block: its first `len` bytes),
 * `sync` (fsync(2), then a `checkpoint` with the hash of everything written so far), `close`
 * (fsync(2), then `closed` with the file's SHA-256; the descriptor stays the caller's to close).
 * Messages out ({@link RawWriterReply}): `written` (bytes written so far, the block given back),
 * `checkpoint`, `closed`, `error` (the errno code; the recording takes no more blocks).
 */
import { createHash, type Hash } from "node:crypto";
import { fsyncSync, writeSync } from "node:fs";
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
  written: number;
  failed: boolean;
}

const port = parentPort;
if (port) {
  const open = new Map<number, Open>();
  const post = (m: RawWriterReply, transfer?: ArrayBuffer[]) => port.postMessage(m, transfer);
  const failed = (id: number, r: Open, err: unknown) => {
    r.failed = true;
    const e = err as NodeJS.ErrnoException;
    post({ op: "error", id, code: e.code ?? "EIO", message: e.message });
  };
  port.on("message", (m: RawWriterRequest) => {
    if (m.op === "open") {
      open.set(m.id, { fd: m.fd, hash: createHash("sha256"), written: 0, failed: false });
      return;
    }
    const r = open.get(m.id);
    if (!r) return;
    if (m.op === "write") {
      if (!r.failed) {
        const view = new Uint8Array(m.buf, 0, m.len);
        try {
          r.hash.update(view);
          for (let at = 0; at < m.len; ) {
            const n = writeSync(r.fd, view, at, m.len - at);
            if (n === 0) throw Object.assign(new Error("short write"), { code: "EIO" });
            at += n;
          }
          r.written += m.len;
        } catch (err) {
          failed(m.id, r, err);
        }
      }
      post({ op: "written", id: m.id, bytes: r.written, buf: m.buf }, [m.buf]);
      return;
    }
    if (r.failed) {
      if (m.op === "close") open.delete(m.id);
      return;
    }
    try {
      fsyncSync(r.fd);
    } catch (err) {
      failed(m.id, r, err);
      if (m.op === "close") open.delete(m.id);
      return;
    }
    if (m.op === "sync") post({ op: "checkpoint", id: m.id, bytes: r.written, sha256: r.hash.copy().digest("hex") });
    else {
      open.delete(m.id);
      post({ op: "closed", id: m.id, bytes: r.written, sha256: r.hash.digest("hex") });
    }
  });
}
