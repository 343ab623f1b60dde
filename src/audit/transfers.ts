/**
 * File-transfer audit by watching the bytes that pass through a channel (never altering them):
 * - SFTP v3 (draft-ietf-secsh-filexfer-02): requests from the client, HANDLE/DATA/STATUS replies, and
 *   the OpenSSH extensions that change files (OpenSSH PROTOCOL §4: posix-rename, hardlink, lsetstat;
 *   draft-ietf-secsh-filexfer-extensions-00 §7: copy-data).
 * - Legacy scp (`scp -t` sink / `scp -f` source): `C`/`D`/`E`/`T` control lines and file data.
 * The parsers only keep packet headers; file data is counted and skipped, not copied.
 */
import type { ParsedCommand } from "../routing/command.ts";

/** A `parseCommand` result of kind scp. */
export type ScpCommand = Extract<ParsedCommand, { kind: "scp" }>;
/** A `parseCommand` result of kind rsync. */
export type RsyncCommand = Extract<ParsedCommand, { kind: "rsync" }>;

/** One audited file operation. Byte counts are bytes. */
export interface FileEvent {
  readonly protocol: "sftp" | "scp" | "rsync";
  readonly op:
    | "read"
    | "write"
    | "open"
    | "close"
    | "remove"
    | "rename"
    | "mkdir"
    | "rmdir"
    | "setstat"
    | "symlink"
    | "hardlink"
    | "copy"
    | "extended"
    | "upload"
    | "download"
    | "transfer";
  /** For rename/hardlink/symlink/copy: the existing path (symlink: what the link points to). */
  readonly path: string;
  /** For rename/hardlink/symlink/copy: the path created or written. */
  readonly toPath?: string;
  readonly bytesRead?: number;
  readonly bytesWritten?: number;
  readonly size?: number;
  readonly flags?: string;
  /** For op `extended`: the request name of an SFTP extension varco does not know. */
  readonly extension?: string;
  readonly ok?: boolean;
}

/**
 * Why part of a transfer could not be audited (one per channel, the first that happens):
 * - `not_sftp`: the first packet from the user is not INIT or the first from the target is not VERSION,
 *   or a later packet has a type SFTP v3 does not define;
 * - `oversized`: a packet length above 16 MiB (OpenSSH's sftp-server refuses more than 256 KiB);
 * - `overflow`: more unanswered requests or open handles than the observer keeps; the oldest were
 *   dropped, so their replies go unaudited (`dropped` counts them when reported).
 * After `not_sftp` or `oversized` the observer stops parsing the channel.
 */
export interface UnparsedTransfer {
  readonly protocol: "sftp";
  readonly reason: "not_sftp" | "oversized" | "overflow";
  readonly dropped?: number;
}

/** Bounds and callbacks of `sftpObserver`. */
export interface SftpObserverOptions {
  /** Called once per channel when the stream cannot be (fully) audited. */
  readonly onUnparsed?: (u: UnparsedTransfer) => void;
  /** Most unanswered requests kept (default 1000; OpenSSH's sftp client keeps at most 64 by default, `-R`). */
  readonly maxPending?: number;
  /** Most characters of paths kept across unanswered requests (default 1 MiB). */
  readonly maxPendingChars?: number;
  /** Most open handles tracked (default 1000). */
  readonly maxOpen?: number;
}

/** Receives the channel's bytes in both directions. */
export interface TransferObserver {
  /** Bytes from the user towards the target. */
  up(chunk: Buffer): void;
  /** Bytes from the target towards the user. */
  down(chunk: Buffer): void;
  /** The channel closed: report what is still open. */
  finish(): void;
}

/** Frames a byte stream into packets `uint32 length | body`, keeping only the first `headBytes(len, type)` bytes. */
function framer(
  onPacket: (head: Buffer, length: number) => void,
  headBytes: (type: number, length: number) => number,
  onGiveUp: () => void = () => undefined,
) {
  let chunks: Buffer[] = [];
  let have = 0;
  let skip = 0;
  const take = (n: number): Buffer => {
    const out = Buffer.allocUnsafe(n);
    let off = 0;
    while (off < n) {
      const c = chunks[0] as Buffer;
      const k = Math.min(c.length, n - off);
      c.copy(out, off, 0, k);
      off += k;
      if (k === c.length) chunks.shift();
      else chunks[0] = c.subarray(k);
    }
    have -= n;
    return out;
  };
  const peek = (n: number): Buffer => {
    const out = Buffer.allocUnsafe(n);
    let off = 0;
    for (const c of chunks) {
      if (off >= n) break;
      off += c.copy(out, off, 0, Math.min(c.length, n - off));
    }
    return out;
  };
  const drop = (n: number): number => {
    let left = n;
    while (left > 0 && chunks.length > 0) {
      const c = chunks[0] as Buffer;
      if (c.length <= left) {
        left -= c.length;
        chunks.shift();
      } else {
        chunks[0] = c.subarray(left);
        left = 0;
      }
    }
    have -= n - left;
    return left;
  };
  return (chunk: Buffer) => {
    chunks.push(chunk);
    have += chunk.length;
    for (let guard = 0; guard < 1_000_000; guard++) {
      if (skip > 0) {
        skip = drop(skip);
        if (skip > 0) return;
      }
      if (have < 5) return;
      const first = peek(5);
      const length = first.readUInt32BE(0);
      if (length > 16 * 1024 * 1024) {
        // Not SFTP as we know it: stop parsing this stream rather than buffer without bound.
        chunks = [];
        have = 0;
        skip = Number.POSITIVE_INFINITY;
        onGiveUp();
        return;
      }
      const want = Math.min(4 + length, 4 + headBytes(first.readUInt8(4), length));
      if (have < want) return;
      const head = take(want);
      skip = 4 + length - want;
      onPacket(head.subarray(4), length);
    }
  };
}

const SSH_FXP = {
  INIT: 1,
  VERSION: 2,
  OPEN: 3,
  CLOSE: 4,
  READ: 5,
  WRITE: 6,
  LSTAT: 7,
  FSTAT: 8,
  SETSTAT: 9,
  FSETSTAT: 10,
  OPENDIR: 11,
  READDIR: 12,
  REMOVE: 13,
  MKDIR: 14,
  RMDIR: 15,
  REALPATH: 16,
  STAT: 17,
  RENAME: 18,
  READLINK: 19,
  SYMLINK: 20,
  STATUS: 101,
  HANDLE: 102,
  DATA: 103,
  NAME: 104,
  ATTRS: 105,
  EXTENDED: 200,
  EXTENDED_REPLY: 201,
} as const;

/** Packet types of SFTP v3 in each direction; any other type means the stream is not SFTP v3. */
const REQUEST_TYPES = new Set<number>([1, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 200]);
const REPLY_TYPES = new Set<number>([2, 101, 102, 103, 104, 105, 201]);

/** Extended requests that only read (not audited); any other unknown name is audited as `extended`. */
const READ_ONLY_EXTENSIONS = new Set([
  "statvfs@openssh.com",
  "fstatvfs@openssh.com",
  "limits@openssh.com",
  "expand-path@openssh.com",
  "home-directory",
  "users-groups-by-id@openssh.com",
  "fsync@openssh.com",
  "check-file-name",
  "check-file-handle",
  "space-available",
]);

function readString(b: Buffer, off: number): [Buffer, number] {
  const n = b.readUInt32BE(off);
  return [b.subarray(off + 4, off + 4 + n), off + 4 + n];
}

function openFlags(pflags: number): string {
  const f: string[] = [];
  if (pflags & 1) f.push("read");
  if (pflags & 2) f.push("write");
  if (pflags & 4) f.push("append");
  if (pflags & 8) f.push("creat");
  if (pflags & 16) f.push("trunc");
  if (pflags & 32) f.push("excl");
  return f.join(",");
}

/**
 * Watches an SFTP v3 session (draft-ietf-secsh-filexfer-02) and emits one `FileEvent` per file
 * operation when its reply arrives: OPEN (at HANDLE: ok, at STATUS: failed), CLOSE (with the bytes
 * read and written through the handle), REMOVE, MKDIR, RMDIR, SETSTAT/FSETSTAT, RENAME, SYMLINK
 * (OpenSSH argument order, PROTOCOL §4.1: target path first, then the link), and the extensions
 * posix-rename@openssh.com (op rename), hardlink@openssh.com, lsetstat@openssh.com (op setstat),
 * copy-data (op copy, paths of both handles, `size` = requested length, 0 = to the end) and any
 * unknown extension that is not known to be read-only (op extended).
 * State is bounded (`SftpObserverOptions`); what cannot be audited is reported through `onUnparsed`.
 */
export function sftpObserver(emit: (e: FileEvent) => void, options: SftpObserverOptions = {}): TransferObserver {
  const maxPending = options.maxPending ?? 1000;
  const maxPendingChars = options.maxPendingChars ?? 1024 * 1024;
  const maxOpen = options.maxOpen ?? 1000;
  type Pending = {
    op: number;
    path?: string;
    toPath?: string;
    handle?: string;
    toHandle?: string;
    flags?: string;
    len?: number;
    ext?: string;
    chars: number;
  };
  type Open = { path: string; flags: string; read: number; written: number };
  const pending = new Map<number, Pending>();
  let pendingChars = 0;
  const open = new Map<string, Open>();
  let reported = false;
  let dead = false;
  let dropped = 0;
  const unparsed = (reason: UnparsedTransfer["reason"]) => {
    if (reason !== "overflow") {
      dead = true;
      pending.clear();
      pendingChars = 0;
    }
    if (reported) return;
    reported = true;
    options.onUnparsed?.({ protocol: "sftp", reason, ...(reason === "overflow" ? { dropped } : {}) });
  };
  const closeEvent = (f: Open, ok: boolean): FileEvent => ({
    protocol: "sftp",
    op: "close",
    path: f.path,
    flags: f.flags,
    bytesRead: f.read,
    bytesWritten: f.written,
    ok,
  });
  const remember = (id: number, req: Omit<Pending, "chars">) => {
    const old = pending.get(id);
    if (old) {
      pending.delete(id);
      pendingChars -= old.chars;
    }
    const chars = (req.path?.length ?? 0) + (req.toPath?.length ?? 0) + (req.handle?.length ?? 0) + (req.toHandle?.length ?? 0);
    pending.set(id, { ...req, chars });
    pendingChars += chars;
    // Map iteration is insertion order: the first key is the oldest request.
    while (pending.size > maxPending || pendingChars > maxPendingChars) {
      const [oldestId, oldest] = pending.entries().next().value as [number, Pending];
      pending.delete(oldestId);
      pendingChars -= oldest.chars;
      dropped++;
      unparsed("overflow");
    }
  };
  const opened = (handle: string, f: Open) => {
    open.delete(handle);
    open.set(handle, f);
    while (open.size > maxOpen) {
      const [h, oldest] = open.entries().next().value as [string, Open];
      open.delete(h);
      dropped++;
      emit(closeEvent(oldest, false));
      unparsed("overflow");
    }
  };
  const safe = (fn: () => void) => {
    try {
      fn();
    } catch {
      /* a malformed packet is the target's or client's problem; the relay carries on */
    }
  };
  let firstUp = true;
  let firstDown = true;

  const up = framer(
    (p) =>
      safe(() => {
        if (dead) return;
        const type = p.length > 0 ? p.readUInt8(0) : -1;
        if (firstUp) {
          firstUp = false;
          if (type !== SSH_FXP.INIT) return unparsed("not_sftp");
          return;
        }
        if (!REQUEST_TYPES.has(type)) return unparsed("not_sftp");
        if (type === SSH_FXP.INIT) return;
        const id = p.readUInt32BE(1);
        const off = 5;
        switch (type) {
          case SSH_FXP.OPEN: {
            const [path, o1] = readString(p, off);
            remember(id, { op: type, path: path.toString(), flags: openFlags(p.readUInt32BE(o1)) });
            return;
          }
          case SSH_FXP.CLOSE:
          case SSH_FXP.READ:
          case SSH_FXP.FSETSTAT: {
            const [h, o1] = readString(p, off);
            remember(id, { op: type, handle: h.toString("hex"), ...(type === SSH_FXP.READ ? { len: p.readUInt32BE(o1 + 8) } : {}) });
            return;
          }
          case SSH_FXP.WRITE: {
            const [h, o1] = readString(p, off);
            const dataLen = p.readUInt32BE(o1 + 8);
            remember(id, { op: type, handle: h.toString("hex"), len: dataLen });
            return;
          }
          case SSH_FXP.REMOVE:
          case SSH_FXP.MKDIR:
          case SSH_FXP.RMDIR:
          case SSH_FXP.SETSTAT: {
            const [path] = readString(p, off);
            remember(id, { op: type, path: path.toString() });
            return;
          }
          case SSH_FXP.RENAME:
          case SSH_FXP.SYMLINK: {
            const [from, o1] = readString(p, off);
            const [to] = readString(p, o1);
            remember(id, { op: type, path: from.toString(), toPath: to.toString() });
            return;
          }
          case SSH_FXP.EXTENDED: {
            const [nameBuf, o1] = readString(p, off);
            const ext = nameBuf.toString();
            if (READ_ONLY_EXTENSIONS.has(ext)) return;
            if (ext === "posix-rename@openssh.com" || ext === "hardlink@openssh.com") {
              const [from, o2] = readString(p, o1);
              const [to] = readString(p, o2);
              remember(id, { op: type, ext, path: from.toString(), toPath: to.toString() });
            } else if (ext === "lsetstat@openssh.com") {
              const [path] = readString(p, o1);
              remember(id, { op: type, ext, path: path.toString() });
            } else if (ext === "copy-data") {
              // string read-handle, uint64 read-offset, uint64 read-length, string write-handle, uint64 write-offset
              const [from, o2] = readString(p, o1);
              const len = Number(p.readBigUInt64BE(o2 + 8));
              const [to] = readString(p, o2 + 16);
              remember(id, { op: type, ext, handle: from.toString("hex"), toHandle: to.toString("hex"), len });
            } else {
              remember(id, { op: type, ext: ext.slice(0, 256) });
            }
            return;
          }
          default:
            return;
        }
      }),
    (type) => (type === SSH_FXP.WRITE ? 4 + 1 + 4 + 4 + 256 + 8 + 4 : 1 + 4 + 8192),
    () => unparsed("oversized"),
  );

  const statusOk = (p: Buffer) => p.readUInt32BE(5) === 0;
  const down = framer(
    (p, length) =>
      safe(() => {
        if (dead) return;
        const type = p.length > 0 ? p.readUInt8(0) : -1;
        if (firstDown) {
          firstDown = false;
          if (type !== SSH_FXP.VERSION) return unparsed("not_sftp");
          return;
        }
        if (!REPLY_TYPES.has(type)) return unparsed("not_sftp");
        if (type === SSH_FXP.VERSION) return;
        const id = p.readUInt32BE(1);
        const req = pending.get(id);
        if (!req) return;
        pending.delete(id);
        pendingChars -= req.chars;
        if (type === SSH_FXP.HANDLE && req.op === SSH_FXP.OPEN && req.path !== undefined) {
          const [h] = readString(p, 5);
          const flags = req.flags ?? "";
          opened(h.toString("hex"), { path: req.path, flags, read: 0, written: 0 });
          emit({ protocol: "sftp", op: "open", path: req.path, flags, ok: true });
          return;
        }
        if (type === SSH_FXP.DATA && req.op === SSH_FXP.READ && req.handle) {
          const f = open.get(req.handle);
          // DATA: type(1) id(4) string data → data length = packet length - 9.
          if (f) f.read += length - 9;
          return;
        }
        if (type === SSH_FXP.EXTENDED_REPLY && req.op === SSH_FXP.EXTENDED && req.ext && !req.path && !req.handle) {
          emit({ protocol: "sftp", op: "extended", path: "", extension: req.ext, ok: true });
          return;
        }
        if (type !== SSH_FXP.STATUS) return;
        const ok = statusOk(p);
        switch (req.op) {
          case SSH_FXP.WRITE: {
            const f = req.handle ? open.get(req.handle) : undefined;
            if (f && ok) f.written += req.len ?? 0;
            return;
          }
          case SSH_FXP.CLOSE: {
            const f = req.handle ? open.get(req.handle) : undefined;
            if (req.handle) open.delete(req.handle);
            if (f) emit(closeEvent(f, ok));
            return;
          }
          case SSH_FXP.OPEN:
            emit({ protocol: "sftp", op: "open", path: req.path ?? "", flags: req.flags ?? "", ok: false });
            return;
          case SSH_FXP.REMOVE:
            emit({ protocol: "sftp", op: "remove", path: req.path ?? "", ok });
            return;
          case SSH_FXP.MKDIR:
            emit({ protocol: "sftp", op: "mkdir", path: req.path ?? "", ok });
            return;
          case SSH_FXP.RMDIR:
            emit({ protocol: "sftp", op: "rmdir", path: req.path ?? "", ok });
            return;
          case SSH_FXP.SETSTAT:
            emit({ protocol: "sftp", op: "setstat", path: req.path ?? "", ok });
            return;
          case SSH_FXP.FSETSTAT: {
            const f = req.handle ? open.get(req.handle) : undefined;
            emit({ protocol: "sftp", op: "setstat", path: f?.path ?? "", ok });
            return;
          }
          case SSH_FXP.RENAME:
            emit({ protocol: "sftp", op: "rename", path: req.path ?? "", toPath: req.toPath ?? "", ok });
            return;
          case SSH_FXP.SYMLINK:
            emit({ protocol: "sftp", op: "symlink", path: req.path ?? "", toPath: req.toPath ?? "", ok });
            return;
          case SSH_FXP.EXTENDED: {
            if (req.ext === "posix-rename@openssh.com" || req.ext === "hardlink@openssh.com")
              emit({
                protocol: "sftp",
                op: req.ext === "hardlink@openssh.com" ? "hardlink" : "rename",
                path: req.path ?? "",
                toPath: req.toPath ?? "",
                ok,
              });
            else if (req.ext === "lsetstat@openssh.com") emit({ protocol: "sftp", op: "setstat", path: req.path ?? "", ok });
            else if (req.ext === "copy-data") {
              const from = req.handle ? open.get(req.handle) : undefined;
              const to = req.toHandle ? open.get(req.toHandle) : undefined;
              emit({ protocol: "sftp", op: "copy", path: from?.path ?? "", toPath: to?.path ?? "", size: req.len ?? 0, ok });
            } else emit({ protocol: "sftp", op: "extended", path: "", extension: req.ext ?? "", ok });
            return;
          }
          default:
            return;
        }
      }),
    (type) => (type === SSH_FXP.DATA ? 1 + 4 : 1 + 4 + 8192),
    () => unparsed("oversized"),
  );

  return {
    up,
    down,
    finish() {
      for (const f of open.values()) emit(closeEvent(f, false));
      open.clear();
      pending.clear();
      pendingChars = 0;
    },
  };
}

/**
 * Watches a legacy scp exec (the remote end of `scp -O`, as classified by `parseCommand`). In sink
 * mode (`-t`, mode "to") control lines come from the user; in source mode (`-f`, mode "from") from
 * the target. Protocol: OpenSSH scp.c `sink()`/`source()` (`C`/`D`/`E`/`T` lines, data, a \0 status).
 */
export function scpObserver(command: ScpCommand, emit: (e: FileEvent) => void): TransferObserver {
  const sink = command.mode === "to";
  const source = !sink;
  const target = command.path;
  const op = sink ? "upload" : "download";
  const dirs: string[] = [];
  let line: Buffer[] = [];
  let dataLeft = 0;
  let current: { path: string; size: number } | undefined;
  let awaitingNul = false;

  const recursive = command.recursive;
  const parent = target.includes("/") ? target.slice(0, target.lastIndexOf("/")) || "/" : ".";
  /** Where a file named `name` in the current D-stack lands (sink) or comes from (source). */
  const pathOf = (name: string): string => {
    if (source) return [parent, ...dirs, name].join("/").replace(/\/\/+/g, "/");
    if (dirs.length === 0 && !recursive) return target.endsWith("/") ? `${target}${name}` : target;
    return [target, ...dirs, name].join("/").replace(/\/\/+/g, "/");
  };

  const onLine = (text: string) => {
    const kind = text[0];
    if (kind === "C") {
      const m = /^C[0-7]{4} (\d+) (.+)$/.exec(text);
      if (!m) return;
      current = { path: pathOf(m[2] as string), size: Number(m[1]) };
      dataLeft = current.size;
      awaitingNul = true;
      if (dataLeft === 0) {
        emit({ protocol: "scp", op, path: current.path, size: 0 });
        current = undefined;
      }
    } else if (kind === "D") {
      const m = /^D[0-7]{4} \d+ (.+)$/.exec(text);
      if (m) dirs.push(m[1] as string);
    } else if (kind === "E") {
      dirs.pop();
    }
  };

  const feed = (chunk: Buffer) => {
    let off = 0;
    for (let guard = 0; off < chunk.length && guard < 1_000_000; guard++) {
      if (dataLeft > 0) {
        const k = Math.min(dataLeft, chunk.length - off);
        dataLeft -= k;
        off += k;
        if (dataLeft === 0 && current) {
          emit({ protocol: "scp", op, path: current.path, size: current.size });
          current = undefined;
        }
        continue;
      }
      if (awaitingNul) {
        // The byte after the file data is the sender's \0 status.
        awaitingNul = false;
        off += 1;
        continue;
      }
      const nl = chunk.indexOf(0x0a, off);
      if (nl === -1) {
        line.push(chunk.subarray(off));
        if (line.reduce((a, b) => a + b.length, 0) > 64 * 1024) line = [];
        return;
      }
      line.push(chunk.subarray(off, nl));
      const text = Buffer.concat(line).toString("utf8");
      line = [];
      off = nl + 1;
      onLine(text.replace(/^\0+/, ""));
    }
  };

  return {
    up: sink ? feed : () => undefined,
    down: source ? feed : () => undefined,
    finish() {
      if (current) emit({ protocol: "scp", op, path: current.path, size: current.size - dataLeft });
    },
  };
}

/**
 * rsync's protocol is not parsed: the paths come from the server command line (`parseCommand`),
 * the size from the channel's bytes. `--sender` means the target sends: a download.
 */
export function rsyncPaths(command: RsyncCommand): { direction: "upload" | "download"; paths: readonly string[] } {
  return { direction: command.sender ? "download" : "upload", paths: command.paths };
}
