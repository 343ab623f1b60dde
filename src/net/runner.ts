/**
 * The only way `net/` touches the host: a CommandRunner runs argv arrays (never shell strings) with
 * a timeout, optionally inside a network namespace (`ip netns exec NS …`). A recording runner
 * collects the commands instead, for `varco net plan --commands` and for tests of the plan.
 */
import { mkdir, readFile, rm } from "node:fs/promises";
import { dirname } from "node:path";
import { execa } from "execa";
import writeFileAtomic from "write-file-atomic";

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
  /** Reads a host file (e.g. keepalived.conf); undefined when it does not exist. */
  readFile(path: string): Promise<string | undefined>;
  /** Writes a host file atomically (temp file + rename), mode 0600. */
  writeFile(path: string, text: string): Promise<void>;
  /** Removes a host file if it exists. */
  removeFile(path: string): Promise<void>;
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
    async readFile(path) {
      try {
        return await readFile(path, "utf8");
      } catch {
        return undefined;
      }
    },
    async writeFile(path, text) {
      await mkdir(dirname(path), { recursive: true });
      // write-file-atomic: temp file in the same folder, fsync, rename; mode 0600 even over an existing file.
      await writeFileAtomic(path, text, { mode: 0o600 });
    },
    async removeFile(path) {
      await rm(path, { force: true });
    },
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
  readonly files: Map<string, string>;
} {
  const commands: Array<{ argv: readonly string[]; input?: string }> = [];
  const files = new Map<string, string>();
  return {
    netns: undefined,
    commands,
    files,
    readFile: async (path) => files.get(path),
    async writeFile(path, text) {
      commands.push({ argv: ["(write)", path], input: text });
      files.set(path, text);
    },
    async removeFile(path) {
      commands.push({ argv: ["(remove)", path] });
      files.delete(path);
    },
    async run(argv, opts = {}) {
      commands.push({ argv, ...(opts.input !== undefined ? { input: opts.input } : {}) });
      const hit = replies.find((r) => r.prefix.every((p, i) => argv[i] === p));
      return hit?.result ?? { stdout: "", stderr: "", exitCode: 0 };
    },
  };
}
