/**
 * Boot restore (`varco net restore`, run by varco-net-restore.service before keepalived starts):
 * puts back the current generation exactly as it was last applied — the nft table from the
 * generation file and varco's keepalived file — without parsing the policy, so a policy broken on
 * disk cannot keep the last good generation from coming back.
 */
import { existsSync, lstatSync, readdirSync, readFileSync } from "node:fs";
import { dirname, isAbsolute, join, resolve } from "node:path";
import { parse } from "yaml";
import { currentGeneration, netStateDir, readPending, rollback } from "./reconcile.ts";
import type { CommandRunner } from "./runner.ts";

/** gateway.state_dir's default (policy/schema.ts). */
const DEFAULT_STATE_DIR = "/var/lib/varco";

/**
 * The state folder named by the policy file at `file` (gateway.state_dir, relative paths taken
 * from the policy's folder, as the loader does), read leniently: the YAML is parsed but not
 * validated, and a file that is missing, unparsable or without the key gives the default
 * `/var/lib/varco`. Never throws.
 */
export function stateDirFromPolicyFile(file: string): string {
  try {
    const raw = parse(readFileSync(file, "utf8")) as { gateway?: { state_dir?: unknown } } | null;
    const dir = raw?.gateway?.state_dir;
    if (typeof dir === "string" && dir.length > 0) return isAbsolute(dir) ? dir : resolve(dirname(file), dir);
  } catch {
    // A broken policy must not stop the restore: fall back to the default folder.
  }
  return DEFAULT_STATE_DIR;
}

/**
 * Why the generations in `dir` (`<state_dir>/net`) cannot be trusted by a restore running as root,
 * or undefined when they can: the folder and every file in it (`current`, `pending.json`,
 * `gen-*.json`) must be owned by this process's user and writable by no one else, and none may be
 * a symbolic link (lstat(2)). The state folder above is the gateway's (user `varco`), which can
 * rename `net/` away and plant its own: a generation holds the nft script and the keepalived file
 * (notify scripts run as root) that the restore installs, so a planted one would be code run as root.
 */
export function untrustedStateProblem(dir: string, uid: number = process.geteuid?.() ?? 0): string | undefined {
  if (!existsSync(dir)) return undefined;
  const fix = `chown -R root:root ${dir} && chmod -R go-w ${dir}`;
  const bad = (path: string, wantDir: boolean): string | undefined => {
    const st = lstatSync(path);
    if (st.isSymbolicLink()) return `${path} is a symbolic link`;
    if (wantDir ? !st.isDirectory() : !st.isFile()) return `${path} is not a ${wantDir ? "folder" : "regular file"}`;
    if (st.uid !== uid) return `${path} is owned by uid ${st.uid}, not ${uid}`;
    if ((st.mode & 0o022) !== 0) return `${path} is writable by group or others (mode ${(st.mode & 0o777).toString(8)})`;
    return undefined;
  };
  const problem =
    bad(dir, true) ??
    readdirSync(dir)
      .filter((f) => f === "current" || f === "pending.json" || /^gen-\d+\.json$/.test(f))
      .map((f) => bad(join(dir, f), false))
      .find((x) => x !== undefined);
  return problem === undefined
    ? undefined
    : `${problem}: the generations are not trusted (another user could have written them, and restoring runs them as root). Check them, then: ${fix}`;
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
 * Restores the current generation of `stateDir` on the host: one `nft -f` transaction with the
 * generation's table (it replaces the table if present, nft(8)), then varco's keepalived file
 * written back when it differs. An apply that was never confirmed (pending.json) is rolled back
 * first: the node comes back with the last confirmed generation, as the confirm window promised.
 * keepalived is not signalled (at boot it starts after this); bridges and other links are not
 * recreated (generations do not record them; the host's network configuration owns them at boot).
 * @throws CommandError when nft refuses the table (the host keeps what it had); Error when the
 *   generations are not owned by this user or writable by others ({@link untrustedStateProblem}).
 */
export async function restoreCurrent(r: CommandRunner, stateDir: string): Promise<RestoreResult> {
  const dir = netStateDir(stateDir);
  const untrusted = untrustedStateProblem(dir);
  if (untrusted) throw new Error(`varco net restore: REFUSED: ${untrusted}`);
  let reverted: number | undefined;
  const pending = readPending(dir);
  if (pending && currentGeneration(dir)?.id === pending.generation) {
    await rollback(r, stateDir);
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
