/**
 * Terminal recordings in asciicast v2 (the asciinema format: a JSON header line, then one
 * `[seconds, "o"|"i"|"r"|"m", data]` line per event). Lines are written through a bounded buffer;
 * the SHA-256 of the file is computed as it is written and returned by `close()`.
 * Event times come from a monotonic clock relative to the recorder's creation (a wall-clock step,
 * NTP or manual, cannot reorder or stretch a recording); the header's `timestamp` is the wall-clock start.
 * Spec: https://docs.asciinema.org/manual/asciicast/v2/
 */
import { createHash } from "node:crypto";
import { createWriteStream, fsync, mkdirSync, readFileSync, type WriteStream } from "node:fs";
import { dirname, join } from "node:path";
import { performance } from "node:perf_hooks";
import { StringDecoder } from "node:string_decoder";
import { stripVTControlCharacters } from "node:util";

export interface RecordingHeader {
  /** Terminal size, columns × rows. */
  readonly width: number;
  readonly height: number;
  /** Start time, ms since epoch (wall clock; only the header's `timestamp` uses it). */
  readonly startedAtMs: number;
  readonly term?: string | undefined;
  readonly title?: string | undefined;
  /** Extra header fields (varco writes session id, user, target, command). */
  readonly meta?: Readonly<Record<string, string>>;
}

const COALESCE_MS = 5;
const COALESCE_BYTES = 64 * 1024;
/** Default file bytes between two running-hash checkpoints. */
export const CHECKPOINT_BYTES = 4 * 1024 * 1024;
/** Default interval between two running-hash checkpoints while data is being recorded, ms. */
export const CHECKPOINT_MS = 10_000;
const EMPTY = Buffer.alloc(0);

/**
 * A verifiable prefix of an open recording: the SHA-256 (hex) of the file's first `bytes` bytes,
 * reported only once those bytes have been written and fsync(2)ed.
 */
export interface RecordingCheckpoint {
  readonly bytes: number;
  readonly sha256: string;
}

export interface RecordingOptions {
  readonly file: string;
  readonly header: RecordingHeader;
  /**
   * Record "i" (input) events. Input typed after a password-like prompt in the output
   * (`Password:`, `[sudo] password for x:`, `Verification code:`, `… passphrase …:`) up to the next
   * CR/LF is written as the marker `[input hidden]` instead (see `PROMPT`).
   */
  readonly input: boolean;
  /**
   * Cap on recorded terminal bytes, output and (with `input`) input together, counted before JSON
   * encoding. Reaching it writes an "m" marker line, calls `onLimit` once and records nothing more.
   */
  readonly maxBytes: number;
  /** Bytes buffered towards the disk before `output()`/`input()` return false (backpressure), default 1 MiB: with `terminate`, at most this much passes unrecorded before the session is cut. */
  readonly highWaterMark?: number;
  /** Monotonic clock in ms (any origin; default `performance.now`), injectable for tests. Event times are relative to its value at creation. */
  readonly monotonic?: () => number;
  /** Called once if the file cannot be written (e.g. ENOSPC). */
  readonly onError: (err: NodeJS.ErrnoException) => void;
  /** Called once, synchronously from the `output()`/`input()` call that reached `maxBytes`. */
  readonly onLimit?: (direction: "input" | "output") => void;
  /**
   * Running-hash checkpoints: once `checkpointBytes` (default `CHECKPOINT_BYTES`, 4 MiB) more file
   * bytes have been written, or every `checkpointMs` (default `CHECKPOINT_MS`, 10 s) if any were,
   * the file is fsync(2)ed and `onCheckpoint` called with the SHA-256 of the file so far, in order.
   * A crash then leaves a file whose prefix is vouched for by the last checkpoint chained before it.
   * Not called after a write error, nor for the final state (`close()` returns that).
   */
  readonly onCheckpoint?: (c: RecordingCheckpoint) => void;
  readonly checkpointBytes?: number;
  readonly checkpointMs?: number;
}

/**
 * A password-like prompt at the end of the output (the terminal's current line, escape sequences
 * removed): sudo's `[sudo] password for USER:`, `Password:`, `password:`, OpenSSH's
 * `Verification code:` and `Enter passphrase for key …:`. Case-insensitive; the prompt must end the
 * line (optionally followed by spaces), so text merely mentioning a password does not hide the next line.
 * Escape sequences (colours) are removed first with `util.stripVTControlCharacters`.
 */
export const PROMPT = /(?:password|passphrase|pass phrase|verification code)[^\r\n]{0,200}[:?]\s*$/i;
/** What replaces hidden input in the recording. */
export const HIDDEN_INPUT_MARKER = "[input hidden]";

export interface RecordingResult {
  readonly file: string;
  readonly sha256: string;
  /** Bytes written to the file. */
  readonly bytes: number;
  /** Bytes of terminal output recorded (before JSON encoding). */
  readonly outputBytes: number;
  /** Bytes of terminal input recorded (before masking and JSON encoding); 0 without `input`. */
  readonly inputBytes: number;
  readonly truncated: boolean;
  readonly failed: boolean;
}

export interface Recorder {
  /** Records target output. Returns false when the buffer is full: wait for `onDrain` before more. */
  output(data: Buffer): boolean;
  /** Records user input (only with `input`); same backpressure contract as `output`. */
  input(data: Buffer): boolean;
  resize(width: number, height: number): void;
  /** Calls `fn` once the buffer has room again. */
  onDrain(fn: () => void): void;
  /** Flushes, fsyncs (after pending checkpoints) and closes; resolves with the file's SHA-256. */
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

/**
 * Opens a recording file (mode 0600, created exclusively) and writes the asciicast v2 header.
 * Throws what `mkdirSync`/`createWriteStream` throw synchronously; later write errors go to `onError`.
 */
export function createRecorder(o: RecordingOptions): Recorder {
  mkdirSync(dirname(o.file), { recursive: true, mode: 0o750 });
  const clock = o.monotonic ?? (() => performance.now());
  const t0 = clock();
  // flush: the file is fsync(2)ed before it is closed (Node >= 20.10).
  const stream: WriteStream = createWriteStream(o.file, {
    mode: 0o600,
    flags: "wx",
    highWaterMark: o.highWaterMark ?? 1024 * 1024,
    flush: true,
  });
  const hash = createHash("sha256");
  const outDecoder = new StringDecoder("utf8");
  const inDecoder = new StringDecoder("utf8");
  let bytes = 0;
  let outputBytes = 0;
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

  // Running-hash checkpoints: the prefix hash is taken from a copy of the running hash (cheap),
  // then reported once everything written before it has reached the file and been fsync'ed.
  // `chain` keeps the reports in order; `close()` waits for it before closing the fd.
  const every = o.checkpointBytes ?? CHECKPOINT_BYTES;
  let marked = 0;
  let chain: Promise<void> = Promise.resolve();
  const checkpoint = () => {
    const report = o.onCheckpoint;
    if (!report || failed || bytes === marked) return;
    marked = bytes;
    const mark: RecordingCheckpoint = { bytes, sha256: hash.copy().digest("hex") };
    // An empty write's callback runs once every earlier write has reached the file.
    const written = new Promise<boolean>((resolve) => stream.write(EMPTY, (err) => resolve(!err)));
    chain = chain.then(async () => {
      // WriteStream#fd is documented (fs.WriteStream) but missing from @types/node.
      if (!(await written) || failed) return;
      const fd = (stream as unknown as { fd: number | null }).fd;
      if (typeof fd !== "number") return;
      const synced = await new Promise<boolean>((resolve) => fsync(fd, (err) => resolve(!err)));
      if (synced && !failed) report(mark);
    });
  };
  const ticker = o.onCheckpoint ? setInterval(checkpoint, o.checkpointMs ?? CHECKPOINT_MS) : undefined;
  ticker?.unref();

  const write = (line: string): boolean => {
    if (failed) return true;
    const buf = Buffer.from(line, "utf8");
    hash.update(buf);
    bytes += buf.length;
    const ok = stream.write(buf);
    if (bytes - marked >= every) checkpoint();
    return ok;
  };
  const elapsed = () => Math.max(0, (clock() - t0) / 1000);
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

  // Privacy (only with input recording): `armed` while the terminal's current line is a
  // password-like prompt; `hiding` from the first answer byte to the next CR/LF the user sends.
  let currentLine = "";
  let armed = false;
  let hiding = false;
  const watchOutput = (text: string) => {
    if (!o.input || text.length === 0) return;
    const cut = Math.max(text.lastIndexOf("\n"), text.lastIndexOf("\r"));
    currentLine = cut === -1 ? currentLine + text : text.slice(cut + 1);
    if (currentLine.length > 512) currentLine = currentLine.slice(-512);
    armed = PROMPT.test(stripVTControlCharacters(currentLine));
  };
  const maskInput = (text: string): string => {
    if (!armed && !hiding) return text;
    const eol = text.search(/[\r\n]/);
    const secretLen = eol === -1 ? text.length : eol;
    const head = secretLen > 0 && !hiding ? HIDDEN_INPUT_MARKER : "";
    if (secretLen > 0) hiding = true;
    if (eol === -1) return head;
    // The answer ends here; the prompt has been used.
    hiding = false;
    armed = false;
    currentLine = "";
    return head + text.slice(eol);
  };

  /** `maxBytes` reached: a marker line, then nothing more is recorded. */
  const reachLimit = (direction: "input" | "output"): boolean => {
    truncated = true;
    const ok = event("m", `varco: recording truncated at ${o.maxBytes} bytes`);
    o.onLimit?.(direction);
    return ok;
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
      const room = o.maxBytes - outputBytes - inputBytes;
      const part = data.length > room ? data.subarray(0, Math.max(0, room)) : data;
      outputBytes += part.length;
      const text = part.length > 0 ? outDecoder.write(part) : "";
      watchOutput(text);
      const ok = queueOutput(text);
      return part.length < data.length ? reachLimit("output") : ok;
    },
    input(data) {
      if (!o.input || failed || truncated) return true;
      const room = o.maxBytes - outputBytes - inputBytes;
      const part = data.length > room ? data.subarray(0, Math.max(0, room)) : data;
      inputBytes += part.length;
      const text = part.length > 0 ? maskInput(inDecoder.write(part)) : "";
      const ok = text.length > 0 ? event("i", text) : stream.writableLength < stream.writableHighWaterMark;
      return part.length < data.length ? reachLimit("input") : ok;
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
      if (ticker) clearInterval(ticker);
      return new Promise((resolve) => {
        const done = () => resolve({ file: o.file, sha256: hash.digest("hex"), bytes, outputBytes, inputBytes, truncated, failed });
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
            inputBytes,
            truncated,
            failed,
          });
          return;
        }
        stream.once("error", () => done());
        // Checkpoints in flight fsync the fd: let them finish before it is closed.
        void chain.then(() => stream.end(() => done()));
      });
    },
  };
}
