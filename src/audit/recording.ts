/**
 * Terminal recordings in asciicast v2 (the asciinema format: a JSON header line, then one
 * `[seconds, "o"|"i"|"r", data]` line per event). Lines are written through a bounded buffer; the
 * SHA-256 of the file is computed as it is written and returned by `close()`.
 * Spec: https://docs.asciinema.org/manual/asciicast/v2/
 */
import { createHash } from "node:crypto";
import { createWriteStream, mkdirSync, readFileSync, type WriteStream } from "node:fs";
import { dirname, join } from "node:path";
import { StringDecoder } from "node:string_decoder";

export interface RecordingHeader {
  /** Terminal size, columns × rows. */
  readonly width: number;
  readonly height: number;
  /** Start time, ms since epoch. */
  readonly startedAtMs: number;
  readonly term?: string | undefined;
  readonly title?: string | undefined;
  /** Extra header fields (varco writes session id, user, target, command). */
  readonly meta?: Readonly<Record<string, string>>;
}

const COALESCE_MS = 5;
const COALESCE_BYTES = 64 * 1024;

export interface RecordingOptions {
  readonly file: string;
  readonly header: RecordingHeader;
  /** Record "i" (input) events. */
  readonly input: boolean;
  /** Stop recording output after this many bytes (a marker line says so). */
  readonly maxBytes: number;
  /** Bytes buffered towards the disk before `output()` returns false (backpressure), default 1 MiB: with `terminate`, at most this much output passes unrecorded before the session is cut. */
  readonly highWaterMark?: number;
  /** Clock, ms since epoch (injectable for tests). */
  readonly now?: () => number;
  /** Called once if the file cannot be written (e.g. ENOSPC). */
  readonly onError: (err: NodeJS.ErrnoException) => void;
}

export interface RecordingResult {
  readonly file: string;
  readonly sha256: string;
  /** Bytes written to the file. */
  readonly bytes: number;
  /** Bytes of terminal output recorded (before JSON encoding). */
  readonly outputBytes: number;
  readonly truncated: boolean;
  readonly failed: boolean;
}

export interface Recorder {
  /** Records target output. Returns false when the buffer is full: wait for `onDrain` before more. */
  output(data: Buffer): boolean;
  input(data: Buffer): void;
  resize(width: number, height: number): void;
  /** Calls `fn` once the buffer has room again. */
  onDrain(fn: () => void): void;
  /** Flushes and closes; resolves with the file's SHA-256. */
  close(): Promise<RecordingResult>;
}

/** `<recordings_dir>/YYYY/MM/DD/<session-id>-<channel>.cast` (UTC date; recordings_dir defaults to state_dir/recordings). */
export function recordingPath(recordingsDir: string, sessionId: string, channel: number, atMs: number): string {
  const d = new Date(atMs);
  const yyyy = String(d.getUTCFullYear());
  const mm = String(d.getUTCMonth() + 1).padStart(2, "0");
  const dd = String(d.getUTCDate()).padStart(2, "0");
  return join(recordingsDir, yyyy, mm, dd, `${sessionId}-${channel}.cast`);
}

/** Opens a recording file (mode 0600) and writes the asciicast v2 header. */
export function createRecorder(o: RecordingOptions): Recorder {
  mkdirSync(dirname(o.file), { recursive: true, mode: 0o750 });
  const now = o.now ?? Date.now;
  const stream: WriteStream = createWriteStream(o.file, { mode: 0o600, flags: "wx", highWaterMark: o.highWaterMark ?? 1024 * 1024 });
  const hash = createHash("sha256");
  const outDecoder = new StringDecoder("utf8");
  const inDecoder = new StringDecoder("utf8");
  let bytes = 0;
  let outputBytes = 0;
  let truncated = false;
  let failed = false;
  const drains: Array<() => void> = [];
  stream.on("drain", () => {
    for (const fn of drains.splice(0)) fn();
  });
  stream.on("error", (err: NodeJS.ErrnoException) => {
    if (failed) return;
    failed = true;
    o.onError(err);
    for (const fn of drains.splice(0)) fn();
  });

  const write = (line: string): boolean => {
    if (failed) return true;
    const buf = Buffer.from(line, "utf8");
    hash.update(buf);
    bytes += buf.length;
    return stream.write(buf);
  };
  const elapsed = () => Math.max(0, (now() - o.header.startedAtMs) / 1000);
  const line = (t: number, code: string, data: string) => write(`${JSON.stringify([Number(t.toFixed(6)), code, data])}\n`);
  // Output arriving within COALESCE_MS (or up to COALESCE_BYTES) becomes one "o" event: fewer,
  // larger lines cost less to encode and hash, and 5 ms is below what a player can show.
  let pending: string[] = [];
  let pendingLen = 0;
  let pendingAt = 0;
  let timer: NodeJS.Timeout | undefined;
  let lastOk = true;
  const flushOutput = (): boolean => {
    if (timer) {
      clearTimeout(timer);
      timer = undefined;
    }
    if (pending.length === 0) return lastOk;
    const data = pending.length === 1 ? (pending[0] as string) : pending.join("");
    pending = [];
    pendingLen = 0;
    lastOk = line(pendingAt, "o", data);
    return lastOk;
  };
  const event = (code: string, data: string) => {
    flushOutput();
    return line(elapsed(), code, data);
  };
  const queueOutput = (text: string): boolean => {
    if (text.length === 0) return lastOk;
    if (pending.length === 0) pendingAt = elapsed();
    pending.push(text);
    pendingLen += text.length;
    if (pendingLen >= COALESCE_BYTES) return flushOutput();
    if (!timer) {
      timer = setTimeout(flushOutput, COALESCE_MS);
      timer.unref();
    }
    return lastOk;
  };

  const header: Record<string, unknown> = {
    version: 2,
    // A client without a terminal (ssh -tt < file) reports 0×0; players need a real size.
    width: o.header.width > 0 ? o.header.width : 80,
    height: o.header.height > 0 ? o.header.height : 24,
    timestamp: Math.floor(o.header.startedAtMs / 1000),
    env: { TERM: o.header.term ?? "", SHELL: "" },
    ...(o.header.title ? { title: o.header.title } : {}),
    ...(o.header.meta ? { varco: o.header.meta } : {}),
  };
  write(`${JSON.stringify(header)}\n`);

  return {
    output(data) {
      if (failed || truncated) return true;
      if (outputBytes + data.length > o.maxBytes) {
        const room = o.maxBytes - outputBytes;
        if (room > 0) queueOutput(outDecoder.write(data.subarray(0, room)));
        outputBytes = o.maxBytes;
        truncated = true;
        return event("m", `varco: recording truncated at ${o.maxBytes} bytes`);
      }
      outputBytes += data.length;
      return queueOutput(outDecoder.write(data));
    },
    input(data) {
      if (o.input && !failed) event("i", inDecoder.write(data));
    },
    resize(width, height) {
      if (!failed) event("r", `${width}x${height}`);
    },
    onDrain(fn) {
      if (failed || stream.writableLength < stream.writableHighWaterMark) fn();
      else drains.push(fn);
    },
    close() {
      const rest = outDecoder.end();
      if (rest) queueOutput(rest);
      flushOutput();
      return new Promise((resolve) => {
        const done = () => resolve({ file: o.file, sha256: hash.digest("hex"), bytes, outputBytes, truncated, failed });
        if (failed) {
          // What reached the disk is what the hash must cover.
          stream.destroy();
          let onDisk = Buffer.alloc(0);
          try {
            onDisk = readFileSync(o.file);
          } catch {
            /* nothing written */
          }
          resolve({
            file: o.file,
            sha256: createHash("sha256").update(onDisk).digest("hex"),
            bytes: onDisk.length,
            outputBytes,
            truncated,
            failed,
          });
          return;
        }
        stream.end(() => done());
        stream.once("error", () => done());
      });
    },
  };
}
