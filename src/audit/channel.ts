/**
 * Per-channel auditing: decides what to record for a session channel (a terminal recording for
 * shells and commands, file-transfer events for sftp/scp/rsync) and exposes it as taps the relay
 * calls with every chunk. The relay stays ignorant of what is recorded.
 */
import type { RecordSettings } from "../policy/index.ts";
import type { ParsedCommand } from "../routing/command.ts";
import { createRecorder, type Recorder, recordingPath } from "./recording.ts";
import type { AuditSink } from "./store.ts";
import { type FileEvent, rsyncPaths, scpObserver, sftpObserver, type TransferObserver } from "./transfers.ts";

/** A sink the relay feeds; `write` returning false asks the relay to pause until `onDrain`. */
export interface Tap {
  write(chunk: Buffer): boolean;
  onDrain(fn: () => void): void;
}

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
  readonly now: () => number;
  /** Called when the recording fails and the route says `terminate`. */
  readonly terminate: (reason: string) => void;
  readonly log: (msg: string, fields: Record<string, unknown>) => void;
}

export interface ChannelAudit {
  /** User → target bytes. */
  readonly up: Tap | undefined;
  /** Target → user bytes. */
  readonly down: Tap | undefined;
  resize(cols: number, rows: number): void;
  /** Call when the channel has closed; `bytes` are the channel's totals. */
  close(bytes: { up: number; down: number }): Promise<void>;
}

/**
 * Sets up recording and transfer auditing for one channel. Not recorded as a terminal: subsystems
 * and exec commands that `parseCommand` classified as scp, rsync, git or sftp-server (exactly the
 * program, no shell syntax); any other exec, even one starting with `scp`, is recorded.
 * Transfer events: SFTP for the `sftp` subsystem and a parsed sftp-server exec, scp for a parsed
 * scp, one rsync event at close for a parsed rsync.
 * Never throws: a recording that cannot start is reported through `recording_failed` and `terminate`.
 */
export function createChannelAudit(o: ChannelAuditOptions): ChannelAudit {
  const emit = (e: FileEvent) =>
    o.audit.append({
      type: "file",
      sessionId: o.sessionId,
      uid: o.uid,
      target: o.target,
      result: e.ok === false ? "failed" : "ok",
      data: { channel: o.channel, ...e },
    });
  const command = o.kind === "exec" ? o.command : undefined;
  let observer: TransferObserver | undefined;
  const rsync = command?.kind === "rsync" ? rsyncPaths(command) : undefined;
  if ((o.kind === "subsystem" && o.arg === "sftp") || command?.kind === "sftp") observer = sftpObserver(emit);
  else if (command?.kind === "scp") observer = scpObserver(command, emit);

  let recorder: Recorder | undefined;
  const transfer = command !== undefined && command.kind !== "exec";
  const wantsRecording = o.record.enabled && o.kind !== "subsystem" && !transfer;
  if (wantsRecording) {
    const startedAtMs = o.now();
    const file = recordingPath(o.recordingsDir, o.sessionId, o.channel, startedAtMs);
    try {
      o.audit.recordingStarted(o.sessionId, o.channel, file);
      recorder = createRecorder({
        file,
        input: o.record.input,
        maxBytes: o.record.max_bytes,
        now: o.now,
        header: {
          width: o.pty?.cols ?? 80,
          height: o.pty?.rows ?? 24,
          startedAtMs,
          term: o.pty?.term,
          title: `${o.account} → ${o.target}${o.kind === "exec" ? `: ${o.arg}` : ""}`,
          meta: {
            session: o.sessionId,
            uid: o.uid,
            account: o.account,
            target: o.target,
            kind: o.kind,
            ...(o.kind === "exec" ? { command: o.arg } : {}),
          },
        },
        onError: (err) => failed(err),
      });
    } catch (err) {
      failed(err as NodeJS.ErrnoException);
    }
  }

  function failed(err: NodeJS.ErrnoException): void {
    const reason = `recording failed: ${err.code ?? err.message}`;
    o.audit.append({
      type: "recording_failed",
      sessionId: o.sessionId,
      uid: o.uid,
      target: o.target,
      result: o.record.on_recording_failure,
      data: { channel: o.channel, error: err.code ?? err.message },
    });
    o.log("recording failed", { channel: o.channel, error: err.code ?? err.message, action: o.record.on_recording_failure });
    if (o.record.on_recording_failure === "terminate") o.terminate(reason);
  }

  const noop = () => undefined;
  const up: Tap | undefined =
    observer || recorder
      ? {
          write(chunk) {
            observer?.up(chunk);
            recorder?.input(chunk);
            return true;
          },
          onDrain: (fn) => fn(),
        }
      : undefined;
  const down: Tap | undefined =
    observer || recorder
      ? {
          write(chunk) {
            observer?.down(chunk);
            return recorder ? recorder.output(chunk) : true;
          },
          onDrain: (fn) => (recorder ? recorder.onDrain(fn) : fn()),
        }
      : undefined;

  return {
    up,
    down,
    resize: recorder ? (cols, rows) => recorder?.resize(cols, rows) : noop,
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
    },
  };
}
