/**
 * Boot restore (`varco net restore`, run by varco-net-restore.service before keepalived starts):
 * puts back the current generation exactly as it was last applied — the nft table from the
 * generation file and varco's keepalived file — without parsing the policy, so a policy broken on
 * disk cannot keep the last good generation from coming back.
 */
import { readFileSync } from "node:fs";
import { dirname, isAbsolute, join, resolve } from "node:path";
import { parse } from "yaml";
import { currentGeneration, readPending, rollback } from "./reconcile.ts";
import type { CommandRunner } from "./runner.ts";
import { untrustedStateProblem } from "./trust.ts";

/** gateway.state_dir's default (policy/schema.ts). */
const DEFAULT_STATE_DIR = "/var/lib/varco";

/**
 * The folder of the network generations named by the policy file at `file`: `network.state_dir`,
 * else `<gateway.state_dir>/net` (relative paths taken from the policy's folder, as the loader
 * does), read leniently: the YAML is parsed but not validated, and a file that is missing,
 * unparsable or without the keys gives the default `/var/lib/varco/net`. Never throws.
 */
export function netDirFromPolicyFile(file: string): string {
  const abs = (dir: string) => (isAbsolute(dir) ? dir : resolve(dirname(file), dir));
  try {
    const raw = parse(readFileSync(file, "utf8")) as { gateway?: { state_dir?: unknown }; network?: { state_dir?: unknown } } | null;
    const net = raw?.network?.state_dir;
    if (typeof net === "string" && net.length > 0) return abs(net);
    const dir = raw?.gateway?.state_dir;
    if (typeof dir === "string" && dir.length > 0) return join(abs(dir), "net");
  } catch {
    // A broken policy must not stop the restore: fall back to the default folder.
  }
  return join(DEFAULT_STATE_DIR, "net");
}

export interface RestoreResult {
  /** The generation now in force; undefined when nothing was ever applied (or the only one was reverted). */
  readonly generation: number | undefined;
  /** An apply was still waiting for `varco net confirm` when the node went down: it was rolled back first. */
  readonly revertedUnconfirmed: number | undefined;
  /** varco's keepalived file was rewritten (it differed from the generation's). */
  readonly keepalivedWritten: boolean;
}

/**
 * Restores the current generation of `netDir` on the host: one `nft -f` transaction with the
 * generation's table (it replaces the table if present, nft(8)), then varco's keepalived file
 * written back when it differs. An apply that was never confirmed (pending.json) is rolled back
 * first: the node comes back with the last confirmed generation, as the confirm window promised.
 * keepalived is not signalled (at boot it starts after this); bridges and other links are not
 * recreated (generations do not record them; the host's network configuration owns them at boot).
 * @throws CommandError when nft refuses the table (the host keeps what it had); Error when the
 *   generations are not owned by this user or writable by others ({@link untrustedStateProblem}).
 */
export async function restoreCurrent(r: CommandRunner, netDir: string): Promise<RestoreResult> {
  const dir = netDir;
  const untrusted = untrustedStateProblem(dir);
  if (untrusted) throw new Error(`varco net restore: REFUSED: ${untrusted}`);
  let reverted: number | undefined;
  const pending = readPending(dir);
  if (pending && currentGeneration(dir)?.id === pending.generation) {
    await rollback(r, netDir);
    reverted = pending.generation;
  }
  const gen = currentGeneration(dir);
  if (!gen) return { generation: undefined, revertedUnconfirmed: reverted, keepalivedWritten: false };
  await r.run(["nft", "-f", "-"], { input: gen.desired.nft });
  let written = false;
  if (gen.desired.keepalived !== undefined && (await r.readFile(gen.keepalivedFile)) !== gen.desired.keepalived) {
    await r.writeFile(gen.keepalivedFile, gen.desired.keepalived);
    written = true;
  }
  return { generation: gen.id, revertedUnconfirmed: reverted, keepalivedWritten: written };
}
