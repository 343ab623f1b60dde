/**
 * Integration harness: a throwaway slapd, two OpenSSH sshd targets and the gateway (`varco serve`
 * as a child process, its stdout/stderr captured) per test file; the real OpenSSH client driven
 * through SSH_ASKPASS. Every daemon is stopped by PID and every temp folder removed in `stop()`.
 */
import { createHash } from "node:crypto";
import { createWriteStream, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { execa, type ResultPromise } from "execa";
import ssh2 from "ssh2";
import { currentCode, openTotpStore } from "../../src/auth/index.ts";
import { type DemoEnvironment, type SlapdOptions, startDemoEnvironment, stopChild, waitForPort } from "../../src/demo/index.ts";
import { serveNodeOptions } from "./unit.ts";

export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
export const ASKPASS = join(ROOT, "test/helpers/askpass.sh");
const BIN = join(ROOT, "bin/varco.mjs");
const PERIOD_MS = 30_000;
const TOTP = { issuer: "varco", digits: 6 as const, periodMs: PERIOD_MS, window: 1 };

/** Routes for the test users (group `testers`) on top of the demo routes. */
export const TEST_ROUTES = `
  - groups: [testers]
    alias: vm1
    target: vm1-mario
    allow: { port_forwarding: true }
  - groups: [testers]
    alias: vm2
    target: vm2-anna
  - groups: [testers]
    alias: agent
    target: vm1-mario
    allow: { agent_forwarding: true }
  - groups: [testers]
    alias: noexec
    target: vm1-mario
    allow: { exec: false, shell: false, sftp: false, scp: false }
`;

export interface SshResult {
  readonly exitCode: number;
  readonly stdout: string;
  readonly stderr: string;
}

export interface Harness {
  readonly env: DemoEnvironment;
  readonly port: number;
  readonly dir: string;
  /** Everything the gateway process wrote to stdout and stderr so far. */
  gatewayOutput(): string;
  /** PID of the running gateway process (changes on restartGateway); undefined before it started. */
  gatewayPid(): number | undefined;
  /** A TOTP code for `uid` that has not been used yet: the step now, else now+1 (both stay valid across a step boundary with window 1). */
  nextCode(uid: string): string;
  /** OpenSSH client options for this gateway (known_hosts pinned to the gateway's host key). */
  sshOptions(extra?: readonly string[]): string[];
  /** Environment for the askpass helper answering `password` and `code`. */
  askpassEnv(password: string, code: string): NodeJS.ProcessEnv;
  /** Runs `ssh account@gateway command…` with the given credentials (code defaults to nextCode). */
  ssh(
    account: string,
    args: readonly string[],
    o?: { password?: string; code?: string; input?: string | Buffer; extra?: readonly string[]; env?: NodeJS.ProcessEnv },
  ): Promise<SshResult>;
  /** Opens a ControlMaster login for `account`; returns the options that reuse it. */
  master(account: string): Promise<string[]>;
  /** Restarts the gateway process (same policy file). */
  restartGateway(): Promise<void>;
  /** Sends a signal to the gateway process. */
  signalGateway(signal: NodeJS.Signals): void;
  /** Sends SIGHUP and waits (bounded, 20 s) until the gateway logged the outcome of that reload. */
  reloadGateway(): Promise<"reloaded" | "refused">;
  stop(): Promise<void>;
}

/** A session as `varco audit show --json` prints it (the parts tests read). */
export interface ShownSession {
  readonly session: { id: string; result: string };
  readonly events: Array<{ type: string; result?: string; data: Record<string, unknown> }>;
  readonly recordings: Array<{ path: string; status: string; channel: number }>;
}

/** The newest session of `uid` once it is closed (bounded wait: 10 s), as `varco audit show --json` prints it. */
export async function closedSessionOf(policyFile: string, uid: string): Promise<ShownSession> {
  const varco = (...args: string[]) => execa("node", [BIN, "--policy", policyFile, ...args], { reject: false });
  for (let i = 0; i < 100; i++) {
    const r = await varco("audit", "list", "--json", "--user", uid);
    const [s] = r.exitCode === 0 ? (JSON.parse(String(r.stdout)) as { sessions: Array<{ id?: string; result?: string }> }).sessions : [];
    if (s?.id && s.result !== "open") {
      const shown = await varco("audit", "show", s.id, "--json");
      if (shown.exitCode !== 0) throw new Error(`audit show ${s.id} failed: ${shown.stderr}`);
      return JSON.parse(String(shown.stdout)) as ShownSession;
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`session of ${uid} never closed`);
}

/**
 * Logs in to a gateway on 127.0.0.1:`port` with the ssh2 library (keyboard-interactive), answering
 * each prompt with `answer(prompt, instructions)`; resolves with the connected client.
 */
export function ssh2LoginAt(
  port: number,
  account: string,
  answer: (prompt: string, instructions: string) => string,
): Promise<InstanceType<typeof ssh2.Client>> {
  return new Promise((resolve, reject) => {
    const c = new ssh2.Client();
    c.on("ready", () => resolve(c));
    c.on("error", reject);
    c.on("keyboard-interactive", (_name, instructions, _lang, prompts, finish) =>
      finish(prompts.map((p) => answer(p.prompt, instructions))),
    );
    c.connect({ host: "127.0.0.1", port, username: account, tryKeyboard: true, readyTimeout: 20_000 });
  });
}

function password(env: DemoEnvironment, uid: string): string {
  const u = env.users.find((x) => x.uid === uid);
  if (!u) throw new Error(`no test user ${uid}`);
  return u.password;
}

/** Starts the environment and the gateway. `extraUsers` get routes from TEST_ROUTES (group testers). */
export async function startHarness(
  o: {
    extraUsers?: readonly string[];
    extraRoutes?: string;
    /** Extra targets on 127.0.0.1 (login `x`), by name: e.g. ssh2 servers a test runs as targets. */
    extraTargets?: Readonly<Record<string, { readonly port: number; readonly hostKeyLine: string }>>;
    templateEdit?: (t: string) => string;
    slapd?: Pick<SlapdOptions, "tls" | "memberOf">;
    /** Use this folder (created by the caller, e.g. with certificates in it) instead of a new temp one. */
    dir?: string;
    /** Keep TOTP secrets in this directory attribute instead of the local store. */
    totpAttribute?: string;
    /** Uids whose TOTP secret is removed after start (for enrolment tests). */
    unenrolled?: readonly string[];
    /** Extra environment of the gateway process (e.g. NODE_OPTIONS for memory measurements). */
    gatewayEnv?: NodeJS.ProcessEnv;
  } = {},
): Promise<Harness> {
  const dir = o.dir ?? mkdtempSync(join(tmpdir(), "varco-test-"));
  // The gateway binds port 0 (the kernel picks a free one, no race with other test files' daemons);
  // the port it got is read from its "gateway listening" log line and then written into the policy,
  // so restarts and reloads keep it.
  let port = 0;
  const targets = Object.entries(o.extraTargets ?? {})
    .map(([name, t]) => `  ${name}: { host: 127.0.0.1, port: ${t.port}, user: x, host_key: "${t.hostKeyLine}" }\n`)
    .join("");
  const base = (readFileSync(join(ROOT, "policies/demo.yaml"), "utf8") + (o.extraRoutes ?? TEST_ROUTES)).replace(
    "targets:\n",
    `targets:\n${targets}`,
  );
  const template = o.templateEdit ? o.templateEdit(base) : base;
  const env = await startDemoEnvironment({
    dir,
    gatewayPort: 0,
    extraUsers: o.extraUsers ?? [],
    template,
    ...(o.slapd ? { slapd: o.slapd } : {}),
    ...(o.totpAttribute ? { totpAttribute: o.totpAttribute } : {}),
  });
  if (o.unenrolled?.length) {
    const store = openTotpStore(join(dir, "state"), TOTP);
    for (const uid of o.unenrolled) await store.reset(uid);
    store.close();
  }
  const logPath = join(dir, "gateway.out");
  let output = "";
  let child: ResultPromise | undefined;
  const masters: string[][] = [];

  const startGateway = async () => {
    const out = createWriteStream(logPath, { flags: "a" });
    child = execa("node", [...serveNodeOptions(), BIN, "serve", "--policy", env.policyFile], {
      reject: false,
      all: true,
      env: { ...o.gatewayEnv, VARCO_LOG_LEVEL: "debug" },
    });
    child.all?.on("data", (d: Buffer) => {
      output += d.toString();
      out.write(d);
    });
    const from = output.length;
    for (let i = 0; i < 400; i++) {
      const m = /"msg":"gateway listening"/.test(output.slice(from)) ? /"listen":\["127\.0\.0\.1:(\d+)"/.exec(output.slice(from)) : null;
      if (m) {
        port = Number(m[1]);
        break;
      }
      if (child.exitCode !== null) throw new Error(`the gateway exited (${child.exitCode})`);
      await new Promise((r) => setTimeout(r, 50));
    }
    if (!port) throw new Error("the gateway did not log that it listens within 20 s");
    await waitForPort(port, "127.0.0.1", 20_000);
    const policy = readFileSync(env.policyFile, "utf8");
    if (policy.includes('listen: ["127.0.0.1:0"]'))
      writeFileSync(env.policyFile, policy.replace('listen: ["127.0.0.1:0"]', `listen: ["127.0.0.1:${port}"]`));
  };
  await startGateway().catch(async (err) => {
    await env.stop();
    throw new Error(`gateway did not start: ${(err as Error).message}\n${output}`);
  });

  const hostPub = readFileSync(join(dir, "keys/ssh_host_ed25519_key.pub"), "utf8").trim().split(/\s+/).slice(0, 2).join(" ");
  const knownHosts = join(dir, "known_hosts");
  writeFileSync(knownHosts, `[127.0.0.1]:${port} ${hostPub}\n`);

  const lastStep = new Map<string, number>();
  const nextCode = (uid: string) => {
    const secret = env.secrets.get(uid);
    if (!secret) throw new Error(`no secret for ${uid}`);
    const now = Math.floor(Date.now() / PERIOD_MS);
    const step = Math.max((lastStep.get(uid) ?? now - 1) + 1, now);
    if (step > now + 1) throw new Error(`test bug: ${uid} needs a 3rd code within one 30 s step; use another test user or a ControlMaster`);
    lastStep.set(uid, step);
    return currentCode(TOTP, secret, step * PERIOD_MS);
  };
  // OpenSSH keeps the first value it sees for an option: the caller's extras go first.
  const sshOptions = (extra: readonly string[] = []) => [
    ...extra,
    "-F",
    "/dev/null",
    "-p",
    String(port),
    "-o",
    `UserKnownHostsFile=${knownHosts}`,
    "-o",
    "StrictHostKeyChecking=yes",
    "-o",
    "PubkeyAuthentication=no",
    "-o",
    "LogLevel=ERROR",
    "-o",
    "ConnectTimeout=20",
  ];
  const askpassEnv = (pw: string, code: string): NodeJS.ProcessEnv => ({
    SSH_ASKPASS: ASKPASS,
    SSH_ASKPASS_REQUIRE: "force",
    DISPLAY: ":0",
    VARCO_TEST_PASSWORD: pw,
    VARCO_TEST_CODE: code,
  });
  const uidOf = (account: string) => account.slice(0, Math.max(account.lastIndexOf("_"), 0)) || account;

  const ssh: Harness["ssh"] = async (account, args, opt = {}) => {
    const uid = uidOf(account);
    const r = await execa("ssh", [...sshOptions(opt.extra), `${account}@127.0.0.1`, ...args], {
      reject: false,
      env: { ...askpassEnv(opt.password ?? password(env, uid), opt.code ?? nextCode(uid)), ...opt.env },
      ...(opt.input !== undefined ? { input: opt.input } : { stdin: "ignore" }),
      timeout: 120_000,
      stripFinalNewline: false,
    });
    return { exitCode: r.exitCode ?? -1, stdout: String(r.stdout), stderr: String(r.stderr) };
  };

  const master: Harness["master"] = async (account) => {
    const uid = uidOf(account);
    const path = join(dir, `cm-${account}`);
    const opts = ["-o", `ControlPath=${path}`];
    const r = await execa(
      "ssh",
      [...sshOptions([...opts, "-o", "ControlMaster=yes", "-o", "ControlPersist=300", "-f", "-N"]), `${account}@127.0.0.1`],
      {
        reject: false,
        env: askpassEnv(password(env, uid), nextCode(uid)),
        stdin: "ignore",
        timeout: 60_000,
      },
    );
    if (r.exitCode !== 0) throw new Error(`ControlMaster login failed: ${r.stderr}`);
    const reuse = [...sshOptions(opts), "-o", "ControlMaster=no"];
    masters.push(reuse);
    return reuse;
  };

  return {
    env,
    get port() {
      return port;
    },
    dir,
    gatewayOutput: () => output,
    gatewayPid: () => child?.pid,
    nextCode,
    sshOptions,
    askpassEnv,
    ssh,
    master,
    async restartGateway() {
      if (child) await stopChild(child);
      await startGateway();
    },
    signalGateway(signal) {
      child?.kill(signal);
    },
    async reloadGateway() {
      // The outcome line of a reload that read the file as it is now (the file watcher may reload too).
      const sha = createHash("sha256").update(readFileSync(env.policyFile)).digest("hex");
      const from = output.length;
      const outcome = () =>
        output
          .slice(from)
          .split("\n")
          .find((l) => l.includes(`"sha256":"${sha}"`) && /"msg":"policy reload(ed| refused)/.test(l));
      child?.kill("SIGHUP");
      for (let i = 0; i < 400 && !outcome(); i++) await new Promise((r) => setTimeout(r, 50));
      const line = outcome();
      if (!line) throw new Error("the gateway did not log the outcome of a reload within 20 s");
      return line.includes('"msg":"policy reloaded"') ? "reloaded" : "refused";
    },
    async stop() {
      for (const m of masters) await execa("ssh", [...m, "-O", "exit", "x@127.0.0.1"], { reject: false, timeout: 10_000 });
      if (child) await stopChild(child);
      await env.stop();
    },
  };
}
