/**
 * Ready-to-paste `~/.ssh/config` blocks for one user (pure): one `Host` per alias the user may
 * reach, with connection sharing so that one login (password and code) serves every later `ssh`,
 * `scp`, `rsync` and `git` to that alias for a while (ssh_config(5): ControlMaster, ControlPath,
 * ControlPersist), and the gateway's host key line for `known_hosts` (sshd(8) SSH_KNOWN_HOSTS FILE
 * FORMAT). Used by `varco user ssh-config` and by `ssh uid@gateway ssh-config` inside a session.
 */
import { parse } from "shell-quote";
import { printable } from "../obs/printable.ts";

/** How long a shared connection stays open after its last session (ssh_config(5) ControlPersist). */
export const CONTROL_PERSIST = "10m";

export interface SshConfigInput {
  /** The canonical uid (the part before the last `_` of the SSH user name). */
  readonly uid: string;
  readonly routes: ReadonlyArray<{ alias: string; description: string | undefined }>;
  /** Where users reach the gateway (its public name or VIP). */
  readonly host: string;
  readonly port: number;
  /** The gateway's host public keys (`ssh-ed25519 AAAA…`). */
  readonly hostKeys: readonly string[];
}

/** A word that ssh_config(5) reads as one token: no whitespace, quotes, `#`, `%` or control characters. */
const CONFIG_WORD = /^[\p{L}\p{N}._@+-]+$/u;
/** A host name (RFC 1123 labels) or an IPv4 address. */
const HOST_NAME = /^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?$/;
const IPV4 = /^(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)$/;

/** Whether `text` is an IPv6 address in text form (RFC 4291 §2.2: hex groups, one `::`, an IPv4 tail). */
function isIPv6(text: string): boolean {
  if (text.length < 2 || text.length > 45) return false;
  const halves = text.split("::");
  if (halves.length > 2) return false;
  const groups = (part: string): string[] | undefined => (part === "" ? [] : part.split(":"));
  const head = groups(halves[0] ?? "");
  const tail = halves.length === 2 ? groups(halves[1] ?? "") : [];
  if (!head || !tail) return false;
  const all = [...head, ...tail];
  let count = all.length;
  const last = all[all.length - 1];
  if (last?.includes(".")) {
    if (!IPV4.test(last)) return false;
    all.pop();
    count += 1; // an IPv4 tail stands for two groups
  }
  if (!all.every((g) => /^[0-9A-Fa-f]{1,4}$/.test(g))) return false;
  return halves.length === 2 ? count <= 7 : count === 8;
}

/**
 * Parses a gateway address `HOST[:PORT]` or `[IPV6]:PORT` as given to `--gateway`. Only host
 * names, IPv4 and IPv6 addresses and ports 1–65535 pass: the host is written into an ssh_config
 * file and a known_hosts line, where a space or a newline would add options of its own.
 * @returns the host (IPv6 without brackets) and port (default 22), or `undefined` when malformed.
 */
export function parseGatewayAddress(text: string): { host: string; port: number } | undefined {
  if (text.length > 300) return undefined;
  let host: string;
  let portText: string | undefined;
  const bracketed = /^\[([^\]]*)\](?::(\d{1,5}))?$/.exec(text);
  if (bracketed) {
    host = bracketed[1] ?? "";
    portText = bracketed[2];
    if (!isIPv6(host)) return undefined;
  } else if (text.split(":").length > 2) {
    // A bare IPv6 address (no port: write [ADDRESS]:PORT for one).
    host = text;
    if (!isIPv6(host)) return undefined;
  } else {
    const [name = "", p] = text.split(":");
    host = name;
    portText = p;
    if (!HOST_NAME.test(host) || (portText !== undefined && !/^\d{1,5}$/.test(portText))) return undefined;
  }
  const port = portText === undefined ? 22 : Number(portText);
  if (port < 1 || port > 65535) return undefined;
  return { host, port };
}

/**
 * The `Host` blocks and the known_hosts lines, as text (pure). `%C` keeps ControlPath short and per
 * destination. Descriptions are escaped ({@link printable}) into comments.
 * @throws TypeError when the uid, an alias or the host is not a single safe ssh_config word (the
 *   policy schema and {@link parseGatewayAddress} keep them so; this is the last line of defence).
 */
export function renderSshConfig(o: SshConfigInput): string {
  const hostOk = HOST_NAME.test(o.host) || isIPv6(o.host);
  if (!CONFIG_WORD.test(o.uid) || !hostOk || !Number.isInteger(o.port)) throw new TypeError("ssh-config: unsafe uid or gateway host");
  for (const r of o.routes) if (!CONFIG_WORD.test(r.alias)) throw new TypeError("ssh-config: unsafe alias");
  const out: string[] = [`# varco: ${o.uid} through ${o.host}${o.port === 22 ? "" : `:${o.port}`} (paste into ~/.ssh/config)`];
  for (const r of o.routes) {
    out.push(
      "",
      `Host ${r.alias}`,
      ...(r.description ? [`    # ${printable(r.description, 200)}`] : []),
      `    HostName ${o.host}`,
      ...(o.port === 22 ? [] : [`    Port ${o.port}`]),
      `    User ${o.uid}_${r.alias}`,
      "    ControlMaster auto",
      "    ControlPath ~/.ssh/varco-%C",
      `    ControlPersist ${CONTROL_PERSIST}`,
    );
  }
  const name = o.port === 22 ? o.host : `[${o.host}]:${o.port}`;
  const keys = o.hostKeys.map((k) => printable(k, 16_384));
  out.push("", "# The gateway's host key (add to ~/.ssh/known_hosts):", ...keys.map((k) => `# ${name} ${k}`));
  return `${out.join("\n")}\n`;
}

/** What a no-alias login's exec of `ssh-config …` asks for. */
export type SshConfigCommand =
  | { readonly kind: "ssh-config"; readonly gateway: { host: string; port: number } | undefined }
  | { readonly kind: "invalid"; readonly message: string };

/** Longest `ssh-config` command line considered (bytes of UTF-16; anything longer is not one). */
const MAX_COMMAND = 512;
export const SSH_CONFIG_USAGE = "usage: ssh-config [--gateway HOST[:PORT]]";

/**
 * Parses the exec command of a login without an alias (shell-quote, no expansion): exactly
 * `ssh-config`, `ssh-config --gateway HOST[:PORT]` or `ssh-config --gateway=HOST[:PORT]`.
 * @returns `undefined` when the command is not an `ssh-config` request at all (the caller refuses it
 *   as any other exec), `invalid` when it starts with `ssh-config` but anything else is in it (an
 *   operator, a glob, a variable, another argument, a malformed address).
 */
export function parseSshConfigCommand(command: string): SshConfigCommand | undefined {
  if (command.length > MAX_COMMAND)
    return command.trimStart().startsWith("ssh-config") ? { kind: "invalid", message: SSH_CONFIG_USAGE } : undefined;
  // Variables are kept as written (`$X` stays `$X`), so nothing of the gateway's environment is read.
  const words = parse(command, (name: string) => `$${name}`);
  if (words[0] !== "ssh-config") return undefined;
  const args = words.slice(1);
  if (!args.every((w): w is string => typeof w === "string")) return { kind: "invalid", message: SSH_CONFIG_USAGE };
  let address: string | undefined;
  if (args.length === 2 && args[0] === "--gateway") address = args[1];
  else if (args.length === 1 && args[0]?.startsWith("--gateway=")) address = args[0].slice("--gateway=".length);
  else if (args.length !== 0) return { kind: "invalid", message: SSH_CONFIG_USAGE };
  if (address === undefined) return { kind: "ssh-config", gateway: undefined };
  const gateway = parseGatewayAddress(address);
  if (!gateway) return { kind: "invalid", message: `--gateway: "${printable(address, 80)}" is not HOST[:PORT]` };
  return { kind: "ssh-config", gateway };
}
