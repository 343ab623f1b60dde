/**
 * Per-channel auditing: decides what to record for a session channel (a terminal recording for
 * shells and commands, file-transfer events for sftp/scp/rsync) and exposes it as taps the relay
 * calls with every chunk. The relay stays ignorant of what is recorded.
 */
import type { RecordSettings } from "../policy/index.ts";
import type { ParsedCommand } from "../routing/command.ts";
import { createDigestRecorder, createRawRecorder, type DigestRecorder, type RawRecorder, rawRecordingPath } from "./raw.ts";
import { createRecorder, type Recorder, recordingPath } from "./recording.ts";
import type { AuditEventInput, AuditSink } from "./store.ts";
import { type FileEvent, rsyncPaths, scpObserver, sftpObserver, type TransferObserver, type UnparsedTransfer } from "./transfers.ts";

/** A sink the relay feeds; `write` returning false asks the relay to pause until `onDrain`. */
export interface Tap {
  write(chunk: Buffer): boolean;
  onDrain(fn: () => void): void;
}

/** How long a blocked tap holds the relay when nobody calls `release()`, ms. */
const RELEASE_MS = 5000;

export interface ChannelAuditOptions {
  readonly audit: AuditSink;
  /** Folder of the recordings (`gateway.recordings_dir`). */
  readonly recordingsDir: string;
  readonly sessionId: string;
  readonly channel: number;
  readonly uid: string;
  readonly account: string;
  readonly target: string;
  readonly kind: "shell" | "exec" | "subsystem";
  /** The exec command or the subsystem name. */
  readonly arg: string;
  /**
   * For exec: `parseCommand(arg)` (the `command` of the `authorizeChannel` decision); decides recording
   * and transfer audit. Undefined (or a non-exec channel) means recorded, no transfer events.
   */
  readonly command: ParsedCommand | undefined;
  readonly pty: { cols: number; rows: number; term: string } | undefined;
  readonly record: RecordSettings;
  /** Wall clock, ms since epoch: the recording header's start time and file name date. */
  readonly now: () => number;
  /**
   * Ends the session with `reason` shown to the user; called at most once, when the recording fails
   * (write error or `max_bytes`) under `on_recording_failure: terminate`, or an SFTP stream cannot be
   * parsed under `on_unparsed: terminate`. From then on both taps refuse data and never drain.
   */
  readonly terminate: (reason: string) => void;
  readonly log: (msg: string, fields: Record<string, unknown>) => void;
  /** Recording running-hash checkpoint spacing (see `RecordingOptions`); defaults 4 MiB / 10 s. */
  readonly checkpointBytes?: number;
  readonly checkpointMs?: number;
}

export interface ChannelAudit {
  /** User → target bytes. */
  readonly up: Tap | undefined;
  /** Target → user bytes (stdout; until the relay feeds stderr to `stderr`, both streams). */
  readonly down: Tap | undefined;
  /**
   * Target → user stderr bytes: recorded like output, but kept out of the transfer parsers (a
   * target's stderr interleaved with SFTP or scp framing would read as a broken stream).
   */
  readonly stderr: Tap | undefined;
  resize(cols: number, rows: number): void;
  /**
   * Call when the user's (downstream) channel has closed. Once the session is being terminated the
   * taps hold the relay paused; this lets it run on (its bytes go to the closed channel), so the
   * upstream channel can end and `close` be reached. Without it, the taps let go RELEASE_MS (5 s) after blocking.
   */
  release(): void;
  /** Call when the channel has closed; `bytes` are the channel's totals. */
  close(bytes: { up: number; down: number }): Promise<void>;
}

/**
 * Sets up recording and transfer auditing for one channel. Not recorded as a terminal: subsystems
 * and exec commands that `parseCommand` classified as scp, rsync, git or sftp-server (exactly the
 * program, no shell syntax); any other exec, even one starting with `scp`, is recorded.
 * Transfer events: SFTP for the `sftp` subsystem and a parsed sftp-server exec, scp for a parsed
 * scp, one rsync event at close for a parsed rsync. An SFTP stream that is not SFTP (first packet not
 * INIT/VERSION, an absurd length) or that overflows the parser's bounds yields one `transfer_unparsed`
 * event and, unless `record.on_unparsed: continue`, termination.
 * A recording failure (write error, or `max_bytes` reached by output or recorded input) yields
 * `recording_failed` (`data.error`: the errno code or `max_bytes`) and, unless
 * `on_recording_failure: continue`, termination; with `continue` the channel goes on unrecorded.
 * While recording, every 4 MiB or 10 s of file data yields a batched `recording_checkpoint` event
 * (`data: { channel, bytes, sha256 }`: the SHA-256 of the file's first `bytes` bytes, fsync'ed).
 * Never throws: an audit write that throws (e.g. `AuditWriteError`) is logged and terminates the session.
 */
export function createChannelAudit(o: ChannelAuditOptions): ChannelAudit {
  // Once the session is being cut (a recording failure or an unparsed transfer under `terminate`),
  // the taps refuse every chunk and hold their drain: the relay stays paused, so nothing more
  // passes unaudited while the termination message goes out.
  let blocked = false;
  // A blocked relay must still be let go once the user's side is gone: a paused upstream channel
  // never emits 'end', so it would never close and the recording never be closed. `release()` (on
  // the downstream channel's close) or, as a safety net, RELEASE_MS after blocking, lets the held
  // relay run on; by then its bytes go to a closed channel.
  let released = false;
  const held: Array<() => void> = [];
  const release = () => {
    if (released) return;
    released = true;
    for (const fn of held.splice(0)) fn();
  };
  const block = (reason: string) => {
    if (blocked) return;
    blocked = true;
    setTimeout(release, RELEASE_MS).unref();
    o.terminate(reason);
  };
  const append = (e: AuditEventInput) => {
    try {
      o.audit.append(e);
    } catch (err) {
      o.log("audit write failed", { channel: o.channel, type: e.type, error: (err as Error).message });
      block("the audit trail cannot be written");
    }
  };
  const emit = (e: FileEvent) =>
    append({
      type: "file",
      sessionId: o.sessionId,
      uid: o.uid,
      target: o.target,
      result: e.ok === false ? "failed" : "ok",
      data: { channel: o.channel, ...e },
    });
  const onUnparsed = (u: UnparsedTransfer) => {
    const action = o.record.on_unparsed ?? "terminate";
    append({
      type: "transfer_unparsed",
      sessionId: o.sessionId,
      uid: o.uid,
      target: o.target,
      result: action,
      data: { channel: o.channel, protocol: u.protocol, reason: u.reason, ...(u.dropped !== undefined ? { dropped: u.dropped } : {}) },
    });
    o.log("transfer not parsed", { channel: o.channel, protocol: u.protocol, reason: u.reason, action });
    if (action === "terminate") block(`the ${u.protocol} stream could not be audited (${u.reason})`);
  };
  const command = o.kind === "exec" ? o.command : undefined;
  let observer: TransferObserver | undefined;
  const rsync = command?.kind === "rsync" ? rsyncPaths(command) : undefined;
  if ((o.kind === "subsystem" && o.arg === "sftp") || command?.kind === "sftp") observer = sftpObserver(emit, { onUnparsed });
  else if (command?.kind === "scp") observer = scpObserver(command, emit);

  let recorder: Recorder | undefined;
  let raw: RawRecorder | undefined;
  let digest: DigestRecorder | undefined;
  const transfer = command !== undefined && command.kind !== "exec";
  const wantsRecording = o.record.enabled && o.kind !== "subsystem" && !transfer;
  // A channel without a terminal (a non-pty exec, a shell without pty) carries bytes, not a screen:
  // `record.exec_output` decides what is kept of them (raw bytes, a digest, or nothing).
  const exec_output = o.pty ? undefined : (o.record.exec_output ?? "full");
  const meta = {
    session: o.sessionId,
    uid: o.uid,
    account: o.account,
    target: o.target,
    kind: o.kind,
    ...(o.kind === "exec" ? { command: o.arg } : {}),
  };
  const onCheckpoint = (c: { bytes: number; sha256: string }) =>
    append({
      type: "recording_checkpoint",
      sessionId: o.sessionId,
      uid: o.uid,
      target: o.target,
      data: { channel: o.channel, bytes: c.bytes, sha256: c.sha256 },
    });
  if (wantsRecording && exec_output === "digest") digest = createDigestRecorder();
  else if (wantsRecording && exec_output === "full") {
    const startedAtMs = o.now();
    const file = rawRecordingPath(recordingPath(o.recordingsDir, o.sessionId, o.channel, startedAtMs));
    try {
      o.audit.recordingStarted(o.sessionId, o.channel, file);
      raw = createRawRecorder({
        file,
        startedAtMs,
        meta,
        input: o.record.input,
        maxBytes: o.record.max_bytes,
        onError: (err) => failed(err.code ?? err.message, `recording failed: ${err.code ?? err.message}`),
        onLimit: () => failed("max_bytes", `recording limit reached (${o.record.max_bytes} bytes)`),
        onCheckpoint,
        ...(o.checkpointBytes !== undefined ? { checkpointBytes: o.checkpointBytes } : {}),
        ...(o.checkpointMs !== undefined ? { checkpointMs: o.checkpointMs } : {}),
      });
    } catch (err) {
      const e = err as NodeJS.ErrnoException;
      failed(e.code ?? e.message, `recording failed: ${e.code ?? e.message}`);
    }
  } else if (wantsRecording && exec_output === undefined) {
    const startedAtMs = o.now();
    const file = recordingPath(o.recordingsDir, o.sessionId, o.channel, startedAtMs);
    try {
      o.audit.recordingStarted(o.sessionId, o.channel, file);
      recorder = createRecorder({
        file,
        input: o.record.input,
        maxBytes: o.record.max_bytes,
        header: {
          width: o.pty?.cols ?? 80,
          height: o.pty?.rows ?? 24,
          startedAtMs,
          term: o.pty?.term,
          title: `${o.account} → ${o.target}${o.kind === "exec" ? `: ${o.arg}` : ""}`,
          meta,
        },
        onError: (err) => failed(err.code ?? err.message, `recording failed: ${err.code ?? err.message}`),
        onLimit: () => failed("max_bytes", `recording limit reached (${o.record.max_bytes} bytes)`),
        // A chained running hash of the open file: after a crash, verify checks the file still
        // starts with the newest checkpoint's prefix instead of trusting the hash taken at restart.
        onCheckpoint,
        ...(o.checkpointBytes !== undefined ? { checkpointBytes: o.checkpointBytes } : {}),
        ...(o.checkpointMs !== undefined ? { checkpointMs: o.checkpointMs } : {}),
      });
    } catch (err) {
      const e = err as NodeJS.ErrnoException;
      failed(e.code ?? e.message, `recording failed: ${e.code ?? e.message}`);
    }
  }

  /** A recording failure: `error` is the errno code or `max_bytes`; `message` is what the user reads. */
  function failed(error: string, message: string): void {
    append({
      type: "recording_failed",
      sessionId: o.sessionId,
      uid: o.uid,
      target: o.target,
      result: o.record.on_recording_failure,
      data: { channel: o.channel, error, ...(error === "max_bytes" ? { reason: "max_bytes", max_bytes: o.record.max_bytes } : {}) },
    });
    o.log("recording failed", { channel: o.channel, error, action: o.record.on_recording_failure });
    if (o.record.on_recording_failure === "terminate") block(message);
  }

  const noop = () => undefined;
  /** Holds `fn` once blocked, until released; otherwise asks `inner`. */
  const drainVia = (inner: ((fn: () => void) => void) | undefined) => (fn: () => void) => {
    if (blocked && !released) held.push(fn);
    else if (inner && !blocked) inner(fn);
    else fn();
  };
  /** Whether a tap lets the relay go on: false while blocked and not yet released. */
  const open = () => !blocked || released;
  const sink = recorder ?? raw;
  const drain = drainVia(sink ? (fn) => sink.onDrain(fn) : undefined);
  const any = Boolean(observer || sink || digest);
  /** A tap that refuses everything once the session is being cut, else records `chunk` with `record`. */
  const tap = (record: (chunk: Buffer) => boolean): Tap | undefined =>
    any
      ? {
          write(chunk) {
            if (blocked) return open();
            return record(chunk) && !blocked;
          },
          onDrain: drain,
        }
      : undefined;
  const up = tap((chunk) => {
    observer?.up(chunk);
    return sink ? sink.input(chunk) : true;
  });
  const down = tap((chunk) => {
    observer?.down(chunk);
    digest?.output(chunk);
    return sink ? sink.output(chunk) : true;
  });
  const stderr = tap((chunk) => {
    digest?.error(chunk);
    return recorder ? recorder.output(chunk) : raw ? raw.error(chunk) : true;
  });

  return {
    up,
    down,
    stderr,
    resize: recorder ? (cols, rows) => recorder?.resize(cols, rows) : noop,
    release,
    async close(bytes) {
      observer?.finish();
      if (rsync) {
        emit({
          protocol: "rsync",
          op: "transfer",
          path: rsync.paths.join(" "),
          flags: rsync.direction,
          bytesRead: rsync.direction === "download" ? bytes.down : 0,
          bytesWritten: rsync.direction === "upload" ? bytes.up : 0,
        });
      }
      if (recorder) {
        const r = await recorder.close();
        o.audit.recordingClosed(o.sessionId, o.channel, {
          sha256: r.sha256,
          bytes: r.bytes,
          status: r.failed ? "failed" : r.truncated ? "truncated" : "complete",
        });
      }
      if (raw) {
        const r = await raw.close();
        o.audit.recordingClosed(o.sessionId, o.channel, {
          sha256: r.sha256,
          bytes: r.bytes,
          status: r.failed ? "failed" : r.truncated ? "truncated" : "complete",
        });
        append({
          type: "exec_output",
          sessionId: o.sessionId,
          uid: o.uid,
          target: o.target,
          data: { channel: o.channel, mode: "full", stdout_bytes: r.stdoutBytes, stderr_bytes: r.stderrBytes, input_bytes: r.inputBytes },
        });
      }
      if (digest) {
        const d = digest.result();
        append({
          type: "exec_output",
          sessionId: o.sessionId,
          uid: o.uid,
          target: o.target,
          data: { channel: o.channel, mode: "digest", stdout: d.stdout, stderr: d.stderr },
        });
      }
    },
  };
}
