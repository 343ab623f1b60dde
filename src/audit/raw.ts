/**
 * Lossless recordings of channels without a terminal (a non-pty `exec`, a shell without pty): the
 * bytes the target sent (stdout and stderr) and, with `record.input`, the bytes the user sent, kept
 * as they were, not as asciicast JSON (which cannot hold binary data and costs a JSON escape per byte).
 *
 * File format (`<session>-<channel>.raw`, "varco raw v1"): one JSON header line
 * `{"varco_raw":1,"timestamp":<s>,"varco":{session,uid,account,target,kind,command}}\n`, then frames:
 * one byte stream code (`o` 0x6f stdout, `e` 0x65 stderr, `i` 0x69 input, `m` 0x6d a varco marker in
 * UTF-8), a 4-byte big-endian payload length, the payload. `audit replay` writes the stdout frames to
 * stdout and the stderr frames to stderr, byte for byte; {@link readRaw} parses a file.
 * The file's SHA-256 is computed as it is written, with the same running-hash checkpoints, fsync and
 * `max_bytes` rules as the asciicast recorder (src/audit/recording.ts).
 */
import { createHash, type Hash } from "node:crypto";
import { createReadStream, close as fsClose, mkdirSync, openSync, readFileSync } from "node:fs";
import { dirname } from "node:path";
import { performance } from "node:perf_hooks";
import type { Worker } from "node:worker_threads";
import type { RawWriterReply, RawWriterRequest } from "./raw-writer.ts";
import { CHECKPOINT_BYTES, CHECKPOINT_MS, type RecordingCheckpoint, type RecordingResult } from "./recording.ts";
import { startWorker } from "./thread.ts";

/** First bytes of a raw recording's header line. */
export const RAW_MAGIC = '{"varco_raw":1';
/** Frame stream codes. */
export const RAW_STDOUT = 0x6f;
export const RAW_STDERR = 0x65;
export const RAW_INPUT = 0x69;
export const RAW_MARKER = 0x6d;
const FRAME_HEADER = 5;
/** Shortest time between two checkpoints of a raw recording, ms: bulk output is checkpointed ~4 times a second, not every 4 MiB. */
export const RAW_CHECKPOINT_MIN_MS = 250;

export interface RawRecordingOptions {
  readonly file: string;
  /** Wall-clock start, ms since epoch (the header's `timestamp`). */
  readonly startedAtMs: number;
  /** Header fields (varco writes session id, user, target, kind, command). */
  readonly meta?: Readonly<Record<string, string>>;
  /** Record the user's bytes (`i` frames), unmasked: a channel without a terminal has no prompt to watch. */
  readonly input: boolean;
  /** Cap on recorded payload bytes (stdout + stderr + input); reaching it writes an `m` frame, calls `onLimit` once and records nothing more. */
  readonly maxBytes: number;
  /** Bytes buffered towards the disk before a write returns false (backpressure), default 2 MiB. */
  readonly highWaterMark?: number;
  readonly onError: (err: NodeJS.ErrnoException) => void;
  readonly onLimit?: (direction: "input" | "output") => void;
  /** Running-hash checkpoints, as {@link import("./recording.ts").RecordingOptions}: every 4 MiB / 10 s by default. */
  readonly onCheckpoint?: (c: RecordingCheckpoint) => void;
  readonly checkpointBytes?: number;
  readonly checkpointMs?: number;
  /** Shortest time between two checkpoints, ms (default `RAW_CHECKPOINT_MIN_MS`, 250). */
  readonly checkpointMinMs?: number;
}

/** What a raw recording kept: the file's result plus the payload bytes per stream. */
export interface RawRecordingResult extends RecordingResult {
  readonly stdoutBytes: number;
  readonly stderrBytes: number;
}

/** A recorder of raw channel bytes; `output`/`error`/`input` return false when the buffer is full (wait for `onDrain`). */
export interface RawRecorder {
  output(data: Buffer): boolean;
  error(data: Buffer): boolean;
  input(data: Buffer): boolean;
  onDrain(fn: () => void): void;
  /** Flushes, fsyncs (after pending checkpoints) and closes; resolves with the file's SHA-256. */
  close(): Promise<RawRecordingResult>;
}

/** Bytes of one block that frames are gathered into before they are written. */
const BLOCK = 256 * 1024;
/** Longest time a partly filled block waits before it is written, ms. */
const COALESCE_MS = 2;
/**
 * Written blocks kept for reuse, shared by all raw recordings of the process (at most 16: 4 MiB), so
 * bulk output allocates no buffer per chunk and an idle recording holds no block at all.
 */
const pool: Buffer[] = [];
const POOL_BLOCKS = 16;
const takeBlock = (): Buffer => pool.pop() ?? Buffer.allocUnsafeSlow(BLOCK);
/** Returns a block the writer gave back to the pool (only whole pool-sized blocks). */
const giveBlock = (b: ArrayBuffer): void => {
  if (b.byteLength === BLOCK && pool.length < POOL_BLOCKS) pool.push(Buffer.from(b, 0, BLOCK));
};

/** The process's recording writer thread (raw-writer.ts), started with the first raw recording. */
interface Writer {
  readonly worker: Worker;
  /** Reply handlers of the open recordings, by id; the worker is ref'ed while there is one. */
  readonly open: Map<number, (m: RawWriterReply) => void>;
}
let writer: Writer | undefined;
let nextId = 1;
function recordingWriter(): Writer {
  if (writer) return writer;
  const worker = startWorker(import.meta.url, "raw-writer");
  worker.unref();
  const w: Writer = { worker, open: new Map() };
  worker.on("message", (m: RawWriterReply) => w.open.get(m.id)?.(m));
  // A writer that dies fails every open recording (fail-closed); the next recording starts another.
  const gone = (message: string) => {
    if (writer === w) writer = undefined;
    for (const [id, h] of [...w.open]) {
      try {
        h({ op: "error", id, code: "EWORKER", message });
      } catch {
        /* one recording's error handler must not keep the others from failing */
      }
    }
    w.open.clear();
  };
  worker.on("error", (err) => gone(`the recording writer failed: ${err.message}`));
  worker.on("exit", (code) => gone(`the recording writer stopped (exit code ${code})`));
  writer = w;
  return w;
}

/** The recording writer thread, when one runs (tests stop it to see the open recordings fail). */
export function recordingWriterThread(): Worker | undefined {
  return writer?.worker;
}

/**
 * Opens a raw recording (mode 0600, created exclusively, fsync(2)ed on close) and writes its header.
 *
 * Frames are copied (the caller's buffer may be reused once a call returns) into 256 KiB blocks; a
 * full block, or a partly filled one within 2 ms, is handed (transferred, not copied) to the
 * process's recording writer thread (raw-writer.ts), which hashes and writes the blocks of every
 * recording in order and gives them back. Bulk output costs the event loop a memcpy per chunk and a
 * message per block; the SHA-256 and the write(2) calls run beside it. Bytes not yet written
 * (gathered + in the writer) are bounded by `highWaterMark`: past it, the calls return false until
 * `onDrain`. A writer thread that dies fails the recording (`onError` with code `EWORKER`); if a
 * request of the recording was still unanswered, its descriptor is left open (a write the thread
 * started may still be running). `close()` may be called
 * more than once; every call gets the same result.
 * Throws what `mkdirSync`/`openSync` throw synchronously (EEXIST, EACCES…); later write errors go to `onError`.
 */
export function createRawRecorder(o: RawRecordingOptions): RawRecorder {
  mkdirSync(dirname(o.file), { recursive: true, mode: 0o750 });
  const fd = openSync(o.file, "wx", 0o600);
  const w = recordingWriter();
  const id = nextId++;
  const hwm = o.highWaterMark ?? 2 * 1024 * 1024;
  /** File bytes framed so far (handed to the writer or not). */
  let bytes = 0;
  /** File bytes written (acknowledged by the writer). */
  let written = 0;
  let stdoutBytes = 0;
  let stderrBytes = 0;
  let inputBytes = 0;
  let truncated = false;
  let failed = false;
  let closing = false;
  /** The writer thread died while a write, fsync or close of this recording may have been running (see `finish`). */
  let lost = false;
  /** Requests (write, sync, close) the writer has not answered yet: while any is, a file operation may be running. */
  let asked = 0;
  const ask = (m: RawWriterRequest, transfer?: ArrayBuffer[]) => {
    asked++;
    w.worker.postMessage(m, transfer);
  };
  const drains: Array<() => void> = [];
  const runDrains = () => {
    for (const fn of drains.splice(0)) fn();
  };
  /** The block being filled (undefined until a frame comes), and its bytes used. */
  let block: Buffer | undefined;
  let fill = 0;
  let scheduled = false;
  /** The writer's answer to `close`, once asked. */
  let closed: ((r: { bytes: number; sha256: string } | undefined) => void) | undefined;

  const fail = (err: NodeJS.ErrnoException) => {
    if (failed) return;
    failed = true;
    fill = 0;
    block = undefined;
    try {
      o.onError(err);
    } finally {
      // Whatever the handler does, the relay and close() must not wait for a writer that will not answer.
      runDrains();
      closed?.(undefined);
    }
  };
  /** Hands the current block to the writer (in file order). */
  const send = () => {
    if (!block || fill === 0 || failed) return;
    const buf = block.buffer as ArrayBuffer;
    ask({ op: "write", id, buf, len: fill }, [buf]);
    block = undefined;
    fill = 0;
  };
  const pendingBytes = () => bytes - written;
  /** Sends a whole block at once (`frame` does), a partly filled one within COALESCE_MS (a quiet channel's bytes still go out at once). */
  const schedule = () => {
    if (scheduled) return;
    scheduled = true;
    setTimeout(() => {
      scheduled = false;
      send();
    }, COALESCE_MS).unref();
  };
  /** Copies one frame into the blocks; true while the unwritten bytes stay under `highWaterMark`. */
  const frame = (code: number, data: Buffer): boolean => {
    const need = FRAME_HEADER + data.length;
    if (block && fill + need > block.length) send();
    if (!block) block = need > BLOCK ? Buffer.allocUnsafeSlow(need) : takeBlock();
    block[fill] = code;
    block.writeUInt32BE(data.length, fill + 1);
    data.copy(block, fill + FRAME_HEADER);
    fill += need;
    bytes += need;
    if (fill === block.length) send();
    if (o.onCheckpoint && bytes - marked >= every) checkpoint();
    schedule();
    return pendingBytes() < hwm;
  };

  const every = o.checkpointBytes ?? CHECKPOINT_BYTES;
  let marked = 0;
  let syncing = false;
  let lastAt = Number.NEGATIVE_INFINITY;
  const minGap = o.checkpointMinMs ?? RAW_CHECKPOINT_MIN_MS;
  /** Asks the writer for a checkpoint: everything framed so far written, fsync(2)ed, hashed. */
  const checkpoint = () => {
    if (!o.onCheckpoint || failed || closing || bytes === marked || syncing) return;
    const now = performance.now();
    if (now - lastAt < minGap) return;
    lastAt = now;
    syncing = true;
    send();
    marked = bytes;
    ask({ op: "sync", id });
  };
  const ticker = o.onCheckpoint ? setInterval(checkpoint, o.checkpointMs ?? CHECKPOINT_MS) : undefined;
  ticker?.unref();

  w.open.set(id, (m) => {
    switch (m.op) {
      case "written":
        asked--;
        giveBlock(m.buf);
        if (failed) return;
        written = m.bytes;
        if (pendingBytes() < hwm) runDrains();
        return;
      case "checkpoint":
        asked--;
        syncing = false;
        if (failed) return;
        o.onCheckpoint?.({ bytes: m.bytes, sha256: m.sha256 });
        if (bytes - marked >= every) checkpoint();
        return;
      case "closed":
        asked--;
        closed?.({ bytes: m.bytes, sha256: m.sha256 });
        return;
      case "error":
        if (m.code === "EWORKER" && asked > 0) lost = true;
        fail(Object.assign(new Error(m.message), { code: m.code }));
        return;
    }
  });
  w.worker.ref();
  w.worker.postMessage({ op: "open", id, fd } satisfies RawWriterRequest);

  const reachLimit = (direction: "input" | "output"): boolean => {
    truncated = true;
    const ok = frame(RAW_MARKER, Buffer.from(`varco: recording truncated at ${o.maxBytes} bytes`));
    o.onLimit?.(direction);
    return ok;
  };
  /** Records `data` on stream `code` within `maxBytes` (stdout + stderr + input together). */
  const take = (code: number, data: Buffer): boolean => {
    if (failed || truncated || closing) return true;
    const room = o.maxBytes - stdoutBytes - stderrBytes - inputBytes;
    const part = data.length > room ? data.subarray(0, Math.max(0, room)) : data;
    if (code === RAW_STDOUT) stdoutBytes += part.length;
    else if (code === RAW_STDERR) stderrBytes += part.length;
    else inputBytes += part.length;
    const ok = part.length > 0 ? frame(code, part) : pendingBytes() < hwm;
    return part.length < data.length ? reachLimit(code === RAW_INPUT ? "input" : "output") : ok;
  };

  const head = Buffer.from(
    `${JSON.stringify({ varco_raw: 1, timestamp: Math.floor(o.startedAtMs / 1000), ...(o.meta ? { varco: o.meta } : {}) })}\n`,
  );
  block = head.length > BLOCK ? Buffer.allocUnsafeSlow(head.length) : takeBlock();
  head.copy(block, 0);
  fill = head.length;
  bytes = head.length;
  schedule();

  /** Closes once: flushes, waits for the writer's fsync and hash, closes the descriptor. */
  const finish = async (): Promise<RawRecordingResult> => {
    if (ticker) clearInterval(ticker);
    closing = true;
    const base = { file: o.file, outputBytes: stdoutBytes + stderrBytes, inputBytes, stdoutBytes, stderrBytes, truncated };
    let done: { bytes: number; sha256: string } | undefined;
    if (!failed) {
      const answer = new Promise<{ bytes: number; sha256: string } | undefined>((resolve) => {
        closed = resolve;
      });
      send();
      ask({ op: "close", id });
      done = await answer;
    } else if (!lost) w.worker.postMessage({ op: "close", id } satisfies RawWriterRequest);
    w.open.delete(id);
    if (w.open.size === 0) w.worker.unref();
    // A writer thread that died with a request of this recording unanswered may have left its
    // write(2) or fsync(2) running in the libuv pool; closing the descriptor could let the write land
    // in whatever file reuses the number (the audit database…). That descriptor is left open instead.
    if (!lost) await new Promise<void>((resolve) => fsClose(fd, () => resolve()));
    if (done && !failed) return { ...base, failed: false, sha256: done.sha256, bytes: done.bytes };
    // What reached the disk is what the hash must cover.
    const disk = createHash("sha256");
    let size = 0;
    try {
      for await (const chunk of createReadStream(o.file)) {
        disk.update(chunk as Buffer);
        size += (chunk as Buffer).length;
      }
    } catch {
      /* nothing readable */
    }
    return { ...base, failed: true, sha256: disk.digest("hex"), bytes: size };
  };
  let result: Promise<RawRecordingResult> | undefined;

  return {
    output: (data) => take(RAW_STDOUT, data),
    error: (data) => take(RAW_STDERR, data),
    input: (data) => (o.input ? take(RAW_INPUT, data) : true),
    onDrain(fn) {
      if (failed || pendingBytes() < hwm) fn();
      else drains.push(fn);
    },
    close() {
      result ??= finish();
      return result;
    },
  };
}

/** Size and SHA-256 (hex) of one stream. */
export interface StreamDigest {
  readonly bytes: number;
  readonly sha256: string;
}

/** Hashes stdout and stderr as they pass (`record.exec_output: digest`): nothing is written, nothing can fail or fill up. */
export interface DigestRecorder {
  output(data: Buffer): void;
  error(data: Buffer): void;
  result(): { stdout: StreamDigest; stderr: StreamDigest };
}

/** A {@link DigestRecorder}: SHA-256 (FIPS 180-4) of each stream's bytes in order. */
export function createDigestRecorder(): DigestRecorder {
  const make = () => ({ hash: createHash("sha256") as Hash, bytes: 0 });
  const out = make();
  const err = make();
  return {
    output(data) {
      out.hash.update(data);
      out.bytes += data.length;
    },
    error(data) {
      err.hash.update(data);
      err.bytes += data.length;
    },
    result: () => ({
      stdout: { bytes: out.bytes, sha256: out.hash.digest("hex") },
      stderr: { bytes: err.bytes, sha256: err.hash.digest("hex") },
    }),
  };
}

/** Thrown for a file that is not a varco raw recording, or whose frames are damaged. */
export class RawFormatError extends Error {
  constructor(file: string, reason: string) {
    super(`${file}: not a varco raw recording (${reason})`);
    this.name = "RawFormatError";
  }
}

/** Whether `file` is a raw recording, by its name (`.raw`, as {@link rawRecordingPath} makes it). */
export function isRawRecording(file: string): boolean {
  return file.endsWith(".raw");
}

/** The raw recording's path for an asciicast path from `recordingPath` (`….cast` → `….raw`). */
export function rawRecordingPath(castPath: string): string {
  return castPath.replace(/\.cast$/, ".raw");
}

/** One frame of a raw recording: stream code (`RAW_STDOUT`…) and payload (a view into the file's bytes). */
export interface RawFrame {
  readonly code: number;
  readonly data: Buffer;
}

/**
 * Parses a raw recording: its header (JSON object) and frames in order. A torn last frame (a crash
 * mid-write) is dropped, as a torn last asciicast line is. Reads the whole file into memory.
 * @throws RawFormatError when the header is missing or not JSON, or a frame has an unknown code.
 */
export function readRaw(file: string): { header: Record<string, unknown>; frames: RawFrame[] } {
  const buf = readFileSync(file);
  const nl = buf.indexOf(0x0a);
  if (nl < 0 || !buf.subarray(0, RAW_MAGIC.length).equals(Buffer.from(RAW_MAGIC))) throw new RawFormatError(file, "no header line");
  let header: Record<string, unknown>;
  try {
    header = JSON.parse(buf.subarray(0, nl).toString("utf8")) as Record<string, unknown>;
  } catch {
    throw new RawFormatError(file, "the header is not JSON");
  }
  const frames: RawFrame[] = [];
  let at = nl + 1;
  while (at + FRAME_HEADER <= buf.length) {
    const code = buf[at] as number;
    if (code !== RAW_STDOUT && code !== RAW_STDERR && code !== RAW_INPUT && code !== RAW_MARKER)
      throw new RawFormatError(file, `unknown frame code 0x${code.toString(16)} at byte ${at}`);
    const len = buf.readUInt32BE(at + 1);
    if (at + FRAME_HEADER + len > buf.length) break;
    frames.push({ code, data: buf.subarray(at + FRAME_HEADER, at + FRAME_HEADER + len) });
    at += FRAME_HEADER + len;
  }
  return { header, frames };
}
