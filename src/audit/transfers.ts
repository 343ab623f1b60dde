/**
 * File-transfer audit by watching the bytes that pass through a channel (never altering them):
 * - SFTP v3 (draft-ietf-secsh-filexfer-02): requests from the client, HANDLE/DATA/STATUS replies.
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
    | "upload"
    | "download"
    | "transfer";
  readonly path: string;
  readonly toPath?: string;
  readonly bytesRead?: number;
  readonly bytesWritten?: number;
  readonly size?: number;
  readonly flags?: string;
  readonly ok?: boolean;
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
function framer(onPacket: (head: Buffer, length: number) => void, headBytes: (type: number, length: number) => number) {
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
} as const;

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

/** Watches an SFTP v3 session. */
export function sftpObserver(emit: (e: FileEvent) => void): TransferObserver {
  type Pending = { op: number; path?: string; toPath?: string; handle?: string; flags?: string; len?: number };
  const pending = new Map<number, Pending>();
  const open = new Map<string, { path: string; flags: string; read: number; written: number }>();
  const safe = (fn: () => void) => {
    try {
      fn();
    } catch {
      /* a malformed packet is the target's or client's problem; the relay carries on */
    }
  };

  const up = framer(
    (p) =>
      safe(() => {
        const type = p.readUInt8(0);
        if (type === SSH_FXP.INIT) return;
        const id = p.readUInt32BE(1);
        let off = 5;
        switch (type) {
          case SSH_FXP.OPEN: {
            const [path, o1] = readString(p, off);
            pending.set(id, { op: type, path: path.toString(), flags: openFlags(p.readUInt32BE(o1)) });
            return;
          }
          case SSH_FXP.CLOSE:
          case SSH_FXP.READ:
          case SSH_FXP.FSETSTAT: {
            const [h, o1] = readString(p, off);
            off = o1;
            pending.set(id, { op: type, handle: h.toString("hex"), ...(type === SSH_FXP.READ ? { len: p.readUInt32BE(off + 8) } : {}) });
            return;
          }
          case SSH_FXP.WRITE: {
            const [h, o1] = readString(p, off);
            const dataLen = p.readUInt32BE(o1 + 8);
            pending.set(id, { op: type, handle: h.toString("hex"), len: dataLen });
            return;
          }
          case SSH_FXP.REMOVE:
          case SSH_FXP.MKDIR:
          case SSH_FXP.RMDIR:
          case SSH_FXP.SETSTAT: {
            const [path] = readString(p, off);
            pending.set(id, { op: type, path: path.toString() });
            return;
          }
          case SSH_FXP.RENAME: {
            const [from, o1] = readString(p, off);
            const [to] = readString(p, o1);
            pending.set(id, { op: type, path: from.toString(), toPath: to.toString() });
            return;
          }
          default:
            return;
        }
      }),
    (type) => (type === SSH_FXP.WRITE ? 4 + 1 + 4 + 4 + 256 + 8 + 4 : 1 + 4 + 8192),
  );

  const statusOk = (p: Buffer) => p.readUInt32BE(5) === 0;
  const down = framer(
    (p, length) =>
      safe(() => {
        const type = p.readUInt8(0);
        if (type === SSH_FXP.VERSION) return;
        const id = p.readUInt32BE(1);
        const req = pending.get(id);
        if (!req) return;
        pending.delete(id);
        if (type === SSH_FXP.HANDLE && req.op === SSH_FXP.OPEN && req.path !== undefined) {
          const [h] = readString(p, 5);
          open.set(h.toString("hex"), { path: req.path, flags: req.flags ?? "", read: 0, written: 0 });
          return;
        }
        if (type === SSH_FXP.DATA && req.op === SSH_FXP.READ && req.handle) {
          const f = open.get(req.handle);
          // DATA: type(1) id(4) string data → data length = packet length - 9.
          if (f) f.read += length - 9;
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
            if (f) emit({ protocol: "sftp", op: "close", path: f.path, flags: f.flags, bytesRead: f.read, bytesWritten: f.written, ok });
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
          default:
            return;
        }
      }),
    (type) => (type === SSH_FXP.DATA ? 1 + 4 : 1 + 4 + 8192),
  );

  return {
    up,
    down,
    finish() {
      for (const f of open.values())
        emit({ protocol: "sftp", op: "close", path: f.path, flags: f.flags, bytesRead: f.read, bytesWritten: f.written, ok: false });
      open.clear();
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
