/**
 * `npx tsx bench/web.ts`: the web console with a big trail. Fills an audit database with a
 * realistic trail through the real store (src/audit/store.ts: hash chain, session rows, recording
 * rows and files) — by default 100 000 sessions and about 1 000 000 events — then serves the
 * console on it (loopback, a free port), logs in through the real login form, and times the
 * session list and the search through HTTP. Prints p50/p95 per query (ms) and, for the first
 * search (the search index is built then), the longest event-loop stall seen meanwhile.
 *
 * The login runs the console's real form, token and cookie path; only the factor checks are a
 * bench stand-in (one user whose password and code are fixed: no directory runs here).
 *
 * Environment: BENCH_WEB_SESSIONS (default 100000), BENCH_WEB_DIR (default /dev/shm when present:
 * the trail's 600 000 commits cost little there), BENCH_WEB_FRESH=1 (regenerate even when a trail
 * of that size is already there), BENCH_WEB_RUNS (timed requests per query, default 20).
 */
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import Database from "better-sqlite3";
import { openAuditStore } from "../src/audit/index.ts";
import { searchIndexFile } from "../src/audit/query.ts";
import type { Account, LoginFactors } from "../src/auth/index.ts";
import { openWebAuditRead, playerAssets, startWebConsole, type WebListener } from "../src/web/index.ts";
import { SEARCH_WAIT_MS } from "../src/web/read.ts";
import { fmt, percentile } from "./lib.ts";

const SESSIONS = Number(process.env.BENCH_WEB_SESSIONS ?? 100_000);
const RUNS = Number(process.env.BENCH_WEB_RUNS ?? 20);
const DIR = process.env.BENCH_WEB_DIR ?? (existsSync("/dev/shm") ? "/dev/shm" : tmpdir());
const USERS = 2000;
const TARGETS = 200;
const SPAN_MS = 365 * 86_400_000;
const T0 = Date.parse("2025-01-01T00:00:00Z");

/** A small deterministic PRNG (mulberry32), so every trail of a size is the same trail. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const COMMANDS = [
  "systemctl restart nginx",
  "systemctl status postgresql",
  "journalctl -u sshd --since today",
  "df -h",
  "uptime",
  "tail -n 200 /var/log/syslog",
  "kubectl get pods -n payments",
  "docker ps --format '{{.Names}}'",
  "sudo apt-get upgrade -y",
  "psql -c 'select count(*) from orders'",
  "rsync --server -logDtpre.iLsfxCIvu . /srv/backup",
  "cat /etc/os-release",
];

/**
 * Writes the trail to `file` (a new database): per session a session_start, a login, one to three
 * exec rows, zero to eight file transfers (batched), one in ten a shell with a real recording file,
 * a session_end; one refused login in twenty. Returns the events and sessions written.
 */
export function generateTrail(file: string, sessions: number): { events: number; sessions: number; seconds: number } {
  const rand = rng(16);
  const pick = <T>(a: readonly T[]): T => a[Math.floor(rand() * a.length)] as T;
  let clock = T0;
  const store = openAuditStore(file, () => new Date(clock));
  const recDir = join(file.replace(/\.db$/, ""), "recordings");
  mkdirSync(recDir, { recursive: true });
  const t0 = process.hrtime.bigint();
  const step = SPAN_MS / sessions;
  for (let i = 0; i < sessions; i++) {
    clock = T0 + Math.floor(i * step);
    const uid = `user${String(Math.floor(rand() ** 2 * USERS)).padStart(4, "0")}`;
    const t = Math.floor(rand() * TARGETS);
    const target = `vm${String(t).padStart(3, "0")}`;
    const alias = `a${String(t).padStart(3, "0")}`;
    const account = `${uid}_${alias}`;
    const source = `192.0.2.${1 + (i % 250)}`;
    const id = `${createHash("sha256").update(String(i)).digest("hex").slice(0, 8)}-0000-4000-8000-${String(i).padStart(12, "0")}`;
    if (i % 20 === 0) store.append({ type: "login_refused", uid, account, source, result: "bad_password", data: {} });
    store.append({ type: "login", uid, account, source, result: "ok", data: { factors: ["password", "totp"], break_glass: false } });
    store.startSession({ id, uid, account, target, source });
    const execs = 1 + Math.floor(rand() * 3);
    for (let c = 0; c < execs; c++) {
      clock += 1000;
      const command = rand() < 0.3 ? `grep -c ERROR /var/log/app/app-${i}-${c}.log` : pick(COMMANDS);
      store.append({ type: "exec", sessionId: id, uid, target, data: { command, pty: false, as: "user", channel: c } });
    }
    const files = Math.floor(rand() * 11);
    for (let f = 0; f < files; f++) {
      clock += 200;
      const op = pick(["upload", "download", "close"] as const);
      store.append({
        type: "file",
        sessionId: id,
        uid,
        target,
        data: { protocol: op === "close" ? "sftp" : "scp", op, path: `/srv/reports/${uid}/report-${i}-${f}.csv`, size: 4096 * f },
      });
    }
    let result = rand() < 0.9 ? "ok" : pick(["terminated", "error", "idle_timeout"]);
    if (i % 10 === 5) {
      const ch = execs;
      store.append({ type: "shell", sessionId: id, uid, target, data: { pty: true, channel: ch } });
      const path = join(recDir, `${id}-${ch}.cast`);
      store.recordingStarted(id, ch, path);
      const lines = [
        JSON.stringify({ version: 2, width: 80, height: 24, timestamp: Math.floor(clock / 1000) }),
        JSON.stringify([0.1, "o", `${uid}@${target}:~$ `]),
        JSON.stringify([1.2, "o", `ls /srv/data\r\nbatch-${i}.parquet  notes.txt\r\n`]),
        JSON.stringify([2.5, "o", `\x1b[32mdeploy finished: release-${i % 997}\x1b[0m\r\n`]),
      ];
      const text = `${lines.join("\n")}\n`;
      writeFileSync(path, text);
      store.recordingClosed(id, ch, { sha256: createHash("sha256").update(text).digest("hex"), bytes: text.length, status: "ok" });
      if (result === "error") result = "ok";
    }
    clock += 2000;
    store.endSession(id, { result, upBytes: Math.floor(rand() * 1e6), downBytes: Math.floor(rand() * 1e7), exitStatus: 0 });
    if (i % 5000 === 4999) {
      store.flush();
      process.stderr.write(`\r  ${i + 1} sessions`);
    }
  }
  store.flush();
  store.close();
  process.stderr.write("\n");
  const db = new Database(file, { readonly: true });
  const events = (db.prepare("SELECT COUNT(*) AS n FROM events").get() as { n: number }).n;
  db.close();
  return { events, sessions, seconds: Number(process.hrtime.bigint() - t0) / 1e9 };
}

/** Bench factor checks: one user `bench.auditor` (group `audit`), password `bench-pw`, code `000000`. Nothing else is asked of them. */
function benchFactors(): LoginFactors {
  const account: Account = { uid: "bench.auditor", groups: ["audit"], local: true, active: true };
  const no = (): never => {
    throw new Error("not used by the bench");
  };
  return {
    lookup: async (typed) => (typed === account.uid ? { kind: "found" as const, account } : { kind: "unknown" as const }),
    password: async (a, _t, p) => (a && p === "bench-pw" ? "ok" : "invalid"),
    publickey: async () => false,
    hasTotp: () => true,
    totp: async (a, code) => (a && code === "000000" ? "ok" : "invalid"),
    enrolOnFirstLogin: false,
    invitationValid: () => false,
    enrolment: no,
    confirmEnrolment: no,
    locked: () => false,
    failed: () => ({ lockedUid: false, lockedSource: false }),
    lockedAttempt: () => undefined,
    succeeded: () => undefined,
  } satisfies LoginFactors;
}

/** The longest gap between 10 ms timer ticks while it runs (ms): how long the event loop was blocked. */
function loopStalls(): { stop(): number } {
  let last = performance.now();
  let worst = 0;
  const t = setInterval(() => {
    const now = performance.now();
    worst = Math.max(worst, now - last - 10);
    last = now;
  }, 10);
  return {
    stop() {
      clearInterval(t);
      return Math.max(worst, performance.now() - last - 10);
    },
  };
}

async function login(base: string): Promise<string> {
  const page = await fetch(`${base}/login`);
  const pre = page.headers
    .getSetCookie()
    .find((c) => c.startsWith("varco_login="))
    ?.split(";")[0];
  const token = /name="login_token" value="([^"]+)"/.exec(await page.text())?.[1] ?? "";
  const res = await fetch(`${base}/login`, {
    method: "POST",
    body: new URLSearchParams({ login_token: token, uid: "bench.auditor", password: "bench-pw", code: "000000" }),
    redirect: "manual",
    headers: { origin: base, cookie: pre ?? "" },
  });
  const cookie = res.headers
    .getSetCookie()
    .find((c) => c.startsWith("varco_session="))
    ?.split(";")[0];
  if (res.status !== 303 || !cookie) throw new Error(`bench login refused: ${res.status}`);
  return cookie;
}

/** Trail file of this size in DIR, generated unless already there (BENCH_WEB_FRESH=1 regenerates). */
function trailFile(results: Record<string, unknown>): string {
  mkdirSync(DIR, { recursive: true });
  const file = join(DIR, `varco-web-trail-${SESSIONS}.db`);
  if (process.env.BENCH_WEB_FRESH || !existsSync(file)) {
    const tmp = join(DIR, `varco-web-trail-${SESSIONS}.tmp.db`);
    for (const f of [tmp, `${tmp}-wal`, `${tmp}-shm`, file, `${file}-wal`, `${file}-shm`]) rmSync(f, { force: true });
    rmSync(tmp.replace(/\.db$/, ""), { recursive: true, force: true });
    console.error(`generating a trail of ${SESSIONS} sessions in ${tmp} …`);
    const g = generateTrail(tmp, SESSIONS);
    console.error(`  ${g.events} events in ${fmt(g.seconds)} s (${fmt(g.events / g.seconds, 0)} events/s)`);
    rmSync(file.replace(/\.db$/, ""), { recursive: true, force: true });
    renameSync(tmp.replace(/\.db$/, ""), file.replace(/\.db$/, ""));
    // Recording paths name the generation directory: point them at the final one.
    const db = new Database(tmp);
    db.prepare("UPDATE recordings SET path = replace(path, ?, ?)").run(tmp.replace(/\.db$/, ""), file.replace(/\.db$/, ""));
    db.close();
    renameSync(tmp, file);
    results.generated = g;
  }
  return file;
}

/** Runs the measurement; returns markdown lines (and fills `results.web`). */
export async function webBench(results: Record<string, unknown>): Promise<string[]> {
  const file = trailFile(results);
  const counts = new Database(file, { readonly: true });
  const nEvents = (counts.prepare("SELECT COUNT(*) AS n FROM events").get() as { n: number }).n;
  const nSessions = (counts.prepare("SELECT COUNT(*) AS n FROM sessions").get() as { n: number }).n;
  const recorded = (
    counts.prepare("SELECT session_id AS id FROM recordings ORDER BY rowid LIMIT 1 OFFSET ?").get(Math.floor(nSessions / 20)) as
      | { id: string }
      | undefined
  )?.id;
  // A fresh search index each run: the first search measures building it.
  counts.close();
  for (const f of [searchIndexFile(file), `${searchIndexFile(file)}-wal`, `${searchIndexFile(file)}-shm`]) rmSync(f, { force: true });

  const store = openAuditStore(file);
  const read = openWebAuditRead(store, file);
  let listener: WebListener | undefined;
  try {
    listener = await startWebConsole(
      { host: "127.0.0.1", port: 0 },
      {
        settings: () => ({ auditor_groups: ["audit"], admin_groups: [], idle_timeout: 3_600_000, hostnames: [], trusted_proxies: [] }),
        runtime: () => ({ authenticator: benchFactors(), uidPattern: /^[a-z][a-z0-9._-]{0,63}$/ }),
        audit: (e) => store.append(e),
        read: read.read,
        player: playerAssets(),
        now: () => Date.now(),
        transferOf: read.transferOf,
      },
    );
    const base = `http://127.0.0.1:${listener.address.port}`;
    const cookie = await login(base);
    const get = async (path: string): Promise<number> => {
      const t = performance.now();
      const r = await fetch(`${base}${path}`, { headers: { cookie }, redirect: "manual" });
      await r.text();
      if (r.status !== 200) throw new Error(`${path}: ${r.status}`);
      return performance.now() - t;
    };

    const buildStart = performance.now();
    const stall = loopStalls();
    const firstSearch = await get(`/search?q=${encodeURIComponent("systemctl restart nginx")}`);
    await read.ready();
    const buildMs = performance.now() - buildStart;
    const firstStall = stall.stop();

    const day = new Date(T0 + 200 * 86_400_000).toISOString();
    const dayEnd = new Date(T0 + 207 * 86_400_000).toISOString();
    const queries: Array<[string, string]> = [
      ["list: first page", "/sessions"],
      ["list: user", "/sessions?user=user0042"],
      ["list: target", "/sessions?target=vm017"],
      ["list: route alias", "/sessions?target=a017"],
      ["list: result", "/sessions?result=terminated"],
      ["list: time range (a week)", `/sessions?since=${encodeURIComponent(day)}&until=${encodeURIComponent(dayEnd)}`],
      ["list: user + target + result", "/sessions?user=user0001&target=vm017&result=ok"],
      ["list: deep page (offset 90 000)", "/sessions?offset=90000"],
      ...(recorded ? ([["session page (timeline, recording check)", `/sessions/${recorded}`]] as Array<[string, string]>) : []),
      ["search: a command", `/search?q=${encodeURIComponent("systemctl restart nginx")}`],
      ["search: a path", `/search?q=${encodeURIComponent("report-77777-")}`],
      ["search: recorded output", `/search?q=${encodeURIComponent("release-42")}`],
      ["search: a miss", `/search?q=${encodeURIComponent("no-such-thing-here")}`],
    ];
    const rows: string[] = [];
    const figures: Record<string, { p50: number; p95: number }> = {};
    for (const [name, path] of queries) {
      await get(path);
      const times: number[] = [];
      for (let i = 0; i < RUNS; i++) times.push(await get(path));
      const f = { p50: percentile(times, 50), p95: percentile(times, 95) };
      figures[name] = f;
      rows.push(`| ${name} | ${fmt(f.p50)} | ${fmt(f.p95)} |`);
    }
    results.web = {
      events: nEvents,
      sessions: nSessions,
      runs: RUNS,
      first_search_ms: firstSearch,
      index_build_ms: buildMs,
      index_build_max_loop_stall_ms: firstStall,
      ms: figures,
    };
    return [
      `### Web console with a big trail (${nSessions} sessions, ${nEvents} events; ${RUNS} requests each over HTTP, ms)`,
      "",
      `First search, while the search index is built in the worker: ${fmt(firstSearch, 0)} ms (answers from what is indexed after ${SEARCH_WAIT_MS} ms); whole index built in ${fmt(buildMs / 1000)} s; longest event-loop stall meanwhile: ${fmt(firstStall, 0)} ms.`,
      "",
      "| query | p50 | p95 |",
      "|---|---|---|",
      ...rows,
      "",
    ];
  } finally {
    await listener?.close();
    await read.close();
    store.close();
  }
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const results: Record<string, unknown> = {};
  console.log((await webBench(results)).join("\n"));
  console.error(JSON.stringify(results));
}
