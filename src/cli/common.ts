/**
 * Helpers shared by the CLI's command groups: the policy path search, loading with a clear exit,
 * the exit-code error and plain-text tables.
 */
import { formatIssue, loadPolicyFile, PolicyError } from "../policy/index.ts";

const DEFAULT_POLICY = "policies/gateway.yaml";

/** Exit with a message on stderr (`code` is the process exit code; an empty message prints nothing). */
export class ExitError extends Error {
  constructor(
    message: string,
    readonly code: number,
  ) {
    super(message);
  }
}

export function policyPath(opts: { policy?: string }, positional?: string): string {
  return positional ?? opts.policy ?? process.env.VARCO_POLICY ?? DEFAULT_POLICY;
}

export function loadOrExit(file: string) {
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
