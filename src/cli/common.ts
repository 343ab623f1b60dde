/**
 * Helpers shared by the CLI's command groups: the policy path search, loading with a clear exit,
 * the exit-code error and plain-text tables.
 */
import { execFileSync } from "node:child_process";
import { chownSync, existsSync, lstatSync, readdirSync } from "node:fs";
import { join } from "node:path";
import type { LoadedPolicy } from "../policy/index.ts";

type PolicyModule = typeof import("../policy/index.ts");
let policyLoaded: PolicyModule | undefined;

/** Loads the policy module (yaml + zod + the schema) once; the CLI runs it before any command's action. */
export async function preloadPolicy(): Promise<void> {
  policyLoaded ??= await import("../policy/index.ts");
}

/** The policy module, loaded by `preloadPolicy`. @throws Error when called before it. */
export function policyModule(): PolicyModule {
  if (!policyLoaded) throw new Error("internal: the policy module is used before preloadPolicy()");
  return policyLoaded;
}

/** Where the policy is looked for when neither `--policy` nor `VARCO_POLICY` names one. */
export const DEFAULT_POLICY = "/etc/varco/gateway.yaml";

/** Exit with a message on stderr (`code` is the process exit code; an empty message prints nothing). */
export class ExitError extends Error {
  constructor(
    message: string,
    readonly code: number,
  ) {
    super(message);
  }
}

/**
 * The policy file to use: a positional argument, else `--policy`, else `VARCO_POLICY`, else
 * /etc/varco/gateway.yaml (in that order).
 */
export function policyPath(opts: { policy?: string }, positional?: string): string {
  return positional ?? opts.policy ?? process.env.VARCO_POLICY ?? DEFAULT_POLICY;
}

/** @throws ExitError listing the places tried when `file` is the default and does not exist. */
export function refuseMissingDefault(file: string): void {
  if (file === DEFAULT_POLICY && !existsSync(file))
    throw new ExitError(`varco: no policy file: --policy not given, VARCO_POLICY not set, ${DEFAULT_POLICY} does not exist`, 1);
}

/**
 * Loads and validates the policy, or exits 1 with every problem as `file:line:col: message`; a
 * missing default file lists the places that were tried.
 */
export function loadOrExit(file: string) {
  refuseMissingDefault(file);
  const { loadPolicyFile, PolicyError, formatIssue } = policyModule();
  try {
    const loaded = loadPolicyFile(file);
    giveStateToServiceUser(loaded);
    return loaded;
  } catch (err) {
    if (err instanceof PolicyError) throw new ExitError(err.issues.map(formatIssue).join("\n"), 1);
    throw err;
  }
}

export function table(rows: string[][]): string {
  const widths = rows[0]?.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? "").length))) ?? [];
  return rows
    .map((r) =>
      r
        .map((c, i) => c.padEnd(widths[i] ?? 0))
        .join("  ")
        .trimEnd(),
    )
    .join("\n");
}

/** The service account of deploy/varco.service (`User=`), overridable for other installs. */
const SERVICE_USER = process.env.VARCO_SERVICE_USER ?? "varco";

/** uid and gid of `name` from the name service (getent(1)), or undefined when there is no such user. */
function lookupUser(name: string): { uid: number; gid: number } | undefined {
  try {
    const [, , uid, gid] = execFileSync("getent", ["passwd", name], { encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] }).split(":");
    return uid && gid ? { uid: Number(uid), gid: Number(gid) } : undefined;
  } catch {
    return undefined;
  }
}

let adoptionRegistered = false;

/**
 * A CLI run as root (`sudo varco user totp enroll …`) must not leave state files the service cannot
 * open: when the process exits, the state folder (if root created it) and the root-owned regular
 * files directly in it (state.db, totp.key, audit.db and their -wal/-shm) are given to the state
 * folder's owner, or — when root owns the folder — to the service user (`varco`, or
 * `VARCO_SERVICE_USER`) if it exists. A gateway that itself runs as root (no service user) keeps
 * root's files. Sub-folders (the root-only `net/` generations, recordings) are left alone.
 */
export function giveStateToServiceUser(loaded: LoadedPolicy): void {
  if (process.getuid?.() !== 0 || adoptionRegistered) return;
  adoptionRegistered = true;
  const stateDir = loaded.resolvePath(loaded.policy.gateway.state_dir);
  process.once("exit", () => {
    if (!existsSync(stateDir)) return;
    const dir = lstatSync(stateDir);
    const owner = dir.uid !== 0 ? { uid: dir.uid, gid: dir.gid } : lookupUser(SERVICE_USER);
    if (!owner) return;
    if (dir.uid === 0) chownSync(stateDir, owner.uid, owner.gid);
    for (const name of readdirSync(stateDir)) {
      const f = join(stateDir, name);
      const st = lstatSync(f);
      if (st.isFile() && st.uid === 0) chownSync(f, owner.uid, owner.gid);
    }
  });
}

/**
 * Files a CLI run as root just created in a folder owned by someone else (the service user's
 * /etc/varco/keys) are given to that folder's owner, so the service can read them.
 */
export function giveToFolderOwner(files: readonly string[]): void {
  if (process.getuid?.() !== 0) return;
  for (const f of files) {
    if (!existsSync(f)) continue;
    const dir = lstatSync(join(f, ".."));
    if (dir.uid !== 0 && lstatSync(f).uid === 0) chownSync(f, dir.uid, dir.gid);
  }
}
