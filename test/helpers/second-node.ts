/**
 * A second gateway node beside a harness gateway (test/helpers/harness.ts) on the same shared
 * PostgreSQL state: the same policy with its own listen port, `state_dir` and `gateway.node`, and
 * a copy of the first node's totp.key (nodes sharing a state must hold the same key). Started as
 * `varco serve`, stopped by its PID (stopChild).
 */
import { copyFileSync, createWriteStream, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { execa, type ResultPromise } from "execa";
import { waitForPort } from "../../src/demo/index.ts";
import { ROOT } from "./harness.ts";
import { serveNodeOptions } from "./unit.ts";

export interface SecondNode {
  readonly process: ResultPromise;
  readonly port: number;
  readonly policyFile: string;
  /** A known_hosts file naming this node's port with the shared host key. */
  readonly knownHosts: string;
  /** Everything the node printed so far. */
  output(): string;
}

/**
 * Starts node `node` from the first node's policy in `dir` (whose `gateway.node` is `firstNode`).
 * @throws Error with the node's output when it exits or does not listen within 20 s.
 */
export async function startSecondNode(
  dir: string,
  firstPolicy: string,
  o: { firstNode: string; node: string; env?: NodeJS.ProcessEnv },
): Promise<SecondNode> {
  const stateDir = `state-${o.node}`;
  mkdirSync(join(dir, stateDir), { recursive: true, mode: 0o700 });
  copyFileSync(join(dir, "state/totp.key"), join(dir, stateDir, "totp.key"));
  const policyFile = join(dir, `gateway-${o.node}.yaml`);
  writeFileSync(
    policyFile,
    readFileSync(firstPolicy, "utf8")
      .replace(/listen: \["127\.0\.0\.1:\d+"\]/, 'listen: ["127.0.0.1:0"]')
      .replace("  state_dir: state\n", `  state_dir: ${stateDir}\n`)
      .replace(`  node: ${o.firstNode}\n`, `  node: ${o.node}\n`),
    { mode: 0o600 },
  );
  let output = "";
  const out = createWriteStream(join(dir, `gateway-${o.node}.out`));
  const child = execa("node", [...serveNodeOptions(), join(ROOT, "bin/varco.mjs"), "serve", "--policy", policyFile], {
    reject: false,
    all: true,
    env: o.env ?? {},
  });
  child.all?.on("data", (d: Buffer) => {
    output += d.toString();
    out.write(d);
  });
  let port = 0;
  for (let i = 0; i < 400 && !port; i++) {
    const m = /"msg":"gateway listening"/.test(output) ? /"listen":\["127\.0\.0\.1:(\d+)"/.exec(output) : null;
    if (m) port = Number(m[1]);
    else if (child.exitCode !== null) throw new Error(`gateway ${o.node} exited: ${output}`);
    else await new Promise((r) => setTimeout(r, 50));
  }
  if (!port) throw new Error(`gateway ${o.node} did not listen within 20 s: ${output}`);
  await waitForPort(port, "127.0.0.1", 20_000);
  const hostPub = readFileSync(join(dir, "keys/ssh_host_ed25519_key.pub"), "utf8").trim().split(/\s+/).slice(0, 2).join(" ");
  const knownHosts = join(dir, `known_hosts_${o.node}`);
  writeFileSync(knownHosts, `[127.0.0.1]:${port} ${hostPub}\n`);
  return { process: child, port, policyFile, knownHosts, output: () => output };
}
