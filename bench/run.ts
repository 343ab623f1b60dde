/**
 * `npm run bench`: varco against OpenSSH, side by side in one run, on loopback.
 * Starts its own slapd, sshd target, plain OpenSSH jump host and gateway; interleaves the variants
 * so the ratios hold on a noisy machine; prints a markdown table and writes bench/results/latest.json.
 *
 * Environment: BENCH_MIB (bulk size per transfer, default 512), BENCH_ROUNDS (default 3; bulk and files report the median),
 * BENCH_LOGINS (default 30), BENCH_SESSIONS (default 2000), BENCH_JUMP_SESSIONS (default 500),
 * BENCH_ONLY (comma list of: login,engines,bulk,recexec,files,memory,audit,net,cli,web,concurrency; bulk includes
 * recexec; web: see bench/web.ts), BENCH_NODE_OPTIONS (the gateway's node options; default: those of deploy/varco.service).
 */
import { appendFileSync, copyFileSync, mkdirSync, mkdtempSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { cpus, release, tmpdir, totalmem } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { execa, type ResultPromise } from "execa";
import { openAuditStore } from "../src/audit/index.ts";
import { currentCode } from "../src/auth/index.ts";
import { type DemoEnvironment, freePort, startDemoEnvironment, startSshd, stopChild, waitForPort } from "../src/demo/index.ts";
import { havePostgres, startPostgres } from "../test/helpers/postgres.ts";
import { serveNodeOptions } from "../test/helpers/unit.ts";
import { cliBench } from "./cli.ts";
import { runConcurrency, startLightTarget } from "./concurrency.ts";
import { cpuSeconds, fmt, GiB, MiB, machineCpuSeconds, median, percentile, rssBytes, sampleRss, treeCpuSeconds } from "./lib.ts";
import { netBench } from "./net.ts";
import { shippingRate } from "./shipping.ts";
import { webBench } from "./web.ts";

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..");
const SIZE_MIB = Number(process.env.BENCH_MIB ?? 512);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);
const LOGINS = Number(process.env.BENCH_LOGINS ?? 30);
const ONLY = new Set((process.env.BENCH_ONLY ?? "login,engines,bulk,files,memory,audit,net,cli,web,concurrency").split(","));
const CIPHERS = ["chacha20-poly1305@openssh.com", "aes128-gcm@openssh.com"] as const;
const TOTP = { issuer: "varco", digits: 6 as const, periodMs: 30_000, window: 1 };
const SESSIONS = Number(process.env.BENCH_SESSIONS ?? 2000);
const JUMP_SESSIONS = Number(process.env.BENCH_JUMP_SESSIONS ?? 500);
/** One directory user per login: a TOTP code is single use, so every measured login gets its own user. */
const LOGIN_USERS = Array.from({ length: LOGINS }, (_, i) => `b${String(i).padStart(4, "0")}`);
/** Users of the login-state comparison (SQLite vs PostgreSQL): each logs in once through each gateway. */
const ENGINE_USERS = Array.from({ length: ONLY.has("engines") ? LOGINS : 0 }, (_, i) => `e${String(i).padStart(4, "0")}`);
const MASTER_USERS = Array.from({ length: 16 }, (_, i) => `m${i}`);
const SESSION_USERS = Array.from({ length: ONLY.has("concurrency") ? SESSIONS : 0 }, (_, i) => `c${String(i).padStart(4, "0")}`);

interface Ctx {
  dir: string;
  env: DemoEnvironment;
  key: string;
  targetPort: number;
  jumpPort: number;
  gatewayPort: number;
  gatewayPid: number;
  /** The jump host's listening sshd (the double hop's middle sshd and ssh run under it). */
  jumpPid: number;
  knownHosts: string;
  user: string;
}

type Variant = "direct" | "proxyjump" | "doublehop" | "varco";

const common = (ctx: Ctx) => [
  "-F",
  "/dev/null",
  "-o",
  `UserKnownHostsFile=${ctx.knownHosts}`,
  "-o",
  "StrictHostKeyChecking=no",
  "-o",
  "LogLevel=ERROR",
];
const keyOpts = (ctx: Ctx) => [
  "-i",
  ctx.key,
  "-o",
  "IdentitiesOnly=yes",
  "-o",
  "PasswordAuthentication=no",
  "-o",
  "KbdInteractiveAuthentication=no",
];

function askpassEnv(_uid: string, password: string, secret: string, stepOffset = 0): NodeJS.ProcessEnv {
  return {
    SSH_ASKPASS: join(ROOT, "test/helpers/askpass.sh"),
    SSH_ASKPASS_REQUIRE: "force",
    DISPLAY: ":0",
    VARCO_TEST_PASSWORD: password,
    VARCO_TEST_CODE: currentCode(TOTP, secret, Date.now() + stepOffset * 30_000),
  };
}

/** ssh argv (without the remote command) reaching the target through `v`, with cipher `c`. */
function route(ctx: Ctx, v: Variant, c: string, account: string): string[] {
  const cipher = ["-c", c];
  switch (v) {
    case "direct":
      return [...common(ctx), ...keyOpts(ctx), ...cipher, "-p", String(ctx.targetPort), `${ctx.user}@127.0.0.1`];
    case "proxyjump": {
      const jump = [
        "ssh",
        ...common(ctx),
        ...keyOpts(ctx),
        ...cipher,
        "-p",
        String(ctx.jumpPort),
        "-W",
        "%h:%p",
        `${ctx.user}@127.0.0.1`,
      ].join(" ");
      return [
        ...common(ctx),
        ...keyOpts(ctx),
        ...cipher,
        "-o",
        `ProxyCommand=${jump}`,
        "-p",
        String(ctx.targetPort),
        `${ctx.user}@127.0.0.1`,
      ];
    }
    case "doublehop":
      return [...common(ctx), ...keyOpts(ctx), ...cipher, "-p", String(ctx.jumpPort), `${ctx.user}@127.0.0.1`];
    case "varco":
      return [...common(ctx), "-o", "PubkeyAuthentication=no", ...cipher, "-p", String(ctx.gatewayPort), `${account}@127.0.0.1`];
  }
}

/** The remote command; the double hop runs a second ssh on the jump host (decrypt + re-encrypt there). */
function remote(ctx: Ctx, v: Variant, c: string, cmd: string): string {
  if (v !== "doublehop") return cmd;
  const inner = ["ssh", ...common(ctx), ...keyOpts(ctx), "-c", c, "-p", String(ctx.targetPort), `${ctx.user}@127.0.0.1`];
  return `${inner.join(" ")} '${cmd}'`;
}

let masterCount = 0;
async function openMaster(ctx: Ctx, v: Variant, c: string, alias = "vm1"): Promise<string[]> {
  const uid = MASTER_USERS[masterCount++ % MASTER_USERS.length] as string;
  const path = join(ctx.dir, `cm-${masterCount}`);
  const base = route(ctx, v, c, `${uid}_${alias}`);
  const host = base[base.length - 1] as string;
  const opts = base.slice(0, -1);
  const env = v === "varco" ? askpassEnv(uid, `${uid}-pw`, ctx.env.secrets.get(uid) ?? "") : {};
  const r = await execa(
    "ssh",
    [...opts, "-o", `ControlPath=${path}`, "-o", "ControlMaster=yes", "-o", "ControlPersist=600", "-f", "-N", host],
    {
      env,
      stdin: "ignore",
      reject: false,
      timeout: 60_000,
    },
  );
  if (r.exitCode !== 0) throw new Error(`master ${v}: ${r.stderr}`);
  return [...opts, "-o", `ControlPath=${path}`, "-o", "ControlMaster=no", host];
}

async function timeUpload(args: string[], bytes: number, cmd = "cat > /dev/null"): Promise<number> {
  const t0 = process.hrtime.bigint();
  const src = execa("head", ["-c", String(bytes), "/dev/zero"], { buffer: false });
  const r = await src.pipe("ssh", [...args, cmd], { reject: false, stdout: "ignore" });
  if (r.exitCode !== 0) throw new Error(`upload failed: ${r.stderr}`);
  return Number(process.hrtime.bigint() - t0) / 1e9;
}

async function timeDownload(args: string[], cmd: string): Promise<number> {
  const t0 = process.hrtime.bigint();
  const r = await execa("ssh", [...args, cmd], { reject: false, stdout: "ignore", stdin: "ignore" });
  if (r.exitCode !== 0) throw new Error(`download failed: ${r.stderr}`);
  return Number(process.hrtime.bigint() - t0) / 1e9;
}

async function bulk(ctx: Ctx, results: Record<string, unknown>): Promise<string[]> {
  const bytes = SIZE_MIB * MiB;
  const variants: Variant[] = ["direct", "proxyjump", "doublehop", "varco"];
  const rows: string[] = [];
  const cpuRows: string[] = [];
  const machineRows: string[] = [];
  const figures: Record<string, Record<string, number>> = {};
  // CPU time of the relaying hop: the gateway process for varco; for the double hop, the jump host's
  // sshd tree (its per-connection sshd, the shell and the second ssh: the same two crypto passes).
  const hopCpu = (v: Variant): number => (v === "varco" ? cpuSeconds(ctx.gatewayPid) : v === "doublehop" ? treeCpuSeconds(ctx.jumpPid) : 0);
  for (const c of CIPHERS) {
    const masters = new Map<Variant, string[]>();
    // varco on a route with record: false: this table measures the data path; the cost of recording
    // is measured on its own in the audit section.
    for (const v of variants) masters.set(v, await openMaster(ctx, v, c, "norec"));
    const runs: Record<string, number[]> = {};
    const push = (k: string, x: number) => {
      runs[k] = [...(runs[k] ?? []), x];
    };
    let rssGrowth = 0;
    for (let round = 0; round < ROUNDS; round++) {
      for (const v of variants) {
        const args = masters.get(v) ?? [];
        const sampler = v === "varco" ? sampleRss(ctx.gatewayPid) : undefined;
        const baseRss = v === "varco" ? rssBytes(ctx.gatewayPid) : 0;
        const cpu0 = hopCpu(v);
        const m0 = machineCpuSeconds();
        const upS = await timeUpload(args, bytes, remote(ctx, v, c, "cat > /dev/null"));
        const cpu1 = hopCpu(v);
        const m1 = machineCpuSeconds();
        const downS = await timeDownload(args, remote(ctx, v, c, `head -c ${bytes} /dev/zero`));
        const cpu2 = hopCpu(v);
        const m2 = machineCpuSeconds();
        const up = bytes / MiB / upS;
        const down = bytes / MiB / downS;
        push(`${v}_machine_up`, (m1 - m0) / (bytes / GiB));
        push(`${v}_machine_down`, (m2 - m1) / (bytes / GiB));
        push(`${v}_cores_up`, (m1 - m0) / upS);
        push(`${v}_cores_down`, (m2 - m1) / downS);
        if (sampler) rssGrowth = Math.max(rssGrowth, (sampler.stop() - baseRss) / MiB);
        push(`${v}_up`, up);
        push(`${v}_down`, down);
        if (v === "varco" || v === "doublehop") {
          push(`${v}_cpu_up`, (cpu1 - cpu0) / (bytes / GiB));
          push(`${v}_cpu_down`, (cpu2 - cpu1) / (bytes / GiB));
        }
      }
    }
    for (const v of variants) await execa("ssh", [...(masters.get(v) ?? []).slice(0, -1), "-O", "exit", "x"], { reject: false });
    const med: Record<string, number> = Object.fromEntries(Object.entries(runs).map(([k, xs]) => [k, median(xs)]));
    figures[c] = { ...med, varco_rss_growth_mib: rssGrowth };
    const name = c.split("@")[0];
    for (const dir of ["up", "down"] as const) {
      const at = (v: Variant) => med[`${v}_${dir}`] ?? Number.NaN;
      const va = at("varco");
      rows.push(
        `| ${name} ${dir === "up" ? "upload" : "download"} | ${fmt(at("direct"))} | ${fmt(at("proxyjump"))} | ${fmt(at("doublehop"))} | ${fmt(va)} | ${fmt(va / at("direct"), 2)} | ${fmt(va / at("proxyjump"), 2)} | ${fmt(va / at("doublehop"), 2)} |`,
      );
      const gw = med[`varco_cpu_${dir}`] ?? Number.NaN;
      const hop = med[`doublehop_cpu_${dir}`] ?? Number.NaN;
      cpuRows.push(`| ${name} ${dir === "up" ? "upload" : "download"} | ${fmt(gw, 2)} | ${fmt(hop, 2)} | ${fmt(gw / hop, 2)} |`);
      const mach = (v: Variant) => med[`${v}_machine_${dir}`] ?? Number.NaN;
      const cores = (v: Variant) => med[`${v}_cores_${dir}`] ?? Number.NaN;
      machineRows.push(
        `| ${name} ${dir === "up" ? "upload" : "download"} | ${variants.map((v) => `${fmt(mach(v), 2)} (${fmt(cores(v), 2)})`).join(" | ")} |`,
      );
    }
  }
  results.bulk = { size_mib: SIZE_MIB, rounds: ROUNDS, statistic: "median", mib_per_s_and_cpu_s_per_gib: figures };
  return [
    `### Bulk throughput, data phase only (${SIZE_MIB} MiB each way, median of ${ROUNDS}, MiB/s; varco route without recording)`,
    "",
    "| cipher, direction | direct | ProxyJump | double hop | varco | varco/direct | varco/ProxyJump | varco/double hop |",
    "|---|---|---|---|---|---|---|---|",
    ...rows,
    "",
    `### CPU seconds per GiB relayed (median of ${ROUNDS}; both crypto passes of the middle hop)`,
    "",
    "| cipher, direction | varco gateway | double hop: middle sshd + ssh | gateway / OpenSSH hop |",
    "|---|---|---|---|",
    ...cpuRows,
    "",
    `### Whole machine: busy CPU seconds per GiB (median of ${ROUNDS}) and, in brackets, cores busy during the transfer (of ${cpus().length})`,
    "",
    "Every process of the transfer (client, hops, target, the kernel's TCP and page cache work) on the same machine.",
    "",
    "| cipher, direction | direct | ProxyJump | double hop | varco |",
    "|---|---|---|---|---|",
    ...machineRows,
    "",
  ];
}

/**
 * Output of a command without a pty (`ssh vm1 'cat FILE' > /dev/null`) on the default recorded route
 * (`record.exec_output` absent = `full`: raw bytes kept, hashed, checkpointed), next to a route with
 * `record: false` and direct OpenSSH: a binary file and a base64 text file of SIZE_MIB each
 * (aes128-gcm), the variants interleaved, median of RECEXEC_ROUNDS (3), with the gateway's CPU seconds.
 */
async function recordedExec(ctx: Ctx, results: Record<string, unknown>): Promise<string[]> {
  const rounds = 3;
  const bin = join(ctx.dir, "recexec.bin");
  const txt = join(ctx.dir, "recexec.txt");
  await execa("bash", [
    "-c",
    `head -c ${SIZE_MIB * MiB} /dev/urandom > ${bin}; head -c ${Math.floor((SIZE_MIB * MiB * 3) / 4)} ${bin} | base64 -w 76 > ${txt}`,
  ]);
  const c = CIPHERS[1];
  const masters = {
    direct: await openMaster(ctx, "direct", c),
    recorded: await openMaster(ctx, "varco", c, "vm1"),
    norec: await openMaster(ctx, "varco", c, "norec"),
  };
  const kinds = { binary: bin, base64: txt } as const;
  const variants = ["direct", "norec", "recorded"] as const;
  const rates: Record<string, Record<string, number[]>> = { binary: {}, base64: {} };
  const cpu: Record<string, Record<string, number[]>> = { binary: {}, base64: {} };
  const machine: Record<string, Record<string, number[]>> = { binary: {}, base64: {} };
  const push = (t: Record<string, Record<string, number[]>>, kind: string, v: string, x: number) => {
    const row = t[kind] ?? {};
    row[v] = [...(row[v] ?? []), x];
    t[kind] = row;
  };
  for (let round = 0; round < rounds; round++) {
    for (const [kind, file] of Object.entries(kinds)) {
      const mib = statSync(file).size / MiB;
      for (const v of variants) {
        const c0 = cpuSeconds(ctx.gatewayPid);
        const m0 = machineCpuSeconds();
        const s = await timeDownload(masters[v], `cat ${file}`);
        const used = cpuSeconds(ctx.gatewayPid) - c0;
        push(rates, kind, v, mib / s);
        push(cpu, kind, v, (used / mib) * 1024);
        push(machine, kind, v, ((machineCpuSeconds() - m0) / mib) * 1024);
      }
    }
  }
  for (const v of variants) await execa("ssh", [...masters[v].slice(0, -1), "-O", "exit", "x"], { reject: false });
  const median = (xs: number[] | undefined) => percentile(xs ?? [], 50);
  const rows = Object.keys(kinds).map((k) => {
    const r = rates[k] as Record<string, number[]>;
    const m = Object.fromEntries(variants.map((v) => [v, median(r[v])])) as Record<(typeof variants)[number], number>;
    const g = cpu[k] as Record<string, number[]>;
    const all = machine[k] as Record<string, number[]>;
    return {
      kind: k,
      mib_per_s: m,
      runs: r,
      gateway_cpu_s_per_gib: { norec: median(g.norec), recorded: median(g.recorded) },
      machine_cpu_s_per_gib: { direct: median(all.direct), norec: median(all.norec), recorded: median(all.recorded) },
      norec_ratio: m.norec / m.direct,
      recorded_ratio: m.recorded / m.direct,
    };
  });
  results.recorded_exec = { size_mib: SIZE_MIB, cipher: c, rounds, rows };
  return [
    `### Command output without a pty, default recorded route (\`ssh vm1 'cat FILE' > /dev/null\`, ${SIZE_MIB} MiB, ${c.split("@")[0]}, median of ${rounds}, MiB/s)`,
    "",
    "| output | direct | varco, record: false | varco, recorded (exec_output: full) | unrecorded/direct | recorded/direct | gateway CPU s/GiB unrecorded / recorded | machine CPU s/GiB direct / unrecorded / recorded |",
    "|---|---|---|---|---|---|---|---|",
    ...rows.map(
      (r) =>
        `| ${r.kind} | ${fmt(r.mib_per_s.direct)} | ${fmt(r.mib_per_s.norec)} | ${fmt(r.mib_per_s.recorded)} | ${fmt(r.norec_ratio, 2)} | ${fmt(r.recorded_ratio, 2)} | ${fmt(r.gateway_cpu_s_per_gib.norec, 2)} / ${fmt(r.gateway_cpu_s_per_gib.recorded, 2)} | ${fmt(r.machine_cpu_s_per_gib.direct, 2)} / ${fmt(r.machine_cpu_s_per_gib.norec, 2)} / ${fmt(r.machine_cpu_s_per_gib.recorded, 2)} |`,
    ),
    "",
  ];
}

async function memory(ctx: Ctx, results: Record<string, unknown>): Promise<string[]> {
  // One 1 GiB upload and one 1 GiB download through varco; gateway RSS sampled every 20 ms.
  const m = await openMaster(ctx, "varco", CIPHERS[0], "norec");
  const before = rssBytes(ctx.gatewayPid);
  const s = sampleRss(ctx.gatewayPid, 20);
  const up = await timeUpload(m, 1024 * MiB);
  const down = await timeDownload(m, `head -c ${1024 * MiB} /dev/zero`);
  const peak = s.stop();
  await execa("ssh", [...m.slice(0, -1), "-O", "exit", "x"], { reject: false });
  results.memory = { before_mib: before / MiB, peak_mib: peak / MiB, growth_mib: (peak - before) / MiB, up_s: up, down_s: down };
  return [
    "### Gateway memory during a 1 GiB transfer each way",
    "",
    `RSS before ${fmt(before / MiB)} MiB, peak ${fmt(peak / MiB)} MiB, growth ${fmt((peak - before) / MiB)} MiB (upload ${fmt(1024 / up)} MiB/s, download ${fmt(1024 / down)} MiB/s).`,
    "",
  ];
}

/**
 * scp and sftp upload of a 256 MiB random file (aes128-gcm): direct OpenSSH, varco on a route with
 * `record: false`, and varco on the default recorded route (scp and sftp are not recorded as a
 * terminal there: their transfers are parsed into `file` events), interleaved, median of ROUNDS.
 */
async function files(ctx: Ctx, results: Record<string, unknown>): Promise<string[]> {
  const file = join(ctx.dir, "file-256.bin");
  await execa("dd", ["if=/dev/urandom", `of=${file}`, "bs=1M", "count=256", "status=none"]);
  const remoteDir = join(ctx.dir, "remote");
  mkdirSync(remoteDir, { recursive: true });
  const masters = {
    direct: await openMaster(ctx, "direct", CIPHERS[1]),
    norec: await openMaster(ctx, "varco", CIPHERS[1], "norec"),
    varco: await openMaster(ctx, "varco", CIPHERS[1]),
  };
  const variants = ["direct", "norec", "varco"] as const;
  const runs: Record<string, number[]> = {};
  for (let round = 0; round < ROUNDS; round++) {
    for (const v of variants) {
      const args = masters[v];
      const opts = args.slice(0, -1).map((o) => (o === "-p" ? "-P" : o));
      const host = args[args.length - 1] as string;
      for (const tool of ["scp", "sftp"] as const) {
        const m0 = machineCpuSeconds();
        const t0 = process.hrtime.bigint();
        const r =
          tool === "scp"
            ? await execa("scp", [...opts, file, `${host}:${remoteDir}/${v}.bin`], { reject: false })
            : await execa("sftp", ["-b", "-", ...opts, host], { input: `put ${file} ${remoteDir}/${v}-sftp.bin\n`, reject: false });
        if (r.exitCode !== 0) throw new Error(`${tool} ${v}: ${r.stderr}`);
        const s = Number(process.hrtime.bigint() - t0) / 1e9;
        runs[`${v}_${tool}`] = [...(runs[`${v}_${tool}`] ?? []), 256 / s];
        runs[`${v}_${tool}_machine`] = [...(runs[`${v}_${tool}_machine`] ?? []), ((machineCpuSeconds() - m0) / 256) * 1024];
      }
    }
  }
  for (const v of variants) await execa("ssh", [...masters[v].slice(0, -1), "-O", "exit", "x"], { reject: false });
  const out: Record<string, number> = Object.fromEntries(Object.entries(runs).map(([k, xs]) => [k, median(xs)]));
  results.files = { size_mib: 256, statistic: "median", mib_per_s: out };
  const at = (k: string) => out[k] ?? Number.NaN;
  return [
    `### scp and sftp upload of a 256 MiB file (aes128-gcm, median of ${ROUNDS}, MiB/s)`,
    "",
    "| tool | direct | varco, record: false | varco, default route (transfers audited) | record: false / direct | default / direct | machine CPU s/GiB direct / record: false / default |",
    "|---|---|---|---|---|---|---|",
    ...(["scp", "sftp"] as const).map(
      (t) =>
        `| ${t} | ${fmt(at(`direct_${t}`))} | ${fmt(at(`norec_${t}`))} | ${fmt(at(`varco_${t}`))} | ${fmt(at(`norec_${t}`) / at(`direct_${t}`), 2)} | ${fmt(at(`varco_${t}`) / at(`direct_${t}`), 2)} | ${fmt(at(`direct_${t}_machine`), 2)} / ${fmt(at(`norec_${t}_machine`), 2)} / ${fmt(at(`varco_${t}_machine`), 2)} |`,
    ),
    "",
  ];
}

/** Time from spawning `ssh … echo x` to the first byte of its output, ms. */
async function firstByte(args: string[], env: NodeJS.ProcessEnv = {}): Promise<number> {
  const t0 = process.hrtime.bigint();
  const child: ResultPromise = execa("ssh", [...args, "echo x"], { env, stdin: "ignore", reject: false });
  let t = Number.NaN;
  child.stdout?.once("data", () => {
    t = Number(process.hrtime.bigint() - t0) / 1e6;
  });
  const r = await child;
  if (r.exitCode !== 0) throw new Error(`login failed: ${r.stderr}`);
  return t;
}

async function login(ctx: Ctx, results: Record<string, unknown>): Promise<string[]> {
  const kex = ["-o", "KexAlgorithms=curve25519-sha256"];
  const times: Record<string, number[]> = { direct: [], proxyjump: [], varco: [] };
  for (let i = 0; i < LOGINS; i++) {
    for (const v of ["direct", "proxyjump", "varco"] as const) {
      const uid = LOGIN_USERS[i] as string;
      const args = route(ctx, v, CIPHERS[0], `${uid}_vm1`);
      const env = v === "varco" ? askpassEnv(uid, `${uid}-pw`, ctx.env.secrets.get(uid) ?? "") : {};
      times[v]?.push(await firstByte([...kex, ...args], env));
    }
  }
  const stat = (v: string) => ({ p50: percentile(times[v] ?? [], 50), p90: percentile(times[v] ?? [], 90) });
  results.login = {
    n: LOGINS,
    kex: "curve25519-sha256",
    ms: { direct: stat("direct"), proxyjump: stat("proxyjump"), varco: stat("varco") },
  };
  const pj = stat("proxyjump").p50;
  return [
    `### Login to first byte of output (${LOGINS} logins each, curve25519-sha256, ms)`,
    "",
    "| variant | p50 | p90 | p50 / ProxyJump p50 |",
    "|---|---|---|---|",
    ...(["direct", "proxyjump", "varco"] as const).map(
      (v) =>
        `| ${v}${v === "varco" ? " (LDAP + TOTP)" : " (keys)"} | ${fmt(stat(v).p50, 0)} | ${fmt(stat(v).p90, 0)} | ${fmt(stat(v).p50 / pj, 2)} |`,
    ),
    "",
  ];
}

/**
 * Login p50 with the login state on SQLite (the bench's gateway) and on PostgreSQL (a second
 * gateway on the same policy with `state: { backend: postgres }`, its state copied there with
 * `varco state copy`), logins interleaved so both see the same machine load.
 */
async function engines(ctx: Ctx, policyFile: string, results: Record<string, unknown>): Promise<string[]> {
  if (!havePostgres)
    return ["### Login: SQLite vs PostgreSQL login state", "", "Not measured: PostgreSQL is not installed (or not root).", ""];
  const pg = await startPostgres();
  const stops: Array<() => Promise<void>> = [() => pg.destroy()];
  try {
    const urlFile = join(ctx.dir, "pg.url");
    writeFileSync(urlFile, `${pg.url}\n`, { mode: 0o600 });
    const varco = (args: string[]) => execa("node", [join(ROOT, "bin/varco.mjs"), ...args], { reject: false });
    const copied = await varco(["state", "copy", "--to", "postgres", "--url-file", urlFile, "--force", "--policy", policyFile]);
    if (copied.exitCode !== 0) throw new Error(`state copy: ${copied.stderr}`);
    const port = await freePort();
    const stateDir = join(ctx.dir, "state-pg");
    mkdirSync(stateDir, { recursive: true, mode: 0o700 });
    copyFileSync(join(dirname(policyFile), "state/totp.key"), join(stateDir, "totp.key"));
    const policyPg = join(ctx.dir, "gateway-pg.yaml");
    writeFileSync(
      policyPg,
      `${readFileSync(policyFile, "utf8")
        .replace(/listen: \["127\.0\.0\.1:\d+"\]/, `listen: ["127.0.0.1:${port}"]`)
        .replace(/ {2}metrics_listen: [^\n]*\n/, "")
        .replace(
          "  state_dir: state\n",
          `  state_dir: ${stateDir}\n  node: bench-pg\n`,
        )}state: { backend: postgres, url_file: ${urlFile} }\n`,
      { mode: 0o600 },
    );
    const gw: ResultPromise = execa("node", [join(ROOT, "bin/varco.mjs"), "serve", "--policy", policyPg], {
      reject: false,
      stdout: { file: join(ctx.dir, "gateway-pg.log") },
      stderr: { file: join(ctx.dir, "gateway-pg.err") },
    });
    stops.unshift(() => stopChild(gw));
    await waitForPort(port, "127.0.0.1", 30_000);
    const times: Record<"sqlite" | "postgres", number[]> = { sqlite: [], postgres: [] };
    const kex = ["-o", "KexAlgorithms=curve25519-sha256"];
    for (const uid of ENGINE_USERS) {
      const env = askpassEnv(uid, `${uid}-pw`, ctx.env.secrets.get(uid) ?? "");
      times.sqlite.push(await firstByte([...kex, ...route(ctx, "varco", CIPHERS[0], `${uid}_vm1`)], env));
      times.postgres.push(await firstByte([...kex, ...route({ ...ctx, gatewayPort: port }, "varco", CIPHERS[0], `${uid}_vm1`)], env));
    }
    const stat = (v: "sqlite" | "postgres") => ({ p50: percentile(times[v], 50), p90: percentile(times[v], 90) });
    results.login_engines = { n: ENGINE_USERS.length, ms: { sqlite: stat("sqlite"), postgres: stat("postgres") } };
    return [
      `### Login to first byte: login state on SQLite vs PostgreSQL (${ENGINE_USERS.length} logins each, interleaved, ms)`,
      "",
      "| login state | p50 | p90 | p50 / SQLite p50 |",
      "|---|---|---|---|",
      ...(["sqlite", "postgres"] as const).map(
        (v) => `| ${v} | ${fmt(stat(v).p50, 0)} | ${fmt(stat(v).p90, 0)} | ${fmt(stat(v).p50 / stat("sqlite").p50, 2)} |`,
      ),
      "",
    ];
  } finally {
    for (const s of stops) await s().catch(() => undefined);
  }
}

async function auditBench(ctx: Ctx, results: Record<string, unknown>): Promise<string[]> {
  // 1. Event rate with the hash chain on: 200 000 events appended in a burst, committed in batches.
  const store = openAuditStore(join(ctx.dir, "bench-audit.db"));
  const n = 200_000;
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < n; i++) {
    store.append({ type: "file", sessionId: "s", uid: "u", data: { protocol: "sftp", op: "close", path: `/data/f${i}`, bytesRead: i } });
    if (i % 5000 === 4999) store.flush();
  }
  store.flush();
  const eventsPerS = n / (Number(process.hrtime.bigint() - t0) / 1e9);
  const ok = store.verify().ok;
  store.close();
  // 1b. The same 200 000 events shipped to a shared PostgreSQL state.
  const shipped = await shippingRate(join(ctx.dir, "bench-audit.db"), n);

  // 2. Recording overhead: 100 MiB of text cat'ed through a pty, route with and without recording.
  const file = join(ctx.dir, "text-100.txt");
  await execa("bash", ["-c", `head -c ${75 * MiB} /dev/urandom | base64 -w 76 > ${file}`]);
  const masters = { rec: await openMaster(ctx, "varco", CIPHERS[1], "vm1"), norec: await openMaster(ctx, "varco", CIPHERS[1], "norec") };
  const best: Record<string, number> = {};
  for (let round = 0; round < ROUNDS + 1; round++) {
    for (const v of ["norec", "rec"] as const) {
      const t = process.hrtime.bigint();
      const r = await execa("ssh", [...masters[v].slice(0, -1), "-tt", masters[v][masters[v].length - 1] as string, `cat ${file}`], {
        reject: false,
        stdout: "ignore",
        stdin: "ignore",
      });
      if (r.exitCode !== 0) throw new Error(`pty cat ${v}: ${r.stderr}`);
      best[v] = Math.max(best[v] ?? 0, 100 / (Number(process.hrtime.bigint() - t) / 1e9));
    }
  }
  for (const m of Object.values(masters)) await execa("ssh", [...m.slice(0, -1), "-O", "exit", "x"], { reject: false });
  const overhead = 1 - (best.rec ?? 0) / (best.norec ?? 1);
  results.audit = {
    events_per_s: eventsPerS,
    shipped_to_postgres_events_per_s: shipped ?? null,
    chain_verified: ok,
    pty_cat_mib_s: best,
    recording_overhead: overhead,
  };
  return [
    "### Audit",
    "",
    `High-rate events (file transfers) persisted with the hash chain: ${fmt(eventsPerS, 0)} events/s (200 000 events, batches of 5 000; chain verified: ${ok}).`,
    shipped === undefined
      ? "Shipped to a shared PostgreSQL state: not measured (PostgreSQL not installed, or not root)."
      : `The same events shipped to a shared PostgreSQL state (batches of 5 000, chain continuity checked per batch): ${fmt(shipped, 0)} events/s.`,
    `100 MiB of text through a pty: ${fmt(best.norec ?? Number.NaN)} MiB/s without recording, ${fmt(best.rec ?? Number.NaN)} MiB/s recorded: overhead ${fmt(overhead * 100)} %.`,
    "",
  ];
}

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), "varco-bench-"));
  const light = await startLightTarget();
  const gatewayPort = await freePort();
  const metricsPort = await freePort();
  const template = `${readFileSync(join(ROOT, "policies/demo.yaml"), "utf8")}
  - groups: [testers]
    alias: vm1
    target: vm1-mario
    record: { max_bytes: 1GiB }    # 100 MiB through a recorded pty must fit (the default 64 MiB ends the session)
  - groups: [testers]
    alias: light
    target: light
  - groups: [testers]
    alias: norec
    target: vm1-mario
    record: false
`
    .replace("  state_dir: state\n", `  state_dir: state\n  metrics_listen: "127.0.0.1:${metricsPort}"\n`)
    .replace(
      /limits: \{[^}]*\}/,
      "limits: { login_grace: 60s, max_unauthenticated_per_source: 400, max_unauthenticated: 400, max_sessions: 10000 }",
    )
    .replace("targets:\n", `targets:\n  light: { host: 127.0.0.1, port: ${light.port}, user: bench, host_key: "${light.hostKeyLine}" }\n`);
  console.error("starting slapd, targets, jump host and gateway …");
  const env = await startDemoEnvironment({
    dir,
    gatewayPort,
    extraUsers: [...LOGIN_USERS, ...ENGINE_USERS, ...MASTER_USERS, ...SESSION_USERS],
    template,
  });
  const stops: Array<() => Promise<void>> = [async () => light.close()];
  try {
    const key = join(dir, "client_key");
    await execa("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-f", key]);
    const pub = readFileSync(`${key}.pub`, "utf8").trim();
    appendFileSync(join(dir, "vm1/authorized_keys"), `${pub}\n`);
    const jump = await startSshd({ dir: join(dir, "jump"), authorizedKeys: [pub] });
    stops.push(jump.stop);
    const profile = process.env.BENCH_PROFILE ? ["--cpu-prof", `--cpu-prof-dir=${join(ROOT, "bench/results/prof")}`] : [];
    const nodeOptions = process.env.BENCH_NODE_OPTIONS?.split(/\s+/).filter(Boolean) ?? serveNodeOptions();
    const gw: ResultPromise = execa(
      "node",
      [...nodeOptions, ...profile, join(ROOT, "bin/varco.mjs"), "serve", "--policy", env.policyFile],
      {
        reject: false,
        stdout: { file: join(dir, "gateway.log") },
        stderr: { file: join(dir, "gateway.err") },
        env: { VARCO_LOG_LEVEL: "info" },
      },
    );
    stops.push(() => stopChild(gw));
    await waitForPort(gatewayPort, "127.0.0.1", 30_000).catch((err: Error) => {
      throw new Error(`${err.message}\n${readFileSync(join(dir, "gateway.err"), "utf8")}${readFileSync(join(dir, "gateway.log"), "utf8")}`);
    });
    const ctx: Ctx = {
      dir,
      env,
      key,
      targetPort: env.targets.vm1.port,
      jumpPort: jump.port,
      gatewayPort,
      gatewayPid: gw.pid ?? 0,
      jumpPid: jump.pid,
      knownHosts: join(dir, "known_hosts"),
      user: env.targets.vm1.user,
    };
    const versions = {
      node: process.version,
      openssh: (await execa("ssh", ["-V"], { reject: false })).stderr,
      ssh2: JSON.parse(readFileSync(join(ROOT, "node_modules/ssh2/package.json"), "utf8")).version as string,
    };
    const results: Record<string, unknown> = {
      when: new Date().toISOString(),
      machine: { cpus: cpus().length, model: cpus()[0]?.model, mem_gib: totalmem() / 1024 ** 3, kernel: release() },
      versions,
    };
    const out: string[] = [
      `## varco bench — ${results.when}`,
      "",
      `${cpus().length} × ${cpus()[0]?.model}, Node ${process.version}, ${versions.openssh}, ssh2 ${versions.ssh2}`,
      "",
    ];
    const cpu0 = cpuSeconds(ctx.gatewayPid);
    if (ONLY.has("login")) out.push(...(await login(ctx, results)));
    if (ONLY.has("bulk")) out.push(...(await bulk(ctx, results)));
    if (ONLY.has("bulk") || ONLY.has("recexec")) out.push(...(await recordedExec(ctx, results)));
    if (ONLY.has("engines")) out.push(...(await engines(ctx, env.policyFile, results)));
    if (ONLY.has("files")) out.push(...(await files(ctx, results)));
    if (ONLY.has("memory")) out.push(...(await memory(ctx, results)));
    if (ONLY.has("audit")) out.push(...(await auditBench(ctx, results)));
    if (ONLY.has("net")) out.push(...(await netBench(results)));
    if (ONLY.has("cli")) out.push(...(await cliBench(ROOT, env.policyFile, results)));
    if (ONLY.has("web")) out.push(...(await webBench(results)));
    results.gateway_cpu_s = cpuSeconds(ctx.gatewayPid) - cpu0;
    if (ONLY.has("concurrency")) {
      out.push(
        ...(await runConcurrency({
          gatewayPort,
          gatewayPid: ctx.gatewayPid,
          users: SESSION_USERS,
          secrets: env.secrets,
          target: light,
          jumpPort: jump.port,
          jumpPid: jump.pid,
          jumpUser: jump.user,
          key: readFileSync(key),
          sessions: SESSIONS,
          jumpSessions: JUMP_SESSIONS,
          results,
        })),
      );
    }
    console.log(out.join("\n"));
    mkdirSync(join(ROOT, "bench/results"), { recursive: true });
    writeFileSync(join(ROOT, "bench/results/latest.json"), `${JSON.stringify(results, null, 2)}\n`);
    console.error("wrote bench/results/latest.json");
  } finally {
    for (const s of stops.reverse()) await s().catch(() => undefined);
    await env.stop();
  }
}

await main();
