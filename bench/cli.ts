/**
 * CLI start-up: CPU time (user + system) of `varco --help`, `varco --version` and `varco health`
 * against the running gateway, side by side with `ssh -V` as the floor of a native command and
 * `node -e 0` as the floor of any Node.js program. Measured with bash's `times` over N runs of each
 * (children's CPU, so the bash loop itself is not counted).
 */
import { join } from "node:path";
import { execa } from "execa";
import { fmt } from "./lib.ts";

const RUNS = Number(process.env.BENCH_CLI_RUNS ?? 10);

/** Children's CPU seconds per run of `argv`, from bash's `times` (its second line: children user and system). */
async function cpuPerRun(argv: readonly string[]): Promise<number> {
  const quoted = argv.map((a) => `'${a.replace(/'/g, "'\\''")}'`).join(" ");
  const script = `for i in $(seq ${RUNS}); do ${quoted} >/dev/null 2>&1; done; times`;
  const r = await execa("bash", ["-c", script]);
  const line = r.stdout.trim().split("\n")[1] ?? "";
  const secs = [...line.matchAll(/(\d+)m([\d.]+)s/g)].map((m) => Number(m[1]) * 60 + Number(m[2]));
  return secs.reduce((a, b) => a + b, 0) / RUNS;
}

export async function cliBench(root: string, policyFile: string, results: Record<string, unknown>): Promise<string[]> {
  const bin = join(root, "bin/varco.mjs");
  const rows: Array<[string, readonly string[]]> = [
    ["ssh -V (floor: a native command)", ["ssh", "-V"]],
    ["node -e 0 (floor: any Node.js program)", [process.execPath, "-e", "0"]],
    ["varco --version", [process.execPath, bin, "--version"]],
    ["varco --help", [process.execPath, bin, "--help"]],
    ["varco health (against the running gateway)", [process.execPath, bin, "--policy", policyFile, "health"]],
    ["varco policy check", [process.execPath, bin, "policy", "check", policyFile]],
  ];
  const out = ["", `### CLI start-up (CPU user+system per run, ${RUNS} runs each)`, "", "| command | CPU ms |", "|---|---|"];
  const measured: Record<string, number> = {};
  for (const [name, argv] of rows) {
    const s = await cpuPerRun(argv);
    measured[name] = Math.round(s * 1000);
    out.push(`| ${name} | ${fmt(s * 1000, 0)} |`);
  }
  results.cli_cpu_ms = measured;
  return out;
}
