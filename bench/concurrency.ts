/**
 * Concurrency bench: N logged-in interactive sessions through varco (ssh2 clients in this process,
 * LDAP + TOTP each) to a light ssh2 target, and M through a plain OpenSSH jump host (direct-tcpip
 * to the same light target) for comparison: RSS per session and idle CPU of the gateway side.
 */
import { readdirSync, readFileSync } from "node:fs";
import type { AddressInfo } from "node:net";
import ssh2 from "ssh2";
import { currentCode } from "../src/auth/index.ts";
import { generateEd25519 } from "../src/ssh/index.ts";
import { cpuSeconds, fmt, MiB, rssBytes } from "./lib.ts";

type SshClient = InstanceType<typeof ssh2.Client>;

export interface LightTarget {
  readonly port: number;
  readonly hostKeyLine: string;
  close(): void;
}

/** An ssh2 server that accepts any key and echoes shell input: cheap stand-in for thousands of VMs. */
export async function startLightTarget(): Promise<LightTarget> {
  const pair = generateEd25519("light-target");
  const server = new ssh2.Server({ hostKeys: [pair.private] }, (client) => {
    client.on("authentication", (ctx) => ctx.accept());
    client.on("session", (accept) => {
      const s = accept();
      s.on("pty", (a) => a?.());
      s.on("env", (a) => a?.());
      s.on("window-change", (a) => a?.());
      s.on("shell", (a) => {
        const ch = a();
        ch.on("data", (d: Buffer) => ch.write(d));
      });
      s.on("exec", (a) => {
        const ch = a();
        ch.exit(0);
        ch.end();
      });
    });
    client.on("error", () => undefined);
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
  const port = (server.address() as AddressInfo).port;
  return { port, hostKeyLine: pair.public.split(" ").slice(0, 2).join(" "), close: () => server.close() };
}

function openShell(c: SshClient): Promise<void> {
  return new Promise((resolve, reject) =>
    c.shell({ term: "xterm", rows: 24, cols: 80 }, (err, ch) => {
      if (err) return reject(err);
      ch.once("data", () => resolve());
      ch.write("hello\n");
    }),
  );
}

function connect(cfg: ssh2.ConnectConfig, answers?: (prompt: string) => string): Promise<SshClient> {
  return new Promise((resolve, reject) => {
    const c = new ssh2.Client();
    c.once("ready", () => resolve(c));
    c.once("error", reject);
    if (answers) c.on("keyboard-interactive", (_n, _i, _l, prompts, finish) => finish(prompts.map((p) => answers(p.prompt))));
    c.connect({ readyTimeout: 60_000, ...cfg });
  });
}

async function pool<T>(n: number, width: number, fn: (i: number) => Promise<T>): Promise<T[]> {
  const out: T[] = new Array(n);
  let next = 0;
  await Promise.all(
    Array.from({ length: width }, async () => {
      for (let i = next++; i < n; i = next++) out[i] = await fn(i);
    }),
  );
  return out;
}

/** Process and all its descendants (by /proc ppid). */
function descendants(pid: number): number[] {
  const parent = new Map<number, number>();
  for (const d of readdirSync("/proc")) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const stat = readFileSync(`/proc/${d}/stat`, "utf8");
      parent.set(Number(d), Number(stat.split(") ")[1]?.split(" ")[1]));
    } catch {
      /* gone */
    }
  }
  const out = [pid];
  for (let i = 0; i < out.length; i++) for (const [p, pp] of parent) if (pp === out[i]) out.push(p);
  return out;
}

const sum = (pids: number[], f: (p: number) => number) =>
  pids.reduce((a, p) => {
    try {
      return a + f(p);
    } catch {
      return a;
    }
  }, 0);

export interface ConcurrencyOptions {
  readonly gatewayPort: number;
  readonly gatewayPid: number;
  readonly users: readonly string[];
  readonly secrets: ReadonlyMap<string, string>;
  readonly target: LightTarget;
  readonly jumpPort: number;
  readonly jumpPid: number;
  readonly jumpUser: string;
  readonly key: Buffer;
  readonly sessions: number;
  readonly jumpSessions: number;
  readonly results: Record<string, unknown>;
}

export async function runConcurrency(o: ConcurrencyOptions): Promise<string[]> {
  const totp = { issuer: "varco", digits: 6 as const, periodMs: 30_000, window: 1 };
  const idleSeconds = 10;

  // varco
  const before = rssBytes(o.gatewayPid);
  const t0 = Date.now();
  const clients = await pool(o.sessions, 64, async (i) => {
    const uid = o.users[i] as string;
    const c = await connect({ host: "127.0.0.1", port: o.gatewayPort, username: `${uid}_light`, tryKeyboard: true }, (p) =>
      p.startsWith("Password") ? `${uid}-pw` : currentCode(totp, o.secrets.get(uid) ?? "", Date.now()),
    );
    await openShell(c);
    return c;
  });
  const loginS = (Date.now() - t0) / 1000;
  await new Promise((r) => setTimeout(r, 2000));
  const after = rssBytes(o.gatewayPid);
  const cpuA = cpuSeconds(o.gatewayPid);
  await new Promise((r) => setTimeout(r, idleSeconds * 1000));
  const idleCpu = (cpuSeconds(o.gatewayPid) - cpuA) / idleSeconds;
  for (const c of clients) c.end();

  // OpenSSH jump host: ssh2 client → sshd (keys) → direct-tcpip → ssh2 client to the light target.
  const jBefore = sum(descendants(o.jumpPid), rssBytes);
  const jumps = await pool(o.jumpSessions, 8, async () => {
    const j = await connect({ host: "127.0.0.1", port: o.jumpPort, username: o.jumpUser, privateKey: o.key });
    const sock = await new Promise<ssh2.ClientChannel>((res, rej) =>
      j.forwardOut("127.0.0.1", 0, "127.0.0.1", o.target.port, (err, s) => (err ? rej(err) : res(s))),
    );
    const c = await connect({ sock, username: "x", password: "x" });
    await openShell(c);
    return [c, j] as const;
  });
  await new Promise((r) => setTimeout(r, 2000));
  const jPids = descendants(o.jumpPid);
  const jAfter = sum(jPids, rssBytes);
  const jCpuA = sum(jPids, cpuSeconds);
  await new Promise((r) => setTimeout(r, idleSeconds * 1000));
  const jIdle = (sum(jPids, cpuSeconds) - jCpuA) / idleSeconds;
  for (const [c, j] of jumps) {
    c.end();
    j.end();
  }

  const perVarco = (after - before) / o.sessions;
  const perJump = (jAfter - jBefore) / o.jumpSessions;
  o.results.concurrency = {
    varco: {
      sessions: o.sessions,
      login_s: loginS,
      rss_before_mib: before / MiB,
      rss_after_mib: after / MiB,
      rss_per_session_kib: perVarco / 1024,
      idle_cpu_cores: idleCpu,
    },
    openssh_jump: { sessions: o.jumpSessions, processes: jPids.length, rss_per_session_kib: perJump / 1024, idle_cpu_cores: jIdle },
  };
  return [
    `### Concurrency: logged-in interactive sessions held open`,
    "",
    "| | sessions | RSS per session | idle CPU (cores) |",
    "|---|---|---|---|",
    `| varco (one process, ${fmt(loginS, 0)} s to log all in) | ${o.sessions} | ${fmt(perVarco / 1024, 0)} KiB | ${fmt(idleCpu, 3)} |`,
    `| OpenSSH jump host (${jPids.length} processes) | ${o.jumpSessions} | ${fmt(perJump / 1024, 0)} KiB | ${fmt(jIdle, 3)} |`,
    "",
  ];
}
