/**
 * Network bench: render + apply 10 000 port forwards in one nft transaction inside a namespace the
 * bench creates, the drift check (`status`: nft -j of the table and the structural compare), a no-op
 * apply, then a one-forward change (plan + apply as element deltas). Loopback-free: nothing leaves
 * the namespace.
 */
import { randomBytes } from "node:crypto";
import { mkdtempSync, readdirSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { execa } from "execa";
import { apply, createExecaRunner, desiredState, plan, status } from "../src/net/index.ts";
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
    // Drift check: best of 3 (the machine is shared), nothing changed by hand.
    let driftMs = Number.POSITIVE_INFINITY;
    let inSync = false;
    for (let i = 0; i < 3; i++) {
      t = process.hrtime.bigint();
      const st = await status(runner, d1, dir);
      driftMs = Math.min(driftMs, ms(t));
      inSync = st.inSync;
    }
    // What nft itself takes to list the table as JSON (the floor of the drift check), best of 3.
    let nftJsonMs = Number.POSITIVE_INFINITY;
    for (let i = 0; i < 3; i++) {
      t = process.hrtime.bigint();
      await runner.run(["nft", "-j", "list", "table", "inet", "varco"]);
      nftJsonMs = Math.min(nftJsonMs, ms(t));
    }
    t = process.hrtime.bigint();
    const noop = await apply(runner, d1, dir);
    const noopMs = ms(t);
    const d2 = desiredState(network(10_000, 2222), k);
    t = process.hrtime.bigint();
    const p = await plan(runner, d2, dir);
    const planMs = ms(t);
    t = process.hrtime.bigint();
    const changed = await apply(runner, d2, dir);
    const changeApplyMs = ms(t);
    const after = await status(runner, d2, dir);
    const genDir = dir;
    const genBytes = Math.max(
      ...readdirSync(genDir)
        .filter((f) => f.startsWith("gen-"))
        .map((f) => statSync(`${genDir}/${f}`).size),
    );
    results.net = {
      forwards: 10_000,
      render_ms: renderMs,
      apply_ms: applyMs,
      nft_transaction_ms: nftMs,
      drift_ms: driftMs,
      drift_in_sync: inSync,
      nft_json_list_ms: nftJsonMs,
      noop_apply_ms: noopMs,
      noop_apply_changed: noop.changed,
      one_change_plan_ms: planMs,
      one_change_apply_ms: changeApplyMs,
      one_change_mode: changed.mode,
      in_sync_after_change: after.inSync,
      plan_changed: p.changed,
      generation_bytes: genBytes,
    };
    return [
      "### Network (10 000 port forwards, in a namespace)",
      "",
      `render ${fmt(renderMs)} ms; first apply (plan, nft -f, snapshot, generation) ${fmt(applyMs)} ms; the nft -f transaction alone ${fmt(nftMs)} ms;`,
      `drift check (status: nft -j of the table, structural compare incl. every element) ${fmt(driftMs)} ms (budget 300 ms; in sync: ${inSync}), of which \`nft -j list table\` alone ${fmt(nftJsonMs)} ms;`,
      `no-op apply ${fmt(noopMs)} ms (new generation: ${noop.changed});`,
      `one-forward change: plan ${fmt(planMs)} ms, apply ${fmt(changeApplyMs)} ms as ${changed.mode === "elements" ? "element deltas in one transaction" : "a table replacement"} (goal 100 ms; in sync after: ${after.inSync});`,
      `largest generation file ${fmt(genBytes / 1024, 0)} KiB.`,
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
