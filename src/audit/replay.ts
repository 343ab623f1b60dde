/**
 * Playing an asciicast v2 recording back in a terminal, with a speed factor and an idle limit.
 */
import { readFileSync } from "node:fs";

export interface ReplayOptions {
  /** Playback speed factor (2 = twice as fast). */
  readonly speed: number;
  /** Longest pause kept between two events, seconds (Infinity = keep every pause). */
  readonly idleLimitS: number;
  readonly write: (text: string) => void;
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

/** Plays the "o" events of a recording with their timing. Resolves when done. */
export async function replay(file: string, o: ReplayOptions): Promise<void> {
  const { events } = readCast(file);
  let last = 0;
  for (const [t, code, data] of events) {
    const gap = Math.min(Math.max(0, t - last), o.idleLimitS);
    last = t;
    if (gap > 0) await o.sleep((gap * 1000) / o.speed);
    if (code === "o") o.write(data);
  }
}
