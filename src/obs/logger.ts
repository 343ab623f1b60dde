/**
 * pino JSON logger. Secrets are redacted by key name (the list lives next to the policy schema),
 * and callers never pass passwords, codes or secrets in the first place.
 */
import { type Logger, pino } from "pino";
import { SECRET_PATHS } from "../policy/index.ts";

export type { Logger } from "pino";

/**
 * Creates the process logger. `level` defaults to `VARCO_LOG_LEVEL` or `info`.
 * @param destination file descriptor to write to (default 1 = stdout).
 */
export function createLogger(opts: { level?: string; destination?: number } = {}): Logger {
  return pino(
    {
      name: "varco",
      level: opts.level ?? process.env.VARCO_LOG_LEVEL ?? "info",
      redact: { paths: [...SECRET_PATHS], censor: "[redacted]" },
      base: { pid: process.pid },
    },
    pino.destination({ dest: opts.destination ?? 1, sync: false }),
  );
}
