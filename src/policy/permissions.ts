/**
 * Refusing private files that others could change or read, the way sshd's StrictModes refuses
 * keys and configuration others could write (sshd_config(5) `StrictModes`; auth2-pubkeyfile.c
 * `secure_filename`): the policy decides who logs in where, and `totp.key` decrypts every TOTP
 * secret.
 */
import { lstatSync, realpathSync, statSync } from "node:fs";
import { dirname } from "node:path";

/** Thrown by {@link assertPrivateFiles}; `problems` holds one message per file. */
export class PrivateFileError extends Error {
  readonly problems: readonly string[];
  constructor(problems: readonly string[]) {
    super(problems.join("\n"));
    this.name = "PrivateFileError";
    this.problems = problems;
  }
}

const octal = (mode: number) => `0${(mode & 0o7777).toString(8).padStart(3, "0")}`;

/** Whether `file` itself exists as a symbolic link (dangling or not). */
function isLink(file: string): boolean {
  try {
    return lstatSync(file).isSymbolicLink();
  } catch {
    return false;
  }
}

/** Who may own a private file: root or the user varco runs as. */
function ownerProblem(file: string, uid: number): string | undefined {
  const me = process.getuid?.();
  if (me === undefined || uid === 0 || uid === me) return undefined;
  return `${file}: owned by uid ${uid}, neither root nor the user varco runs as (uid ${me}), who could change its mode at any time. Fix: chown root ${file}`;
}

/** The directory holding `real` must not let others replace it (group/world-writable without the sticky bit). */
function directoryProblem(file: string, real: string): string | undefined {
  const dir = dirname(real);
  let st: ReturnType<typeof statSync>;
  try {
    st = statSync(dir);
  } catch (err) {
    return `${file}: its directory ${dir} cannot be inspected (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`;
  }
  if ((st.mode & 0o022) === 0 || (st.mode & 0o1000) !== 0) return undefined;
  return `${file}: its directory ${dir} has mode ${octal(st.mode)}: group or others can replace the file. Fix: chmod go-w ${dir}`;
}

/** The private files of one gateway: the policy, the TOTP key, the web console's TLS key. */
export interface PrivateFiles {
  readonly policyFile: string;
  readonly totpKeyFile?: string | undefined;
  readonly webTlsKeyFile?: string | undefined;
}

/**
 * Checks the files varco must keep private, following symlinks to the real file. Returns one
 * message per problem (empty: all fine), each naming the file, its mode and the fix:
 *
 * - `policyFile` must exist and be a regular file that neither group nor others can write
 *   (`mode & 0o022`); reading it is allowed (it holds no secret, only `*_file` references).
 *   Fix: `chmod 0640`.
 * - `totpKeyFile`, when given and present, must be a regular file with no group/other permission
 *   at all (`mode & 0o077`). Fix: `chmod 0600`. Absent is fine (varco creates it 0600);
 *   a symlink to a missing file is not.
 * - `webTlsKeyFile` (`web.tls.key_file`), when given, must exist and have no group/other permission
 *   (`mode & 0o077`): whoever reads it can impersonate the web console. Fix: `chmod 0600`.
 * - each file must be owned by root or the current user, and its directory must not be
 *   group/world-writable unless sticky (else the file can be swapped).
 *
 * Never throws for a file problem; a file that cannot be inspected is reported as a problem.
 */
export function checkPrivateFiles(files: PrivateFiles): string[] {
  const problems: string[] = [];
  const check = (file: string, forbidden: number, what: string, fix: string, mayBeAbsent: boolean) => {
    let real: string;
    let st: ReturnType<typeof statSync>;
    try {
      real = realpathSync(file);
      st = statSync(real);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === "ENOENT" && mayBeAbsent && !isLink(file)) return;
      problems.push(`${file}: cannot be inspected (${code ?? (err as Error).message})`);
      return;
    }
    if (!st.isFile()) {
      problems.push(`${file}: not a regular file`);
      return;
    }
    if ((st.mode & forbidden) !== 0) problems.push(`${file}: mode ${octal(st.mode)} is ${what}. Fix: chmod ${fix} ${file}`);
    const owner = ownerProblem(file, st.uid);
    if (owner) problems.push(owner);
    const dir = directoryProblem(file, real);
    if (dir) problems.push(dir);
  };
  check(files.policyFile, 0o022, "writable by group or others, who could change who may log in", "0640", false);
  if (files.totpKeyFile !== undefined)
    check(files.totpKeyFile, 0o077, "open to group or others; the key decrypts every TOTP secret", "0600", true);
  if (files.webTlsKeyFile !== undefined)
    check(files.webTlsKeyFile, 0o077, "open to group or others; whoever reads it can impersonate the web console", "0600", false);
  return problems;
}

/** {@link checkPrivateFiles}, throwing a {@link PrivateFileError} listing every problem if there is one. */
export function assertPrivateFiles(files: PrivateFiles): void {
  const problems = checkPrivateFiles(files);
  if (problems.length > 0) throw new PrivateFileError(problems);
}
