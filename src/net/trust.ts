/**
 * Whether the network generations may be trusted by a process running as root: they hold nft
 * scripts and keepalived files (whose notify scripts keepalived runs as root) that restore,
 * rollback and apply install.
 */
import { existsSync, lstatSync, readdirSync } from "node:fs";
import { join } from "node:path";

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
