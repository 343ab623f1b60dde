/**
 * Helpers shared by the CLI's command groups: the policy path search, loading with a clear exit,
 * the exit-code error and plain-text tables.
 */
import { existsSync } from "node:fs";
import { formatIssue, loadPolicyFile, PolicyError } from "../policy/index.ts";

/** Where the policy is looked for when neither `--policy` nor `VARCO_POLICY` names one. */
export const DEFAULT_POLICY = "/etc/varco/gateway.yaml";

/** Exit with a message on stderr (`code` is the process exit code; an empty message prints nothing). */
export class ExitError extends Error {
  constructor(
    message: string,
    readonly code: number,
  ) {
    super(message);
  }
}

/**
 * The policy file to use: a positional argument, else `--policy`, else `VARCO_POLICY`, else
 * /etc/varco/gateway.yaml (in that order).
 */
export function policyPath(opts: { policy?: string }, positional?: string): string {
  return positional ?? opts.policy ?? process.env.VARCO_POLICY ?? DEFAULT_POLICY;
}

/** @throws ExitError listing the places tried when `file` is the default and does not exist. */
export function refuseMissingDefault(file: string): void {
  if (file === DEFAULT_POLICY && !existsSync(file))
    throw new ExitError(`varco: no policy file: --policy not given, VARCO_POLICY not set, ${DEFAULT_POLICY} does not exist`, 1);
}

/**
 * Loads and validates the policy, or exits 1 with every problem as `file:line:col: message`; a
 * missing default file lists the places that were tried.
 */
export function loadOrExit(file: string) {
  refuseMissingDefault(file);
  try {
    return loadPolicyFile(file);
  } catch (err) {
    if (err instanceof PolicyError) throw new ExitError(err.issues.map(formatIssue).join("\n"), 1);
    throw err;
  }
}

export function table(rows: string[][]): string {
  const widths = rows[0]?.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? "").length))) ?? [];
  return rows
    .map((r) =>
      r
        .map((c, i) => c.padEnd(widths[i] ?? 0))
        .join("  ")
        .trimEnd(),
    )
    .join("\n");
}
