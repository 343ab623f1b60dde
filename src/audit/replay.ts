/**
 * Playing an asciicast v2 recording back in a terminal, with a speed factor and an idle limit.
 */
import { readFileSync } from "node:fs";
import { isRawRecording, RAW_STDERR, RAW_STDOUT, readRaw } from "./raw.ts";

export interface ReplayOptions {
  /** Playback speed factor (2 = twice as fast). */
  readonly speed: number;
  /** Longest pause kept between two events, seconds (Infinity = keep every pause). */
  readonly idleLimitS: number;
  readonly write: (text: string) => void;
  /** For a raw recording (`.raw`): receives its stdout and stderr bytes in order (default: stdout frames to `write` as UTF-8). */
  readonly writeBytes?: (stream: "stdout" | "stderr", data: Buffer) => void;
  /** Sleeps `ms` (injectable: tests pass a no-op). */
  readonly sleep: (ms: number) => Promise<void>;
}

/** Thrown for a file that is not asciicast v2. */
export class RecordingFormatError extends Error {
  constructor(file: string, line: number, reason: string) {
    super(`${file}:${line}: not an asciicast v2 recording (${reason})`);
    this.name = "RecordingFormatError";
  }
}

/** Reads the header and the events of an asciicast v2 file. A torn last line (crash) is ignored. */
export function readCast(file: string): { header: Record<string, unknown>; events: Array<[number, string, string]> } {
  const lines = readFileSync(file, "utf8").split("\n");
  const first = lines[0];
  if (!first) throw new RecordingFormatError(file, 1, "empty file");
  let header: Record<string, unknown>;
  try {
    header = JSON.parse(first) as Record<string, unknown>;
  } catch {
    throw new RecordingFormatError(file, 1, "the header is not JSON");
  }
  if (header.version !== 2) throw new RecordingFormatError(file, 1, `version ${String(header.version)}`);
  const events: Array<[number, string, string]> = [];
  for (let i = 1; i < lines.length; i++) {
    const line = lines[i];
    if (!line) continue;
    try {
      const e = JSON.parse(line) as [number, string, string];
      if (Array.isArray(e) && typeof e[0] === "number") events.push(e);
    } catch {
      if (i < lines.length - 1) throw new RecordingFormatError(file, i + 1, "an event line is not JSON");
    }
  }
  return { header, events };
}

/**
 * Plays the "o" events of a recording with their timing. Resolves when done. A raw recording (the
 * output of a command without a terminal, src/audit/raw.ts) has no timing: its stdout and stderr
 * frames go to `writeBytes` byte for byte, at once (input and marker frames are not played).
 */
export async function replay(file: string, o: ReplayOptions): Promise<void> {
  if (isRawRecording(file)) {
    for (const f of readRaw(file).frames) {
      const stream = f.code === RAW_STDOUT ? "stdout" : f.code === RAW_STDERR ? "stderr" : undefined;
      if (!stream) continue;
      if (o.writeBytes) o.writeBytes(stream, f.data);
      else if (stream === "stdout") o.write(f.data.toString("utf8"));
    }
    return;
  }
  const { events } = readCast(file);
  let last = 0;
  for (const [t, code, data] of events) {
    const gap = Math.min(Math.max(0, t - last), o.idleLimitS);
    last = t;
    if (gap > 0) await o.sleep((gap * 1000) / o.speed);
    if (code === "o") o.write(data);
  }
}
