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
import { createWriteStream, fsync, mkdirSync, readFileSync, type WriteStream } from "node:fs";
import { dirname } from "node:path";
import { CHECKPOINT_BYTES, CHECKPOINT_MS, type RecordingCheckpoint, type RecordingResult } from "./recording.ts";

/** First bytes of a raw recording's header line. */
export const RAW_MAGIC = '{"varco_raw":1';
/** Frame stream codes. */
export const RAW_STDOUT = 0x6f;
export const RAW_STDERR = 0x65;
export const RAW_INPUT = 0x69;
export const RAW_MARKER = 0x6d;
const FRAME_HEADER = 5;
const EMPTY = Buffer.alloc(0);

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
  /** Bytes buffered towards the disk before a write returns false (backpressure), default 1 MiB. */
  readonly highWaterMark?: number;
  readonly onError: (err: NodeJS.ErrnoException) => void;
  readonly onLimit?: (direction: "input" | "output") => void;
  /** Running-hash checkpoints, as {@link import("./recording.ts").RecordingOptions}: every 4 MiB / 10 s by default. */
  readonly onCheckpoint?: (c: RecordingCheckpoint) => void;
  readonly checkpointBytes?: number;
  readonly checkpointMs?: number;
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

/**
 * Opens a raw recording (mode 0600, created exclusively, fsync(2)ed on close) and writes its header.
 * Throws what `mkdirSync`/`createWriteStream` throw synchronously; later write errors go to `onError`.
 */
export function createRawRecorder(o: RawRecordingOptions): RawRecorder {
  mkdirSync(dirname(o.file), { recursive: true, mode: 0o750 });
  const stream: WriteStream = createWriteStream(o.file, {
    mode: 0o600,
    flags: "wx",
    highWaterMark: o.highWaterMark ?? 1024 * 1024,
    flush: true,
  });
  const hash = createHash("sha256");
  let bytes = 0;
  let stdoutBytes = 0;
  let stderrBytes = 0;
  let inputBytes = 0;
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

  const every = o.checkpointBytes ?? CHECKPOINT_BYTES;
  let marked = 0;
  let chain: Promise<void> = Promise.resolve();
  const checkpoint = () => {
    const report = o.onCheckpoint;
    if (!report || failed || bytes === marked) return;
    marked = bytes;
    const mark: RecordingCheckpoint = { bytes, sha256: hash.copy().digest("hex") };
    const written = new Promise<boolean>((resolve) => stream.write(EMPTY, (err) => resolve(!err)));
    chain = chain.then(async () => {
      if (!(await written) || failed) return;
      const fd = (stream as unknown as { fd: number | null }).fd;
      if (typeof fd !== "number") return;
      const synced = await new Promise<boolean>((resolve) => fsync(fd, (err) => resolve(!err)));
      if (synced && !failed) report(mark);
    });
  };
  const ticker = o.onCheckpoint ? setInterval(checkpoint, o.checkpointMs ?? CHECKPOINT_MS) : undefined;
  ticker?.unref();

  const writeBuf = (buf: Buffer): boolean => {
    if (failed) return true;
    hash.update(buf);
    bytes += buf.length;
    const ok = stream.write(buf);
    if (bytes - marked >= every) checkpoint();
    return ok;
  };
  /** One frame, copied (the caller's buffer may be reused once we return). */
  const frame = (code: number, data: Buffer): boolean => {
    const buf = Buffer.allocUnsafe(FRAME_HEADER + data.length);
    buf[0] = code;
    buf.writeUInt32BE(data.length, 1);
    data.copy(buf, FRAME_HEADER);
    return writeBuf(buf);
  };
  const reachLimit = (direction: "input" | "output"): boolean => {
    truncated = true;
    const ok = frame(RAW_MARKER, Buffer.from(`varco: recording truncated at ${o.maxBytes} bytes`));
    o.onLimit?.(direction);
    return ok;
  };
  /** Records `data` on stream `code` within `maxBytes`; `count` adds what was kept to its stream's total. */
  const take = (code: number, data: Buffer, count: (n: number) => void, direction: "input" | "output"): boolean => {
    if (failed || truncated) return true;
    const room = o.maxBytes - stdoutBytes - stderrBytes - inputBytes;
    const part = data.length > room ? data.subarray(0, Math.max(0, room)) : data;
    count(part.length);
    const ok = part.length > 0 ? frame(code, part) : stream.writableLength < stream.writableHighWaterMark;
    return part.length < data.length ? reachLimit(direction) : ok;
  };

  writeBuf(
    Buffer.from(`${JSON.stringify({ varco_raw: 1, timestamp: Math.floor(o.startedAtMs / 1000), ...(o.meta ? { varco: o.meta } : {}) })}\n`),
  );

  return {
    output: (data) =>
      take(
        RAW_STDOUT,
        data,
        (n) => {
          stdoutBytes += n;
        },
        "output",
      ),
    error: (data) =>
      take(
        RAW_STDERR,
        data,
        (n) => {
          stderrBytes += n;
        },
        "output",
      ),
    input: (data) =>
      o.input
        ? take(
            RAW_INPUT,
            data,
            (n) => {
              inputBytes += n;
            },
            "input",
          )
        : true,
    onDrain(fn) {
      if (failed || stream.writableLength < stream.writableHighWaterMark) fn();
      else drains.push(fn);
    },
    close() {
      if (ticker) clearInterval(ticker);
      return new Promise((resolve) => {
        const base = { file: o.file, outputBytes: stdoutBytes + stderrBytes, inputBytes, stdoutBytes, stderrBytes, truncated, failed };
        if (failed) {
          stream.destroy();
          let onDisk = Buffer.alloc(0);
          try {
            onDisk = readFileSync(o.file);
          } catch {
            /* nothing written */
          }
          resolve({ ...base, failed: true, sha256: createHash("sha256").update(onDisk).digest("hex"), bytes: onDisk.length });
          return;
        }
        const done = () => resolve({ ...base, failed, sha256: hash.digest("hex"), bytes });
        stream.once("error", () => done());
        void chain.then(() => stream.end(() => done()));
      });
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
