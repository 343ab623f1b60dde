/**
 * The `varco` command line (commander). Thin: parses arguments, calls the composition root,
 * prints results. Exit codes: 0 ok, 1 failed check or refused input, 2 usage error.
 */
import { Command, CommanderError, Option } from "commander";
import { type AuditSession, openAuditStore } from "../audit/index.ts";
import { newSecret, otpauthUri, TotpSecretError } from "../auth/index.ts";
import { openAuditForPolicy, openTotpForPolicy, runGateway, statePaths, totpSettings } from "../main.ts";
import { createLogger } from "../obs/index.ts";
import { formatIssue, loadPolicyFile, PolicyError, parseDurationMs, policyJsonSchema } from "../policy/index.ts";

const DEFAULT_POLICY = "policies/gateway.yaml";

/** Exit with a message on stderr. */
class ExitError extends Error {
  constructor(
    message: string,
    readonly code: number,
  ) {
    super(message);
  }
}

function policyPath(opts: { policy?: string }, positional?: string): string {
  return positional ?? opts.policy ?? process.env.VARCO_POLICY ?? DEFAULT_POLICY;
}

function loadOrExit(file: string) {
  try {
    return loadPolicyFile(file);
  } catch (err) {
    if (err instanceof PolicyError) throw new ExitError(err.issues.map(formatIssue).join("\n"), 1);
    throw err;
  }
}

function table(rows: string[][]): string {
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

function sessionRows(sessions: readonly AuditSession[]): string[][] {
  return [
    ["SESSION", "STARTED", "ENDED", "USER", "ACCOUNT", "TARGET", "SOURCE", "RESULT", "UP", "DOWN", "EXIT"],
    ...sessions.map((s) => [
      s.id.slice(0, 8),
      s.startedAt,
      s.endedAt ?? "-",
      s.uid,
      s.account,
      s.target ?? "-",
      s.source,
      s.result,
      String(s.upBytes),
      String(s.downBytes),
      s.exitStatus === null ? "-" : String(s.exitStatus),
    ]),
  ];
}

/** Builds the command tree (exported for tests of the CLI surface). */
export function buildCli(): Command {
  const program = new Command("varco")
    .description("SSH bastion and network front-end gateway")
    .addOption(new Option("--policy <file>", "policy file").env("VARCO_POLICY"))
    .showHelpAfterError()
    .exitOverride();

  program
    .command("serve")
    .description("run the gateway; SIGHUP or a change of the policy file reloads it")
    .option("--policy <file>", "policy file")
    .action(async (opts: { policy?: string }) => {
      const logger = createLogger();
      const running = await runGateway(policyPath({ ...program.opts(), ...opts }), logger, { watchFile: true });
      await new Promise<void>((resolve) => {
        const stop = () => resolve();
        process.once("SIGINT", stop);
        process.once("SIGTERM", stop);
      });
      logger.info("stopping");
      await running.stop();
      logger.flush();
    });

  const policy = program.command("policy").description("check the policy and print its schema");
  policy
    .command("check [file]")
    .description("validate a policy file: exit 0, or file:line:col: message lines and exit 1")
    .option("--json", "print issues as JSON")
    .action((file: string | undefined, opts: { json?: boolean }) => {
      const path = policyPath(program.opts(), file);
      try {
        const loaded = loadPolicyFile(path);
        if (opts.json) console.log(JSON.stringify({ ok: true, file: loaded.file, issues: [] }));
        else
          console.log(`${loaded.file}: ok (${Object.keys(loaded.policy.targets).length} targets, ${loaded.policy.routes.length} routes)`);
      } catch (err) {
        if (!(err instanceof PolicyError)) throw err;
        if (opts.json) {
          console.log(JSON.stringify({ ok: false, issues: err.issues }));
          throw new ExitError("", 1);
        }
        throw new ExitError(err.issues.map(formatIssue).join("\n"), 1);
      }
    });
  policy
    .command("schema")
    .description("print the policy's JSON Schema (for YAML language servers)")
    .action(() => console.log(JSON.stringify(policyJsonSchema(), null, 2)));

  const user = program.command("user").description("manage users' second factor");
  const totp = user.command("totp").description("TOTP secrets (RFC 6238)");
  totp
    .command("enroll <uid>")
    .description("create (or import with --secret) a TOTP secret and print the otpauth URI and a QR code")
    .option("--secret <base32>", "import a known base32 secret instead of generating one")
    .option("--json", "print the result as JSON")
    .option("--no-qr", "do not draw the QR code")
    .action(async (uid: string, opts: { secret?: string; json?: boolean; qr: boolean }) => {
      const loaded = loadOrExit(policyPath(program.opts()));
      const store = openTotpForPolicy(loaded);
      try {
        const secret = opts.secret ?? newSecret();
        store.setSecret(uid, secret);
        const uri = otpauthUri(totpSettings(loaded.policy), uid, secret.replace(/[\s-]/g, "").toUpperCase());
        if (opts.json) {
          console.log(JSON.stringify({ uid, uri }));
          return;
        }
        console.log(`TOTP secret enrolled for ${uid}. Add it to an authenticator app:\n${uri}`);
        if (opts.qr) {
          const qrcode = await import("qrcode");
          console.log(await qrcode.toString(uri, { type: "terminal", small: true }));
        }
      } catch (err) {
        if (err instanceof TotpSecretError) throw new ExitError(`--secret: ${err.message}`, 1);
        throw err;
      } finally {
        store.close();
      }
    });
  totp
    .command("reset <uid>")
    .description("forget a user's TOTP secret")
    .action((uid: string) => {
      const store = openTotpForPolicy(loadOrExit(policyPath(program.opts())));
      const existed = store.reset(uid);
      store.close();
      if (!existed) throw new ExitError(`${uid} has no TOTP secret`, 1);
      console.log(`TOTP secret of ${uid} removed; the user must enrol again`);
    });

  const audit = program.command("audit").description("read the audit log");
  audit
    .command("list")
    .description("sessions, newest first")
    .option("--user <uid>", "only this directory user")
    .option("--target <name>", "only this target")
    .option("--since <duration>", "only sessions started within this duration (e.g. 24h)")
    .option("--json", "print JSON lines")
    .action((opts: { user?: string; target?: string; since?: string; json?: boolean }) => {
      const loaded = loadOrExit(policyPath(program.opts()));
      let sinceMs: number | undefined;
      if (opts.since) {
        const d = parseDurationMs(opts.since);
        if (d === undefined) throw new ExitError(`--since: "${opts.since}" is not a duration (e.g. 30m, 24h, 7d)`, 2);
        sinceMs = Date.now() - d;
      }
      const store = openAuditStore(statePaths(loaded).auditDb);
      const sessions = store.listSessions({ user: opts.user, target: opts.target, sinceMs });
      store.close();
      if (opts.json) for (const s of sessions) console.log(JSON.stringify(s));
      else console.log(table(sessionRows(sessions)));
    });
  audit
    .command("show <id>")
    .description("one session's events (a session id or its first 8 characters)")
    .option("--json", "print JSON lines")
    .action((id: string, opts: { json?: boolean }) => {
      const store = openAuditForPolicy(loadOrExit(policyPath(program.opts())));
      const session = store.listSessions({ limit: 100_000 }).find((s) => s.id === id || s.id.startsWith(id));
      const events = session ? store.sessionEvents(session.id) : store.sessionEvents(id);
      store.close();
      if (!session && events.length === 0) throw new ExitError(`no session ${id}`, 1);
      if (opts.json) {
        for (const e of events) console.log(JSON.stringify(e));
        return;
      }
      if (session) console.log(table(sessionRows([session])));
      for (const e of events) console.log(`${e.ts}  ${e.type.padEnd(16)} ${e.result ?? ""} ${JSON.stringify(e.data ?? {})}`);
    });

  program
    .command("demo")
    .description("run a demo gateway on 127.0.0.1:2222 with a throwaway slapd and OpenSSH targets")
    .option("--port <port>", "gateway port", "2222")
    .option("--no-install", "do not install missing Debian packages")
    .action(async (opts: { port: string; install: boolean }) => {
      const { runDemo } = await import("../demo/index.ts");
      await runDemo({ port: Number(opts.port), install: opts.install });
    });

  return program;
}

/** Runs the CLI with `argv` (process.argv shape) and sets the exit code. */
export async function main(argv: readonly string[]): Promise<void> {
  const program = buildCli();
  try {
    await program.parseAsync([...argv]);
  } catch (err) {
    if (err instanceof CommanderError) {
      process.exitCode = err.exitCode === 0 ? 0 : 2;
      return;
    }
    if (err instanceof ExitError) {
      if (err.message) console.error(err.message);
      process.exitCode = err.code;
      return;
    }
    const e = err as Error;
    console.error(`varco: ${e.name && e.name !== "Error" ? `${e.name}: ` : ""}${e.message}`);
    process.exitCode = 1;
  }
}
