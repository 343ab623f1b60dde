/**
 * The `varco` command line (commander). Thin: parses arguments, calls the composition root,
 * prints results. Exit codes: 0 ok, 1 failed check or refused input, 2 usage error.
 */

import type { KeyObject } from "node:crypto";
import { createReadStream, readFileSync, rmSync } from "node:fs";
import { createInterface } from "node:readline";
import { Command, CommanderError, Option } from "commander";
import type { AuditSession, AuditStore } from "../audit/index.ts";
import type { SearchHit } from "../audit/query.ts";
import type { Anchor } from "../audit/verify.ts";
import { printable, printableJson } from "../obs/printable.ts";
import type { LoadedPolicy } from "../policy/index.ts";
import { parseDurationMs, parseHostPort } from "../policy/units.ts";
import {
  ExitError,
  giveToFolderOwner,
  loadOrExit,
  policyModule,
  policyPath,
  preloadPolicy,
  refuseMissingDefault,
  table,
} from "./common.ts";
import { registerNet } from "./net.ts";
import { registerSshConfig } from "./ssh-config.ts";

/**
 * Each command loads only the modules it needs, when it runs: `varco --help` loads none of them,
 * `varco health` only the policy (start-up time is what a keepalived probe or a shell user waits for).
 */
const load = {
  core: () => import("../main.ts"),
  audit: () => import("../audit/index.ts"),
  query: () => import("../audit/query.ts"),
  verify: () => import("../audit/verify.ts"),
  auth: () => import("../auth/index.ts"),
  logger: () => import("../obs/logger.ts"),
  ops: () => import("./ops.ts"),
  trails: () => import("./trails.ts"),
};

/** All of stdin as bytes (for `--seal-key -`). */
async function readStdin(): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of process.stdin) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

/** The session table; every cell passes through `printable` (the values come from the audit DB: typed names, peer data). */
function sessionRows(sessions: readonly AuditSession[], displayAddress: (a: string) => string, nodes = false): string[][] {
  return [
    ["SESSION", ...(nodes ? ["NODE"] : []), "STARTED", "ENDED", "USER", "ACCOUNT", "TARGET", "SOURCE", "RESULT", "UP", "DOWN", "EXIT"],
    ...sessions.map((s) =>
      [
        s.id.slice(0, 8),
        ...(nodes ? [s.node ?? "-"] : []),
        s.startedAt,
        s.endedAt ?? "-",
        s.uid,
        s.account,
        s.target ?? "-",
        displayAddress(s.source),
        s.result,
        String(s.upBytes),
        String(s.downBytes),
        s.exitStatus === null ? "-" : String(s.exitStatus),
      ].map((c) => printable(c, 200)),
    ),
  ];
}

/** An audit value as terminal-safe text: strings escaped, objects as printable JSON, the rest through String(). */
const shown = (v: unknown): string =>
  typeof v === "object" && v !== null ? printableJson(v) : printable(typeof v === "string" ? v : String(v));

/** The lines of a log that may be anchor lines (streamed: a whole journal need not fit in memory). */
async function anchorLines(input: NodeJS.ReadableStream): Promise<string> {
  const keep: string[] = [];
  for await (const line of createInterface({ input, crlfDelay: Number.POSITIVE_INFINITY }))
    if (line.includes("audit anchor")) keep.push(line);
  return keep.join("\n");
}

/** The version in package.json (read once, at CLI start). */
function packageVersion(): string {
  return (JSON.parse(readFileSync(new URL("../../package.json", import.meta.url), "utf8")) as { version: string }).version;
}

/** Builds the command tree (exported for tests of the CLI surface). */
export function buildCli(): Command {
  const program = new Command("varco")
    .description("SSH bastion and network front-end gateway")
    .addOption(new Option("--policy <file>", "policy file").env("VARCO_POLICY"))
    .version(packageVersion(), "-V, --version", "print the version")
    .addOption(
      new Option("--log-format <format>", "gateway logs: pretty (default on a terminal) or json (default otherwise, e.g. under systemd)")
        .choices(["pretty", "json"])
        .env("VARCO_LOG_FORMAT"),
    )
    .option("--debug", "print the stack of an unexpected error (also VARCO_DEBUG=1)")
    .showHelpAfterError()
    .exitOverride()
    // The policy module (yaml + zod) is loaded before any action, never for --help or --version.
    .hook("preAction", (_program, action) => (action.name() === "health" ? undefined : preloadPolicy()));

  program
    .command("serve")
    .description("run the gateway; SIGHUP or a change of the policy file reloads it")
    .option("--policy <file>", "policy file")
    .action(async (opts: { policy?: string }) => {
      const [{ createLogger }, { runGateway }] = await Promise.all([load.logger(), load.core()]);
      const logger = createLogger({ format: (program.opts() as { logFormat?: string }).logFormat });
      const file = policyPath({ ...program.opts(), ...opts });
      const running = await runGateway(file, logger, { watchFile: true });
      const signal = await new Promise<string>((resolve) => {
        process.once("SIGINT", () => resolve("SIGINT"));
        process.once("SIGTERM", () => resolve("SIGTERM"));
      });
      // The running policy's stop_timeout: the file on disk may be broken by now.
      const drainMs = running.policy().policy.gateway.stop_timeout;
      logger.info({ signal, drain_ms: drainMs }, "stopping: no new connections; live sessions may finish");
      await running.stop(drainMs);
      logger.info("stopped");
      logger.flush();
    });

  const policy = program.command("policy").description("check the policy and print its schema");
  policy
    .command("check [file]")
    .description(
      "validate a policy file as serve does (schema, cross-references, guard rails, the file's permissions): exit 0, or file:line:col: message lines and exit 1",
    )
    .option("--json", "print issues as JSON")
    .action((file: string | undefined, opts: { json?: boolean }) => {
      const { loadPolicyFile, PolicyError, formatIssue } = policyModule();
      const path = policyPath(program.opts(), file);
      refuseMissingDefault(path);
      try {
        const loaded = loadPolicyFile(path);
        // The file's own permissions, as serve checks them (host checks: keys, secrets, state: varco doctor).
        const unsafe = policyModule().checkPrivateFiles({ policyFile: loaded.file });
        if (unsafe.length > 0) throw new PolicyError(unsafe.map((message) => ({ file: loaded.file, line: 1, col: 1, message })));
        if (opts.json) console.log(JSON.stringify({ ok: true, file: loaded.file, issues: [], notes: loaded.notes }));
        else {
          console.log(`${loaded.file}: ok (${Object.keys(loaded.policy.targets).length} targets, ${loaded.policy.routes.length} routes)`);
          for (const n of loaded.notes) console.log(formatIssue({ ...n, message: `note: ${n.message}` }));
        }
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
    .action(() => console.log(JSON.stringify(policyModule().policyJsonSchema(), null, 2)));
  policy
    .command("reference")
    .description("print the reference of every policy key (type, default, meaning) as Markdown, generated from the schema")
    .action(async () => {
      const { renderPolicyReference } = await import("../policy/reference.ts");
      process.stdout.write(renderPolicyReference());
    });

  /** The canonical uid for a uid typed on the command line (a login would resolve it the same way). */
  const resolveUid = async (loaded: LoadedPolicy, typed: string): Promise<string> => {
    const c = await (await load.core()).canonicalUid(loaded, typed);
    if (c.uid !== typed) console.error(`varco: ${typed} is ${c.uid} in the directory; using ${c.uid}`);
    else if (c.problem) console.error(`varco: ${c.problem}; using ${typed} as typed`);
    return c.uid;
  };
  const user = program.command("user").description("manage users' second factor");
  const totp = user.command("totp").description("TOTP secrets (RFC 6238)");
  totp
    .command("enroll <uid>")
    .description("create (or import with --secret) a TOTP secret and print the otpauth URI and a QR code")
    .option("--secret <base32>", "import a known base32 secret instead of generating one")
    .option("--json", "print the result as JSON")
    .option("--no-qr", "do not draw the QR code")
    .action(async (typed: string, opts: { secret?: string; json?: boolean; qr: boolean }) => {
      const [{ openTotpForPolicy, openAuditForPolicy, totpSettings }, { newSecret, newRecoveryCodes, otpauthUri, TotpSecretError }] =
        await Promise.all([load.core(), load.auth()]);
      const loaded = loadOrExit(policyPath(program.opts()));
      const uid = await resolveUid(loaded, typed);
      const store = await openTotpForPolicy(loaded);
      try {
        const secret = opts.secret ?? newSecret();
        await store.setSecret(uid, secret);
        const codes = newRecoveryCodes();
        await store.setRecoveryCodes(uid, codes);
        const uri = otpauthUri(totpSettings(loaded.policy), uid, secret.replace(/[\s-]/g, "").toUpperCase());
        const audit = openAuditForPolicy(loaded);
        audit.append({
          type: "enrolled",
          uid,
          result: "ok",
          data: { by: "cli", imported: Boolean(opts.secret), recovery_codes: codes.length },
        });
        audit.close();
        if (opts.json) {
          console.log(JSON.stringify({ uid, uri, recovery_codes: codes }));
          return;
        }
        console.log(`TOTP secret enrolled for ${uid}. Add it to an authenticator app:\n${uri}`);
        console.log(`Single-use recovery codes (give them to the user once): ${codes.join("  ")}`);
        if (opts.qr) {
          const qrcode = await import("qrcode");
          console.log(await qrcode.toString(uri, { type: "terminal", small: true }));
        }
      } catch (err) {
        if (err instanceof TotpSecretError) throw new ExitError(`--secret: ${err.message}`, 1);
        throw err;
      } finally {
        await store.close();
      }
    });
  totp
    .command("invite <uid>")
    .description("create a one-time enrolment code: the user types it at the login's code prompt, then enrols an authenticator")
    .option("--valid <duration>", "how long the code stays valid (e.g. 30m, 24h, 7d)", "24h")
    .option("--json", 'print {"uid", "code", "expires_at"} as JSON')
    .action(async (typed: string, opts: { valid: string; json?: boolean }) => {
      const { openTotpForPolicy, openAuditForPolicy } = await load.core();
      const loaded = loadOrExit(policyPath(program.opts()));
      const uid = await resolveUid(loaded, typed);
      const t = loaded.policy.auth.totp;
      if (t.secrets === "ldap")
        throw new ExitError(
          `${loaded.file}: auth.totp.secrets is ldap, so TOTP secrets live in the directory (${t.ldap_attribute}) and varco enrols no one; set the secret there`,
          1,
        );
      if (!t.enrol_on_first_login)
        throw new ExitError(
          `${loaded.file}: auth.totp.enrol_on_first_login is false, so nobody can use an invitation at login; set it to true, or use \`varco user totp enroll ${uid}\``,
          1,
        );
      const validMs = parseDurationMs(opts.valid);
      if (validMs === undefined || validMs <= 0) throw new ExitError(`--valid: "${opts.valid}" is not a positive duration (e.g. 24h)`, 2);
      const store = await openTotpForPolicy(loaded);
      try {
        if (await store.hasSecret(uid))
          throw new ExitError(
            `${uid} already has a TOTP secret; to let them enrol a new authenticator, run \`varco user totp reset ${uid}\` first, then invite again`,
            1,
          );
        const now = Date.now();
        const code = await store.invite(uid, validMs, now);
        const expiresAt = new Date(now + validMs).toISOString();
        // Audited before the code is shown: if the audit fails, nobody ever learns the code.
        const audit = openAuditForPolicy(loaded);
        try {
          audit.append({ type: "enrolment_invited", uid, result: "ok", data: { by: "cli", expires_at: expiresAt } });
        } finally {
          audit.close();
        }
        if (opts.json) {
          console.log(JSON.stringify({ uid, code, expires_at: expiresAt }));
          return;
        }
        console.log(`Enrolment code for ${uid} (single use, valid until ${expiresAt}): ${code}`);
        console.log(
          `Give it to ${uid} over a separate channel (in person or by phone, not the mail that carries their password); it is shown only this once.`,
        );
        console.log(
          `At their next SSH login they type it at the "Verification code:" prompt, then scan the QR code. A new invitation replaces this one.`,
        );
      } finally {
        await store.close();
      }
    });
  totp
    .command("reset <uid>")
    .description("forget a user's TOTP secret, recovery codes and enrolment invitation (they need a new invitation)")
    .action(async (typed: string) => {
      const { openTotpForPolicy, openAuditForPolicy } = await load.core();
      const loaded = loadOrExit(policyPath(program.opts()));
      const uid = await resolveUid(loaded, typed);
      const store = await openTotpForPolicy(loaded);
      let existed: boolean;
      try {
        existed = await store.reset(uid);
      } finally {
        await store.close();
      }
      if (!existed) throw new ExitError(`${uid} has no TOTP secret`, 1);
      const audit = openAuditForPolicy(loaded);
      audit.append({ type: "totp_reset", uid, result: "ok", data: { by: "cli" } });
      audit.close();
      console.log(`TOTP secret of ${uid} removed; the user must enrol again (\`varco user totp invite ${uid}\` or \`enroll\`)`);
    });
  user
    .command("unlock <uid>")
    .description("lift a lockout (auth.lockout) for a user")
    .action(async (typed: string) => {
      const { openLockoutForPolicy, openAuditForPolicy } = await load.core();
      const loaded = loadOrExit(policyPath(program.opts()));
      const uid = await resolveUid(loaded, typed);
      const lockout = await openLockoutForPolicy(loaded);
      let n: number;
      try {
        n = await lockout.unlock(uid);
      } finally {
        await lockout.close();
      }
      const audit = openAuditForPolicy(loaded);
      audit.append({ type: "unlock", uid, result: "ok", data: { failures_forgotten: n, by: "cli" } });
      audit.close();
      console.log(`${uid}: ${n} recorded failures forgotten; the account is not locked`);
    });
  user
    .command("forget <uid>")
    .description("forget a user's remembered second factors (auth.totp.remember): their next key login asks for the code")
    .option("--json", 'print {"uid", "removed"} as JSON')
    .action(async (typed: string, opts: { json?: boolean }) => {
      const { openStateForPolicy, openAuditForPolicy } = await load.core();
      const loaded = loadOrExit(policyPath(program.opts()));
      const uid = await resolveUid(loaded, typed);
      const state = await openStateForPolicy(loaded);
      let removed: number;
      try {
        removed = await state.forgetRemembered(uid);
      } finally {
        await state.close();
      }
      const audit = openAuditForPolicy(loaded);
      try {
        audit.append({ type: "mfa_forgotten", uid, result: "ok", data: { removed, by: "cli" } });
      } finally {
        audit.close();
      }
      if (opts.json) console.log(JSON.stringify({ uid, removed }));
      else
        console.log(`${uid}: ${removed} remembered second factor${removed === 1 ? "" : "s"} forgotten; the next login asks for the code`);
    });
  registerSshConfig(user, program, resolveUid);
  user
    .command("hash")
    .description(
      "print the argon2id hash of a password for directory.local_users: asked twice without echo on a terminal, else read from stdin",
    )
    .action(async () => {
      let password: string;
      if (process.stdin.isTTY) {
        // On a terminal: asked twice, never echoed, never in the shell's history.
        const { read } = await import("read");
        const first = await read({ prompt: "password: ", silent: true, replace: "", output: process.stderr });
        const again = await read({ prompt: "again: ", silent: true, replace: "", output: process.stderr });
        if (first !== again) throw new ExitError("the two passwords differ; nothing printed", 1);
        password = first;
      } else {
        const chunks: Buffer[] = [];
        for await (const c of process.stdin) chunks.push(c as Buffer);
        password = Buffer.concat(chunks)
          .toString("utf8")
          .replace(/\r?\n$/, "");
      }
      if (!password) throw new ExitError("empty password: nothing printed", 2);
      console.log(await (await load.auth()).hashPassword(password));
    });

  const stateCmd = program
    .command("state")
    .description("the login state: TOTP secrets, used steps, recovery codes, invitations, lockout (state.backend)");
  stateCmd
    .command("migrate")
    .description("bring the login state's schema to this version of varco (also done at start); refuses a newer schema")
    .action(async () => {
      const { openStateForPolicy } = await load.core();
      const loaded = loadOrExit(policyPath(program.opts()));
      const state = await openStateForPolicy(loaded);
      try {
        console.log(`${state.engine} ${state.where}: schema version ${await state.schemaVersion()}`);
      } finally {
        await state.close();
      }
    });
  stateCmd
    .command("copy")
    .description("copy this gateway's SQLite login state (<state_dir>/state.db) into PostgreSQL; totp.key must go to every node too")
    .requiredOption("--to <backend>", "the target engine: postgres")
    .option("--url-file <file>", "file holding the PostgreSQL URL (default: state.url_file of the policy)")
    .option("--force", "replace the rows the target already holds")
    .action(async (opts: { to: string; urlFile?: string; force?: boolean }) => {
      if (opts.to !== "postgres") throw new ExitError(`--to: "${opts.to}" is not a target; the only one is postgres`, 2);
      const { openStateForPolicy } = await load.core();
      const { resolve } = await import("node:path");
      const loaded = loadOrExit(policyPath(program.opts()));
      const urlFile = opts.urlFile
        ? opts.urlFile.startsWith("env:")
          ? opts.urlFile
          : resolve(opts.urlFile)
        : loaded.policy.state.url_file
          ? loaded.policy.state.url_file.startsWith("env:")
            ? loaded.policy.state.url_file
            : loaded.resolvePath(loaded.policy.state.url_file)
          : undefined;
      if (!urlFile) throw new ExitError(`${loaded.file}: state.url_file is not set; name the PostgreSQL URL file with --url-file`, 2);
      const source = await openStateForPolicy(loaded, { sqlite: true });
      try {
        const target = await openStateForPolicy(loaded, { urlFile });
        try {
          const held = await target.rowCount();
          if (held > 0 && !opts.force)
            throw new ExitError(
              `${target.where} already holds ${held} rows of login state; nothing copied (--force replaces them with this node's)`,
              1,
            );
          const dump = await source.dump();
          await target.load(dump, Boolean(opts.force));
          console.log(
            `copied ${source.where} to ${target.where}: ${dump.totp.length} TOTP secrets, ${dump.totpSteps.length} used steps of directory secrets, ` +
              `${dump.recoveryCodes.length} recovery codes, ${dump.invitations.length} invitations, ${dump.failures.length} lockout failures`,
          );
        } finally {
          await target.close();
        }
      } finally {
        await source.close();
      }
    });

  const audit = program.command("audit").description("read, verify and export the audit log");
  const since = (text: string | undefined, flag: string): number | undefined => {
    if (!text) return undefined;
    const d = parseDurationMs(text);
    if (d !== undefined) return Date.now() - d;
    const t = Date.parse(text);
    if (Number.isNaN(t)) throw new ExitError(`${flag}: "${text}" is neither a duration (30m, 24h, 7d) nor a date (2026-11-27T10:00Z)`, 2);
    return t;
  };
  const openStore = async () => (await load.core()).openAuditForPolicy(loadOrExit(policyPath(program.opts())));
  const openQuery = async () => {
    const [{ statePaths, openAuditForPolicy, nodeName }, { openAuditQuery }] = await Promise.all([load.core(), load.query()]);
    const loaded = loadOrExit(policyPath(program.opts()));
    const file = statePaths(loaded).auditDb;
    // The gateway creates the database; a missing one is opened (and created) through the store.
    openAuditForPolicy(loaded).close();
    return { query: openAuditQuery(file), node: nodeName(loaded.policy) };
  };
  /** The trail `audit export` reads: this node's, or with `--node` another node's pulled from PostgreSQL. */
  const openExportQuery = async (wanted: string | undefined, follow: boolean) => {
    const { nodeName } = await load.core();
    const loaded = loadOrExit(policyPath(program.opts()));
    if (wanted === undefined || wanted === nodeName(loaded.policy)) return openQuery();
    if (follow) throw new ExitError(`--follow reads this node's own trail: run it on ${printable(wanted)}`, 2);
    const [{ openAuditQuery }, { openTrails }] = await Promise.all([load.query(), load.trails()]);
    const trails = await openTrails(loaded);
    const t = trails.trails.find((x) => x.node === wanted);
    if (!t || !trails.shared) {
      trails.close();
      throw new ExitError(
        `--node ${printable(wanted)}: ${trails.shared ? "no such node in the shared audit" : "the state is not shared (state.backend is sqlite)"}`,
        2,
      );
    }
    const q = openAuditQuery(t.file);
    return {
      node: wanted,
      query: {
        ...q,
        close: () => {
          q.close();
          trails.close();
        },
      },
    };
  };
  const count = (text: string | undefined, flag: string, min: number, fallback: number): number => {
    if (text === undefined) return fallback;
    if (!/^\d{1,15}$/.test(text) || Number(text) < min) throw new ExitError(`${flag}: "${printable(text)}" is not an integer >= ${min}`, 2);
    return Number(text);
  };
  audit
    .command("list")
    .description("sessions, newest first, a page at a time (says how many more there are)")
    .option("--user <uid>", "only this directory user")
    .option("--target <name>", "only this target name or route alias (the account after its last _)")
    .option("--since <when>", "only sessions started within this duration (24h) or after this date")
    .option("--until <when>", "only sessions started before this duration ago or this date")
    .option("--result <result>", "only sessions with this result (ok, interrupted, terminated, upstream_failed, open)")
    .option("--limit <n>", "at most this many sessions", "100")
    .option("--offset <n>", "skip this many (newest first)", "0")
    .option("--json", 'print one JSON document {"sessions": [...], "total", "offset", "more", "next_offset"} (snake_case)')
    .action(
      async (opts: {
        user?: string;
        target?: string;
        since?: string;
        until?: string;
        result?: string;
        limit: string;
        offset: string;
        json?: boolean;
      }) => {
        const limit = count(opts.limit, "--limit", 1, 100);
        const offset = count(opts.offset, "--offset", 0, 0);
        const filter = {
          user: opts.user,
          target: opts.target,
          result: opts.result,
          sinceMs: since(opts.since, "--since"),
          untilMs: since(opts.until, "--until"),
        };
        const { sessionJson, openAuditQuery } = await load.query();
        const trails = await (await load.trails()).openTrails(loadOrExit(policyPath(program.opts())));
        let total = 0;
        let sessions: AuditSession[] = [];
        try {
          // Each node's newest offset+limit, merged newest first (one page of the whole cluster).
          for (const t of trails.trails) {
            const query = openAuditQuery(t.file);
            try {
              const r = query.sessions({ ...filter, limit: offset + limit, offset: 0 });
              total += r.total;
              sessions.push(...(trails.shared ? r.sessions.map((x) => ({ ...x, node: t.node })) : r.sessions));
            } finally {
              query.close();
            }
          }
        } finally {
          trails.close();
        }
        sessions.sort((a, b) => (a.startedAt < b.startedAt ? 1 : a.startedAt > b.startedAt ? -1 : 0));
        sessions = sessions.slice(offset, offset + limit);
        const more = Math.max(0, total - offset - sessions.length);
        if (opts.json) {
          const next = more > 0 ? offset + sessions.length : null;
          console.log(printableJson({ sessions: sessions.map(sessionJson), total, offset, more, next_offset: next }));
        } else {
          console.log(table(sessionRows(sessions, (await import("../auth/source.ts")).displayAddress, trails.shared)));
          if (more > 0) console.log(`… ${more} more; use --limit/--offset (next: --offset ${offset + sessions.length})`);
        }
      },
    );
  audit
    .command("show <id>")
    .description("one session: its row, events, commands, file transfers and recordings (id or its first 8 characters)")
    .option("--json", "print one JSON object (snake_case)")
    .action(async (id: string, opts: { json?: boolean }) => {
      const [{ snakeKeys }, { openAuditStore }] = await Promise.all([load.query(), load.audit()]);
      const trails = await (await load.trails()).openTrails(loadOrExit(policyPath(program.opts())));
      let session: AuditSession | undefined;
      let events: ReturnType<AuditStore["sessionEvents"]> = [];
      let recordings: ReturnType<AuditStore["recordings"]> = [];
      try {
        // The node that has the session (or its events); this node first.
        for (const t of trails.trails) {
          const store = openAuditStore(t.file);
          try {
            const found = store.findSession(id);
            const sid = found?.id ?? id;
            const evs = store.sessionEvents(sid);
            if (!found && evs.length === 0) continue;
            session = found && trails.shared ? { ...found, node: t.node } : found;
            events = evs;
            recordings = store.recordings(sid);
            break;
          } finally {
            store.close();
          }
        }
      } finally {
        trails.close();
      }
      if (!session && events.length === 0) throw new ExitError(`no session ${printable(id)}`, 1);
      if (opts.json) {
        console.log(printableJson(snakeKeys({ session, events, recordings })));
        return;
      }
      if (session) console.log(table(sessionRows([session], (await import("../auth/source.ts")).displayAddress, trails.shared)));
      const commands = events.filter((e) => e.type === "exec" || e.type === "shell" || e.type === "subsystem");
      const files = events.filter((e) => e.type === "file");
      console.log("\nCOMMANDS");
      for (const e of commands)
        console.log(
          `  ${shown(e.ts)}  ${shown(e.type)}  ${e.type === "exec" ? shown(e.data?.command) : e.type === "subsystem" ? shown(e.data?.name) : "(interactive shell)"}`,
        );
      console.log("\nFILE TRANSFERS");
      for (const e of files) {
        const d = e.data ?? {};
        const size = d.size ?? Number(d.bytesRead ?? 0) + Number(d.bytesWritten ?? 0);
        console.log(
          `  ${shown(e.ts)}  ${shown(d.protocol)} ${shown(d.op)} ${shown(d.path)}${d.toPath ? ` -> ${shown(d.toPath)}` : ""}  ${shown(size)} bytes  ${shown(e.result ?? "")}`,
        );
      }
      console.log("\nRECORDINGS");
      for (const r of recordings)
        console.log(`  channel ${r.channel}  ${shown(r.status)}  ${r.bytes} bytes  sha256 ${shown(r.sha256 ?? "-")}  ${shown(r.path)}`);
      console.log("\nEVENTS");
      for (const e of events)
        console.log(`  ${shown(e.ts)}  ${shown(e.type).padEnd(16)} ${shown(e.result ?? "")} ${printableJson(e.data ?? {})}`);
    });
  audit
    .command("search <text>")
    .description("full-text search (case-insensitive substring, 3+ characters) over commands, transfer paths and recorded terminal output")
    .option("--limit <n>", "at most this many hits", "50")
    .option("--json", 'print one JSON document {"hits": [...], "more": true|false} (snake_case)')
    .action(async (text: string, opts: { limit: string; json?: boolean }) => {
      const limit = count(opts.limit, "--limit", 1, 50);
      const { SearchTextError, openAuditQuery } = await load.query();
      const trails = await (await load.trails()).openTrails(loadOrExit(policyPath(program.opts())));
      const result: { hits: Array<SearchHit & { node?: string }>; more: boolean } = { hits: [], more: false };
      try {
        for (const t of trails.trails) {
          const query = openAuditQuery(t.file);
          try {
            const r = query.search(text, limit);
            result.more ||= r.more;
            result.hits.push(...(trails.shared ? r.hits.map((h) => ({ node: t.node, ...h })) : r.hits));
          } catch (err) {
            if (err instanceof SearchTextError) throw new ExitError(`audit search: ${err.message}`, 2);
            throw new ExitError(`audit search: ${printable((err as Error).message)}`, 1);
          } finally {
            query.close();
          }
        }
      } finally {
        trails.close();
      }
      if (result.hits.length > limit) {
        result.hits.sort((a, b) => (a.ts < b.ts ? 1 : a.ts > b.ts ? -1 : 0));
        result.hits = result.hits.slice(0, limit);
        result.more = true;
      }
      if (opts.json) {
        console.log(printableJson({ hits: result.hits, more: result.more }));
        return;
      }
      const rows = [
        ["SESSION", "TIME", "USER", "KIND", "MATCH"],
        ...result.hits.map((hit) =>
          [(hit.session_id ?? "-").slice(0, 8), hit.ts, hit.uid ?? "-", hit.kind, hit.snippet].map((c) => printable(c, 200)),
        ),
      ];
      console.log(table(rows));
      if (result.more) console.log(`… more hits; use --limit (now ${limit})`);
    });
  audit
    .command("replay <id>")
    .description(
      "play a session's recording (id or its first 8 characters) after checking its SHA-256 against the chained recording event; a command's raw output (`.raw`) is written back byte for byte, stdout to stdout and stderr to stderr",
    )
    .option("--speed <factor>", "playback speed", "1")
    .option("--idle-limit <seconds>", "longest pause kept between two outputs", "2")
    .option("--channel <n>", "which channel of the session (default: the first recorded)")
    .option("--force", "play even when the hash check fails (the failure is still printed on stderr)")
    .action(async (id: string, opts: { speed: string; idleLimit: string; channel?: string; force?: boolean }) => {
      const { replay } = await load.audit();
      const store = await openStore();
      const session = store.findSession(id);
      const recs = store.recordings(session?.id ?? id);
      store.close();
      const rec = opts.channel ? recs.find((r) => r.channel === Number(opts.channel)) : recs[0];
      if (!rec) throw new ExitError(`no recording for session ${printable(id)}`, 1);
      const speed = Number(opts.speed);
      const idle = Number(opts.idleLimit);
      if (!(speed > 0) || !(idle >= 0)) throw new ExitError("--speed must be > 0 and --idle-limit >= 0", 2);
      const { query } = await openQuery();
      const check = (() => {
        try {
          return query.checkRecording(rec.sessionId, rec.channel, rec.path);
        } finally {
          query.close();
        }
      })();
      if (!check.ok) {
        const detail = `audit replay: ${printable(rec.path)}: ${check.reason} (expected ${check.expected ?? "-"}, found ${check.found ?? "-"})`;
        if (!opts.force) throw new ExitError(`${detail}; refusing to play it (--force plays it anyway)`, 1);
        console.error(`${detail}; playing it anyway (--force)`);
      }
      await replay(rec.path, {
        speed,
        idleLimitS: idle,
        write: (t) => process.stdout.write(t),
        writeBytes: (stream, data) => (stream === "stdout" ? process.stdout : process.stderr).write(data),
        sleep: (ms) => new Promise((r) => setTimeout(r, ms)),
      });
    });
  audit
    .command("schema")
    .description("the JSON Schema (draft 2020-12) of the events `audit export` prints, versioned")
    .action(async () => {
      console.log(JSON.stringify((await load.query()).eventJsonSchema(), null, 2));
    });
  audit
    .command("export")
    .description("stream events as JSON lines for a SIEM (see `varco audit schema`); --follow keeps streaming new events")
    .option("--format <format>", "output format (jsonl)", "jsonl")
    .option("--since <when>", "only events from this duration ago (24h) or date on")
    .option("--until <when>", "only events before this duration ago or date")
    .option("--user <uid>", "only events of this directory user")
    .option("--target <name>", "only events of this target name or route alias")
    .option("--type <types>", "only these event types (comma-separated, e.g. exec,file)")
    .option("--after-id <n>", "only events after this id (resume where a previous export stopped)", "0")
    .option("--follow", "after the existing events, poll every second for new ones until SIGINT/SIGTERM (the last id goes to stderr)")
    .option("--node <name>", "with a PostgreSQL state: export this node's chain (default: this node's own)")
    .action(
      async (opts: {
        node?: string;
        format: string;
        since?: string;
        until?: string;
        user?: string;
        target?: string;
        type?: string;
        afterId: string;
        follow?: boolean;
      }) => {
        if (opts.format !== "jsonl") throw new ExitError(`--format: only jsonl is supported (got ${printable(opts.format)})`, 2);
        const types = opts.type
          ?.split(",")
          .map((x) => x.trim())
          .filter(Boolean);
        const filter = {
          sinceMs: since(opts.since, "--since"),
          untilMs: since(opts.until, "--until"),
          user: opts.user,
          target: opts.target,
          types,
        };
        let after = count(opts.afterId, "--after-id", 0, 0);
        const { query, node } = await openExportQuery(opts.node, opts.follow === true);
        // Pages of 1000: memory stays bounded however long the log or the follow.
        const drain = async () => {
          for (let page = 0; page < 1_000_000; page++) {
            const head = query.headId();
            const events = query.events({ ...filter, afterId: after, limit: 1000 }, node);
            if (events.length > 0) {
              const ok = process.stdout.write(`${events.map((e) => printableJson(e)).join("\n")}\n`);
              if (!ok) await new Promise((r) => process.stdout.once("drain", r));
            }
            // Filtered-out events still move the resume point (up to the head read before the page).
            const last = events[events.length - 1]?.id ?? after;
            after = events.length === 1000 ? last : Math.max(last, head);
            if (events.length < 1000) return;
          }
        };
        try {
          await drain();
          if (!opts.follow) return;
          let stop = false;
          const onSignal = () => {
            stop = true;
          };
          process.once("SIGINT", onSignal);
          process.once("SIGTERM", onSignal);
          while (!stop) {
            await new Promise((r) => setTimeout(r, 1000));
            if (stop) break;
            await drain();
          }
          process.removeListener("SIGINT", onSignal);
          process.removeListener("SIGTERM", onSignal);
          console.error(`audit export: stopped; last id ${after} (resume with --after-id ${after})`);
        } finally {
          query.close();
        }
      },
    );
  audit
    .command("verify")
    .description("check the hash chain, session rows, recordings, checkpoints and anchors (read-only); exit 1 listing every problem")
    .option("--pubkey <file>", "also check the ed25519-signed checkpoints with this public key (PEM)")
    .option(
      "--anchor <file>",
      "chain heads logged by the gateway (journalctl -u varco -o cat > FILE, or - for stdin); repeatable",
      (v: string, acc: string[]) => [...acc, v],
      [] as string[],
    )
    .option("--seal-key <file>", "the sealing verification key (hex) printed by `varco audit keygen`, from a file (- for stdin)")
    .option("--json", "print the report as JSON")
    .action(async (opts: { json?: boolean; pubkey?: string; anchor: string[]; sealKey?: string }) => {
      const [{ createPublicKey }, { parseVerificationKey, checkSeals }, { parseAnchors, verifyAuditDb }, { statePaths }] =
        await Promise.all([import("node:crypto"), load.audit(), load.verify(), load.core()]);
      let publicKey: KeyObject | undefined;
      if (opts.pubkey) {
        try {
          publicKey = createPublicKey(readFileSync(opts.pubkey));
        } catch (err) {
          throw new ExitError(`--pubkey: cannot read an ed25519 public key from ${opts.pubkey} (${(err as Error).message})`, 2);
        }
      }
      let sealKey: Buffer | undefined;
      if (opts.sealKey) {
        if (opts.sealKey === "-" && opts.anchor.includes("-")) throw new ExitError("--seal-key - and --anchor - cannot both read stdin", 2);
        try {
          // The key itself is never echoed.
          sealKey = parseVerificationKey(opts.sealKey === "-" ? await readStdin() : readFileSync(opts.sealKey));
        } catch (err) {
          throw new ExitError(`--seal-key: ${opts.sealKey}: ${(err as Error).message}`, 2);
        }
      }
      let anchors: Anchor[] | undefined;
      let malformed = 0;
      if (opts.anchor.length > 0) {
        anchors = [];
        for (const f of opts.anchor) {
          let text: string;
          try {
            text = await anchorLines(f === "-" ? process.stdin : createReadStream(f));
          } catch (err) {
            throw new ExitError(`--anchor: cannot read ${f} (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`, 2);
          }
          const parsed = parseAnchors(text);
          anchors.push(...parsed.anchors);
          malformed += parsed.malformed;
        }
      }
      // Read-only: never creates the state folder or the database (openAuditForPolicy would).
      const loaded = loadOrExit(policyPath(program.opts()));
      const file = statePaths(loaded).auditDb;
      const report = verifyAuditDb(file, { publicKey, sealKey, anchors, checkSeals, node: loaded.policy.gateway.node });
      sealKey?.fill(0);
      // With a PostgreSQL state: every node's chain as PostgreSQL holds it, and this node's copy there
      // against its own audit.db (a chain rewritten consistently in PostgreSQL still differs from it).
      const trails = await (await load.trails()).openTrails(loaded, { replicaOfLocal: true, create: false });
      try {
        const { compareWithLocal } = await import("../audit/pull.ts");
        const shared = [...trails.trails.filter((t) => !t.local), ...(trails.replicaOfLocal ? [trails.replicaOfLocal] : [])];
        for (const t of shared) {
          // The anchors logged off the box bind every node's chain: a chain rewritten in PostgreSQL misses them.
          const r = verifyAuditDb(t.file, { recordingFiles: false, node: t.node, anchors: anchors?.filter((a) => a.node === t.node) });
          report.events += r.events;
          report.sessions += r.sessions;
          report.recordings += r.recordings;
          report.issues.push(...r.issues.map((i) => ({ ...i, id: `node ${t.node} (PostgreSQL): ${i.id}` })));
          report.warnings.push(...r.warnings.map((w) => `node ${t.node} (PostgreSQL): ${w}`));
        }
        if (trails.shared) {
          // A node the anchors know but PostgreSQL does not hold at all: its whole trail was deleted there.
          const held = new Set(trails.trails.map((t) => t.node));
          for (const n of new Set((anchors ?? []).map((a) => a.node)))
            if (!held.has(n))
              report.issues.push({
                kind: "anchor",
                id: `node ${n} (PostgreSQL)`,
                expected: "the node's events",
                found: "no events",
                reason: "an anchored node has no trail in PostgreSQL (deleted there)",
              });
          const mine = trails.replicaOfLocal;
          const cmp = mine ? compareWithLocal(file, mine.file) : undefined;
          for (const d of cmp?.differences ?? [])
            report.issues.push({
              kind: "event",
              id: `node ${mine?.node} (PostgreSQL)`,
              reason: `the shared copy differs from this node's audit.db: ${d}`,
            });
          const waiting = cmp ? cmp.notShipped : report.events;
          if (waiting > 0) report.warnings.push(`${waiting} events of this node are not in PostgreSQL yet (the gateway ships them)`);
          report.warnings.push(
            `recording files of other nodes are checked by \`audit verify\` on those nodes (${shared.length} node trails read from PostgreSQL)`,
          );
          report.ok = report.issues.length === 0;
        }
      } finally {
        trails.close();
      }
      if (malformed > 0) report.warnings.unshift(`${malformed} "audit anchor" lines were malformed and ignored`);
      if (opts.json) {
        console.log(printableJson(report));
        if (!report.ok) throw new ExitError("", 1);
        return;
      }
      const counts = `${report.events} events, ${report.sessions} sessions, ${report.recordings} recordings`;
      if (report.ok) console.log(`audit verify: ok (${counts})`);
      for (const w of report.warnings) console.log(`audit verify: warning: ${shown(w)}`);
      if (report.ok) return;
      for (const i of report.issues) {
        const detail =
          i.expected !== undefined || i.found !== undefined
            ? ` (expected ${shown(i.expected ?? "-")}, found ${shown(i.found ?? "-")})`
            : "";
        console.error(`audit verify: FAILED at ${shown(i.kind)} ${shown(i.id)}: ${shown(i.reason)}${detail}`);
      }
      throw new ExitError(`audit verify: FAILED: ${report.issues.length} problem${report.issues.length === 1 ? "" : "s"} (${counts})`, 1);
    });
  audit
    .command("keygen")
    .description("create the forward-secure sealing state (set gateway.audit_seal_state to FILE) and print the verification key once")
    .requiredOption("--out <file>", "sealing state file to create (mode 0600; never overwritten)")
    .action(async (opts: { out: string }) => {
      const { createSealState, SealStateError } = await load.audit();
      let k0: Buffer;
      try {
        k0 = createSealState(opts.out);
      } catch (err) {
        throw new ExitError(`audit keygen: ${(err as Error).message}`, err instanceof SealStateError ? 1 : 2);
      }
      const hex = k0.toString("hex");
      k0.fill(0);
      console.log(`wrote ${opts.out}: set gateway.audit_seal_state to it (the gateway ratchets it; it never holds an older key).`);
      console.log("Verification key (shown only now; store it OFFLINE, away from the gateway, e.g. printed or in a vault):");
      console.log(hex);
      console.log("Check with: varco audit verify --seal-key FILE_WITH_THIS_KEY   (or --seal-key - to read it from stdin)");
    });
  audit
    .command("prune")
    .description("delete events, sessions and recordings older than a duration, keeping the chain verifiable (checkpoint)")
    .requiredOption("--older-than <duration>", "e.g. 180d")
    .action(async (opts: { olderThan: string }) => {
      const d = parseDurationMs(opts.olderThan);
      if (d === undefined) throw new ExitError(`--older-than: "${opts.olderThan}" is not a duration (e.g. 180d)`, 2);
      const { openAuditForPolicy, sealerForPolicy } = await load.core();
      const loaded = loadOrExit(policyPath(program.opts()));
      // With a PostgreSQL state, the local audit.db is the spool: never prune what is not shipped yet.
      const unshipped = await (await load.trails()).unshippedBefore(loaded, Date.now() - d);
      if (unshipped > 0)
        throw new ExitError(
          `audit prune: ${unshipped} events in the range are not in PostgreSQL yet; start the gateway so it ships them, then prune`,
          1,
        );
      const store = openAuditForPolicy(loaded);
      let r: ReturnType<typeof store.prune>;
      try {
        // With gateway.audit_seal_state, the prune checkpoint is sealed in the same transaction.
        const sealer = sealerForPolicy(loaded, store);
        r = store.prune(Date.now() - d, sealer?.step);
      } catch (err) {
        store.close();
        throw new ExitError(`audit prune: ${(err as Error).message}`, 1);
      }
      store.close();
      for (const f of r.recordings) rmSync(f, { force: true });
      console.log(`pruned ${r.events} events, ${r.sessions} sessions, ${r.recordings.length} recordings`);
    });

  registerNet(program);

  program
    .command("health")
    .description("ask the running gateway's /healthz (for keepalived track_script and Nagios); exit 0 healthy")
    .option("--nagios", "Nagios plugin output and exit codes (0 OK, 2 CRITICAL, 3 UNKNOWN)")
    .option("--json", "print the checks as JSON")
    .action(async (opts: { nagios?: boolean; json?: boolean }) => {
      // Only gateway.metrics_listen is read: the running gateway is asked, whatever the file says now.
      const { fetchHealth, metricsListenOf } = await import("./health.ts");
      const file = policyPath(program.opts());
      refuseMissingDefault(file);
      let listen: string | undefined;
      try {
        listen = metricsListenOf(file);
      } catch (err) {
        throw new ExitError((err as Error).message, opts.nagios ? 3 : 1);
      }
      if (!listen) throw new ExitError(`${file}: gateway.metrics_listen is not set, so there is no /healthz to ask`, opts.nagios ? 3 : 1);
      try {
        const { status, body } = await fetchHealth(listen);
        const failing = body.checks.filter((c) => !c.ok);
        if (opts.json) console.log(JSON.stringify(body));
        else if (opts.nagios) {
          const perf = body.checks.map((c) => `${c.name}=${c.ok ? 1 : 0}`).join(" ");
          console.log(
            status === 200
              ? `VARCO OK - all ${body.checks.length} checks pass | ${perf}`
              : `VARCO CRITICAL - ${failing.map((c) => `${c.name}: ${c.detail}`).join("; ")} | ${perf}`,
          );
        } else for (const c of body.checks) console.log(`${c.ok ? "ok  " : "FAIL"}  ${c.name.padEnd(10)} ${c.detail}`);
        if (status !== 200) throw new ExitError("", opts.nagios ? 2 : 1);
      } catch (err) {
        if (err instanceof ExitError) throw err;
        if (opts.nagios) {
          console.log(`VARCO CRITICAL - no answer from ${listen}: ${(err as Error).message}`);
          throw new ExitError("", 2);
        }
        throw new ExitError(`no answer from ${listen}: ${(err as Error).message}`, 1);
      }
    });
  program
    .command("doctor")
    .description("check the host: keys and permissions, state dir, directory bind, targets with pinned host keys, nft/keepalived")
    .option("--json", "print the rows as JSON")
    .action(async (opts: { json?: boolean }) => {
      const rows = await (await load.ops()).doctor(loadOrExit(policyPath(program.opts())));
      if (opts.json) console.log(JSON.stringify(rows));
      else
        console.log(
          table([
            ["", "CHECK", "DETAIL", "FIX"],
            ...rows.map((r) => [r.warning ? "WARN" : r.ok ? "ok" : "FAIL", r.check, r.detail, r.fix ?? ""]),
          ]),
        );
      if (rows.some((r) => !r.ok)) throw new ExitError("", 1);
    });
  const keys = program.command("keys").description("the gateway's own keys, and the host keys of targets");
  keys
    .command("init")
    .description(
      "create the gateway's host keys and egress key named by the policy (ed25519, mode 0600) where missing; existing keys are kept",
    )
    .option("--json", "print the keys as JSON")
    .action(async (opts: { json?: boolean }) => {
      const { createKeyIfMissing, loadKey, publicKeyLine } = await import("../ssh/keys.ts");
      const { fingerprint } = await import("../ssh/upstream.ts");
      const loaded = loadOrExit(policyPath(program.opts()));
      const g = loaded.policy.gateway;
      const wanted = [
        ...g.host_keys.map((k) => ({ role: "host_key", file: loaded.resolvePath(k), comment: "varco-host" })),
        { role: "egress_key", file: loaded.resolvePath(g.egress_key), comment: "varco-egress" },
      ];
      const out = wanted.map((w) => {
        const created = createKeyIfMissing(w.file, w.comment);
        if (created) giveToFolderOwner([w.file, `${w.file}.pub`]);
        const line = publicKeyLine(loadKey(w.file), w.comment);
        return {
          role: w.role,
          file: w.file,
          created,
          public_key: line,
          fingerprint: fingerprint(Buffer.from(line.split(" ")[1] ?? "", "base64")),
        };
      });
      if (opts.json) {
        console.log(JSON.stringify({ keys: out }));
        return;
      }
      for (const k of out) console.log(`${k.created ? "created" : "kept   "}  ${k.role.padEnd(10)}  ${k.fingerprint}  ${k.file}`);
      const egress = out.find((k) => k.role === "egress_key");
      if (egress) console.log(`\nPut the egress public key in each target user's authorized_keys:\n${egress.public_key}`);
    });
  keys
    .command("scan <targets...>")
    .description("fetch targets' host keys (host[:port] or a policy target name) and print them as policy host_key lines")
    .option("--json", "print JSON")
    .action(async (targets: string[], opts: { json?: boolean }) => {
      let policyTargets: Record<string, { host: string; port: number }> = {};
      try {
        policyTargets = policyModule().loadPolicyFile(policyPath(program.opts())).policy.targets;
      } catch {
        /* scanning bare addresses needs no policy */
      }
      let failed = false;
      const out: unknown[] = [];
      for (const t of targets) {
        const named = policyTargets[t];
        const hp = parseHostPort(t, 22);
        const host = named?.host ?? hp?.host ?? t;
        const port = named?.port ?? hp?.port ?? 22;
        try {
          const found = await (await load.ops()).scanHostKeys(host, port);
          if (found.length === 0) throw new Error("no host key offered");
          if (opts.json) out.push({ target: t, host, port, keys: found });
          else {
            console.log(`# ${t} (${host}:${port})`);
            for (const k of found) console.log(`    host_key: "${k.line}"  # ${k.fingerprint}`);
          }
        } catch (err) {
          failed = true;
          console.error(`${t}: ${(err as Error).message}`);
        }
      }
      if (opts.json) console.log(JSON.stringify(out));
      if (failed) throw new ExitError("", 1);
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
    // One line a human can act on; the stack only with --debug (or VARCO_DEBUG=1).
    const e = err as Error;
    console.error(`varco: ${e.message}`);
    if (argv.includes("--debug") || process.env.VARCO_DEBUG === "1") console.error(e.stack);
    process.exitCode = 1;
  }
}
