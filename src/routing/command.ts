/**
 * What an SSH `exec` request really runs. The command string of an exec request (RFC 4254 §6.5)
 * is handed by the target's sshd to the user's login shell (`$SHELL -c COMMAND`, sshd(8)), so
 * a string that *starts* with `scp` may run anything after a `;`. A command is classified as a
 * file transfer (scp / rsync / git / sftp-server) only when it is exactly the command line the
 * OpenSSH 9.2, rsync 3.x and git clients send, with no character any shell (sh, bash, zsh, csh,
 * fish) could read as anything but a literal or a word separator. Everything else is `exec`.
 *
 * Pure: no I/O. Words are split with `shell-quote` after a strict character check, because
 * shell-quote alone disagrees with real shells (backticks, newlines, unbalanced quotes, `a#b`).
 */
import { parse } from "shell-quote";

/** The git services a client runs over SSH (git-upload-pack(1), git-receive-pack(1), git-upload-archive(1)). */
export type GitService = "git-upload-pack" | "git-receive-pack" | "git-upload-archive";

/** A classified exec command. Paths are as the client sent them (relative to the target login's home). */
export type ParsedCommand =
  /** Legacy scp (`scp -O`): `-t` = sink, files go *to* the target (upload); `-f` = source, *from* it (download). */
  | { readonly kind: "scp"; readonly mode: "to" | "from"; readonly recursive: boolean; readonly path: string }
  /** `rsync --server`: `sender` = the target sends (download). */
  | { readonly kind: "rsync"; readonly sender: boolean; readonly paths: readonly string[] }
  | { readonly kind: "git"; readonly service: GitService; readonly path: string }
  /** The SFTP server binary run as a command (`sftp -s /usr/lib/openssh/sftp-server`). */
  | { readonly kind: "sftp"; readonly program: string }
  /** Anything else; `argv` holds the words for display when the line has no shell operators, globs or comments. */
  | { readonly kind: "exec"; readonly argv: readonly string[] | undefined };

/** Where distributions install OpenSSH's sftp-server (Debian/Ubuntu, RHEL/Fedora/SUSE, BSD/macOS). */
export const SFTP_SERVER_PATHS: readonly string[] = [
  "/usr/lib/openssh/sftp-server",
  "/usr/libexec/openssh/sftp-server",
  "/usr/libexec/sftp-server",
];

const GIT_SERVICES: readonly GitService[] = ["git-upload-pack", "git-receive-pack", "git-upload-archive"];

/**
 * Characters that are never accepted in a transfer command, quoted or not: control characters
 * (incl. TAB, CR, LF, NUL, C1), shell operators and redirections `; & | < > ( )`, expansions
 * `$ \``, globs `* ? [ ]`, brace expansion `{ }`, comments `#`, history `!` (bash, csh),
 * Bourne's pipe `^`, double quotes, Unicode line separators / bidi overrides (misleading in audit views),
 * and Unicode spaces and zero-width characters (shell-quote splits words on JavaScript's `\s`, shells on
 * ASCII space and tab only: the audited words would not be the program's).
 */
const FORBIDDEN =
  // biome-ignore lint/suspicious/noControlCharactersInRegex: rejecting control characters is the point
  /[\u0000-\u001f\u007f-\u00a0;&|<>()$`*?[\]{}#!^"\u1680\u2000-\u200f\u2028-\u202f\u205f\u2066-\u2069\u3000\ufeff]/;

/**
 * True when `command` uses only literal characters, spaces as separators, balanced single quotes
 * without a backslash inside them, and backslash escapes outside quotes (as rsync sends `a\ b`).
 */
function plainLine(command: string): boolean {
  if (command.length === 0 || command.length > 16 * 1024 || FORBIDDEN.test(command)) return false;
  let quoted = false;
  for (let i = 0; i < command.length; i++) {
    const c = command[i];
    if (quoted) {
      if (c === "'") quoted = false;
      else if (c === "\\") return false; // fish reads \' inside single quotes; POSIX shells do not
    } else if (c === "'") quoted = true;
    else if (c === "\\") {
      if (i + 1 >= command.length) return false;
      i++;
    }
  }
  return !quoted;
}

/** Splits `command` into words, or undefined when shell-quote sees operators, globs, comments or expansions. */
function words(command: string): string[] | undefined {
  const out: string[] = [];
  // A `$NAME` becomes an object, so an expansion never passes as a literal word.
  for (const t of parse(command, (name) => ({ op: "glob" as const, pattern: `$${name}` }))) {
    if (typeof t !== "string") return undefined;
    out.push(t);
  }
  return out;
}

const isOperand = (w: string | undefined): w is string => w !== undefined && w.length > 0 && !w.startsWith("-");

/** `scp [-r|-p|-d|-v|-q…] -t|-f [--] PATH` (OpenSSH scp.c, legacy protocol: the remote end of `scp -O`). */
function scp(argv: readonly string[]): ParsedCommand | undefined {
  let mode: "to" | "from" | undefined;
  let recursive = false;
  let i = 1;
  for (; i < argv.length; i++) {
    const w = argv[i] as string;
    if (w === "--") {
      i++;
      break;
    }
    if (!/^-[rpdvqtf]+$/.test(w)) break;
    for (const f of w.slice(1)) {
      if (f === "t" || f === "f") {
        if (mode !== undefined) return undefined; // -t and -f together, or twice
        mode = f === "t" ? "to" : "from";
      } else if (f === "r") recursive = true;
    }
  }
  const path = argv[i];
  if (mode === undefined || i !== argv.length - 1 || !isOperand(path)) return undefined;
  return { kind: "scp", mode, recursive, path };
}

/**
 * The long options an rsync 3.x client passes to its server (rsync's options.c server_options()),
 * that only shape the transfer. Anything else (`--daemon`, `--config`, `--log-file`, `--*-batch`,
 * `--remote-option`, …) makes the command an ordinary exec: it then needs `allow.exec` and is
 * recorded like any other command. A `no-` prefix of an allowed option is allowed too.
 */
const RSYNC_LONG_ALLOWED = new Set([
  "append",
  "append-verify",
  "backup-dir",
  "checksum-choice",
  "checksum-seed",
  "chmod",
  "compare-dest",
  "compress-choice",
  "compress-level",
  "copy-dest",
  "copy-unsafe-links",
  "debug",
  "delay-updates",
  "delete",
  "delete-after",
  "delete-before",
  "delete-delay",
  "delete-during",
  "delete-excluded",
  "delete-missing-args",
  "existing",
  "fake-super",
  "force",
  "from0",
  "groupmap",
  "iconv",
  "ignore-errors",
  "ignore-existing",
  "ignore-missing-args",
  "info",
  "inplace",
  "link-dest",
  "list-only",
  "log-format",
  "max-alloc",
  "max-delete",
  "max-size",
  "min-size",
  "mkpath",
  "modify-window",
  "msgs2stderr",
  "munge-links",
  "numeric-ids",
  "partial",
  "partial-dir",
  "preallocate",
  "remove-source-files",
  "safe-links",
  "size-only",
  "stop-at",
  "suffix",
  "temp-dir",
  "time-limit",
  "timeout",
  "bwlimit",
  "usermap",
  "implied-dirs",
  "r",
]);
/** Long options rsync's client passes to the server as two words (`--partial-dir DIR`), per rsync's options.c server_options(). */
const RSYNC_WITH_VALUE = new Set(["backup-dir", "partial-dir", "temp-dir", "link-dest", "compare-dest", "copy-dest"]);

/**
 * `rsync --server [--sender] OPTIONS . PATH…` (rsync's server_options(): short flags in one word,
 * `-e.CAPS` compatibility letters, the long options of RSYNC_LONG_ALLOWED). `-s` (protect-args) is
 * not a transfer: its options come on stdin, unchecked.
 */
function rsync(argv: readonly string[]): ParsedCommand | undefined {
  if (argv[1] !== "--server") return undefined;
  let i = 2;
  const sender = argv[i] === "--sender";
  if (sender) i++;
  for (; i < argv.length; i++) {
    const w = argv[i] as string;
    if (w === ".") break;
    const short = /^-([A-Za-z0-9]+)(\.[A-Za-z]*)?$/.exec(w);
    if (short) {
      const flags = short[1] as string;
      if (flags.includes("M")) return undefined; // --remote-option
      // -s (--protect-args / --secluded-args): the real options then arrive on stdin, where nobody
      // checks them (`--daemon --config=…` would run what a config file says): an ordinary exec.
      if (flags.includes("s")) return undefined;
      continue;
    }
    const long = /^--([a-z][a-z0-9-]*)(=.*)?$/.exec(w);
    const name = long?.[1]?.replace(/^no-/, "");
    if (!long || name === undefined || !RSYNC_LONG_ALLOWED.has(name)) return undefined;
    if (long[2] === undefined && RSYNC_WITH_VALUE.has(long[1] as string)) {
      if (!isOperand(argv[i + 1])) return undefined;
      i++;
    }
  }
  if (i >= argv.length) return undefined;
  const paths = argv.slice(i + 1);
  if (!paths.every(isOperand)) return undefined;
  return { kind: "rsync", sender, paths };
}

/** `git-upload-pack 'PATH'` and siblings: exactly one path (git's connect.c quotes it with single quotes). */
function git(argv: readonly string[]): ParsedCommand | undefined {
  const service = GIT_SERVICES.find((s) => s === argv[0]);
  const path = argv[1];
  if (!service || argv.length !== 2 || !isOperand(path)) return undefined;
  return { kind: "git", service, path };
}

/**
 * Classifies an exec request's command line. Never throws.
 *
 * Transfers (OpenSSH 9.2 / rsync 3.x / git 2.39 clients, checked by running each with a fake `ssh`):
 * - `scp -O` sends `scp [-r] [-p] [-d] -t|-f PATH` (path unquoted: it is meant for the remote shell);
 * - `rsync -e ssh` sends `rsync --server [--sender] -FLAGS[e.CAPS] [--long…] . PATH…` (spaces as `\ `);
 * - git sends `git-upload-pack 'PATH'`, `git-receive-pack 'PATH'`, `git-upload-archive 'PATH'`;
 * - `sftp -s /usr/lib/openssh/sftp-server` sends that path as an exec command.
 * The program must be written literally at the start of the line (no `env`, `exec`, `VAR=x`,
 * `/usr/bin/scp`, quoted or upper-case spellings). A transfer path that needs the remote shell
 * (globs like `*.txt`, `$HOME`) makes the command an `exec`.
 */
export function parseCommand(command: string): ParsedCommand {
  const exec = (): ParsedCommand => {
    let argv: string[] | undefined;
    try {
      argv = words(command);
    } catch {
      argv = undefined;
    }
    return { kind: "exec", argv };
  };
  if (!plainLine(command)) return exec();
  const argv = words(command);
  const program = /^[^ ]+/.exec(command)?.[0];
  if (!argv || program === undefined || program !== argv[0]) return exec();
  const parsed =
    program === "scp"
      ? scp(argv)
      : program === "rsync"
        ? rsync(argv)
        : SFTP_SERVER_PATHS.includes(program) && argv.length === 1
          ? ({ kind: "sftp", program } as const)
          : git(argv);
  return parsed ?? { kind: "exec", argv };
}

/** True for the commands that move files (scp, rsync, git, sftp-server): audited as transfers, not recorded as terminals. */
export function isTransfer(c: ParsedCommand): c is Exclude<ParsedCommand, { kind: "exec" }> {
  return c.kind !== "exec";
}
