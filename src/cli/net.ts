/**
 * `varco net …`: plan, apply (with confirm-or-revert), confirm, rollback, status and render of the
 * network the gateway fronts. Thin: every decision is in `net/`. The modules are loaded when a
 * `net` command runs (never for `varco --help` or the other commands).
 */
import { spawn } from "node:child_process";
import { fileURLToPath } from "node:url";
import type { Command } from "commander";
import type { ApplyResult, CommandRunner, GatewayServices, Plan } from "../net/index.ts";
import type { NetworkPolicy } from "../policy/index.ts";
import { parseDurationMs } from "../policy/units.ts";
import { ExitError, loadOrExit, policyPath } from "./common.ts";

let N: typeof import("../net/index.ts");
let C: typeof import("../main.ts");
let L: typeof import("../net/lockout.ts");

/** Loads what the net commands use (the preAction hook of `varco net`). */
async function loadNetModules(): Promise<void> {
  [N, C, L] = await Promise.all([import("../net/index.ts"), import("../main.ts"), import("../net/lockout.ts")]);
}

/**
 * Refuses (ExitError 1) when the administrator's SSH connection (`SSH_CONNECTION`, here or in an
 * ancestor process) would not be accepted as a new connection by the ruleset about to be applied.
 * `--force` turns the refusal into a warning. Nothing is checked without an SSH connection.
 */
async function refuseLockout(runner: CommandRunner, network: NetworkPolicy, services: GatewayServices, force: boolean): Promise<void> {
  const conn = L.parseSshConnection(L.findSshConnection());
  if (!conn) return;
  const iif = (await L.routeDevice(runner, conn.clientIp)) ?? network.public_interface;
  const why = L.lockoutRefusal(network, services, conn, iif);
  if (!why) return;
  if (!force) throw new ExitError(`varco net apply: REFUSED: ${why}`, 1);
  console.error(`varco net apply: --force: ${why}`);
}

/** Adds the `net` command group to `program` (whose `--policy` option it reads). */
export function registerNet(program: Command): void {
  const net = program
    .command("net")
    .description("the network the gateway fronts: nftables NAT/forwarding, bridges, keepalived VIPs")
    .option("--netns <name>", "run every host command inside this network namespace (ip netns exec)")
    .hook("preAction", loadNetModules);
  const netSetup = () => {
    const loaded = loadOrExit(policyPath(program.opts()));
    const ctx = C.networkContext(loaded);
    const runner = N.createExecaRunner({ netns: (net.opts() as { netns?: string }).netns });
    return { loaded, runner, ...ctx };
  };
  /**
   * Every net command first reverts an unconfirmed apply whose deadline passed (the watcher may be gone).
   * Read-only commands (plan, status) skip it while another command holds the lock.
   */
  const netPrelude = async (runner: CommandRunner, netDir: string, readOnly = false) => {
    try {
      if (await N.revertIfExpired(runner, netDir, Date.now()))
        console.error("varco net: an unconfirmed apply passed its deadline and was rolled back");
    } catch (err) {
      if (!(readOnly && err instanceof N.NetLockedError)) throw err;
    }
  };
  /** Runs a state-changing command under the state folder's lock; a held lock is a clear exit 1. */
  const locked = async <T>(netDir: string, holder: string, fn: () => Promise<T>): Promise<T> => {
    try {
      return await N.withNetLock(netDir, holder, fn);
    } catch (err) {
      if (err instanceof N.NetLockedError) throw new ExitError(`varco ${holder}: ${err.message}`, 1);
      throw err;
    }
  };
  const printPlan = (p: Plan, commands: boolean) => {
    for (const r of p.refusals) console.log(`REFUSED: ${r}`);
    if (!p.changed && p.drift.length === 0) {
      console.log("no changes: the host matches the policy");
      return;
    }
    for (const d of p.drift) console.log(`DRIFT: ${d}`);
    if (p.nftChanged) console.log(p.nftDiff);
    for (const op of p.linkOps) console.log(`+ ${op.describe}${commands ? `\n    ${op.argv.join(" ")}` : ""}`);
    if (p.keepalivedChanged) console.log(p.keepalivedDiff);
    if (commands) {
      if (p.nftChanged) console.log("nft -f - < (the desired table above, one transaction)");
      if (p.keepalivedChanged) console.log("keepalived --config-test -f <tmp>; write the file atomically; kill -HUP $(cat pid_file)");
    }
  };
  net
    .command("plan")
    .description("show what apply would change: a diff of rules, links and keepalived config")
    .option("--json", "print the plan as JSON")
    .option("--commands", "also print the exact commands apply would run")
    .option("--out <file>", "also save the plan (mode 0600) for `varco net apply --plan FILE`")
    .action(async (opts: { json?: boolean; commands?: boolean; out?: string }) => {
      const { runner, desired, netDir } = netSetup();
      await netPrelude(runner, netDir, true);
      const p = await N.plan(runner, desired, netDir);
      if (opts.out && p.refusals.length === 0) {
        N.writeSavedPlan(opts.out, await N.makeSavedPlan(runner, desired));
        console.error(`saved the plan to ${opts.out}; apply exactly it with \`varco net apply --plan ${opts.out}\``);
      }
      if (opts.json) {
        console.log(
          JSON.stringify({
            changed: p.changed,
            refusals: p.refusals,
            drift: p.drift,
            nft: { changed: p.nftChanged, diff: p.nftDiff },
            links: p.linkOps.map((o) => ({ describe: o.describe, argv: o.argv })),
            keepalived: { changed: p.keepalivedChanged, diff: p.keepalivedDiff },
          }),
        );
      } else printPlan(p, Boolean(opts.commands));
      if (p.refusals.length > 0) throw new ExitError("", 1);
    });
  net
    .command("apply")
    .description("apply atomically; with --confirm it reverts unless `varco net confirm` follows in time")
    .option("--confirm <duration>", "revert automatically after this long (e.g. 60s) unless confirmed")
    .option("--plan <file>", "apply exactly a plan saved by `varco net plan --out FILE` (refused if the host or the policy changed since)")
    .option(
      "--role <role>",
      "gateway (the front-end: default) or host (only the bridge-family east-west table, on the node that owns the bridge)",
    )
    .option("--stateless", "with --role host: do not use bridge conntrack (for kernels without nf_conntrack_bridge)")
    .option("--force", "apply even if the ruleset would drop a new SSH connection like yours (SSH_CONNECTION)")
    .action(async (opts: { confirm?: string; plan?: string; role?: string; stateless?: boolean; force?: boolean }) => {
      if (opts.role !== undefined && opts.role !== "gateway") return applyHostRole(opts);
      const { runner, desired, netDir, loaded, network, services } = netSetup();
      let confirmMs: number | undefined;
      if (opts.confirm) {
        confirmMs = parseDurationMs(opts.confirm);
        if (confirmMs === undefined) throw new ExitError(`--confirm: "${opts.confirm}" is not a duration (e.g. 60s)`, 2);
      }
      let saved: ReturnType<typeof N.readSavedPlan> | undefined;
      if (opts.plan) {
        try {
          saved = N.readSavedPlan(opts.plan);
        } catch (err) {
          throw new ExitError(`varco net apply: ${(err as Error).message}`, 2);
        }
      }
      await locked(netDir, opts.plan ? "net apply --plan" : "net apply", async () => {
        await netPrelude(runner, netDir);
        // The saved plan's network is the one the policy renders now (applySavedPlan refuses otherwise).
        await refuseLockout(runner, network, services, Boolean(opts.force));
        let r: ApplyResult;
        try {
          r = saved ? await N.applySavedPlan(runner, saved, desired, netDir, opts.plan) : await N.apply(runner, desired, netDir);
        } catch (err) {
          if (err instanceof N.ApplyError) throw new ExitError(err.message, 1);
          throw err;
        }
        if (!r.changed) {
          console.log(`no changes: generation ${r.generation} already matches the policy (no new generation)`);
          return;
        }
        console.log(`applied generation ${r.generation}${r.mode === "elements" ? " (set/map elements only, one transaction)" : ""}`);
        if (confirmMs !== undefined) {
          const pending = N.setPending(netDir, r.generation, Date.now() + confirmMs);
          const netns = (net.opts() as { netns?: string }).netns;
          const bin = fileURLToPath(new URL("../../bin/varco.mjs", import.meta.url));
          const child = spawn(
            process.execPath,
            [bin, "--policy", loaded.file, "net", ...(netns ? ["--netns", netns] : []), "confirm-wait", "--token", pending.token],
            { detached: true, stdio: "ignore" },
          );
          child.unref();
          console.log(`run \`varco net confirm\` within ${opts.confirm}, or generation ${r.generation} is rolled back`);
        }
      });
    });
  /** `apply --role host`: only `table bridge <table>`, one transaction, no generation (see net/host-bridge.ts). */
  const applyHostRole = async (opts: { role?: string; confirm?: string; stateless?: boolean }) => {
    if (opts.role !== "host") throw new ExitError(`--role: "${opts.role}" is not a role (gateway, host)`, 2);
    if (opts.confirm) throw new ExitError("--confirm applies to the gateway role only (the host table has no generations)", 2);
    const loaded = loadOrExit(policyPath(program.opts()));
    const network = loaded.policy.network;
    if (!network) throw new ExitError(`${loaded.file}: the policy has no network section`, 2);
    const runner = N.createExecaRunner({ netns: (net.opts() as { netns?: string }).netns });
    try {
      const r = await N.applyHostBridge(runner, network, opts.stateless ? { stateful: false } : {});
      if (r.fallbackReason)
        console.error(
          `varco net: this kernel has no bridge conntrack (${r.fallbackReason}); applied the stateless table (replies matched by source port)`,
        );
      console.log(`applied table bridge ${network.table} (${r.stateful ? "stateful" : "stateless"})`);
    } catch (err) {
      throw new ExitError(`varco net apply --role host: ${(err as Error).message}. Nothing was changed.`, 1);
    }
  };
  net
    .command("confirm-wait", { hidden: true })
    .requiredOption("--token <token>")
    .action(async (opts: { token: string }) => {
      const { runner, netDir } = netSetup();
      // Poll (bounded, 24 h at most) so a confirm or a newer apply ends this watcher promptly.
      for (let i = 0; i < 24 * 3600 * 4; i++) {
        const p = N.readPending(netDir);
        if (!p || p.token !== opts.token) return;
        if (Date.now() >= p.deadline) break;
        await new Promise((r) => setTimeout(r, Math.min(250, Math.max(10, p.deadline - Date.now()))));
      }
      // The revert takes the lock; while another command holds it, try again (bounded: 10 min).
      for (let i = 0; i < 1200; i++) {
        try {
          await N.revertIfExpired(runner, netDir, Date.now(), opts.token);
          return;
        } catch (err) {
          if (!(err instanceof N.NetLockedError)) throw err;
          await new Promise((r) => setTimeout(r, 500));
        }
      }
    });
  net
    .command("confirm")
    .description("keep the last apply")
    .action(async () => {
      const { runner, netDir } = netSetup();
      await locked(netDir, "net confirm", async () => {
        await netPrelude(runner, netDir);
        if (!(await N.confirm(netDir))) throw new ExitError("nothing to confirm (no apply is waiting, or it was already rolled back)", 1);
        console.log("confirmed");
      });
    });
  net
    .command("rollback")
    .description("revert the last apply (restore the previous generation)")
    .action(async () => {
      const { runner, netDir } = netSetup();
      try {
        const prev = await N.rollback(runner, netDir);
        console.log(prev ? `rolled back to generation ${prev.id}` : "rolled back: varco's table and links are removed");
      } catch (err) {
        throw new ExitError(`varco net rollback: ${(err as Error).message}`, 1);
      }
    });
  net
    .command("status")
    .description("live state vs policy: exit 0 in sync, 1 with the drift")
    .option("--json", "print JSON")
    .action(async (opts: { json?: boolean }) => {
      const { runner, desired, netDir } = netSetup();
      await netPrelude(runner, netDir, true);
      const st = await N.status(runner, desired, netDir);
      if (opts.json)
        console.log(
          JSON.stringify({
            in_sync: st.inSync,
            generation: st.generation ?? null,
            policy_changed: st.policyChanged,
            pending: st.pending ? { generation: st.pending.generation, deadline: new Date(st.pending.deadline).toISOString() } : null,
            drift: st.drift,
          }),
        );
      else {
        console.log(`generation ${st.generation ?? "-"}: ${st.inSync ? "in sync" : "OUT OF SYNC"}`);
        if (st.policyChanged) console.log("the policy changed since the last apply (run varco net plan)");
        if (st.pending) console.log(`waiting for \`varco net confirm\` until ${new Date(st.pending.deadline).toISOString()}`);
        for (const d of st.drift) console.log(`DRIFT: ${d}`);
      }
      if (!st.inSync) throw new ExitError("", 1);
    });
  net
    .command("restore")
    .description("put back the current generation as last applied (nft table, keepalived file); for boot, before keepalived starts")
    .option(
      "--net-dir <dir>",
      "the folder of the generations (default: network.state_dir, else gateway.state_dir/net, read from the policy file, which need not be valid)",
    )
    .action(async (opts: { netDir?: string }) => {
      // No policy validation here: a policy broken on disk must not keep the last good generation away.
      const netDir = opts.netDir ?? N.netDirFromPolicyFile(policyPath(program.opts()));
      const runner = N.createExecaRunner({ netns: (net.opts() as { netns?: string }).netns });
      try {
        const res = await N.withNetLock(netDir, "net restore", () => N.restoreCurrent(runner, netDir));
        if (res.revertedUnconfirmed !== undefined) console.log(`generation ${res.revertedUnconfirmed} was never confirmed: rolled back`);
        console.log(
          res.generation === undefined
            ? `nothing to restore: no generation in ${netDir}`
            : `restored generation ${res.generation}${res.keepalivedWritten ? " (keepalived file rewritten)" : ""}`,
        );
      } catch (err) {
        throw new ExitError(`varco net restore: ${(err as Error).message}`, 1);
      }
    });
  net
    .command("render <what>")
    .description("print a rendering: nft | links | interfaces | keepalived | host-bridge (secrets masked)")
    .option("--stateless", "host-bridge: the rendering for kernels without bridge conntrack")
    .action((what: string, opts: { stateless?: boolean }) => {
      if (what === "host-bridge") {
        const network = loadOrExit(policyPath(program.opts())).policy.network;
        if (!network) throw new ExitError("the policy has no network section", 2);
        console.log(N.renderHostBridge(network, { stateful: !opts.stateless }));
        return;
      }
      const { desired, network } = netSetup();
      if (what === "nft") console.log(desired.nft);
      else if (what === "links") for (const op of desired.links) console.log(op.argv.join(" "));
      else if (what === "interfaces") console.log(N.renderInterfaces(network));
      else if (what === "keepalived") console.log(N.redactKeepalived(desired.keepalived ?? "# no vips\n"));
      else throw new ExitError(`render: unknown "${what}" (nft, links, interfaces, keepalived, host-bridge)`, 2);
    });
}
