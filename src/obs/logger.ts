/**
 * pino logger: JSON lines (for journald and log shippers) or, on a terminal, pino-pretty's readable
 * lines. Secrets are redacted by key name (the list lives next to the policy schema), and callers
 * never pass passwords, codes or secrets in the first place. Field values that came from the
 * network (typed account names) are printed JSON-escaped in both formats, so control characters
 * never reach a terminal raw.
 */
import { isatty } from "node:tty";
import { type Logger, pino } from "pino";
import pretty from "pino-pretty";
import { SECRET_PATHS } from "../policy/schema.ts";

export type { Logger } from "pino";

/** `json`: one JSON object per line. `pretty`: a human-readable line per event (colours on a terminal). */
export type LogFormat = "json" | "pretty";

/** The log formats, for option parsing. */
export const LOG_FORMATS: readonly LogFormat[] = ["json", "pretty"];

/**
 * Creates the process logger.
 * @param opts.level pino level; default `VARCO_LOG_LEVEL`, else `info`.
 * @param opts.format default `VARCO_LOG_FORMAT`, else `pretty` when the destination is a terminal
 *   and `json` otherwise (under systemd stdout is the journal, never a terminal).
 * @param opts.destination file descriptor to write to (default 1 = stdout).
 * @throws Error for a format other than json or pretty.
 */
export function createLogger(opts: { level?: string; destination?: number; format?: string } = {}): Logger {
  const dest = opts.destination ?? 1;
  const format = opts.format ?? process.env.VARCO_LOG_FORMAT ?? (isatty(dest) ? "pretty" : "json");
  if (!LOG_FORMATS.includes(format as LogFormat)) throw new Error(`log format "${format}" is not one of ${LOG_FORMATS.join(", ")}`);
  const options = {
    name: "varco",
    level: opts.level ?? process.env.VARCO_LOG_LEVEL ?? "info",
    redact: { paths: [...SECRET_PATHS], censor: "[redacted]" },
    base: { pid: process.pid },
  };
  if (format === "pretty") return pino(options, pretty({ destination: dest, colorize: isatty(dest), sync: true }));
  return pino(options, pino.destination({ dest, sync: false }));
}
