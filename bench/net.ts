/**
 * Network bench: render + apply 10 000 port forwards in one nft transaction inside a namespace the
 * bench creates, then a one-forward change (plan + apply). Loopback-free: nothing leaves the namespace.
 */
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { execa } from "execa";
import { apply, createExecaRunner, desiredState, plan } from "../src/net/index.ts";
import type { NetworkPolicy } from "../src/policy/index.ts";
import { fmt } from "./lib.ts";

function network(n: number, changedPort?: number): NetworkPolicy {
  const port_forwards = Array.from({ length: n }, (_, i) => ({
    name: `f${i}`,
    protocol: "tcp" as const,
    external_ip: "203.0.113.10",
    external_port: 10_000 + i,
    internal_ip: `10.10.${Math.floor(i / 250)}.${(i % 250) + 2}`,
    internal_port: i === 0 && changedPort ? changedPort : 22,
    sources: ["0.0.0.0/0"],
  }));
  return {
    table: "varco",
    public_interface: "eth0",
    public_ip: "203.0.113.10",
    private_networks: ["10.10.0.0/16"],
    masquerade: true,
    port_forwards,
    forward_allow: [],
    bridges: [],
    vips: [],
    keepalived: {
      config_file: "/nonexistent/keepalived.conf",
      main_config: "/nonexistent/main.conf",
      pid_file: "/nonexistent/pid",
      vrrp_version: 2,
    },
  };
}

const ms = (t0: bigint) => Number(process.hrtime.bigint() - t0) / 1e6;

export async function netBench(results: Record<string, unknown>): Promise<string[]> {
  if (process.getuid?.() !== 0) return ["### Network", "", "skipped: needs root for a network namespace", ""];
  const ns = `varco-bench-${randomBytes(3).toString("hex")}`;
  const dir = mkdtempSync(join(tmpdir(), "varco-netbench-"));
  await execa("ip", ["netns", "add", ns]);
  try {
    const runner = createExecaRunner({ netns: ns });
    const k = { authPass: {}, healthCommand: "true" };
    let t = process.hrtime.bigint();
    const d1 = desiredState(network(10_000), k);
    const renderMs = ms(t);
    t = process.hrtime.bigint();
    await apply(runner, d1, dir);
    const applyMs = ms(t);
    t = process.hrtime.bigint();
    const nftOnly = await runner.run(["nft", "-f", "-"], { input: d1.nft });
    const nftMs = ms(t);
    void nftOnly;
    const d2 = desiredState(network(10_000, 2222), k);
    t = process.hrtime.bigint();
    const p = await plan(runner, d2, dir);
    const planMs = ms(t);
    t = process.hrtime.bigint();
    await apply(runner, d2, dir);
    const changeApplyMs = ms(t);
    results.net = {
      forwards: 10_000,
      render_ms: renderMs,
      apply_ms: applyMs,
      nft_transaction_ms: nftMs,
      one_change_plan_ms: planMs,
      one_change_apply_ms: changeApplyMs,
      plan_changed: p.changed,
    };
    return [
      "### Network (10 000 port forwards, in a namespace)",
      "",
      `render ${fmt(renderMs)} ms; first apply (plan, nft -f, listing, generation) ${fmt(applyMs)} ms; the nft -f transaction alone ${fmt(nftMs)} ms;`,
      `one-forward change: plan ${fmt(planMs)} ms, apply ${fmt(changeApplyMs)} ms.`,
      "",
    ];
  } finally {
    await execa("ip", ["netns", "del", ns], { reject: false });
    rmSync(dir, { recursive: true, force: true });
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const results: Record<string, unknown> = {};
  console.log((await netBench(results)).join("\n"));
}
