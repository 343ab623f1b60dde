/**
 * The only way `net/` touches the host: a CommandRunner runs argv arrays (never shell strings) with
 * a timeout, optionally inside a network namespace (`ip netns exec NS …`). A recording runner
 * collects the commands instead, for `varco net plan --commands` and for tests of the plan.
 */
import { execa } from "execa";

/** A command failed; `stderr` holds what it printed. */
export class CommandError extends Error {
  readonly argv: readonly string[];
  readonly stderr: string;
  readonly exitCode: number | undefined;
  constructor(argv: readonly string[], stderr: string, exitCode: number | undefined) {
    super(
      `${argv.join(" ")} failed${exitCode !== undefined ? ` (exit ${exitCode})` : ""}: ${stderr.trim().split("\n").slice(0, 5).join(" | ")}`,
    );
    this.name = "CommandError";
    this.argv = argv;
    this.stderr = stderr;
    this.exitCode = exitCode;
  }
}

export interface RunOptions {
  /** Text for the command's stdin (e.g. an nft script for `nft -f -`). */
  readonly input?: string;
  /** Return the result instead of throwing on a non-zero exit. */
  readonly allowFailure?: boolean;
}

export interface RunResult {
  readonly stdout: string;
  readonly stderr: string;
  readonly exitCode: number;
}

export interface CommandRunner {
  /** The namespace commands run in, if any. */
  readonly netns: string | undefined;
  /**
   * Runs `argv` (argv[0] is the program).
   * @throws CommandError on a non-zero exit or a timeout unless `allowFailure`.
   */
  run(argv: readonly string[], opts?: RunOptions): Promise<RunResult>;
}

/** Runs commands for real with execa. `timeoutMs` per command (default 30 000). */
export function createExecaRunner(o: { netns?: string | undefined; timeoutMs?: number } = {}): CommandRunner {
  return {
    netns: o.netns,
    async run(argv, opts = {}) {
      const full = o.netns ? ["ip", "netns", "exec", o.netns, ...argv] : [...argv];
      const [cmd, ...args] = full as [string, ...string[]];
      const r = await execa(cmd, args, {
        reject: false,
        timeout: o.timeoutMs ?? 30_000,
        ...(opts.input !== undefined ? { input: opts.input } : { stdin: "ignore" }),
      });
      const result = { stdout: String(r.stdout ?? ""), stderr: String(r.stderr ?? ""), exitCode: r.exitCode ?? -1 };
      if (result.exitCode !== 0 && !opts.allowFailure) {
        throw new CommandError(full, r.timedOut ? `timed out after ${o.timeoutMs ?? 30_000} ms` : result.stderr, r.exitCode);
      }
      return result;
    },
  };
}

/** Records commands and answers from `replies` (by argv prefix) or with empty success. */
export function createRecordingRunner(replies: ReadonlyArray<{ prefix: readonly string[]; result: RunResult }> = []): CommandRunner & {
  readonly commands: Array<{ argv: readonly string[]; input?: string }>;
} {
  const commands: Array<{ argv: readonly string[]; input?: string }> = [];
  return {
    netns: undefined,
    commands,
    async run(argv, opts = {}) {
      commands.push({ argv, ...(opts.input !== undefined ? { input: opts.input } : {}) });
      const hit = replies.find((r) => r.prefix.every((p, i) => argv[i] === p));
      return hit?.result ?? { stdout: "", stderr: "", exitCode: 0 };
    },
  };
}
