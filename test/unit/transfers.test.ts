import { describe, expect, it } from "vitest";
import { type FileEvent, rsyncPaths, scpObserver, sftpObserver } from "../../src/audit/index.ts";
import type { UnparsedTransfer } from "../../src/audit/transfers.ts";
import { type ParsedCommand, parseCommand } from "../../src/routing/index.ts";

/** parseCommand(line), which must be of `kind`. */
function parsed<K extends ParsedCommand["kind"]>(kind: K, line: string): Extract<ParsedCommand, { kind: K }> {
  const c = parseCommand(line);
  if (c.kind !== kind) throw new Error(`${line} parsed as ${c.kind}`);
  return c as Extract<ParsedCommand, { kind: K }>;
}

const u32 = (n: number) => {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n);
  return b;
};
const u64 = (n: number) => Buffer.concat([u32(0), u32(n)]);
const str = (s: string | Buffer) => {
  const b = Buffer.isBuffer(s) ? s : Buffer.from(s);
  return Buffer.concat([u32(b.length), b]);
};
const packet = (type: number, ...parts: Buffer[]) => {
  const body = Buffer.concat([Buffer.from([type]), ...parts]);
  return Buffer.concat([u32(body.length), body]);
};

/** Feeds `data` split into pieces of `size` bytes (1 = worst case). */
const feed = (fn: (b: Buffer) => void, data: Buffer, size: number) => {
  for (let i = 0; i < data.length; i += size) fn(data.subarray(i, i + size));
};

describe("SFTP v3 observer", () => {
  const handle = Buffer.from("h1");
  const payload = Buffer.alloc(5000, 7);
  const up = Buffer.concat([
    packet(1, u32(3)), // INIT
    packet(3, u32(1), str("/data/report.pdf"), u32(0x1a), u32(0)), // OPEN write|creat|trunc
    packet(6, u32(2), str(handle), u64(0), str(payload)), // WRITE
    packet(6, u32(3), str(handle), u64(5000), str(payload)), // WRITE
    packet(4, u32(4), str(handle)), // CLOSE
    packet(18, u32(5), str("/data/a"), str("/data/b")), // RENAME
    packet(13, u32(6), str("/data/old")), // REMOVE
  ]);
  const ok = (id: number) => packet(101, u32(id), u32(0), str(""), str(""));
  const down = Buffer.concat([
    packet(2, u32(3)),
    packet(102, u32(1), str(handle)),
    ok(2),
    ok(3),
    ok(4),
    ok(5),
    packet(101, u32(6), u32(2), str("no such file"), str("")),
  ]);

  for (const size of [1, 7, 1 << 20]) {
    it(`reports open/write/close, rename and a failed remove (chunks of ${size} bytes)`, () => {
      const events: FileEvent[] = [];
      const o = sftpObserver((e) => events.push(e));
      feed(o.up, up, size);
      feed(o.down, down, size);
      o.finish();
      expect(events).toEqual([
        { protocol: "sftp", op: "open", path: "/data/report.pdf", flags: "write,creat,trunc", ok: true },
        {
          protocol: "sftp",
          op: "close",
          path: "/data/report.pdf",
          flags: "write,creat,trunc",
          bytesRead: 0,
          bytesWritten: 10000,
          ok: true,
        },
        { protocol: "sftp", op: "rename", path: "/data/a", toPath: "/data/b", ok: true },
        { protocol: "sftp", op: "remove", path: "/data/old", ok: false },
      ]);
    });
  }

  it("counts bytes read from DATA replies", () => {
    const events: FileEvent[] = [];
    const o = sftpObserver((e) => events.push(e));
    o.up(
      Buffer.concat([
        packet(1, u32(3)),
        packet(3, u32(1), str("/f"), u32(1), u32(0)),
        packet(5, u32(2), str(handle), u64(0), u32(32768)),
        packet(4, u32(3), str(handle)),
      ]),
    );
    o.down(
      Buffer.concat([
        packet(2, u32(3)),
        packet(102, u32(1), str(handle)),
        packet(103, u32(2), str(Buffer.alloc(1234))),
        packet(101, u32(3), u32(0), str(""), str("")),
      ]),
    );
    expect(events.map((e) => e.op)).toEqual(["open", "close"]);
    expect(events[1]).toMatchObject({ op: "close", path: "/f", bytesRead: 1234, bytesWritten: 0 });
  });

  it("gives up on a stream that is not SFTP instead of buffering it", () => {
    const unparsed: UnparsedTransfer[] = [];
    const o = sftpObserver(() => undefined, { onUnparsed: (u) => unparsed.push(u) });
    expect(() => o.up(Buffer.from([0xff, 0xff, 0xff, 0xff, 1, 2, 3]))).not.toThrow();
    o.up(Buffer.alloc(1 << 20, 0xff));
    expect(unparsed).toEqual([{ protocol: "sftp", reason: "oversized" }]);
  });
});

/** An observer past INIT/VERSION, collecting events and unparsed reports. */
function session(opts: { maxPending?: number; maxPendingChars?: number; maxOpen?: number } = {}) {
  const events: FileEvent[] = [];
  const unparsed: UnparsedTransfer[] = [];
  const o = sftpObserver((e) => events.push(e), { ...opts, onUnparsed: (u) => unparsed.push(u) });
  o.up(packet(1, u32(3)));
  o.down(packet(2, u32(3)));
  return { o, events, unparsed };
}
const status = (id: number, code = 0) => packet(101, u32(id), u32(code), str(""), str(""));
const ext = (id: number, name: string, ...parts: Buffer[]) => packet(200, u32(id), str(name), ...parts);

describe("SFTP operations that change files", () => {
  // Requests and their replies, each fed in chunks of 1 byte and in one piece.
  const cases: Array<[string, Buffer, Buffer, FileEvent]> = [
    ["REMOVE", packet(13, u32(1), str("/d/x")), status(1), { protocol: "sftp", op: "remove", path: "/d/x", ok: true }],
    ["MKDIR", packet(14, u32(1), str("/d/new"), u32(0)), status(1), { protocol: "sftp", op: "mkdir", path: "/d/new", ok: true }],
    ["RMDIR", packet(15, u32(1), str("/d/old")), status(1, 4), { protocol: "sftp", op: "rmdir", path: "/d/old", ok: false }],
    ["SETSTAT", packet(9, u32(1), str("/d/f"), u32(4), u32(0o777)), status(1), { protocol: "sftp", op: "setstat", path: "/d/f", ok: true }],
    ["RENAME", packet(18, u32(1), str("/a"), str("/b")), status(1), { protocol: "sftp", op: "rename", path: "/a", toPath: "/b", ok: true }],
    [
      // OpenSSH order (PROTOCOL §4.1): target path first, then the link created.
      "SYMLINK",
      packet(20, u32(1), str("/etc/shadow"), str("/home/u/link")),
      status(1),
      { protocol: "sftp", op: "symlink", path: "/etc/shadow", toPath: "/home/u/link", ok: true },
    ],
    [
      "posix-rename@openssh.com",
      ext(1, "posix-rename@openssh.com", str("/x/a"), str("/x/b")),
      status(1),
      { protocol: "sftp", op: "rename", path: "/x/a", toPath: "/x/b", ok: true },
    ],
    [
      "hardlink@openssh.com",
      ext(1, "hardlink@openssh.com", str("/etc/passwd"), str("/tmp/p")),
      status(1, 3),
      { protocol: "sftp", op: "hardlink", path: "/etc/passwd", toPath: "/tmp/p", ok: false },
    ],
    [
      "lsetstat@openssh.com",
      ext(1, "lsetstat@openssh.com", str("/l"), u32(0)),
      status(1),
      { protocol: "sftp", op: "setstat", path: "/l", ok: true },
    ],
    [
      "an unknown extension",
      ext(1, "evil-write@example.com", str("/anything")),
      status(1),
      { protocol: "sftp", op: "extended", path: "", extension: "evil-write@example.com", ok: true },
    ],
    [
      "an unknown extension answered with EXTENDED_REPLY",
      ext(1, "evil-write@example.com"),
      packet(201, u32(1), str("x")),
      { protocol: "sftp", op: "extended", path: "", extension: "evil-write@example.com", ok: true },
    ],
  ];
  for (const [name, req, reply, event] of cases) {
    for (const size of [1, 1 << 20]) {
      it(`audits ${name} with its paths (chunks of ${size})`, () => {
        const { o, events, unparsed } = session();
        feed(o.up, req, size);
        expect(events).toEqual([]); // only at the reply
        feed(o.down, reply, size);
        expect(events).toEqual([event]);
        expect(unparsed).toEqual([]);
      });
    }
  }

  it("does not audit read-only extensions (statvfs, limits)", () => {
    const { o, events } = session();
    o.up(Buffer.concat([ext(1, "statvfs@openssh.com", str("/")), ext(2, "limits@openssh.com")]));
    o.down(Buffer.concat([packet(201, u32(1), str("x")), packet(201, u32(2), str("y"))]));
    expect(events).toEqual([]);
  });

  it("audits copy-data with the paths of both handles and the length", () => {
    const { o, events } = session();
    const h1 = Buffer.from("src-handle");
    const h2 = Buffer.from("dst-handle");
    o.up(
      Buffer.concat([
        packet(3, u32(1), str("/secret/db.sqlite"), u32(1), u32(0)),
        packet(3, u32(2), str("/tmp/copy"), u32(0x1a), u32(0)),
        ext(3, "copy-data", str(h1), u64(0), u64(0), str(h2), u64(0)),
      ]),
    );
    o.down(Buffer.concat([packet(102, u32(1), str(h1)), packet(102, u32(2), str(h2)), status(3)]));
    expect(events).toEqual([
      { protocol: "sftp", op: "open", path: "/secret/db.sqlite", flags: "read", ok: true },
      { protocol: "sftp", op: "open", path: "/tmp/copy", flags: "write,creat,trunc", ok: true },
      { protocol: "sftp", op: "copy", path: "/secret/db.sqlite", toPath: "/tmp/copy", size: 0, ok: true },
    ]);
  });

  it("audits a successful OPEN at its HANDLE reply (a transfer cut before CLOSE leaves a trace) and a refused one at STATUS", () => {
    const { o, events } = session();
    o.up(Buffer.concat([packet(3, u32(1), str("/ok"), u32(2), u32(0)), packet(3, u32(2), str("/denied"), u32(1), u32(0))]));
    o.down(packet(102, u32(1), str("h")));
    expect(events).toEqual([{ protocol: "sftp", op: "open", path: "/ok", flags: "write", ok: true }]);
    o.down(status(2, 3));
    expect(events[1]).toEqual({ protocol: "sftp", op: "open", path: "/denied", flags: "read", ok: false });
  });

  it("ignores a reply to a request that was never made (a target cannot invent events)", () => {
    const { o, events } = session();
    o.down(Buffer.concat([packet(102, u32(77), str("h")), status(78)]));
    expect(events).toEqual([]);
  });
});

describe("SFTP observer bounds and non-SFTP streams", () => {
  it("keeps at most maxPending unanswered requests: 20 000 OPENs drop the oldest, reported once", () => {
    const { o, events, unparsed } = session({ maxPending: 1000 });
    const batch: Buffer[] = [];
    for (let id = 1; id <= 20_000; id++) batch.push(packet(3, u32(id), str(`/f/${id}`), u32(1), u32(0)));
    o.up(Buffer.concat(batch));
    expect(unparsed).toEqual([{ protocol: "sftp", reason: "overflow", dropped: 1 }]);
    // The oldest are gone; the newest 1000 are still answered.
    o.down(Buffer.concat([packet(102, u32(1), str("old")), packet(102, u32(19_001), str("a")), packet(102, u32(20_000), str("b"))]));
    expect(events.map((e) => e.path)).toEqual(["/f/19001", "/f/20000"]);
    o.down(packet(102, u32(19_000), str("c")));
    expect(events).toHaveLength(2);
  });

  it("bounds the characters kept for unanswered requests (long paths)", () => {
    const { o, events, unparsed } = session({ maxPendingChars: 64 * 1024 });
    const long = (i: number) => `/${String(i).padStart(4, "0")}${"x".repeat(8000)}`;
    for (let id = 1; id <= 100; id++) o.up(packet(13, u32(id), str(long(id))));
    expect(unparsed).toMatchObject([{ reason: "overflow" }]);
    o.down(Buffer.concat([status(1), status(100)]));
    expect(events.map((e) => e.path.slice(0, 5))).toEqual(["/0100"]);
  });

  it("bounds open handles: the oldest is reported closed (not ok) with what was seen", () => {
    const { o, events, unparsed } = session({ maxOpen: 2 });
    for (let id = 1; id <= 3; id++) {
      o.up(packet(3, u32(id), str(`/o${id}`), u32(1), u32(0)));
      o.down(packet(102, u32(id), str(`h${id}`)));
    }
    expect(events.filter((e) => e.op === "close")).toEqual([
      { protocol: "sftp", op: "close", path: "/o1", flags: "read", bytesRead: 0, bytesWritten: 0, ok: false },
    ]);
    expect(unparsed).toMatchObject([{ reason: "overflow" }]);
  });

  it("flags a client whose first packet is not INIT (a shell behind the sftp subsystem) and stops parsing", () => {
    const events: FileEvent[] = [];
    const unparsed: UnparsedTransfer[] = [];
    const o = sftpObserver((e) => events.push(e), { onUnparsed: (u) => unparsed.push(u) });
    // A well-framed packet of another type first, then real-looking SFTP.
    o.up(packet(13, u32(1), str("/x")));
    o.up(packet(1, u32(3)));
    o.up(packet(13, u32(2), str("/y")));
    o.down(Buffer.concat([packet(2, u32(3)), status(2)]));
    expect(unparsed).toEqual([{ protocol: "sftp", reason: "not_sftp" }]);
    expect(events).toEqual([]);
  });

  it("flags a target whose first packet is not VERSION", () => {
    const unparsed: UnparsedTransfer[] = [];
    const o = sftpObserver(() => undefined, { onUnparsed: (u) => unparsed.push(u) });
    o.up(packet(1, u32(3)));
    o.down(packet(101, u32(0), u32(0), str(""), str("")));
    expect(unparsed).toEqual([{ protocol: "sftp", reason: "not_sftp" }]);
  });

  it("flags shell text in either direction (too long to be a packet), once", () => {
    for (const dir of ["up", "down"] as const) {
      const unparsed: UnparsedTransfer[] = [];
      const o = sftpObserver(() => undefined, { onUnparsed: (u) => unparsed.push(u) });
      o[dir](Buffer.from("id; cat /etc/shadow\n"));
      o[dir](Buffer.from("uid=0(root) gid=0(root)\n"));
      expect(unparsed).toEqual([{ protocol: "sftp", reason: "oversized" }]);
    }
  });

  it("flags a packet type SFTP v3 does not define after a valid start", () => {
    const { o, unparsed } = session();
    o.up(packet(99, u32(1), str("payload")));
    expect(unparsed).toEqual([{ protocol: "sftp", reason: "not_sftp" }]);
  });

  it("survives truncated packets and zero lengths without throwing", () => {
    const { o, unparsed } = session();
    expect(() => {
      o.up(Buffer.concat([u32(0), packet(3, u32(1)), packet(200, u32(2), u32(999))]));
      o.down(Buffer.concat([u32(0), packet(102, u32(1))]));
    }).not.toThrow();
    expect(unparsed.length).toBeLessThanOrEqual(1);
  });
});

describe("legacy scp observer", () => {
  it("reads C/D/E lines in sink mode (upload) and skips file data", () => {
    const events: FileEvent[] = [];
    const o = scpObserver(parsed("scp", "scp -r -t /srv/in/"), (e) => events.push(e));
    const data = Buffer.concat([
      Buffer.from("D0755 0 tree\n"),
      Buffer.from("C0644 5 a.txt\n"),
      Buffer.from("hello"),
      Buffer.from([0]),
      Buffer.from("C0644 3 b\n"),
      Buffer.from("C\nx"),
      Buffer.from([0]),
      Buffer.from("E\n"),
    ]);
    feed(o.up, data, 2);
    expect(events).toEqual([
      { protocol: "scp", op: "upload", path: "/srv/in/tree/a.txt", size: 5 },
      { protocol: "scp", op: "upload", path: "/srv/in/tree/b", size: 3 },
    ]);
  });

  it("reads the source side (download) from the target", () => {
    const events: FileEvent[] = [];
    const o = scpObserver(parsed("scp", "scp -f /var/log/syslog"), (e) => events.push(e));
    o.down(Buffer.concat([Buffer.from("C0640 4 syslog\nlogs"), Buffer.from([0])]));
    expect(events).toEqual([{ protocol: "scp", op: "download", path: "/var/log/syslog", size: 4 }]);
  });

  it("a single file upload lands on the path itself, or inside it when it ends in /", () => {
    const events: FileEvent[] = [];
    scpObserver(parsed("scp", "scp -t /srv/x.bin"), (e) => events.push(e)).up(Buffer.from("C0644 0 local.bin\n"));
    scpObserver(parsed("scp", "scp -d -t /srv/in/"), (e) => events.push(e)).up(Buffer.from("C0644 0 local.bin\n"));
    expect(events.map((e) => e.path)).toEqual(["/srv/x.bin", "/srv/in/local.bin"]);
  });

  it("finds rsync's paths and direction from its server command line", () => {
    expect(rsyncPaths(parsed("rsync", "rsync --server --sender -logDtpre.iLsfxCIvu . /srv/data/"))).toEqual({
      direction: "download",
      paths: ["/srv/data/"],
    });
    expect(rsyncPaths(parsed("rsync", "rsync --server -logDtpre.iLsfxCIvu . /srv/in"))).toEqual({
      direction: "upload",
      paths: ["/srv/in"],
    });
  });
});
