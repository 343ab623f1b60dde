/**
 * A throwaway OpenSSH sshd target on loopback, for the demo and tests: its own host key, PID file and
 * authorized_keys in a temp folder, `StrictModes no`, internal-sftp. Runs in the foreground (`-D`).
 *
 * Its sessions get `HOME=<dir>/home` (sshd_config(5) `SetEnv`, applied after sshd's own HOME), an
 * empty folder: sshd can only log in the user running it, and Debian's bash reads `~/.bashrc` even
 * for a command sent over ssh, so without it every command on the target would run that user's
 * dotfiles (a tool's stale lock there stalled every command for 60 s); `PermitUserRC no` keeps
 * its `~/.ssh/rc` out too. Commands still start in that user's home directory (sshd changes to the
 * password database's home, not to HOME).
 */
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { userInfo } from "node:os";
import { join } from "node:path";
import { execa, type ResultPromise } from "execa";
import { freePort, waitForPort } from "./ports.ts";
import { stopChild } from "./slapd.ts";

export interface SshdOptions {
  readonly dir: string;
  /** Public key lines allowed to log in (the gateway's egress key). */
  readonly authorizedKeys: readonly string[];
  readonly port?: number;
  /** Listen address (default 127.0.0.1). */
  readonly host?: string;
  /** Run inside this network namespace (ip netns exec). */
  readonly netns?: string;
}

export interface Sshd {
  readonly port: number;
  /** The login name on this target: the user running the tests/demo (sshd without root can only log that user in). */
  readonly user: string;
  /** `ssh-ed25519 AAAA…` of this target's host key, for the policy's `host_key`. */
  readonly hostKeyLine: string;
  readonly pid: number;
  readonly logFile: string;
  stop(): Promise<void>;
}

/**
 * Generates a host key, writes sshd_config and starts sshd; resolves once it accepts connections.
 * A free port can be taken by another process between choosing and binding it: then sshd exits and
 * this retries with a new port (3 tries).
 */
export async function startSshd(o: SshdOptions): Promise<Sshd> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await startSshdOnce(o);
    } catch (err) {
      if (attempt >= 3 || o.port !== undefined || !(err instanceof PortLostError)) throw err;
    }
  }
}

/**
 * One sshd_config(5) argument in double quotes (sshd splits arguments like a shell: argv_split in
 * OpenSSH's misc.c). @throws Error for a double quote, backslash or line break, which it would read differently.
 */
function sshdQuoted(arg: string): string {
  if (/["\\\r\n]/.test(arg))
    throw new Error(`sshd target folder ${JSON.stringify(arg)}: a double quote, backslash or line break cannot be written to sshd_config`);
  return `"${arg}"`;
}

/** The daemon exited right after start (its port was taken meanwhile). */
export class PortLostError extends Error {}

async function startSshdOnce(o: SshdOptions): Promise<Sshd> {
  mkdirSync(o.dir, { recursive: true, mode: 0o700 });
  if (process.getuid?.() === 0 && !existsSync("/run/sshd")) mkdirSync("/run/sshd", { mode: 0o755 });
  const hostKey = join(o.dir, "ssh_host_ed25519_key");
  if (!existsSync(hostKey)) await execa("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-C", "varco-target", "-f", hostKey]);
  writeFileSync(join(o.dir, "authorized_keys"), `${o.authorizedKeys.join("\n")}\n`, { mode: 0o600 });
  const home = join(o.dir, "home");
  mkdirSync(home, { recursive: true, mode: 0o700 });
  const port = o.port ?? (await freePort());
  const logFile = join(o.dir, "sshd.log");
  const conf = join(o.dir, "sshd_config");
  writeFileSync(
    conf,
    [
      `Port ${port}`,
      `ListenAddress ${o.host ?? "127.0.0.1"}`,
      `HostKey ${hostKey}`,
      `PidFile ${join(o.dir, "sshd.pid")}`,
      `AuthorizedKeysFile ${join(o.dir, "authorized_keys")}`,
      "StrictModes no",
      "UsePAM no",
      "PasswordAuthentication no",
      "KbdInteractiveAuthentication no",
      "PubkeyAuthentication yes",
      "PermitRootLogin prohibit-password",
      "AcceptEnv LANG LC_* TERM TZ VARCO_TEST_*",
      "Subsystem sftp internal-sftp",
      `SetEnv ${sshdQuoted(`HOME=${home}`)}`,
      // Nor the user's ~/.ssh/rc (sshd runs it from the password database's home, whatever HOME says).
      "PermitUserRC no",
      "LogLevel VERBOSE",
      "",
    ].join("\n"),
    { mode: 0o600 },
  );
  const argv = ["/usr/sbin/sshd", "-D", "-f", conf, "-E", logFile];
  const child: ResultPromise = o.netns
    ? execa("ip", ["netns", "exec", o.netns, ...argv], { reject: false, stdio: "ignore" })
    : execa(argv[0] as string, argv.slice(1), { reject: false, stdio: "ignore" });
  if (child.pid === undefined) throw new Error("sshd did not start (is openssh-server installed?)");
  try {
    await waitForPort(port, o.host ?? "127.0.0.1", 10_000, o.netns);
    await new Promise((r) => setTimeout(r, 50));
    if (child.exitCode !== null) throw new PortLostError(`sshd exited (${child.exitCode}); port ${port} was probably taken`);
  } catch (err) {
    child.kill("SIGKILL");
    if (err instanceof PortLostError) throw err;
    throw new Error(`${(err as Error).message}; sshd log: ${existsSync(logFile) ? readFileSync(logFile, "utf8") : "(none)"}`);
  }
  const hostKeyLine = readFileSync(`${hostKey}.pub`, "utf8").trim().split(/\s+/).slice(0, 2).join(" ");
  return { port, user: userInfo().username, hostKeyLine, pid: child.pid, logFile, stop: () => stopChild(child) };
}
